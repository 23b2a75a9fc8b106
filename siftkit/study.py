"""A study's runs, read from results.json files, checked, de-duplicated and grouped, and the
statistics that `siftkit.summarize` (tables) and `siftkit.summary_figures` (figures) share.

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

from siftkit.paper import PAPER_METRIC, TASK_METRICS
from siftkit.results import RESULTS_FILE, load_results

CONFIDENCE = 0.95
# The held-out evaluation set whose smoothness the summary plots, per protocol.
MAIN_EVAL = {"twitter_to_uci": "uci_test", "cola": "out_of_domain_dev"}
# The metric that chooses among plain's tagged settings (P1's learning rates): never the
# reported metric, so the choice does not peek at the result it reports.
SELECTION_METRIC = {"twitter_to_uci": "twitter_val_accuracy", "cola": "in_domain_dev_mcc"}
# A size-curve run's tag: ``curve_eps<E>``; ``curve_eps<E>_<kind>`` is a control at that size.
CURVE_TAG = re.compile(r"^curve_eps(?P<eps>[0-9.eE+-]+)$")
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
    if task not in TASK_METRICS:
        raise ValueError(f"{path}: config task {task!r} is not one of {sorted(TASK_METRICS)}")
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

    from siftkit.config import RunConfig

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
    """The E of a size-curve tag ``curve_eps<E>``; None for any other tag."""
    m = CURVE_TAG.match(tag or "")
    if not m:
        return None
    try:
        return float(m.group("eps"))
    except ValueError:
        return None


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
    return ({"plain": 0, "smart": 1, "sift": 2}.get(algo, 3), eps is not None, eps or 0.0, control is not None, variant)


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
                         "eps": eps, "size": relative_size(r) if r.algo != "plain" else math.nan,
                         "reg_share": regularizer_share(r) if r.algo != "plain" else math.nan,
                         **{k: (math.nan if v is None else float(v)) for k, v in r.metrics.items()}})
    return pd.DataFrame(rows)


def variant_sizes(variants: Mapping[str, Sequence[Run]]) -> dict[str, float]:
    """Mean measured relative size over seeds, per regularized variant."""
    return {v: mean_ci([relative_size(r) for r in recs])["mean"]
            for v, recs in variants.items() if recs[0].algo != "plain"}


def matched_size_pairs(variants: Mapping[str, Sequence[Run]], metric: str) -> list[dict[str, Any]]:
    """For each SiFT size-curve variant, the SMART size-curve variant nearest in measured mean
    relative size (distance |log size_SiFT - log size_SMART|), and the seed-paired SiFT − SMART
    difference in `metric` with its t interval. ``matched`` is False when the two sizes differ
    by more than MATCH_FACTOR."""
    sizes = variant_sizes(variants)
    curve = {algo: {v: sizes[v] for v, recs in variants.items()
                    if recs[0].algo == algo and curve_eps(recs[0].tag) is not None and sizes[v] > 0}
             for algo in ("smart", "sift")}
    pairs = []
    for sift_v, sift_size in sorted(curve["sift"].items(), key=lambda kv: kv[1]):
        if not curve["smart"]:
            break
        smart_v = min(curve["smart"], key=lambda v: (abs(math.log(curve["smart"][v] / sift_size)), v))
        ratio = sift_size / curve["smart"][smart_v]
        d = paired_difference(per_seed(variants[sift_v], metric), per_seed(variants[smart_v], metric))
        pairs.append({"sift": sift_v, "smart": smart_v, "sift_size": sift_size, "smart_size": curve["smart"][smart_v],
                      "ratio": ratio, "matched": 1 / MATCH_FACTOR <= ratio <= MATCH_FACTOR, **d})
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
    in_domain_dev MCC)."""
    plains = [v for v, recs in variants.items() if recs[0].algo == "plain"]
    if "plain" in plains or not plains:
        return "plain" if plains else None
    metric = SELECTION_METRIC[task]
    return max(sorted(plains), key=lambda v: _finite(mean_ci([r.metric(metric) for r in variants[v]])["mean"]))


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
MATCHED_COLUMNS = ("task", "device", "code", "model", "sift", "sift_size", "smart", "smart_size", "ratio", "matched",
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
    """One row per matched-size pair (`matched_size_pairs`) in each group, then the group's
    pooled verdict (`pooled_difference`) as a row whose ``sift`` is ``pooled``."""
    rows = []
    for key, variants in groups.items():
        metric = PAPER_METRIC[key[0]]
        pairs = matched_size_pairs(variants, metric)
        pooled = pooled_difference(variants, pairs, metric)
        for p in pairs:
            rows.append({**_where(key), "sift": p["sift"], "sift_size": p["sift_size"], "smart": p["smart"],
                         "smart_size": p["smart_size"], "ratio": p["ratio"], "matched": p["matched"],
                         "pooled": p["sift"] in pooled.get("pooled_pairs", ()), "n": p["n"],
                         "mean": p["mean"], "ci_low": p["low"], "ci_high": p["high"],
                         "reading": reading(p) if p["matched"] else "not matched"})
        if pairs:
            rows.append({**_where(key), "sift": "pooled", "smart": f"{pooled['pairs']} matched pair(s)",
                         "n": pooled["n"], "mean": pooled["mean"], "ci_low": pooled["low"], "ci_high": pooled["high"],
                         "reading": reading(pooled)})
    return rows
