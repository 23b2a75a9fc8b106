"""Loading a shift spec's datasets (`siftkit.data.shift_spec`) and building its training stages.

Local csv, tsv and json files are read by `siftkit.data.text_files` (its errors name the line;
it knows encodings and reads tsv without quoting), parquet files by `datasets`' builder, a name
with `datasets.load_dataset`, the kit's own datasets with `siftkit.data.loaders.load`. Each comes out
with the columns ``text`` (and ``text_pair`` for a sentence pair) and ``label``, the label
cast with ``ClassLabel(names=<the spec's labels>)`` after its own label map, so class ids mean
the same in every dataset. (``class_encode_column`` is never used: it numbers the values
one split happens to hold, and a split without a class silently shifts the others.)

Bad data are refused with a ValueError naming the dataset, the column and the values.
"""

from __future__ import annotations

import errno
import hashlib
import math
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from datasets import ClassLabel, Dataset, Features, Value

from siftkit.data.shift_spec import DataSpec, ShiftSpec, label_key, parse_spec

_VAL_SHUFFLE = 11  # purpose id of the validation-fraction shuffle: numpy.random.default_rng([seed, 11])
_SHOWN = 8  # unmapped values listed in a message


class ShiftDataWarning(UserWarning):
    """A spec that runs but is probably not what was meant (e.g. evaluating on training data)."""


def spec_of(cfg) -> ShiftSpec:
    return parse_spec(cfg.shift)


def num_labels(cfg) -> int:
    """The classifier's number of classes: the spec's labels, or 2 for the paper's protocols."""
    return spec_of(cfg).num_labels if cfg.task == "shift" else 2


# ----------------------------------------------------------------------------- loading


def load_raw(data: DataSpec, data_dir: str | None = None) -> Dataset:
    """The rows of one source as `datasets` reads them (no column or label handling yet)."""
    if data.files:
        return _load_files(data)
    if data.kit:
        from siftkit.data import loaders as data_module

        splits = data_module.load(data.kit, data_dir)
        split = data.split or next(iter(splits))
        if split not in splits:
            raise ValueError(
                f"{data.where}: kit dataset {data.kit!r} has no split {split!r}; its splits: {', '.join(splits)}"
            )
        return splits[split]
    return _load_named(data)


def _load_files(data: DataSpec):
    import datasets

    for f in data.files:
        path = _existing_file(f, data.where)
        if path.stat().st_size == 0:
            raise ValueError(f"{data.where}: file {f} is empty")
    if data.format in ("csv", "tsv", "json"):
        return _read_text_files(data)
    builder = data.format
    options = {"sep": "\t"} if data.format == "tsv" else {}
    files = [str(Path(f).expanduser()) for f in data.files]
    try:
        return datasets.load_dataset(builder, data_files=files, split="train", **options)
    except Exception as exc:  # pandas/pyarrow parse errors: one line naming the files
        if "corresponds to no data" in str(exc):  # datasets' words for a file with a header and no rows
            raise ValueError(f"{data.where}: {data.describe()} has no rows") from None
        raise ValueError(
            f"{data.where}: cannot read {data.describe()} as {data.format}: {' '.join(str(exc).split())[:300]}"
        ) from None


def _existing_file(f: str, where: str) -> Path:
    """The file `f` names; a ValueError says what it is instead (missing, a folder, a link loop)."""
    path = Path(f).expanduser()
    try:
        path.stat()
    except FileNotFoundError:
        raise ValueError(f"{where}: file not found: {f}") from None
    except OSError as exc:  # ELOOP: a symbolic link that leads back to itself
        raise ValueError(
            f"{where}: file {f} cannot be opened: {exc.strerror or exc}"
            + (" (a symbolic link that leads back to itself)" if exc.errno == errno.ELOOP else "")
        ) from None
    if path.is_dir():
        raise ValueError(
            f"{where}: {f} is a folder, not a file; name the data file(s) in it, e.g. {Path(f) / 'train.csv'}"
        )
    if not path.is_file():
        raise ValueError(f"{where}: {f} is not a regular file")
    return path


