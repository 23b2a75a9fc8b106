"""Your own domain shift: a spec that names the data of each training stage and the
out-of-domain sets evaluated after them (``task: shift``, field ``shift`` of `RunConfig`).

A spec is one mapping (in a params file, a separate YAML file named by ``shift: path.yaml``,
a notebook parameter or a dict in Python)::

    name: reviews_to_tweets         # names the study group (with the spec's content hash)
    labels: [negative, positive]    # canonical class names; their order is the class id
    stages:                         # trained in this order
      - name: reviews
        data: {files: reviews.csv, text: review, label: stars,
               label_map: {1: negative, 2: negative, 4: positive, 5: positive}, unmapped: drop}
        num_train_epochs: 2         # default: the run's num_train_epochs
        learning_rate: 3.0e-5       # default: the run's learning_rate
        validation: {fraction: 0.1} # or {split: validation}, or a data mapping of its own
        val_metric: accuracy        # accuracy, mcc or macro_f1 (what early stopping watches)
    evals:                          # the out-of-domain targets
      - name: tweets
        data: {files: tweets.jsonl, text: tweet, label: sentiment}
        after: [reviews]            # default: the last stage

A *data* mapping is exactly one source: local ``files`` (csv, tsv, json/jsonl, parquet; the
format from the suffix, or ``format``), a `datasets` ``dataset`` (with ``config`` and
``split``), or one of the kit's own datasets as ``kit`` (``cola``, ``twitter_hate``,
``uci_sentiment``, ``crowdflower_tweets``: every dataset of `siftkit.data.registry`, read by
`siftkit.data.loaders.load` with its checks and the run's ``data_dir``) with its ``split``. Text
files are UTF-8 unless ``encoding`` names another (``cp1252``), or a list tried line by line for
a file that mixes them (``[utf-8, cp1252]``); tab-separated files are read without quoting
(`siftkit.data.text_files`). ``where: {column: value or [values]}`` keeps the rows whose column
holds one of the values; ``text`` is a column or a list of two (a sentence pair); ``label`` is
the label column; ``label_map`` maps raw values to canonical names (without one, the raw values
must be the canonical names); ``unmapped: drop`` drops rows whose label has no mapping (the
default, ``error``, refuses them).

Relative ``files`` are read from the spec file's folder, wherever the run starts (the CLI, a
notebook, Python): `load_spec_mapping` records that folder as ``base_dir`` beside the spec (a
params file's inline spec gets the params file's folder, `RunConfig.from_yaml`); a spec given
as a mapping without one is read from the current folder. ``base_dir`` is where the spec is,
not what it says: the spec's hash leaves it out, so one spec in two folders is one group.

This module parses and checks the spec (every unknown key is named, as in params files);
`siftkit.data.shift_data` loads the data and builds the stages.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from siftkit.data.registry import DATASETS

SPEC_KEYS = ("name", "labels", "stages", "evals")
BASE_KEY = "base_dir"  # the folder relative files are read from (recorded, not part of the spec's hash)
STAGE_KEYS = ("name", "data", "num_train_epochs", "learning_rate", "validation", "val_metric")
EVAL_KEYS = ("name", "data", "after")
SOURCE_KEYS = ("files", "dataset", "kit")
DATA_KEYS = SOURCE_KEYS + ("format", "config", "split", "where", "text", "label", "label_map", "unmapped", "encoding")
VALIDATION_KEYS = ("fraction", "split")
FORMATS = {".csv": "csv", ".tsv": "tsv", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}
UNMAPPED = ("error", "drop")
VAL_METRICS = ("accuracy", "mcc", "macro_f1")
KIT_DATASETS = tuple(DATASETS)  # the registry's: cola, twitter_hate, uci_sentiment, crowdflower_tweets


@dataclass(frozen=True)
class DataSpec:
    """Where one dataset's rows come from and how its columns and labels are read."""

    where: str  # the spec's place for messages, e.g. "shift.stages[0].data"
    files: tuple[str, ...] = ()
    format: str | None = None
    dataset: str | None = None
    kit: str | None = None
    config: str | None = None
    split: str | None = None
    filters: dict[str, tuple] = field(default_factory=dict)
    text: tuple[str, ...] = ("text",)
    label: str = "label"
    label_map: dict[str, str] | None = None
    unmapped: str = "error"
    encoding: tuple[str, ...] = ("utf-8",)  # of csv/tsv/json files; several: tried line by line

    @property
    def pair(self) -> bool:
        return len(self.text) == 2

    def describe(self) -> str:
        """The source in a few words, for messages: a file list, a dataset name or a kit name."""
        if self.files:
            return ", ".join(self.files)
        if self.kit:
            return f"kit dataset {self.kit!r} split {self.split!r}"
        return (
            f"dataset {self.dataset!r}" + (f" config {self.config!r}" if self.config else "") + f" split {self.split!r}"
        )

    def identity(self) -> tuple:
        """What makes two sources the same data (for the 'not out of domain' warning)."""
        files = tuple(sorted(str(Path(f).expanduser().resolve()) for f in self.files))
        return (
            files,
            self.dataset,
            self.config,
            self.kit,
            self.split,
            tuple(sorted((k, v) for k, v in self.filters.items())),
        )


