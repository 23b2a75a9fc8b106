"""A study's runs, read from results.json files, checked, de-duplicated and grouped.

Comparable runs: two runs are only ever compared (in a table row, a paired difference or one
figure) when they share the task, the model, the device (``meta.device_name`` plus the mixed
precision) and the code (``meta.git_commit``, matched as an exact string: ``abc+dirty`` is not
the same code as ``abc``, and two ``abc+dirty`` runs are taken to be the same code, since the
record cannot tell their local changes apart). `group_runs` builds those groups.

Inside a group a run is named by its *variant*: the algorithm plus the sweep's tag
(``config.extra.tag``), e.g. ``smart-mtdnn_no_bregman``; its seed pairs it with the other
variants' runs of the same seed (same data split and head initialisation).

A WiSE-FT run (``wise_ft``) holds two models: the ensemble at the alpha it chose on validation
(its ``metrics``) and the fine-tuned model itself (alpha = 1, ``wise_ft.finetuned``), which is
the run without WiSE-FT, trained identically. `group_runs` reads it twice: as itself, and as
that *twin* (`finetuned_twin`), a variant of its own (``plain-wise`` and ``plain-wise_alpha1``),
so a WiSE-FT arm and plain's twin arm come from the same runs, seed for seed.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from siftkit.run.config import DEFAULT_MODEL_NAME
from siftkit.run.records import RESULTS_FILE, load_results
from siftkit.study.metrics import PAPER_METRIC, TASK_METRICS
from siftkit.study.select import DEFAULT_SELECT_ON

# The held-out evaluation set whose smoothness the summary plots, per protocol.
MAIN_EVAL = {"twitter_to_uci": "uci_test", "cola": "out_of_domain_dev"}
# The metric that chooses among plain's tagged settings (P1's learning rates): never the
# reported metric, so the choice does not peek at the result it reports.
SELECTION_METRIC = {"twitter_to_uci": "twitter_val_accuracy", "cola": "in_domain_dev_mcc"}


@dataclass(frozen=True)
class Run:
    """One finished run: its file (None for a record given as data), its record and the keys
    the summary groups by."""

    path: Path | None
    record: dict[str, Any] = field(repr=False)
    task: str
    model: str
    device: str
    commit: str
    algo: str
    tag: str | None
    seed: int

    @property
    def variant(self) -> str:
        return self.algo + (f"-{self.tag}" if self.tag else "")

    @property
    def group(self) -> tuple[str, str, str, str]:
        return (self.task, self.device, self.commit, self.model)

    @property
    def metrics(self) -> dict[str, Any]:
        return self.record["metrics"]

    def metric(self, name: str) -> float:
        """The metric, NaN when the run did not record it (older runs), recorded null, or a
        non-finite number (NaN/Infinity in a hand-edited file count as null: never as a value)."""
        value = self.metrics.get(name)
        return math.nan if value is None or not math.isfinite(value) else float(value)


# A group of comparable runs: (task, device, commit, model).
GroupKey = tuple[str, str, str, str]
Groups = dict[GroupKey, dict[str, list[Run]]]


# ----------------------------------------------------------------------------- reading and checking


def find_results(paths: Iterable[str | Path]) -> list[Path]:
    """Every results.json under `paths` (files or folders), each once: paths are resolved, so
    overlapping arguments (``sw`` and ``sw/twitter_to_uci``) or a link to a run count it once."""
    found: dict[Path, None] = {}
    for p in map(Path, paths):
        if p.is_file():
            found[p.resolve()] = None
        elif p.is_dir():
            for f in sorted(p.rglob(RESULTS_FILE)):
                if f.is_file():  # a folder named results.json is no record
                    found[f.resolve()] = None
        else:
            from siftkit.core.paths import loop_note

            raise ValueError(f"no results file or folder at {p}{loop_note(p)}")
    return list(found)


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def load_run(path: str | Path) -> Run:
    """Read and check one results.json; a ValueError names the file and the bad field."""
    path = Path(path)
    record = load_results(path)
    return run_from_record(record, path / RESULTS_FILE if path.is_dir() else path)


def load_runs(paths: Iterable[str | Path]) -> list[Run]:
    files = find_results(paths)
    if not files:
        raise ValueError("no results.json files found in " + ", ".join(map(str, paths)))
    return [load_run(f) for f in files]


def run_from_record(record: dict[str, Any], path: Path | None = None) -> Run:
    """Check a loaded record (the errors name `path`, or "a results record" without one) and
    read the keys it is grouped by."""
    where = path or "a results record"
    _check_sections(record, where)
    cfg, meta = record["config"], record["meta"]
    _check_texts(cfg, meta, where)
    task = _task(cfg, where)
    _check_config(cfg, where)
    _check_metric_values(record["metrics"], where)
    if not all(isinstance(row, dict) for row in record["history"]):
        raise ValueError(f"{where}: 'history' must be a list of objects (one per logged step)")
    _check_extra(cfg, where)
    _check_reported_metric(record["metrics"], task, where)
    return Run(
        path=path,
        record=record,
        task=task,
        model=cfg.get("model_name") or DEFAULT_MODEL_NAME,
        device=_device(meta),
        commit=meta.get("git_commit") or "unknown",
        algo=str(cfg["algo"]),
        tag=(cfg.get("extra") or {}).get("tag") or None,
        seed=cfg["seed"],
    )


def _check_sections(record: Mapping[str, Any], where) -> None:
    for section, kind in (("config", dict), ("metrics", dict), ("meta", dict), ("history", list)):
        if not isinstance(record[section], kind):
            raise ValueError(f"{where}: {section!r} is a {type(record[section]).__name__}, not a {kind.__name__}")


# The fields a summary groups and names runs by: text (or null where a default applies).
_TEXT_FIELDS = (
    ("config", "task"),
    ("config", "model_name"),
    ("config", "algo"),
    ("meta", "git_commit"),
    ("meta", "device_name"),
    ("meta", "device"),
    ("meta", "mixed_precision"),
)


def _check_texts(cfg: Mapping[str, Any], meta: Mapping[str, Any], where) -> None:
    for section, name in _TEXT_FIELDS:
        value = (cfg if section == "config" else meta).get(name)
        if value is not None and not isinstance(value, str):
            raise ValueError(
                f"{where}: {section}.{name} is {_shown(value)}, not text; a "
                f"siftkit record writes it as text: fix the file, or move it out of the summarized "
                f"folders"
            )


def _shown(value: Any) -> str:
    """A value as the JSON file holds it, cut short, with its JSON type: '"0.001" (text)', 'null'."""
    import json

    if value is None:
        return "null"
    text = json.dumps(value, ensure_ascii=False, default=str)
    text = text if len(text) <= 60 else text[:60] + "..."
    kind = {bool: "true/false", int: "a number", float: "a number", str: "text", list: "a list", dict: "an object"}.get(
        type(value), type(value).__name__
    )
    return f"{text} ({kind})"


def _task(cfg: Mapping[str, Any], where) -> str:
    task = cfg.get("task")
    if task == "shift":
        task = register_spec_task(cfg.get("shift"), where)
    if task not in TASK_METRICS:
        raise ValueError(f"{where}: config task {task!r} is not one of {sorted(TASK_METRICS)} or 'shift'")
    return task


def _check_config(cfg: Mapping[str, Any], where) -> None:
    for name in ("algo", "seed"):
        if name not in cfg:
            raise ValueError(f"{where}: config has no {name!r}")
    if not isinstance(cfg["seed"], int) or isinstance(cfg["seed"], bool):
        raise ValueError(f"{where}: config seed {cfg['seed']!r} is not an integer")


def _check_metric_values(metrics: Mapping[str, Any], where) -> None:
    for name, value in metrics.items():
        if value is not None and not is_number(value):
            raise ValueError(f"{where}: metric {name!r} is {value!r}, not a number")


def _check_extra(cfg: Mapping[str, Any], where) -> None:
    """``extra``'s sweep notes decide which grid point a run is and how it sorts: a grid point of
    the wrong type would silently leave the arm or reorder its tie-break, so each is checked."""
    extra = cfg.get("extra") or {}
    if not isinstance(extra, dict) or not isinstance(extra.get("tag") or "", str):
        raise ValueError(f"{where}: config extra {extra!r} is not an object with a text 'tag'")
    expected = {
        "arm": (str, "text (the arm's name)"),
        "select_on": (str, "text (a metric name)"),
        "grid": (dict, "an object of field: value (the grid point)"),
        "grid_index": (int, "a whole number (the point's place in grid order)"),
        "chosen": (bool, "true or false"),
        "at_chosen": (dict, "an object with the arm it was run at"),
    }
    for name, (kind, what) in expected.items():
        if name not in extra:
            continue
        value = extra[name]
        bad = (
            not isinstance(value, kind)
            or (kind is int and isinstance(value, bool))
            or (kind is int and value < 0)
            or (kind is dict and not value)
        )
        if bad:
            raise ValueError(
                f"{where}: config extra.{name} is {_shown(value)}, but must be "
                f"{what}, as the sweep writes it; fix the file, or move it out of the summarized folders"
            )
    if "arm" in extra and "grid" not in extra and "at_chosen" not in extra:
        raise ValueError(
            f"{where}: config extra names the arm {extra['arm']!r} but has no grid point (extra.grid); "
            f"fix the file, or move it out of the summarized folders"
        )


def _check_reported_metric(metrics: Mapping[str, Any], task: str, where) -> None:
    main = PAPER_METRIC[task]
    if metrics.get(main) is None or not math.isfinite(metrics[main]):
        what = "missing" if main not in metrics else "null" if metrics[main] is None else repr(metrics[main])
        raise ValueError(
            f"{where}: metric {main!r} is {what}; the run has no result to compare "
            f"(rerun it, or move the file out of the summarized folders)"
        )


def _device(meta: Mapping[str, Any]) -> str:
    device = meta.get("device_name") or meta.get("device") or "cpu"
    if meta.get("mixed_precision", "no") not in ("no", None):
        device += f" {meta['mixed_precision']}"
    return device


def register_spec_task(spec: Any, path) -> str:
    """The group name of a shift spec's runs, ``shift:<name>@<sha256[:12]>`` (runs of one spec
    are compared, runs of two specs or two versions of one never), with its metrics entered in
    the per-task tables: the reported metric is the first evaluation set's accuracy, the
    selection metric the last validated stage's own (none: the reported one is not chosen on)."""
    from siftkit.data.shift_spec import parse_spec

    try:
        parsed = parse_spec(spec)
    except ValueError as exc:
        raise ValueError(f"{path}: config shift is not a valid spec: {exc}") from None
    task = f"shift:{parsed.name}@{parsed.digest[:12]}"
    validated = [s for s in parsed.stages if s.validation is not None]
    reported = [f"{e.name}_accuracy" for e in parsed.evals]
    val = f"{validated[-1].name}_val_{validated[-1].val_metric}" if validated else None
    PAPER_METRIC.setdefault(task, reported[0])
    TASK_METRICS.setdefault(
        task, tuple(reported + [f"{e.name}_macro_f1" for e in parsed.evals] + ([val] if val else []))
    )
    MAIN_EVAL.setdefault(task, parsed.evals[0].name)
    if val:
        SELECTION_METRIC.setdefault(task, val)
        DEFAULT_SELECT_ON.setdefault(task, val)
    return task