def _read_text_files(data: DataSpec):
    from siftkit.data.text_files import Rows, read_rows

    needed = list(data.text) + [data.label] + list(data.filters)
    parts = [
        read_rows(Path(f).expanduser(), f, data.where, data.format, data.encoding, needed, data.label)
        for f in data.files
    ]
    names = parts[0].column_names
    for f, part in zip(data.files[1:], parts[1:]):
        if part.column_names != names and set(needed) - set(part.column_names):
            raise ValueError(
                f"{data.where}: {f} has the columns {', '.join(part.column_names)}, but "
                f"{data.files[0]} has {', '.join(names)}; the files of one dataset need the same columns"
            )
    columns = {
        n: [v for part in parts for v in (part[n] if n in part.column_names else [None] * len(part))]
        for n in dict.fromkeys(n for part in parts for n in part.column_names)
    }
    return Rows(columns)


def _load_named(data: DataSpec) -> Dataset:
    import datasets

    try:
        return datasets.load_dataset(data.dataset, data.config, split=data.split)
    except Exception as exc:  # offline: ConnectionError, DatasetNotFoundError, FileNotFoundError, ...
        raise ValueError(
            f"{data.where}: {data.describe()} is not available offline (nor in the local datasets cache): "
            f"{' '.join(str(exc).split())[:200]}; download it where there is a network, or save it as files "
            f"(ds.to_csv / to_json / to_parquet) and point {data.where}.files at them"
        ) from None


def load_data(data: DataSpec, labels: tuple[str, ...], data_dir: str | None = None) -> tuple[Dataset, int]:
    """(text[, text_pair], label) rows of `data`, labels cast to the canonical ClassLabel,
    and the number of rows dropped by ``unmapped: drop``."""
    ds = load_raw(data, data_dir)
    _check_columns(ds, data)
    ds = _filtered(ds, data)
    if len(ds) == 0:
        raise ValueError(
            f"{data.where}: {data.describe()} has no rows" + (f" where {_where_text(data)}" if data.filters else "")
        )
    texts = [_texts(ds, column, data) for column in data.text]
    names, dropped = _mapped_labels(list(ds[data.label]), data, labels)
    keep = [i for i, name in enumerate(names) if name is not None]
    if not keep:
        raise ValueError(
            f"{data.where}: no rows of {data.describe()} are left after the label map ({dropped} dropped as unmapped)"
        )
    columns: dict[str, Any] = {"text": [texts[0][i] for i in keep]}
    features = {"text": Value("string")}
    if data.pair:
        columns["text_pair"] = [texts[1][i] for i in keep]
        features["text_pair"] = Value("string")
    columns["label"] = [labels.index(names[i]) for i in keep]
    features["label"] = ClassLabel(names=list(labels))
    return Dataset.from_dict(columns, features=Features(features)), dropped


def _check_columns(ds: Dataset, data: DataSpec) -> None:
    for role, column in (
        [("text", c) for c in data.text] + [("label", data.label)] + [("where", c) for c in data.filters]
    ):
        if column not in ds.column_names:
            raise ValueError(
                f"{data.where}: {data.describe()} has no column {column!r} (named by "
                f"{data.where}.{role}); its columns: {', '.join(ds.column_names)}"
            )


def _where_text(data: DataSpec) -> str:
    return " and ".join(f"{k} in {list(v)!r}" for k, v in data.filters.items())


def _filtered(ds: Dataset, data: DataSpec) -> Dataset:
    if not data.filters:
        return ds
    keep = np.ones(len(ds), dtype=bool)
    for column, values in data.filters.items():
        wanted = {label_key(v) for v in values}
        keep &= np.asarray([label_key(v) in wanted for v in ds[column]], dtype=bool)
    return ds.select(np.flatnonzero(keep))


def _texts(ds: Dataset, column: str, data: DataSpec) -> list[str]:
    from siftkit.data.text_files import describe_invisible, invisible, short

    values = list(ds[column])
    for i, value in enumerate(values):
        if value is None or (isinstance(value, float) and math.isnan(value)):
            problem = "is empty (missing / NaN)"
        elif not isinstance(value, str):
            problem = f"is {short(value)} ({type(value).__name__}), not text"
            if isinstance(value, list):
                problem += " (a column-oriented JSON read as one row?)"
        elif not value.strip():
            problem = f"is empty ({value!r})"
        elif invisible(value):
            problem = f"holds no visible character ({short(value)}: {describe_invisible(value)})"
        else:
            continue
        raise ValueError(
            f"{data.where}: {data.describe()}, column {column!r}, data row {i + 1} {problem}; every "
            f"text must be a non-empty string"
        )
    return values