@dataclass(frozen=True)
class Validation:
    fraction: float | None = None  # a seeded share of the stage's training rows
    data: DataSpec | None = None  # its own data (a file, or the source with another split)


@dataclass(frozen=True)
class StageSpec:
    name: str
    data: DataSpec
    num_train_epochs: int | None = None
    learning_rate: float | None = None
    validation: Validation | None = None
    val_metric: str = "accuracy"


@dataclass(frozen=True)
class EvalSpec:
    name: str
    data: DataSpec
    after: tuple[str, ...]


@dataclass(frozen=True)
class ShiftSpec:
    name: str
    labels: tuple[str, ...]
    stages: tuple[StageSpec, ...]
    evals: tuple[EvalSpec, ...]
    digest: str  # sha256 of the spec's canonical JSON: runs of one spec group together

    @property
    def num_labels(self) -> int:
        return len(self.labels)


def folder_name(cfg) -> str:
    """The folder a sweep puts a run's variants under: the task, or ``shift-<spec name>`` (runs
    of two specs in one sweep folder must not be taken for each other's)."""
    return f"shift-{cfg.shift['name']}" if cfg.task == "shift" else cfg.task


def validation_metrics(spec: ShiftSpec) -> list[str]:
    """The metrics a grid may be chosen on: those of the stages' validation sets (never of an
    evaluation set, which is a reported out-of-domain result)."""
    return [f"{s.name}_val_{m}" for s in spec.stages if s.validation is not None for m in VAL_METRICS]


def select_on(metric: str | None, spec: ShiftSpec) -> str:
    """`metric`, or the last validated stage's own validation metric; a ValueError otherwise."""
    allowed = validation_metrics(spec)
    if not allowed:
        raise ValueError(
            f"--select-on: shift spec {spec.name!r} has no validation set to choose a grid point on; "
            f"give a stage a validation (e.g. validation: {{fraction: 0.1}})"
        )
    if metric is None:
        last = [s for s in spec.stages if s.validation is not None][-1]
        return f"{last.name}_val_{last.val_metric}"
    if metric not in allowed:
        raise ValueError(
            f"--select-on {metric} is not a validation metric of shift spec {spec.name!r} (the "
            f"evaluation sets are reported results, never chosen on); choose one of "
            f"{', '.join(allowed)}"
        )
    return metric


# ----------------------------------------------------------------------------- reading


