"""A study's runs, read from results.json files, checked, de-duplicated and grouped, and the
statistics that `siftkit.study.summarize` (tables) and `siftkit.study.figures` (figures) share.

Comparable runs: two runs are only ever compared (in a table row, a paired difference or one
figure) when they share the task, the model, the device (``meta.device_name`` plus the mixed
precision) and the code (``meta.git_commit``, matched as an exact string: ``abc+dirty`` is not
the same code as ``abc``, and two ``abc+dirty`` runs are taken to be the same code, since the
record cannot tell their local changes apart). `group_runs` builds those groups.

Inside a group a run is named by its *variant*: the algorithm plus the sweep's tag
(``config.extra.tag``), e.g. ``smart-mtdnn_no_bregman``; its seed pairs it with the other
variants' runs of the same seed (same data split and head initialisation).

Intervals are two-sided 95% Student t intervals from `scipy.stats`.
"""

from __future__ import annotations

import math
import re
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from scipy import stats as _stats

from siftkit.study.paper import PAPER_METRIC, TASK_METRICS
from siftkit.run.records import RESULTS_FILE, load_results

CONFIDENCE = 0.95
# The held-out evaluation set whose smoothness the summary plots, per protocol.
MAIN_EVAL = {"twitter_to_uci": "uci_test", "cola": "out_of_domain_dev"}
# The metric that chooses among plain's tagged settings (P1's learning rates): never the
# reported metric, so the choice does not peek at the result it reports.
SELECTION_METRIC = {"twitter_to_uci": "twitter_val_accuracy", "cola": "in_domain_dev_mcc"}
# A size-curve run's tag: ``curve_eps<E>``, or ``<family>_curve_eps<E>`` for another curve of the
# same sizes (``tuned_curve_eps0.3``: the curve re-run at another setting); the family keeps two
# curves of one group apart. ``curve_eps<E>_<kind>`` is a control at that size.
CURVE_TAG = re.compile(r"^(?:(?P<family>[A-Za-z0-9]+(?:_[A-Za-z0-9]+)*?)_)?curve_eps(?P<eps>[0-9.eE+-]+)$")
CURVE_CONTROL_TAG = re.compile(r"^curve_eps(?P<eps>[0-9.eE+-]+?)_(?P<kind>.+)$")
SMOOTHNESS_METRIC = re.compile(r"^(?P<eval>.+)_smoothness_(?P<probe>.+)$")
SOURCE_METRIC = re.compile(r"^uci_test_accuracy_(?P<source>[a-z]+)$")
# Matched-size pairs whose measured sizes differ by more than this factor are listed but not
# pooled: the curve does not reach a comparable size there.
MATCH_FACTOR = 3.0


# ----------------------------------------------------------------------------- runs


@dataclass(frozen=True)
class Run:
    """One finished run: its file, its record and the keys the summary groups by."""

    path: Path
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
            raise ValueError(f"no results file or folder at {p}")
    return list(found)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def load_run(path: str | Path) -> Run:
    """Read and check one results.json; a ValueError names the file and the bad field."""
    path = Path(path)
    record = load_results(path)
    if path.is_dir():
        path = path / RESULTS_FILE
    for section, kind in (("config", dict), ("metrics", dict), ("meta", dict), ("history", list)):
        if not isinstance(record[section], kind):
            raise ValueError(f"{path}: {section!r} is a {type(record[section]).__name__}, not a {kind.__name__}")
    cfg, meta, metrics = record["config"], record["meta"], record["metrics"]
    task = cfg.get("task")
    if task == "shift":
        task = register_spec_task(cfg.get("shift"), path)
    if task not in TASK_METRICS:
        raise ValueError(f"{path}: config task {task!r} is not one of {sorted(TASK_METRICS)} or 'shift'")
    for name in ("algo", "seed"):
        if name not in cfg:
            raise ValueError(f"{path}: config has no {name!r}")
    if not isinstance(cfg["seed"], int) or isinstance(cfg["seed"], bool):
        raise ValueError(f"{path}: config seed {cfg['seed']!r} is not an integer")
    for name, value in metrics.items():
        if value is not None and not _number(value):
            raise ValueError(f"{path}: metric {name!r} is {value!r}, not a number")
    if not all(isinstance(row, dict) for row in record["history"]):
        raise ValueError(f"{path}: 'history' must be a list of objects (one per logged step)")
    extra = cfg.get("extra") or {}
    if not isinstance(extra, dict) or not isinstance(extra.get("tag") or "", str):
        raise ValueError(f"{path}: config extra {extra!r} is not an object with a text 'tag'")
    main = PAPER_METRIC[task]
    if metrics.get(main) is None or not math.isfinite(metrics[main]):
        what = "missing" if main not in metrics else "null" if metrics[main] is None else repr(metrics[main])
        raise ValueError(f"{path}: metric {main!r} is {what}; the run has no result to compare "
                         f"(rerun it, or move the file out of the summarized folders)")
    device = meta.get("device_name") or meta.get("device") or "cpu"
    if meta.get("mixed_precision", "no") not in ("no", None):
        device += f" {meta['mixed_precision']}"
    tag = extra.get("tag") or None
    return Run(path=path, record=record, task=task, model=cfg.get("model_name") or "all-MiniLM-L6-v2",
               device=device, commit=meta.get("git_commit") or "unknown", algo=str(cfg["algo"]),
               tag=tag, seed=cfg["seed"])