def _mapped_labels(raw: list, data: DataSpec, labels: tuple[str, ...]) -> tuple[list[str | None], int]:
    """Each row's canonical name (None where dropped) and the number dropped."""
    mapping = data.label_map if data.label_map is not None else {name: name for name in labels}
    names = [mapping.get(label_key(v)) for v in raw]
    missing = Counter(label_key(v) for v, n in zip(raw, names) if n is None)
    if missing and data.unmapped == "error":
        shown = ", ".join(f"{v!r} ({c} row{'s' * (c > 1)})" for v, c in missing.most_common(_SHOWN))
        more = f" and {len(missing) - _SHOWN} more" if len(missing) > _SHOWN else ""
        how = (
            f"{data.where}.label_map maps {', '.join(map(repr, mapping))}"
            if data.label_map is not None
            else f"without a {data.where}.label_map the labels must be the canonical names "
            f"{', '.join(map(repr, labels))}"
        )
        raise ValueError(
            f"{data.where}: column {data.label!r} of {data.describe()} holds label value(s) with no "
            f"mapping: {shown}{more}; {how}; add them to the label map, or set "
            f"{data.where}.unmapped: drop to drop those rows"
        )
    return names, sum(missing.values())


# ----------------------------------------------------------------------------- stages


def shift_stages(cfg) -> list:
    """The training stages of ``cfg.shift``, each with its validation set and the evaluation
    sets that follow it (caps by max_*_samples are applied by `protocols.build_stages`)."""
    from siftkit.data.stages import Stage

    spec = spec_of(cfg)
    dropped: dict[str, int] = {}
    stages = []
    trained: dict[str, set] = {}  # per stage, the texts of its training data (for the leakage warning)
    for index, s in enumerate(spec.stages):
        train, dropped[s.data.where] = load_data(s.data, spec.labels, cfg.data_dir)
        _check_classes_present(train, s.data, spec.labels)
        trained[s.name] = set(_row_texts(train))
        evals: dict[str, Dataset] = {}
        val_name = None
        if s.validation is not None:
            val_name = f"{s.name}_val"
            if s.validation.fraction is not None:
                train, evals[val_name] = _split_fraction(train, s.validation.fraction, cfg.seed, index, s.data)
                _check_validation_classes(
                    evals[val_name],
                    f"shift.stages[{index}].validation",
                    s,
                    spec.labels,
                    f"fraction {s.validation.fraction} of {len(train) + len(evals[val_name])} training rows",
                )
            else:
                evals[val_name], dropped[s.validation.data.where] = load_data(
                    s.validation.data, spec.labels, cfg.data_dir
                )
                _check_validation_classes(
                    evals[val_name], s.validation.data.where, s, spec.labels, s.validation.data.describe()
                )
        stages.append(
            Stage(
                s.name,
                train,
                s.num_train_epochs or cfg.num_train_epochs,
                s.learning_rate or cfg.learning_rate,
                evals,
                val=val_name,
                val_metric=s.val_metric,
            )
        )
    for e in spec.evals:
        ds, dropped[e.data.where] = load_data(e.data, spec.labels, cfg.data_dir)
        _warn_train_is_eval(spec, e, ds, trained)
        last = max(spec.stages.index(next(s for s in spec.stages if s.name == a)) for a in e.after)
        for a in e.after:
            i = [s.name for s in spec.stages].index(a)
            # The set after its last stage is the result (`<name>_accuracy`); an earlier look
            # at it gets the stage's name, as P2's zero-shot figure does.
            stages[i].evals[e.name if i == last else f"{e.name}_after_{a}"] = ds
    for stage, s in zip(stages, spec.stages):
        # Rows dropped by `unmapped: drop`, recorded with the stage that reads them.
        mine = (
            [s.data.where]
            + ([s.validation.data.where] if s.validation and s.validation.data else [])
            + [e.data.where for e in spec.evals if s.name in e.after]
        )
        stage.dropped = {w: dropped[w] for w in mine if dropped.get(w)}
    return stages