# ----------------------------------------------------------------------------- grouping


# A WiSE-FT run's twin (its fine-tuned model, alpha = 1) is named by the run's tag with this suffix
# (``wise`` -> ``wise_alpha1``, ``wise__uci_learning_rate0.0001`` -> ``wise_alpha1__uci_learning_rate0.0001``).
TWIN_SUFFIX = "_alpha1"
# WiSE-FT's settings; its twin has them at their defaults (it is the run without WiSE-FT).
WISE_FT_FIELDS = ("wise_ft", "wise_ft_alphas", "wise_ft_scope")


def _twin_name(name: str | None) -> str:
    base, sep, point = (name or "").partition("__")
    return base + TWIN_SUFFIX + sep + point if base else TWIN_SUFFIX.lstrip("_") + sep + point


def finetuned_twin(run: Run) -> Run | None:
    """A WiSE-FT run read as the fine-tuned run it contains (alpha = 1), or None for any other run.

    Its metrics are the run's with the last stage's replaced by ``wise_ft.finetuned`` (the
    evaluation at the end of training, before any interpolation) and without ``wise_ft_alpha``;
    its config has WiSE-FT's fields at their defaults and the tag (and sweep arm) with
    `TWIN_SUFFIX`; its history is the run's (WiSE-FT acts after training)."""
    wise = run.record.get("wise_ft")
    if not isinstance(wise, dict) or not isinstance(wise.get("finetuned"), dict):
        return None
    defaults = config_defaults()
    cfg = {**run.record["config"], **{n: defaults[n] for n in WISE_FT_FIELDS}}
    extra = dict(cfg.get("extra") or {})
    extra["tag"] = _twin_name(extra.get("tag"))
    if extra.get("arm"):
        extra["arm"] = str(extra["arm"]) + TWIN_SUFFIX
    cfg["extra"] = extra
    metrics = {k: v for k, v in run.metrics.items() if k != "wise_ft_alpha"}
    metrics.update(wise["finetuned"])
    record = {k: v for k, v in run.record.items() if k != "wise_ft"}
    record.update(config=cfg, metrics=metrics, twin_of=run.variant)
    return Run(
        path=run.path,
        record=record,
        task=run.task,
        model=run.model,
        device=run.device,
        commit=run.commit,
        algo=run.algo,
        tag=extra["tag"],
        seed=run.seed,
    )