def register_spec_task(spec: Any, path: Path) -> str:
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
    TASK_METRICS.setdefault(task, tuple(reported + [f"{e.name}_macro_f1" for e in parsed.evals] + ([val] if val else [])))
    MAIN_EVAL.setdefault(task, parsed.evals[0].name)
    if val:
        SELECTION_METRIC.setdefault(task, val)
        DEFAULT_SELECT_ON.setdefault(task, val)
    return task


def load_runs(paths: Iterable[str | Path]) -> list[Run]:
    files = find_results(paths)
    if not files:
        raise ValueError("no results.json files found in " + ", ".join(map(str, paths)))
    return [load_run(f) for f in files]


Groups = dict[tuple[str, str, str, str], dict[str, list[Run]]]


def group_runs(runs: Iterable[Run]) -> Groups:
    """{(task, device, commit, model): {variant: [runs by seed]}}.

    Two runs of the same variant and seed in one group are refused, naming both files: they
    would count one seed twice (a copied run folder, or the same run reached twice).
    """
    groups: Groups = defaultdict(lambda: defaultdict(list))
    seen: dict[tuple, Run] = {}
    for run in runs:
        key = (*run.group, run.variant, run.seed)
        if key in seen:
            raise ValueError(
                f"two runs of variant {run.variant!r} with seed {run.seed} in one comparison "
                f"(task {run.task}, device {run.device}, code {run.commit}): {seen[key].path} and {run.path}; "
                f"a copied run folder? Move one out of the summarized folders")
        seen[key] = run
        groups[run.group][run.variant].append(run)
    for variants in groups.values():
        for recs in variants.values():
            recs.sort(key=lambda r: r.seed)
            _check_same_settings(recs)
    return {k: dict(v) for k, v in sorted(groups.items())}


# Fields that cannot change a run's result, so runs of one variant may differ in them (besides
# the seed, which pairs runs across variants): where the files go, how often the run logs and
# checkpoints, the evaluation batch size, the device flag, and the data folder's name (where
# the records have them, the data files' sha256 decide instead; see `_data_differs`).
SETTINGS_THAT_MAY_DIFFER = frozenset({
    "seed", "output_dir", "overwrite", "resume", "save_steps", "save_model", "data_dir", "stage_cache_dir",
    "logging_steps", "per_device_eval_batch_size", "cpu", "report_to"})


def _config_defaults() -> dict[str, Any]:
    import dataclasses

    from siftkit.run.config import RunConfig

    return {f.name: f.default if f.default is not dataclasses.MISSING else f.default_factory()
            for f in dataclasses.fields(RunConfig)}


def _setting(cfg: Mapping[str, Any], name: str, defaults: Mapping[str, Any]) -> Any:
    """A recorded setting; a key an older record lacks counts as the default."""
    if name == "extra":
        return (cfg.get("extra") or {}).get("tag") or None  # free-form notes besides the tag
    return cfg.get(name, defaults.get(name))


def settings_differences(a: Run, b: Run) -> list[str]:
    """The fields (and data files) in which two runs of one variant differ, besides the seed
    and the settings that cannot change a result."""
    defaults = _config_defaults()
    ca, cb = a.record["config"], b.record["config"]
    names = sorted((set(ca) | set(cb) | set(defaults)) - SETTINGS_THAT_MAY_DIFFER)
    diff = [n for n in names if _setting(ca, n, defaults) != _setting(cb, n, defaults)]
    fa, fb = a.record["meta"].get("data_files"), b.record["meta"].get("data_files")
    if isinstance(fa, dict) and isinstance(fb, dict):
        diff += [f"data file {rel}" for rel in sorted(set(fa) | set(fb)) if fa.get(rel) != fb.get(rel)]
    return diff


def _check_same_settings(runs: Sequence[Run]) -> None:
    """Runs of one variant are seeds of one setting: pooling two settings into one mean and
    std (an untagged lr 0.05 run beside lr 2e-5 ones) would report a spread that is not the
    seed-to-seed one. Refused, naming the fields and two files."""
    defaults = _config_defaults()
    first = runs[0]
    for run in runs[1:]:
        diff = settings_differences(first, run)
        if not diff:
            continue
        def shown(r: Run) -> str:
            return ", ".join(f"{n}={_setting(r.record['config'], n, defaults)!r}" for n in diff
                             if not n.startswith("data file "))
        raise ValueError(
            f"runs of variant {run.variant!r} (task {run.task}, device {run.device}, code {run.commit}) differ in "
            f"{', '.join(diff)}: {first.path} ({shown(first) or 'its data'}) and {run.path} ({shown(run) or 'its data'}); "
            f"runs of one variant may differ only in the seed (and where their files go): give each setting its "
            f"own tag (sweep --tag, or extra: {{tag: ...}}), or move one out of the summarized folders")


def short_commit(commit: str) -> str:
    sha, plus, rest = commit.partition("+")
    return (sha[:8] if re.fullmatch(r"[0-9a-f]{40}", sha) else sha) + plus + rest


# ----------------------------------------------------------------------------- statistics


def t_critical(df: int, confidence: float = CONFIDENCE) -> float:
    """Two-sided Student t critical value (scipy.stats.t), NaN without degrees of freedom."""
    return float(_stats.t.ppf(0.5 + confidence / 2, df)) if df >= 1 else math.nan