def _check_classes_present(train: Dataset, data: DataSpec, labels: tuple[str, ...]) -> None:
    counts = Counter(train["label"])
    absent = [name for i, name in enumerate(labels) if not counts.get(i)]
    if absent:
        raise ValueError(
            f"{data.where}: the training data ({data.describe()}) have no row of canonical class(es) "
            f"{', '.join(map(repr, absent))}; every class in shift.labels needs training examples "
            f"(check the label map, or remove the class from shift.labels)"
        )


def _split_fraction(train: Dataset, fraction: float, seed: int, stage_index: int, data: DataSpec):
    """(train, validation): a seeded share of the rows held out, the same at a seed."""
    n_val = int(round(len(train) * fraction))
    if not 1 <= n_val < len(train):
        raise ValueError(
            f"{data.where}: validation fraction {fraction} of the {len(train)} training rows of "
            f"{data.describe()} leaves {len(train) - n_val} for training and {n_val} for validation; "
            f"each needs at least one"
        )
    order = np.random.default_rng([seed, _VAL_SHUFFLE, stage_index]).permutation(len(train))
    return train.select(np.sort(order[n_val:])), train.select(np.sort(order[:n_val]))


def _check_validation_classes(val: Dataset, where: str, stage, labels: tuple[str, ...], source: str) -> None:
    """A validation set of one class has no MCC (nor a meaningful macro-F1): a grid or early
    stopping choosing on it would choose on a 0.0 that means 'undefined'."""
    present = sorted(set(val["label"]))
    if len(present) >= 2:
        return
    rows = f"{len(val)} row" + ("s" if len(val) != 1 else "")
    raise ValueError(
        f"{where}: the validation set of stage {stage.name!r} ({source}: {rows}) holds only class "
        f"{labels[present[0]]!r}; its MCC is undefined (it would read 0.0) and a grid or early "
        f"stopping would choose on it: hold out more rows, or give a validation set with at least two "
        f"classes"
    )


def _row_texts(ds: Dataset) -> list[tuple]:
    return list(zip(ds["text"], ds["text_pair"])) if "text_pair" in ds.column_names else [(t,) for t in ds["text"]]


def _warn_train_is_eval(spec: ShiftSpec, e, ds: Dataset, trained: dict[str, set]) -> None:
    """Warn when an evaluation set holds texts a stage trains on: compared by content, so a copy
    of the training file, or the file through ``where:``, is found as well as the same path."""
    texts = _row_texts(ds)
    for s in spec.stages:
        shared = sum(1 for t in texts if t in trained[s.name])
        if not shared:
            continue
        if e.data.identity() == s.data.identity():
            what = f"reads the same data as stage {s.name!r} ({e.data.describe()})"
        else:
            what = (
                f"({e.data.describe()}) shares {shared} of its {len(texts)} texts with the training data of stage "
                f"{s.name!r} ({s.data.describe()})"
            )
        warnings.warn(
            f"shift: evaluation set {e.name!r} {what}; that is not out of domain", ShiftDataWarning, stacklevel=4
        )


# ----------------------------------------------------------------------------- records


def file_hashes(cfg) -> dict[str, str]:
    """sha256 of every local file the spec reads, by the path as given (kit files: by
    `siftkit.data.folder.split_file_hashes`, the same keys as P1's and P2's)."""
    from siftkit.data.folder import split_file_hashes

    spec = spec_of(cfg)
    out: dict[str, str] = {}
    sources = [s.data for s in spec.stages] + [
        s.validation.data for s in spec.stages if s.validation is not None and s.validation.data is not None
    ]
    for data in sources + [e.data for e in spec.evals]:
        for f in data.files:
            out[f] = hashlib.sha256(Path(f).expanduser().read_bytes()).hexdigest()
        if data.kit:
            out.update(split_file_hashes(data.kit, cfg.data_dir))
    return out


def spec_meta(cfg) -> dict[str, Any]:
    """What results.json records of the spec beside the config: its name and content hash
    (what a summary groups spec runs by) and the rows each dataset dropped as unmapped."""
    spec = spec_of(cfg)
    return {"name": spec.name, "sha256": spec.digest, "labels": list(spec.labels)}