def with_twins(runs: Iterable[Run]) -> list[Run]:
    """`runs`, each WiSE-FT run followed by its `finetuned_twin`."""
    out = []
    for run in runs:
        out.append(run)
        twin = finetuned_twin(run)
        if twin is not None:
            out.append(twin)
    return out


def group_runs(runs: Iterable[Run]) -> Groups:
    """{(task, device, commit, model): {variant: [runs by seed]}}, WiSE-FT runs with their twins
    (`finetuned_twin`).

    Two runs of the same variant and seed in one group are refused, naming both files: they
    would count one seed twice (a copied run folder, or the same run reached twice).
    """
    groups: Groups = defaultdict(lambda: defaultdict(list))
    seen: dict[tuple, Run] = {}
    for run in with_twins(runs):
        key = (*run.group, run.variant, run.seed)
        if key in seen:
            raise ValueError(
                f"two runs of variant {run.variant!r} with seed {run.seed} in one comparison "
                f"(task {run.task}, device {run.device}, code {run.commit}): {seen[key].path} and {run.path}; "
                f"a copied run folder? Move one out of the summarized folders"
            )
        seen[key] = run
        groups[run.group][run.variant].append(run)
    for variants in groups.values():
        for recs in variants.values():
            recs.sort(key=lambda r: r.seed)
            _check_same_settings(recs)
    return {k: dict(v) for k, v in sorted(groups.items())}