def mean_ci(values: Sequence[float], confidence: float = CONFIDENCE) -> dict[str, float]:
    """n, mean, sample std and the t interval of the mean; NaN where undefined."""
    xs = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    n = len(xs)
    if n == 0:
        return {"n": 0, "mean": math.nan, "std": math.nan, "low": math.nan, "high": math.nan}
    m = statistics.fmean(xs)
    if n == 1:
        return {"n": 1, "mean": m, "std": math.nan, "low": math.nan, "high": math.nan}
    sd = statistics.stdev(xs)
    if sd == 0:  # scipy returns NaN for a zero-width interval; the interval is the point
        return {"n": n, "mean": m, "std": 0.0, "low": m, "high": m}
    low, high = _stats.t.interval(confidence, n - 1, loc=m, scale=sd / math.sqrt(n))
    return {"n": n, "mean": m, "std": sd, "low": float(low), "high": float(high)}


def t_interval(values: Sequence[float]) -> tuple[float, float]:
    """(low, high) of `mean_ci`, the point itself for fewer than two values (seaborn's
    ``errorbar`` callable: no band where there is no interval)."""
    ci = mean_ci(values)
    return (ci["mean"], ci["mean"]) if math.isnan(ci["low"]) else (ci["low"], ci["high"])


def paired_difference(a: Mapping[int, float], b: Mapping[int, float]) -> dict[str, Any]:
    """Mean of a − b over the seeds both have (and both recorded), with its 95% t interval."""
    seeds = sorted(s for s in set(a) & set(b) if not (math.isnan(a[s]) or math.isnan(b[s])))
    out = mean_ci([a[s] - b[s] for s in seeds])
    return {**out, "seeds": seeds}


def reading(d: Mapping[str, Any]) -> str:
    """What an interval says, in words."""
    if d["n"] < 2 or math.isnan(d["low"]):
        return "too few seeds for an interval"
    if d["low"] > 0:
        return "positive (CI excludes 0)"
    if d["high"] < 0:
        return "negative (CI excludes 0)"
    return "no detectable difference (CI includes 0)"


# ----------------------------------------------------------------------------- per-run quantities


def _history_mean(run: Run, value) -> float:
    xs = [v for v in (value(row) for row in run.record["history"]) if _number(v) and math.isfinite(v)]
    return statistics.fmean(xs) if xs else math.nan


def relative_size(run: Run) -> float:
    """Measured mean per-token ||Delta_t|| / ||z_t||: the run's ``mean_relative_perturbation``,
    or, for runs recorded before that metric existed, the same mean over its history rows."""
    value = run.metrics.get("mean_relative_perturbation")
    if value is not None:
        return float(value)
    return _history_mean(run, lambda row: row.get("relative_perturbation"))


def regularizer_share(run: Run) -> float:
    """Mean over logged steps of adv_weight * R / loss (loss = the whole objective: task +
    adv_weight * R + bregman_weight * Bregman), i.e. R's share of what the optimizer minimised."""
    w = run.record["config"].get("adv_weight") or 0.0

    def share(row: Mapping[str, Any]) -> float | None:
        loss, r = row.get("loss"), row.get("adv_loss")
        return None if not (_number(loss) and _number(r)) or loss <= 0 else w * r / loss

    return _history_mean(run, share)


def activity(run: Run) -> dict[str, float]:
    """Mean over logged steps of weighted R / task loss and weighted Bregman / task loss."""
    cfg = run.record["config"]
    w, mu = cfg.get("adv_weight") or 0.0, cfg.get("bregman_weight") or 0.0

    def over_task(key: str, weight: float):
        def f(row):
            task, v = row.get("task_loss"), row.get(key)
            return None if not (_number(task) and _number(v)) or task <= 0 else weight * v / task
        return f

    return {"weighted_R_over_task": _history_mean(run, over_task("adv_loss", w)),
            "weighted_bregman_over_task": _history_mean(run, over_task("bregman_loss", mu))}


def curve_eps(tag: str | None) -> float | None:
    """The E of a size-curve tag ``curve_eps<E>`` or ``<family>_curve_eps<E>``; None for any other tag."""
    m = CURVE_TAG.match(tag or "")
    if not m:
        return None
    try:
        return float(m.group("eps"))
    except ValueError:
        return None


def curve_family(tag: str | None) -> str | None:
    """The family of a size-curve tag: ``""`` for ``curve_eps<E>``, ``tuned`` for
    ``tuned_curve_eps<E>``; None when the tag is no size-curve tag."""
    if curve_eps(tag) is None:
        return None
    return CURVE_TAG.match(tag).group("family") or ""


def point_kind(tag: str | None) -> str:
    """How a marked point is drawn: ``default`` (no tag), the control kind of a curve size
    (``curve_eps0.3_random`` -> ``random``), or the tag itself."""
    if not tag:
        return "default"
    m = CURVE_CONTROL_TAG.match(tag)
    return m.group("kind") if m else tag


def variant_order(variant: str) -> tuple:
    """Sort key: plain, SMART, SiFT; inside each the other variants by name, then the size
    curve by its E (numerically, so 1e-05 comes before 0.0001), each size's controls after it."""
    algo, _, tag = variant.partition("-")
    control = CURVE_CONTROL_TAG.match(tag)
    eps = curve_eps(tag) if control is None else curve_eps(f"curve_eps{control.group('eps')}")
    family = curve_family(tag) or ""  # one curve after the other, never interleaved by size
    return ({"plain": 0, "smart": 1, "sift": 2}.get(algo, 3), eps is not None, family, eps or 0.0, control is not None,
            variant)


def per_seed(runs: Sequence[Run], metric: str) -> dict[int, float]:
    return {r.seed: r.metric(metric) for r in runs}


# ----------------------------------------------------------------------------- study frames and tables