def load_spec_mapping(value: Any) -> dict:
    """The spec as a mapping: `value` itself, or the YAML file it names (a path).

    A file may hold the spec itself or a params-style mapping with a ``shift`` key."""
    if isinstance(value, dict):
        return value
    if not isinstance(value, (str, Path)):
        raise ValueError(
            f"shift must be a mapping (the spec) or the path of a YAML file holding it, "
            f"got {type(value).__name__} {value!r}"
        )
    from siftkit.data.yaml_files import load_yaml

    path = Path(value).expanduser()
    if not path.is_file():
        raise ValueError(f"shift spec file not found: {path}")
    try:
        loaded = load_yaml(path.read_text(encoding="utf-8"))
    except Exception as exc:  # yaml errors and undecodable text: one line naming the file
        raise ValueError(f"shift spec file {path} cannot be read as YAML: {' '.join(str(exc).split())}") from None
    if isinstance(loaded, dict) and "shift" in loaded and "stages" not in loaded:
        loaded = loaded["shift"]
    if not isinstance(loaded, dict):
        raise ValueError(f"shift spec file {path} must hold a mapping with keys {', '.join(SPEC_KEYS)}")
    return anchored(loaded, path.resolve().parent)


def anchored(spec: Any, folder: str | Path) -> Any:
    """`spec` (a mapping) with ``base_dir``, the folder its relative files are read from, unless it
    has one; a spec given as a path is loaded, relative to `folder`. Anything else is returned as
    it is, for `parse_spec` to refuse with its own message."""
    if isinstance(spec, (str, Path)):
        path = Path(spec).expanduser()
        return load_spec_mapping(path if path.is_absolute() else Path(folder) / path)
    if isinstance(spec, dict) and BASE_KEY not in spec:
        return {**spec, BASE_KEY: str(Path(folder).expanduser().resolve())}
    return spec