# Fields that cannot change a run's result, so runs of one variant may differ in them (besides
# the seed, which pairs runs across variants): where the files go, how often the run logs and
# checkpoints, the evaluation batch size, the device flag and the CPU threads (which change the
# last bits of a sum, as another machine does), and the data folder's name (where the records
# have them, the data files' sha256 decide instead; see `settings_differences`).
SETTINGS_THAT_MAY_DIFFER = frozenset(
    {
        "seed",
        "output_dir",
        "overwrite",
        "resume",
        "save_steps",
        "save_model",
        "data_dir",
        "stage_cache_dir",
        "logging_steps",
        "per_device_eval_batch_size",
        "cpu",
        "report_to",
        "num_threads",
    }
)


def config_defaults() -> dict[str, Any]:
    """Every RunConfig field's default: what a record written before the field existed ran with."""
    import dataclasses

    from siftkit.run.config import RunConfig

    return {
        f.name: f.default if f.default is not dataclasses.MISSING else f.default_factory()
        for f in dataclasses.fields(RunConfig)
    }


def recorded_setting(cfg: Mapping[str, Any], name: str, defaults: Mapping[str, Any]) -> Any:
    """A recorded setting; a key an older record lacks counts as the default."""
    if name == "extra":
        return (cfg.get("extra") or {}).get("tag") or None  # free-form notes besides the tag
    return cfg.get(name, defaults.get(name))