def runs_frame(variants: Mapping[str, Sequence[Run]]):
    """One row per run of a group: variant, algo, tag, seed, role (``line``: a size-curve run;
    ``band``: plain; ``point``: any other regularized run), eps (curve runs), size (measured
    relative perturbation), reg_share, and every metric the runs recorded."""
    import pandas as pd

    rows = []
    for variant, recs in variants.items():
        for r in recs:
            eps = curve_eps(r.tag)
            role = "band" if r.algo == "plain" else ("line" if eps is not None else "point")
            rows.append({"variant": variant, "algo": r.algo, "tag": r.tag or "", "seed": r.seed, "role": role,
                         "eps": eps, "family": curve_family(r.tag), "size": relative_size(r) if r.algo != "plain" else math.nan,
                         "reg_share": regularizer_share(r) if r.algo != "plain" else math.nan,
                         **{k: (math.nan if v is None else float(v)) for k, v in r.metrics.items()}})
    return pd.DataFrame(rows)


def variant_sizes(variants: Mapping[str, Sequence[Run]]) -> dict[str, float]:
    """Mean measured relative size over seeds, per regularized variant."""
    return {v: mean_ci([relative_size(r) for r in recs])["mean"]
            for v, recs in variants.items() if recs[0].algo != "plain"}


def curve_families(variants: Mapping[str, Sequence[Run]]) -> list[str]:
    """The size-curve families of a group (``""`` for ``curve_eps<E>``), sorted."""
    return sorted({f for recs in variants.values() if (f := curve_family(recs[0].tag)) is not None})


def matched_size_pairs(variants: Mapping[str, Sequence[Run]], metric: str,
                       family: str | None = None) -> list[dict[str, Any]]:
    """For each SiFT size-curve variant, the SMART size-curve variant of the same curve family
    nearest in measured mean relative size (distance |log size_SiFT - log size_SMART|), and the
    seed-paired SiFT − SMART difference in `metric` with its t interval. ``matched`` is False
    when the two sizes differ by more than MATCH_FACTOR. `family`: that curve only (None: every
    family, each paired within itself; a pair's ``family`` says which)."""
    families = curve_families(variants) if family is None else [family]
    return [p for f in families for p in _family_pairs(variants, metric, f)]


def _family_pairs(variants: Mapping[str, Sequence[Run]], metric: str, family: str) -> list[dict[str, Any]]:
    sizes = variant_sizes(variants)
    curve = {algo: {v: sizes[v] for v, recs in variants.items()
                    if recs[0].algo == algo and curve_family(recs[0].tag) == family and sizes[v] > 0}
             for algo in ("smart", "sift")}
    pairs = []
    for sift_v, sift_size in sorted(curve["sift"].items(), key=lambda kv: kv[1]):
        if not curve["smart"]:
            break
        smart_v = min(curve["smart"], key=lambda v: (abs(math.log(curve["smart"][v] / sift_size)), v))
        ratio = sift_size / curve["smart"][smart_v]
        d = paired_difference(per_seed(variants[sift_v], metric), per_seed(variants[smart_v], metric))
        pairs.append({"family": family, "sift": sift_v, "smart": smart_v, "sift_size": sift_size,
                      "smart_size": curve["smart"][smart_v], "ratio": ratio, "matched": 1 / MATCH_FACTOR <= ratio <= MATCH_FACTOR, **d})
    return pairs


def pooled_difference(variants: Mapping[str, Sequence[Run]], pairs: Sequence[Mapping[str, Any]],
                      metric: str) -> dict[str, Any]:
    """The pooled matched-size verdict: for each seed that every pooled pair has, the mean
    over pooled pairs of that seed's SiFT − SMART difference; then the mean of those per-seed
    means with a t interval over seeds. Pooling within a seed first keeps the interval honest:
    the pairs of one seed share its data split and are not independent. Pooled pairs: the
    matched pairs that have every seed any matched pair has (a pair with missing seeds is
    left out, ``pooled_pairs`` names the ones used), or all matched pairs when none is complete."""
    used = [p for p in pairs if p["matched"] and p["seeds"]]
    if not used:
        return {**mean_ci([]), "seeds": [], "pairs": 0}
    # A pair still missing seeds (a size whose runs are not all done) would cut every pair
    # down to its seeds: pool the pairs that have all the seeds any pair has, when there are such.
    everyone = set().union(*(p["seeds"] for p in used))
    complete = [p for p in used if set(p["seeds"]) == everyone]
    used = complete or used
    seeds = sorted(set.intersection(*(set(p["seeds"]) for p in used)))
    means = []
    for s in seeds:
        diffs = [variants[p["sift"]][_index(variants[p["sift"]], s)].metric(metric)
                 - variants[p["smart"]][_index(variants[p["smart"]], s)].metric(metric) for p in used]
        means.append(statistics.fmean(diffs))
    return {**mean_ci(means), "seeds": seeds, "pairs": len(used), "pooled_pairs": [p["sift"] for p in used]}


def _index(runs: Sequence[Run], seed: int) -> int:
    return next(i for i, r in enumerate(runs) if r.seed == seed)


def reference_plain(variants: Mapping[str, Sequence[Run]], task: str) -> str | None:
    """The plain variant the others are measured against: untagged ``plain`` when there is
    one, else the tagged plain with the best mean selection metric (P1's learning rate by
    in_domain_dev MCC). In a group with an equal-budget study, the reference arm's chosen point
    (`budget_reference`): its plain variants are grid points and controls, not settings to pick among."""
    plains = [v for v, recs in variants.items() if recs[0].algo == "plain"]
    if "plain" in plains or not plains:
        return "plain" if plains else None
    chosen = budget_reference(variants, task)
    if chosen:
        return chosen
    metric = SELECTION_METRIC[task]
    return max(sorted(plains), key=lambda v: _finite(mean_ci([r.metric(metric) for r in variants[v]])["mean"]))