def spec_digest(mapping: dict) -> str:
    """sha256 of the spec's canonical JSON (sorted keys): the same spec, the same hash."""
    # Keys as JSON writes them first (label_map's 1 and "1" are one key, as in results.json),
    # so a spec read back from a record has the hash it was run with.
    mapping = {k: v for k, v in mapping.items() if k != BASE_KEY} if isinstance(mapping, dict) else mapping
    as_json = json.loads(json.dumps(mapping, ensure_ascii=False, default=str))
    text = json.dumps(as_json, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


def parse_spec(mapping: Any) -> ShiftSpec:
    """Check a spec mapping and return it as a `ShiftSpec`; a ValueError names the bad key.

    Relative ``files`` come back joined to the spec's ``base_dir`` (absolute), if it has one."""
    base = mapping.get(BASE_KEY) if isinstance(mapping, dict) else None
    if base is not None and not (isinstance(base, str) and base.strip()):
        raise ValueError(
            f"shift.{BASE_KEY} must be a folder (where the spec's relative files are read from), got {base!r}"
        )
    if base is not None:
        return _with_base(parse_spec({k: v for k, v in mapping.items() if k != BASE_KEY}), base)
    mapping = _mapping(mapping, "shift", SPEC_KEYS, required=("name", "labels", "stages", "evals"))
    name = _text(mapping["name"], "shift.name")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
        # It names the sweep's folder (<output>/shift-<name>/...) and the summary's group.
        raise ValueError(f"shift.name must be letters, digits, '_', '-' or '.' (it names folders), got {name!r}")
    labels = _labels(mapping["labels"])
    stages = tuple(
        _stage(s, f"shift.stages[{i}]", labels) for i, s in enumerate(_list(mapping["stages"], "shift.stages"))
    )
    _unique([s.name for s in stages], "shift.stages", "stage")
    stage_names = [s.name for s in stages]
    evals = tuple(
        _eval(e, f"shift.evals[{i}]", labels, stage_names) for i, e in enumerate(_list(mapping["evals"], "shift.evals"))
    )
    _unique([e.name for e in evals], "shift.evals", "evaluation set")
    _check_metric_names(stages, evals)
    return ShiftSpec(name=name, labels=labels, stages=stages, evals=evals, digest=spec_digest(mapping))


# The metrics each evaluated set writes, as `<set>_<metric>` (core.metrics.classification_metrics).
SET_METRICS = ("accuracy", "mcc", "macro_f1")


def evaluated_sets(stages, evals) -> list[tuple[str, str]]:
    """Every set the stages evaluate, as its metrics are keyed, with what in the spec asks for it:
    a stage's validation set is ``<stage>_val``; an evaluation set is ``<name>`` after its last
    stage and ``<name>_after_<stage>`` after an earlier one (`shift_data.shift_stages`)."""
    order = [s.name for s in stages]
    out = [(f"{s.name}_val", f"stage {s.name!r}'s validation set") for s in stages if s.validation is not None]
    for i, e in enumerate(evals):
        last = max(order.index(a) for a in e.after)
        for a in e.after:
            if order.index(a) == last:
                out.append((e.name, f"shift.evals[{i}] ({e.name!r})"))
            else:
                out.append((f"{e.name}_after_{a}", f"shift.evals[{i}] ({e.name!r}, after stage {a!r})"))
    return out


def _check_metric_names(stages, evals) -> None:
    """Two sets that would write one metric name: the later would overwrite the earlier's score."""
    written: dict[str, tuple[str, str]] = {}
    for name, what in evaluated_sets(stages, evals):
        for metric in (f"{name}_{m}" for m in SET_METRICS):
            if metric in written and written[metric][1] != what:
                other_name, other = written[metric]
                same = (
                    f"the metrics {name}_*"
                    if other_name == name
                    else f"the metric {metric!r} (as sets {other_name!r} and {name!r})"
                )
                raise ValueError(
                    f"shift.evals: {other} and {what} would both write {same}, so one score would "
                    f"overwrite the other; rename one of the evaluation sets"
                )
            written[metric] = (name, what)


def _with_base(spec: ShiftSpec, base: str) -> ShiftSpec:
    """`spec` with every relative file joined to `base`: the spec file's folder, wherever the run starts."""
    from dataclasses import replace

    folder = Path(base).expanduser()

    def data(d: DataSpec | None) -> DataSpec | None:
        if d is None or not d.files:
            return d
        return replace(d, files=tuple(f if Path(f).expanduser().is_absolute() else str(folder / f) for f in d.files))

    stages = tuple(
        replace(
            s,
            data=data(s.data),
            validation=None if s.validation is None else replace(s.validation, data=data(s.validation.data)),
        )
        for s in spec.stages
    )
    return replace(spec, stages=stages, evals=tuple(replace(e, data=data(e.data)) for e in spec.evals))


def _mapping(value: Any, where: str, keys: tuple[str, ...], required: tuple[str, ...] = ()) -> dict:
    if not isinstance(value, dict):
        raise ValueError(f"{where} must be a mapping with keys {', '.join(keys)}, got {value!r}")
    unknown = [k for k in value if k not in keys]
    if unknown:
        raise ValueError(f"unknown key(s) in {where}: {', '.join(map(str, unknown))}; known keys: {', '.join(keys)}")
    missing = [k for k in required if value.get(k) is None]
    if missing:
        raise ValueError(f"{where} lacks {', '.join(missing)} (keys: {', '.join(keys)})")
    return value


def _list(value: Any, where: str) -> list:
    if not isinstance(value, list) or not value:
        raise ValueError(f"{where} must be a non-empty list, got {value!r}")
    return value


def _text(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{where} must be a non-empty text, got {value!r}")
    return value


def _labels(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or len(value) < 2:
        raise ValueError(
            f"shift.labels must list at least two canonical class names (their order is the class id), got {value!r}"
        )
    labels = tuple(_text(v, f"shift.labels[{i}]") for i, v in enumerate(value))
    _unique(list(labels), "shift.labels", "class")
    return labels


def _unique(names: list[str], where: str, what: str) -> None:
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ValueError(
            f"{where}: {what} name(s) {', '.join(map(repr, twice))} given more than once; each "
            f"{what} needs its own name"
        )


def _stage(value: Any, where: str, labels: tuple[str, ...]) -> StageSpec:
    value = _mapping(value, where, STAGE_KEYS, required=("name", "data"))
    data = _data(value["data"], f"{where}.data", labels)
    epochs, rate = value.get("num_train_epochs"), value.get("learning_rate")
    if epochs is not None and (isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1):
        raise ValueError(f"{where}.num_train_epochs must be an integer >= 1, got {epochs!r}")
    if rate is not None and (
        isinstance(rate, bool) or not isinstance(rate, (int, float)) or not (math.isfinite(rate) and rate > 0)
    ):
        raise ValueError(f"{where}.learning_rate must be a finite number > 0, got {rate!r}")
    metric = value.get("val_metric", "accuracy")
    if metric not in VAL_METRICS:
        raise ValueError(f"{where}.val_metric must be one of {', '.join(map(repr, VAL_METRICS))}, got {metric!r}")
    validation = _validation(value.get("validation"), f"{where}.validation", data, labels)
    return StageSpec(
        name=_text(value["name"], f"{where}.name"),
        data=data,
        num_train_epochs=epochs,
        learning_rate=None if rate is None else float(rate),
        validation=validation,
        val_metric=metric,
    )


def _validation(value: Any, where: str, data: DataSpec, labels: tuple[str, ...]) -> Validation | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ValueError(
            f"{where} must be a mapping: {{fraction: 0.1}}, {{split: validation}} or a data mapping, got {value!r}"
        )
    if not set(value) & set(SOURCE_KEYS):  # no source of its own: a fraction or a split
        _mapping(value, where, VALIDATION_KEYS)
        if len(value) != 1:
            raise ValueError(f"{where} takes one of fraction or split, got {', '.join(value)}")
        if "fraction" in value:
            fraction = value["fraction"]
            if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction < 1:
                raise ValueError(
                    f"{where}.fraction must be in (0, 1) (the seeded share of the stage's training "
                    f"rows held out), got {fraction!r}"
                )
            return Validation(fraction=float(fraction))
        if data.files:
            raise ValueError(
                f"{where}.split={value['split']!r} names a split of a dataset, but the stage reads "
                f"local files ({data.describe()}); give the validation file as {where}.files"
            )
        return Validation(
            data=DataSpec(**{**data.__dict__, "where": where, "split": _text(value["split"], f"{where}.split")})
        )
    return Validation(data=_data(value, where, labels))


def _eval(value: Any, where: str, labels: tuple[str, ...], stages: list[str]) -> EvalSpec:
    value = _mapping(value, where, EVAL_KEYS, required=("name", "data"))
    after = value.get("after", [stages[-1]])
    if isinstance(after, str):
        after = [after]
    if not isinstance(after, list) or not after:
        raise ValueError(f"{where}.after must list stage names (of {', '.join(stages)}), got {after!r}")
    unknown = [a for a in after if a not in stages]
    if unknown:
        raise ValueError(
            f"{where}.after names unknown stage(s) {', '.join(map(repr, unknown))}; the stages are "
            f"{', '.join(map(repr, stages))}"
        )
    return EvalSpec(
        name=_text(value["name"], f"{where}.name"),
        data=_data(value["data"], f"{where}.data", labels),
        after=tuple(dict.fromkeys(after)),
    )


def _data(value: Any, where: str, labels: tuple[str, ...]) -> DataSpec:
    value = _mapping(value, where, DATA_KEYS)
    sources = [k for k in SOURCE_KEYS if value.get(k) is not None]
    if len(sources) != 1:
        raise ValueError(
            f"{where} needs exactly one source of files, dataset or kit; got "
            f"{', '.join(sources) if sources else 'none'}"
        )
    files = value.get("files")
    if files is not None:
        files = [files] if isinstance(files, str) else files
        if not isinstance(files, list) or not files or not all(isinstance(f, str) and f.strip() for f in files):
            raise ValueError(f"{where}.files must be a path or a list of paths, got {value['files']!r}")
    fmt = value.get("format")
    if files:
        fmt = _format(files, fmt, where)
    elif fmt is not None:
        raise ValueError(f"{where}.format={fmt!r} applies to local files only")
    encoding = ("utf-8",)
    if value.get("encoding") is not None:
        if fmt not in ("csv", "tsv", "json"):
            raise ValueError(
                f"{where}.encoding applies to local csv, tsv and json files only"
                + (f" (the files are {fmt})" if fmt else "")
            )
        from siftkit.data.text_files import check_encoding

        encoding = check_encoding(value["encoding"], where)
    kit = value.get("kit")
    if kit is not None and kit not in KIT_DATASETS:
        raise ValueError(f"{where}.kit must be one of {', '.join(map(repr, KIT_DATASETS))}, got {kit!r}")
    if files and (value.get("split") is not None or value.get("config") is not None):
        raise ValueError(f"{where}: split and config belong to a dataset or kit source, not to local files")
    text = value.get("text", "text")
    text = [text] if isinstance(text, str) else text
    if not isinstance(text, list) or len(text) not in (1, 2) or not all(isinstance(t, str) and t for t in text):
        raise ValueError(
            f"{where}.text must be a column name or a list of two (a sentence pair), got {value.get('text')!r}"
        )
    unmapped = value.get("unmapped", "error")
    if unmapped not in UNMAPPED:
        raise ValueError(f"{where}.unmapped must be 'error' or 'drop', got {unmapped!r}")
    default_split = "train" if value.get("dataset") is not None else None
    return DataSpec(
        where=where,
        files=tuple(files or ()),
        format=fmt,
        dataset=value.get("dataset"),
        kit=kit,
        config=value.get("config"),
        split=value.get("split", default_split),
        filters=_filters(value.get("where"), where),
        text=tuple(text),
        label=_text(value.get("label", "label"), f"{where}.label"),
        label_map=_label_map(value.get("label_map"), where, labels),
        unmapped=unmapped,
        encoding=encoding,
    )


def _format(files: list[str], fmt: Any, where: str) -> str:
    if fmt is not None:
        if fmt not in set(FORMATS.values()):
            raise ValueError(f"{where}.format must be one of {', '.join(sorted(set(FORMATS.values())))}, got {fmt!r}")
        return fmt
    found = set()
    for f in files:
        suffix = Path(f).suffix.lower()
        if suffix not in FORMATS:
            raise ValueError(
                f"{where}.files: cannot tell the format of {f!r} from its suffix; name it with "
                f"{where}.format (one of {', '.join(sorted(set(FORMATS.values())))})"
            )
        found.add(FORMATS[suffix])
    if len(found) > 1:
        raise ValueError(f"{where}.files mixes formats ({', '.join(sorted(found))}); one dataset, one format")
    return found.pop()


def _filters(value: Any, where: str) -> dict[str, tuple]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not value:
        raise ValueError(f"{where}.where must map column names to a value or a list of values, got {value!r}")
    return {str(k): tuple(v) if isinstance(v, list) else (v,) for k, v in value.items()}


def label_key(value: Any) -> str:
    """One spelling per raw label: 1, 1.0 and "1" are the same key (csv reads numbers, YAML
    map keys may be numbers or text)."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value)


def _label_map(value: Any, where: str, labels: tuple[str, ...]) -> dict[str, str] | None:
    if value is None:
        return None
    if not isinstance(value, dict) or not value:
        raise ValueError(f"{where}.label_map must map raw label values to canonical names, got {value!r}")
    mapped: dict[str, str] = {}
    for raw, name in value.items():
        if name not in labels:
            raise ValueError(
                f"{where}.label_map maps {raw!r} to {name!r}, which is not a canonical label "
                f"(shift.labels: {', '.join(labels)})"
            )
        key = label_key(raw)
        if key in mapped and mapped[key] != name:
            raise ValueError(f"{where}.label_map maps {raw!r} twice ({mapped[key]!r} and {name!r})")
        mapped[key] = name
    return mapped