def settings_differences(a: Run, b: Run) -> list[str]:
    """The fields (and data files) in which two runs of one variant differ, besides the seed
    and the settings that cannot change a result."""
    defaults = config_defaults()
    ca, cb = a.record["config"], b.record["config"]
    names = sorted((set(ca) | set(cb) | set(defaults)) - SETTINGS_THAT_MAY_DIFFER)
    diff = [n for n in names if recorded_setting(ca, n, defaults) != recorded_setting(cb, n, defaults)]
    fa, fb = a.record["meta"].get("data_files"), b.record["meta"].get("data_files")
    if isinstance(fa, dict) and isinstance(fb, dict):
        diff += [f"data file {rel}" for rel in sorted(set(fa) | set(fb)) if fa.get(rel) != fb.get(rel)]
    return diff


def _check_same_settings(runs: Sequence[Run]) -> None:
    """Runs of one variant are seeds of one setting: pooling two settings into one mean and
    std (an untagged lr 0.05 run beside lr 2e-5 ones) would report a spread that is not the
    seed-to-seed one. Refused, naming the fields and two files."""
    defaults = config_defaults()
    first = runs[0]
    for run in runs[1:]:
        diff = settings_differences(first, run)
        if not diff:
            continue

        def shown(r: Run, diff: list[str] = diff) -> str:  # bound now: the loop's diff when it raised
            return ", ".join(
                f"{n}={recorded_setting(r.record['config'], n, defaults)!r}"
                for n in diff
                if not n.startswith("data file ")
            )

        raise ValueError(
            f"runs of variant {run.variant!r} (task {run.task}, device {run.device}, code {run.commit}) differ in "
            f"{', '.join(diff)}: {first.path} ({shown(first) or 'its data'}) and {run.path} ({shown(run) or 'its data'}); "
            f"runs of one variant may differ only in the seed (and where their files go): give each setting its "
            f"own tag (sweep --tag, or extra: {{tag: ...}}), or move one out of the summarized folders"
        )


# ----------------------------------------------------------------------------- a group's runs


def short_commit(commit: str) -> str:
    sha, plus, rest = commit.partition("+")
    return (sha[:8] if re.fullmatch(r"[0-9a-f]{40}", sha) else sha) + plus + rest


def group_fields(key: tuple[str, str, str, str]) -> dict[str, str]:
    """The columns that name a group in every table over groups."""
    task, device, commit, model = key
    return {"task": task, "device": device, "code": short_commit(commit), "model": model}


def per_seed(runs: Sequence[Run], metric: str) -> dict[int, float]:
    return {r.seed: r.metric(metric) for r in runs}


def run_extra(run: Run) -> dict[str, Any]:
    """The sweep's notes on a run (``config.extra``: tag, arm, grid point, ...)."""
    return run.record["config"].get("extra") or {}