def budget_reference(variants: Mapping[str, Sequence[Run]], task: str) -> str | None:
    """The chosen variant of the group's reference arm (`equal_budget`), None without one."""
    eb = equal_budget(variants, task)
    if not eb or not eb["reference"]:
        return None
    return next(a for a in eb["arms"] if a["arm"] == eb["reference"])["chosen"]


def _finite(x: float) -> float:
    return -math.inf if math.isnan(x) else x


def plain_for(variant: str, variants: Mapping[str, Sequence[Run]], task: str) -> str | None:
    """The plain variant to compare `variant` with: ``plain-<t>`` when the variant's tag is
    ``<t>`` or ends in ``_<t>`` (``smart-mtdnn_lr5e-05`` -> ``plain-lr5e-05``), else the reference."""
    tag = variant.partition("-")[2]
    for v, recs in variants.items():
        t = recs[0].tag
        if recs[0].algo == "plain" and t and tag and (tag == t or tag.endswith("_" + t)):
            return v
    return reference_plain(variants, task)


def regime_pairs(variants: Mapping[str, Sequence[Run]]) -> list[tuple[str, str, str]]:
    """(a, b, why) for the paper's-regime verdicts and their controls, where both exist.

    SiFT − SMART under the public codes' rule (against SMART without Bregman, as the seed
    code ran it, and with it); the same for the random-noise controls; each adversarial run
    against its own random-noise control (does the ascent add anything to the noise?); and at
    each curve size, the controls tagged ``curve_eps<E>_<kind>`` against that size's run."""
    have = set(variants)
    cand = [("sift-mtdnn", "smart-mtdnn_no_bregman", "paper's regime, seed code's SMART (no Bregman)"),
            ("sift-mtdnn", "smart-mtdnn", "paper's regime, SMART with Bregman"),
            ("sift-mtdnn_random", "smart-mtdnn_random", "random-noise controls at the mtdnn size"),
            ("smart-mtdnn_no_bregman", "smart-mtdnn_random", "SMART: ascent vs random noise"),
            ("sift-mtdnn", "sift-mtdnn_random", "SiFT: ascent vs random noise"),
            ("sift-seed_code", "smart-mtdnn_no_bregman", "seed code's SiFT vs its SMART"),
            ("sift-deberta", "sift", "DeBERTa's rule vs the default")]
    for v in sorted(have):
        algo, _, tag = v.partition("-")
        m = CURVE_CONTROL_TAG.match(tag)
        if m and f"{algo}-curve_eps{m.group('eps')}" in have:
            cand.append((v, f"{algo}-curve_eps{m.group('eps')}", f"{m.group('kind')} control at curve size {m.group('eps')}"))
    return [(a, b, why) for a, b, why in cand if a in have and b in have]


def smoothness_metrics(variants: Mapping[str, Sequence[Run]]) -> list[str]:
    """The ``<eval>_smoothness_<probe>`` metrics the group's runs recorded, sorted."""
    names = {k for recs in variants.values() for r in recs for k in r.metrics if SMOOTHNESS_METRIC.match(k)}
    return sorted(names)


def source_metrics(variants: Mapping[str, Sequence[Run]]) -> list[str]:
    """The per-source UCI accuracies (``uci_test_accuracy_<source>``) the group's runs recorded."""
    names = {k for recs in variants.values() for r in recs for k in r.metrics if SOURCE_METRIC.match(k)}
    return sorted(names)


# ----------------------------------------------------------------------------- tables over groups


# The columns of `regime_verdicts` and `matched_size_table` rows (a table with no rows keeps them).
REGIME_COLUMNS = ("task", "device", "code", "model", "difference", "what it tests", "metric", "n", "mean",
                  "ci_low", "ci_high", "reading")
MATCHED_COLUMNS = ("task", "device", "code", "model", "family", "sift", "sift_size", "smart", "smart_size", "ratio", "matched",
                   "pooled", "n", "mean", "ci_low", "ci_high", "reading")


def _where(key: tuple[str, str, str, str]) -> dict[str, str]:
    task, device, commit, model = key
    return {"task": task, "device": device, "code": short_commit(commit), "model": model}


def regime_verdicts(groups: Groups) -> list[dict[str, Any]]:
    """One row per paper's-regime comparison (`regime_pairs`) in each group: the seed-paired
    difference in the protocol's metric with its 95% t interval and its reading."""
    rows = []
    for key, variants in groups.items():
        metric = PAPER_METRIC[key[0]]
        for a, b, why in regime_pairs(variants):
            d = paired_difference(per_seed(variants[a], metric), per_seed(variants[b], metric))
            rows.append({**_where(key), "difference": f"{a} − {b}", "what it tests": why, "metric": metric,
                         "n": d["n"], "mean": d["mean"], "ci_low": d["low"], "ci_high": d["high"], "reading": reading(d)})
    return rows


def matched_size_table(groups: Groups) -> list[dict[str, Any]]:
    """One row per matched-size pair (`matched_size_pairs`) in each group and curve family, then
    that curve's pooled verdict (`pooled_difference`) as a row whose ``sift`` is ``pooled``
    (``family``: ``""`` for the ``curve_eps<E>`` curve, ``tuned`` for ``tuned_curve_eps<E>``)."""
    rows = []
    for key, variants in groups.items():
        for family in curve_families(variants):
            rows += _matched_rows(key, variants, family)
    return rows


def _matched_rows(key: tuple[str, str, str, str], variants: Mapping[str, Sequence[Run]],
                  family: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    metric = PAPER_METRIC[key[0]]
    pairs = matched_size_pairs(variants, metric, family)
    pooled = pooled_difference(variants, pairs, metric)
    for p in pairs:
        rows.append({**_where(key), "family": family, "sift": p["sift"], "sift_size": p["sift_size"], "smart": p["smart"],
                     "smart_size": p["smart_size"], "ratio": p["ratio"], "matched": p["matched"],
                     "pooled": p["sift"] in pooled.get("pooled_pairs", ()), "n": p["n"],
                     "mean": p["mean"], "ci_low": p["low"], "ci_high": p["high"],
                     "reading": reading(p) if p["matched"] else "not matched"})
    if pairs:
        rows.append({**_where(key), "family": family, "sift": "pooled", "smart": f"{pooled['pairs']} matched pair(s)",
                     "n": pooled["n"], "mean": pooled["mean"], "ci_low": pooled["low"], "ci_high": pooled["high"],
                     "reading": reading(pooled)})
    return rows


# ----------------------------------------------------------------------------- equal tuning budgets


# The validation metric a sweep's grid is chosen on when the plan names none, per protocol
# (P2's held-out UCI validation sentences, `uci_val_size`; P1's in-domain dev set).
DEFAULT_SELECT_ON = {"twitter_to_uci": "uci_val_accuracy", "cola": "in_domain_dev_mcc"}
# Evaluation sets a result is reported on (P2's zero-shot accuracy is measured on the UCI test
# sentences too): a metric of these never chooses anything.
TEST_EVALS = ("uci_test", "uci_zero_shot", "out_of_domain_dev")
# The control fields and their defaults. A record written before a field existed lacks it and
# ran with the default; `stage_cache_dir` is not here, as it cannot change a result.
CONTROL_DEFAULTS: dict[str, Any] = {"reinit_head": False, "adv_stages": "all", "label_smoothing": 0.0,
                                    "l2sp_weight": 0.0, "freeze_encoder": False, "early_stopping_patience": None}
# What setting each control away from its default tests, in one line (``{value}``: the run's
# value); ``noise`` is a regularized run with ``adv_steps 0``: random noise instead of the ascent.
CONTROL_TESTS: dict[str, str] = {
    "reinit_head": "confidence carried across the label flip: stage 2 starts from a fresh head, not stage 1's",
    "adv_stages": "where the regularizer acts: only in the {value} stage",
    "label_smoothing": "confidence: targets smoothed by {value}, a softer fit with no perturbation at all",
    "l2sp_weight": "staying near the pre-trained encoder (L2-SP, weight {value}) instead of smoothness",
    "freeze_encoder": "how much fine-tuning the encoder matters: a linear probe on the frozen encoder",
    "early_stopping_patience": "over-fitting in time: stage 2 stops after {value} epoch(s) without a validation gain",
    "noise": "whether the ascent's direction matters: random noise (adv_steps 0, σ {value}) in the same ball",
}
# The columns of `equal_budget_table` and `equal_budget_differences` rows.
EQUAL_BUDGET_COLUMNS = ("task", "device", "code", "model", "arm", "tuned", "select_on", "points", "selection_seeds",
                        "chosen", "chosen_variant", "n", "val_mean", "val_low", "val_high", "test_metric",
                        "test_mean", "test_low", "test_high", "gap", "note")
EQUAL_BUDGET_DIFF_COLUMNS = ("task", "device", "code", "model", "difference", "a_chosen", "b_chosen", "tuned",
                             "select_on", "metric", "n", "mean", "ci_low", "ci_high", "reading")


def is_test_metric(metric: str) -> bool:
    """True for a metric of a reported (test) evaluation set: nothing is chosen on one."""
    return "test" in metric.lower() or metric in PAPER_METRIC.values() or metric.startswith(TEST_EVALS)


def check_select_on(metric: str, task: str) -> str:
    """`metric` when it may choose among grid points of `task`, else a ValueError saying why."""
    if not re.fullmatch(r"[A-Za-z0-9_.]+", metric or ""):
        raise ValueError(f"--select-on must name a metric of results.json, e.g. {DEFAULT_SELECT_ON[task]}; "
                         f"got {metric!r}")
    if is_test_metric(metric):
        raise ValueError(f"--select-on {metric} is a test metric: nothing in siftkit selects on a test metric "
                         f"(the reported {PAPER_METRIC[task]} would then be chosen on itself); choose on a "
                         f"validation metric, e.g. {DEFAULT_SELECT_ON[task]} (the default for {task})")
    return metric


def format_grid_value(value: Any) -> str:
    """A grid value as it appears in a variant's tag: floats with ``:g`` (2e-05, 0.0001), booleans
    as ``true``/``false``, None as ``none``, anything else as its text."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    return "none" if value is None else str(value)


def grid_label(point: Mapping[str, Any]) -> str:
    """``learning_rate2e-05_adv_weight5``: each field of a grid point with its value, joined by ``_``."""
    return "_".join(f"{name}{format_grid_value(value)}" for name, value in point.items())


def select_point(values: Sequence[Mapping[int, float]]) -> dict[str, Any]:
    """The choice among grid points (the rule `sweep --then-seeds` and `summarize` share).

    ``values[i]`` is ``{seed: validation metric}`` of point i, in grid order. Points are compared
    over the *selection seeds*, the seeds every point has, so a point that ran extra seeds is not
    favoured; a point whose metric is missing (NaN) for any selection seed cannot be chosen. The
    highest mean wins; a tie goes to the first point in grid order. Returns ``seeds``, per-point
    ``stats`` (`mean_ci` over the selection seeds), per-point ``missing`` seeds and ``chosen`` (an
    index, or None when no point can be chosen)."""
    seeds = sorted(set.intersection(*(set(v) for v in values))) if values else []
    stats, missing = [], []
    for v in values:
        xs = [float(v[s]) for s in seeds]
        stats.append(mean_ci(xs))
        missing.append([s for s, x in zip(seeds, xs) if math.isnan(x)])
    choosable = [i for i, s in enumerate(stats) if seeds and not missing[i]]
    chosen = None
    for i in choosable:  # strictly greater: the first point in grid order keeps a tie
        if chosen is None or stats[i]["mean"] > stats[chosen]["mean"]:
            chosen = i
    return {"seeds": seeds, "stats": stats, "missing": missing, "chosen": chosen}


def run_extra(run: Run) -> dict[str, Any]:
    return run.record["config"].get("extra") or {}


def has_control(runs: Iterable[Run]) -> bool:
    """True when any run set a control field away from its default (missing = default)."""
    return any(r.record["config"].get(name, default) != default
               for r in runs for name, default in CONTROL_DEFAULTS.items())


def _grid_sort_key(point: Mapping[str, Any]) -> tuple:
    # Records without ``grid_index``: the points in order of their values (numbers numerically).
    return tuple((0, v, "") if _number(v) else (1, 0, format_grid_value(v)) for v in point.values())


def grid_arms(variants: Mapping[str, Sequence[Run]]) -> dict[str, list[str]]:
    """{arm: its grid-point variants in grid order} for the runs a sweep `--grid` planned
    (``extra.arm`` and ``extra.grid``); arms in the order of `variant_order`."""
    arms: dict[str, list[str]] = defaultdict(list)
    for variant, recs in variants.items():
        extra = run_extra(recs[0])
        if extra.get("arm") and isinstance(extra.get("grid"), dict):
            arms[str(extra["arm"])].append(variant)

    def order(v: str) -> tuple:
        extra = run_extra(variants[v][0])
        index = extra.get("grid_index")
        return (0, index, ()) if isinstance(index, int) else (1, 0, _grid_sort_key(extra["grid"]))

    return {arm: sorted(vs, key=order) for arm, vs in sorted(arms.items(), key=lambda kv: variant_order(kv[0]))}


def _tuned(variants: Mapping[str, Sequence[Run]], points: Sequence[str]) -> dict[str, list[Any]]:
    """{field: its values in grid order} over an arm's points."""
    tuned: dict[str, list[Any]] = {}
    for v in points:
        for name, value in run_extra(variants[v][0])["grid"].items():
            if value not in tuned.setdefault(name, []):
                tuned[name].append(value)
    return tuned


def tuned_text(tuned: Mapping[str, Sequence[Any]]) -> str:
    """``learning_rate ∈ {2e-05, 0.0001}; adv_weight ∈ {1, 5}``."""
    return "; ".join(f"{k} ∈ {{{', '.join(format_grid_value(x) for x in vs)}}}" for k, vs in tuned.items())


def _arm_select_on(arm: str, runs: Sequence[Run], task: str) -> str:
    names = sorted({str(run_extra(r).get("select_on") or DEFAULT_SELECT_ON[task]) for r in runs})
    if len(names) > 1:
        raise ValueError(f"arm {arm!r} was chosen on more than one metric ({', '.join(names)}) in one comparison "
                         f"(task {runs[0].task}, code {runs[0].commit}): one arm, one select-on metric; e.g. "
                         f"{runs[0].path} and {runs[-1].path}")
    try:
        return check_select_on(names[0], task)
    except ValueError as exc:
        raise ValueError(f"{runs[0].path}: extra.select_on: {exc}") from None


def arm_selection(arm: str, variants: Mapping[str, Sequence[Run]], points: Sequence[str], task: str) -> dict[str, Any]:
    """One arm's grid, its choice on the validation metric and the chosen point's numbers.

    ``points``: per point (grid order) its variant, label, grid, the select-on statistics over the
    selection seeds (of the grid runs: runs marked ``extra.chosen``, the `--then-seeds` runs at the
    chosen point, are left out of the choice) and the seeds missing that metric. ``chosen``: the chosen variant or None.
    ``val``/``test``: `mean_ci` of the select-on and the reported metric at the chosen point over
    *all* its seeds (extra `--then-seeds` runs included); ``gap`` = val mean − test mean;
    ``test_per_seed`` pairs the arm with others."""
    runs = [r for v in points for r in variants[v]]
    select_on, test_metric = _arm_select_on(arm, runs, task), PAPER_METRIC[task]
    # The choice is made on the grid's runs only, as the sweep made it before it ran the
    # chosen point's extra seeds: those runs can never change which point was chosen.
    choice = select_point([per_seed([r for r in variants[v] if not run_extra(r).get("chosen")], select_on)
                           for v in points])
    rows = [{"variant": v, "label": grid_label(run_extra(variants[v][0])["grid"]),
             "grid": dict(run_extra(variants[v][0])["grid"]), **choice["stats"][i], "missing": choice["missing"][i]}
            for i, v in enumerate(points)]
    chosen = None if choice["chosen"] is None else points[choice["chosen"]]
    chosen_runs = variants[chosen] if chosen else []
    val, test = _stat_of(chosen_runs, select_on), _stat_of(chosen_runs, test_metric)
    return {"arm": arm, "algo": runs[0].algo, "base_tag": arm.partition("-")[2], "select_on": select_on,
            "test_metric": test_metric, "tuned": _tuned(variants, points), "points": rows,
            "selection_seeds": choice["seeds"], "chosen": chosen,
            "chosen_label": rows[choice["chosen"]]["label"] if chosen else None,
            "val": val, "test": test, "gap": val["mean"] - test["mean"],
            "test_per_seed": per_seed(chosen_runs, test_metric), "control": has_control(runs)}


def _stat_of(runs: Sequence[Run], metric: str) -> dict[str, Any]:
    return {**mean_ci([r.metric(metric) for r in runs]), "seeds": sorted(r.seed for r in runs)}


def reference_arm(arms: Sequence[Mapping[str, Any]]) -> tuple[str | None, str]:
    """The arm every other is measured against: the plain arm with no control set (every
    control field at its default); of several, the one whose base tag sorts first. Returns the
    arm (or None) and a sentence saying which and why."""
    plain = sorted((a for a in arms if a["algo"] == "plain" and not a["control"]), key=lambda a: a["base_tag"])
    if not plain:
        return None, "No plain arm without a control: no reference arm, so no arm-against-reference differences."
    note = f"Reference arm: `{plain[0]['arm']}` (plain, every control field at its default)"
    if len(plain) > 1:
        others = ", ".join(f"`{a['arm']}`" for a in plain[1:])
        note += (f"; {others} also qualif{'ies' if len(plain) == 2 else 'y'}, and the first base tag in sort "
                 "order is used")
    return plain[0]["arm"], note + "."


def equal_budget(variants: Mapping[str, Sequence[Run]], task: str) -> dict[str, Any] | None:
    """A group's equal-budget comparison, or None when no run came from a `--grid` sweep:
    ``arms`` (`arm_selection` each), ``reference`` and its ``reference_note``, and
    ``differences``: seed-paired differences of the reported metric at the chosen points, every
    arm against the reference, then ``sift-<t>`` − ``smart-<t>`` for arms of one base tag."""
    points = grid_arms(variants)
    if not points:
        return None
    arms = [arm_selection(arm, variants, vs, task) for arm, vs in points.items()]
    by_name = {a["arm"]: a for a in arms}
    reference, note = reference_arm(arms)
    pairs = [(a["arm"], reference) for a in arms if reference and a["arm"] != reference]
    pairs += [(f"sift-{a['base_tag']}", a["arm"]) for a in arms
              if a["algo"] == "smart" and f"sift-{a['base_tag']}" in by_name]
    differences = []
    for a, b in pairs:
        d = paired_difference(by_name[a]["test_per_seed"], by_name[b]["test_per_seed"])
        differences.append({"a": by_name[a], "b": by_name[b], **d})
    return {"arms": arms, "reference": reference, "reference_note": note, "differences": differences}


def diff_tuned(a: Mapping[str, Any], b: Mapping[str, Any]) -> str:
    ta, tb = tuned_text(a["tuned"]), tuned_text(b["tuned"])
    return ta if ta == tb else f"{a['arm']}: {ta}; {b['arm']}: {tb}"


def equal_budget_table(groups: Groups) -> list[dict[str, Any]]:
    """The equal-budget table as data: one row per arm of every group that has `--grid` runs
    (`EQUAL_BUDGET_COLUMNS`; ``pd.DataFrame(rows, columns=EQUAL_BUDGET_COLUMNS)`` shows it)."""
    rows = []
    for key, variants in groups.items():
        eb = equal_budget(variants, key[0])
        for a in (eb or {}).get("arms", ()):
            rows.append({**_where(key), "arm": a["arm"], "tuned": tuned_text(a["tuned"]), "select_on": a["select_on"],
                         "points": len(a["points"]), "selection_seeds": a["selection_seeds"],
                         "chosen": a["chosen_label"], "chosen_variant": a["chosen"], "n": a["test"]["n"],
                         "val_mean": a["val"]["mean"], "val_low": a["val"]["low"], "val_high": a["val"]["high"],
                         "test_metric": a["test_metric"], "test_mean": a["test"]["mean"], "test_low": a["test"]["low"],
                         "test_high": a["test"]["high"], "gap": a["gap"], "note": choice_note(a)})
    return rows


def equal_budget_differences(groups: Groups) -> list[dict[str, Any]]:
    """The seed-paired differences at chosen points as data (`EQUAL_BUDGET_DIFF_COLUMNS`)."""
    rows = []
    for key, variants in groups.items():
        eb = equal_budget(variants, key[0])
        for d in (eb or {}).get("differences", ()):
            a, b = d["a"], d["b"]
            rows.append({**_where(key), "difference": f"{a['arm']} − {b['arm']}", "a_chosen": a["chosen_label"],
                         "b_chosen": b["chosen_label"], "tuned": diff_tuned(a, b),
                         "select_on": a["select_on"] if a["select_on"] == b["select_on"]
                         else f"{a['select_on']} / {b['select_on']}", "metric": a["test_metric"], "n": d["n"],
                         "mean": d["mean"], "ci_low": d["low"], "ci_high": d["high"], "reading": reading(d)})
    return rows


def choice_note(arm: Mapping[str, Any]) -> str:
    """Why points could not be chosen (missing validation metric), or that none could."""
    notes = [f"{p['label']}: {arm['select_on']} missing for seed(s) {', '.join(map(str, p['missing']))}, "
             "cannot be chosen" for p in arm["points"] if p["missing"]]
    if not arm["selection_seeds"]:
        notes.append("no seed is present at every grid point: nothing to choose on")
    elif arm["chosen"] is None:
        notes.append("no point can be chosen")
    return "; ".join(notes)
