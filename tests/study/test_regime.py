"""The regime study's analysis (siftkit.study: runs, matched, regime, summarize, figures) on
synthetic records written the way siftkit.run.training writes them: the size curve and its figure,
the matched-size pairing, the paper's-regime verdicts, grouping by device and code, duplicate
runs, and the summary's errors on bad files."""

from __future__ import annotations

import json
import math
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from siftkit.study.matched import matched_size_pairs, matched_size_table, pooled_difference
from siftkit.study.measured import relative_size, runs_frame, variant_sizes
from siftkit.study.regime import regime_pairs
from siftkit.study.runs import Run, group_runs, load_runs, per_seed
from siftkit.study.stats import paired_difference, t_critical
from siftkit.study.tags import curve_eps
from siftkit.study.summarize import brief, summarize

COMMIT = "a" * 40
# the regime study's spec, which names the comparisons it exists for (results/regime_study.yaml)
REGIME_SPEC = Path(__file__).resolve().parents[2] / "results" / "regime_study.yaml"
SIZES = {"smart": 2.0, "sift": 0.7}  # measured relative size per unit of E, per algorithm (synthetic)
CURVE_EPS = (1e-05, 0.0001, 0.001, 0.01, 0.1, 0.3)


def accuracy(algo: str, size: float, seed: int) -> float:
    """A made-up accuracy: a bump near size 0.05 (SiFT's higher), plus a seed offset and a
    per-(variant, seed) wobble so that paired intervals have width."""
    bump = (0.05 if algo == "sift" else 0.03) * math.exp(-(math.log10(max(size, 1e-9)) + 1.3) ** 2)
    wobble = 0.004 * math.sin(seed * 7.1 + size * 13 + (algo == "sift"))
    return 0.62 + bump + 0.01 * seed + wobble


def record(algo: str, seed: int, *, tag: str | None = None, size: float = 0.0, acc: float | None = None,
           device: str = "NVIDIA H200", commit: str = COMMIT, task: str = "twitter_to_uci", new_metrics=True,
           adv_weight: float = 1.0, bregman: float = 0.0) -> dict:
    """A results.json record as siftkit.run.training writes it (the fields the summary reads)."""
    acc = accuracy(algo, size, seed) if acc is None else acc
    rows = []
    for i, stage in enumerate(["twitter"] * 6 + ["uci"] * 4):
        r = 0.0 if algo == "plain" else 0.02 * size
        task_loss = 0.6 - 0.02 * i
        rows.append({"stage": stage, "step": i + 1, "global_step": i + 1, "task_loss": task_loss, "adv_loss": r,
                     "bregman_loss": 0.0, "loss": task_loss + adv_weight * r, "perturbation_norm": 9 * size,
                     "relative_perturbation": size * (1 + 0.01 * (i - 5))})
    metrics = {"uci_test_accuracy": acc, "uci_zero_shot_accuracy": 0.45, "twitter_val_accuracy": 0.87}
    if task == "cola":
        metrics = {"out_of_domain_dev_mcc": acc - 0.5, "in_domain_dev_mcc": acc - 0.4}
    if new_metrics:
        metrics["mean_relative_perturbation"] = float(np.mean([r["relative_perturbation"] for r in rows]))
        metrics["mean_perturbation_norm"] = 9 * size
        for ev in (("twitter_val", "uci_zero_shot", "uci_test") if task != "cola" else ("in_domain_dev", "out_of_domain_dev")):
            metrics[f"{ev}_smoothness_0.01"] = 1e-5 / (1 + 10 * size) * (1 + 0.01 * seed)
            metrics[f"{ev}_smoothness_0.3"] = 1e-2 / (1 + 10 * size) * (1 + 0.01 * seed)
        if task != "cola":
            for k, src in enumerate(("amazon", "imdb", "yelp")):
                metrics[f"uci_test_accuracy_{src}"] = acc + 0.01 * (k - 1)
                metrics[f"uci_zero_shot_accuracy_{src}"] = 0.45
    cfg = {"task": task, "algo": algo, "seed": seed, "model_name": None, "adv_rule": "projected",
           "adv_weight": adv_weight, "bregman_weight": bregman, "adv_steps": 1, "extra": {"tag": tag} if tag else {}}
    return {"config": cfg, "metrics": metrics, "history": rows, "stages": [],
            "meta": {"git_commit": commit, "device_name": device, "device": "cuda" if device != "cpu" else "cpu",
                     "mixed_precision": "no", "wall_time_s": 60.0, "skipped_adversarial_steps": 0}}


def write(root: Path, rec: dict) -> Path:
    cfg = rec["config"]
    tag = cfg["extra"].get("tag")
    d = root / cfg["task"] / (cfg["algo"] + (f"-{tag}" if tag else "")) / f"seed{cfg['seed']}"
    d.mkdir(parents=True, exist_ok=True)
    (d / "results.json").write_text(json.dumps(rec))
    return d / "results.json"


def regime_study(root: Path, seeds=range(1, 6), **kw) -> Path:
    """The issue's regime study, synthetic: plain, defaults, the mtdnn regime and its controls,
    the size curve with its controls, deberta, seed_code and the RNG control."""
    for seed in seeds:
        write(root, record("plain", seed, **kw))
        write(root, record("smart", seed, size=2e-5, bregman=1.0, **kw))
        write(root, record("sift", seed, size=7e-3, **kw))
        for algo, tag, size in (("smart", "mtdnn", 0.61), ("smart", "mtdnn_no_bregman", 0.61),
                                ("smart", "mtdnn_random", 0.6), ("sift", "mtdnn", 0.34), ("sift", "mtdnn_random", 0.33),
                                ("sift", "deberta", 9.6e-3), ("sift", "seed_code", 0.34)):
            write(root, record(algo, seed, tag=tag, size=size, **kw))
        write(root, record("smart", seed, tag="rng_control", size=2e-5, adv_weight=0.0, **kw))
        for algo in ("smart", "sift"):
            for eps in CURVE_EPS:
                write(root, record(algo, seed, tag=f"curve_eps{eps:g}", size=SIZES[algo] * eps, **kw))
            write(root, record(algo, seed, tag=f"curve_eps{CURVE_EPS[-1]:g}_random", size=SIZES[algo] * 0.3, **kw))
            write(root, record(algo, seed, tag=f"curve_eps{CURVE_EPS[-1]:g}_w10", size=SIZES[algo] * 0.3,
                               adv_weight=10.0, **kw))
    shutil.copy(REGIME_SPEC, root / REGIME_SPEC.name)  # beside its runs, as in results/
    return root


@pytest.fixture
def study_dir(tmp_path):
    return regime_study(tmp_path / "study")


def _groups(root):
    return group_runs(load_runs([root]))


# ----------------------------------------------------------------------------- statistics


def test_intervals_come_from_scipy_and_match_a_paired_t_test():
    rng = np.random.default_rng(0)
    a = dict(enumerate(rng.normal(0.7, 0.03, 5), start=1))
    b = {s: v - rng.normal(0.01, 0.02) for s, v in a.items()}
    d = paired_difference(a, b)
    ref = stats.ttest_rel(list(a.values()), list(b.values())).confidence_interval(0.95)
    assert d["n"] == 5 and d["mean"] == pytest.approx(np.mean([a[s] - b[s] for s in a]))
    assert (d["low"], d["high"]) == (pytest.approx(ref.low), pytest.approx(ref.high))
    # not rounded from a table: df=7 and df=45 would have been read from neighbouring rows
    assert t_critical(7) == pytest.approx(2.3646, abs=1e-4)
    assert t_critical(45) == pytest.approx(stats.t.ppf(0.975, 45)) != 2.021
    assert math.isnan(t_critical(0))


def test_paired_difference_uses_only_seeds_both_recorded():
    d = paired_difference({1: 0.7, 2: 0.6, 3: math.nan}, {1: 0.5, 2: 0.5, 3: 0.5, 4: 0.1})
    assert d["seeds"] == [1, 2] and d["mean"] == pytest.approx(0.15)


# ----------------------------------------------------------------------------- matched size


def test_matched_size_pairs_pick_the_nearest_smart_size_in_log_distance(study_dir):
    (key, variants), = _groups(study_dir).items()
    pairs = matched_size_pairs(variants, "uci_test_accuracy")
    sizes = variant_sizes(variants)
    smart_curve = {v: s for v, s in sizes.items() if v.startswith("smart-curve_eps") and "_" not in v[len("smart-curve_eps"):]}
    assert len(smart_curve) == len(CURVE_EPS) and len(pairs) == len(CURVE_EPS)
    for p in pairs:
        # an independent search: the SMART size whose log is nearest
        nearest = min(smart_curve, key=lambda v: abs(np.log10(smart_curve[v]) - np.log10(p["sift_size"])))
        assert p["smart"] == nearest
        assert p["sift_size"] == pytest.approx(sizes[p["sift"]])
    # SiFT at E=0.3 measures 0.21: nearest SMART is E=0.1 (0.2), not E=0.3 (0.6) of the same E
    top = next(p for p in pairs if p["sift"] == "sift-curve_eps0.3")
    assert top["smart"] == "smart-curve_eps0.1" and top["matched"]
    # the smallest SiFT size (7e-6) is nearest SMART's smallest (2e-5): within 3x, matched
    low = next(p for p in pairs if p["sift"] == "sift-curve_eps1e-05")
    assert low["smart"] == "smart-curve_eps1e-05" and low["ratio"] == pytest.approx(0.35, rel=1e-6)
    # each pair's interval is scipy's paired t interval over the same seeds
    a = per_seed(variants[top["sift"]], "uci_test_accuracy")
    b = per_seed(variants[top["smart"]], "uci_test_accuracy")
    ref = stats.ttest_rel([a[s] for s in sorted(a)], [b[s] for s in sorted(a)]).confidence_interval()
    assert (top["low"], top["high"]) == (pytest.approx(ref.low), pytest.approx(ref.high))


def test_pooled_verdict_averages_within_seed_then_over_seeds(study_dir):
    (key, variants), = _groups(study_dir).items()
    pairs = matched_size_pairs(variants, "uci_test_accuracy")
    pooled = pooled_difference(variants, pairs, "uci_test_accuracy")
    matched = [p for p in pairs if p["matched"]]
    per_seed = [np.mean([variants[p["sift"]][s - 1].metric("uci_test_accuracy")
                         - variants[p["smart"]][s - 1].metric("uci_test_accuracy") for p in matched]) for s in range(1, 6)]
    ref = stats.ttest_1samp(per_seed, 0).confidence_interval()
    assert pooled["pairs"] == len(matched) and pooled["seeds"] == [1, 2, 3, 4, 5]
    assert pooled["mean"] == pytest.approx(np.mean(per_seed))
    assert (pooled["low"], pooled["high"]) == (pytest.approx(ref.low), pytest.approx(ref.high))


def test_a_pair_far_apart_in_size_is_listed_but_not_pooled(tmp_path):
    root = tmp_path / "s"
    for seed in (1, 2, 3):
        write(root, record("smart", seed, tag="curve_eps1e-05", size=2e-5))
        write(root, record("sift", seed, tag="curve_eps0.3", size=0.2))
    (key, variants), = _groups(root).items()
    (pair,) = matched_size_pairs(variants, "uci_test_accuracy")
    assert not pair["matched"] and pair["ratio"] > 1e3
    assert pooled_difference(variants, [pair], "uci_test_accuracy")["pairs"] == 0
    text, _ = summarize([root])
    assert "not matched (sizes differ > 3×)" in text and "no pooled verdict" in text


# ----------------------------------------------------------------------------- grouping


def test_runs_of_two_devices_or_two_commits_are_never_paired(tmp_path):
    root = tmp_path / "mixed"
    for seed in (1, 2, 3):
        write(root / "h200", record("smart", seed, tag="mtdnn_no_bregman", size=0.6))
        write(root / "cpu", record("sift", seed, tag="mtdnn", size=0.34, device="cpu"))
        write(root / "other", record("sift", seed, tag="mtdnn", size=0.34, commit=COMMIT + "+dirty"))
        write(root / "h200", record("smart", seed, tag="curve_eps0.01", size=0.02))
        write(root / "cpu", record("sift", seed, tag="curve_eps0.03", size=0.021, device="cpu"))
    groups = _groups(root)
    assert len(groups) == 3
    for variants in groups.values():
        assert len({r.device for recs in variants.values() for r in recs}) == 1
        assert len({r.commit for recs in variants.values() for r in recs}) == 1
        assert regime_pairs(variants) == [] and matched_size_pairs(variants, "uci_test_accuracy") == []
    text, study = summarize([root])
    assert "− `smart-mtdnn_no_bregman`" not in text
    assert not any(r.regime or r.matched for r in study.groups.values())
    assert text.count("## P2") == 3 and "code `aaaaaaaa+dirty`" in text and "code `aaaaaaaa`" in text
    assert "Only runs of the same task, model, device and code" in text


def test_overlapping_paths_count_each_run_once(study_dir):
    once = load_runs([study_dir])
    twice = load_runs([study_dir, study_dir / "twitter_to_uci", study_dir / "twitter_to_uci" / "plain"])
    assert len(twice) == len(once)
    text, _ = summarize([study_dir, study_dir / "twitter_to_uci"])
    assert "| `plain` | 5 |" in text


def test_a_copied_run_folder_is_refused_naming_both_files(study_dir):
    src = study_dir / "twitter_to_uci" / "sift-mtdnn" / "seed2" / "results.json"
    copy = study_dir / "twitter_to_uci" / "sift-mtdnn" / "seed2 copy" / "results.json"
    copy.parent.mkdir()
    copy.write_text(src.read_text())
    with pytest.raises(ValueError) as info:
        summarize([study_dir])
    msg = str(info.value)
    assert "two runs of variant 'sift-mtdnn' with seed 2 in one comparison" in msg
    assert str(src.resolve()) in msg and str(copy.resolve()) in msg


# ----------------------------------------------------------------------------- SUMMARY.md


def test_summary_holds_every_regime_table(study_dir):
    text, data = summarize([study_dir])
    for heading in ("### The paper's claim in the paper's regime", "### SiFT against SMART at matched perturbation size",
                    "Held-out smoothness", "UCI accuracy per source"):
        assert heading in text
    (key, variants), = _groups(study_dir).items()
    a = per_seed(variants["sift-mtdnn"], "uci_test_accuracy")
    b = per_seed(variants["smart-mtdnn_no_bregman"], "uci_test_accuracy")
    diffs = [a[s] - b[s] for s in range(1, 6)]
    ref = stats.ttest_1samp(diffs, 0).confidence_interval()
    assert (f"| `sift-mtdnn` − `smart-mtdnn_no_bregman` | paper's regime, seed code's SMART (no Bregman) | 5 | "
            f"{np.mean(diffs):.3f} | [{ref.low:.3f}, {ref.high:.3f}] |") in text
    for row in ("| `sift-mtdnn` − `smart-mtdnn` |", "| `sift-mtdnn_random` − `smart-mtdnn_random` |",
                "| `smart-curve_eps0.3_random` − `smart-curve_eps0.3` | random control at curve size 0.3 |",
                "| `sift-curve_eps0.3_w10` − `sift-curve_eps0.3` | w10 control at curve size 0.3 |"):
        assert row in text
    assert "| `sift-curve_eps0.3` | 2.09e-01 | `smart-curve_eps0.1` | 1.99e-01 | 1.05 | 5 |" in text
    assert "**Pooled SiFT − SMART at matched size:" in text
    # the headline comparisons are repeated at the top, before the group's section
    glance = text.split("## P2")[0]
    assert "## SiFT against SMART at a glance" in glance
    assert "| twitter_to_uci, NVIDIA H200, `aaaaaaaa` | `sift-mtdnn` − `smart-mtdnn_no_bregman` | 5 |" in glance
    assert "SiFT − SMART at matched size, pooled over 6 matched pair(s) | 5 |" in glance
    amazon = np.mean([r.metric("uci_test_accuracy_amazon") for r in variants["sift-deberta"]])
    assert "| variant | n | amazon | imdb | yelp |" in text
    assert f"| `sift-deberta` | 5 | {amazon:.3f} ± " in text
    assert "| `sift-mtdnn` | 5 | " in text and "uci_test_smoothness_0.3" in text


def test_older_runs_without_the_new_metrics_show_a_dash(tmp_path):
    root = tmp_path / "old"
    for seed in (1, 2):
        for algo, size in (("plain", 0), ("smart", 2e-5), ("sift", 7e-3)):
            rec = record(algo, seed, size=size, new_metrics=False)
            write(root, rec)
        write(root, record("sift", seed, tag="curve_eps0.01", size=7e-3))  # a new run beside them
    text, _ = summarize([root])
    assert "| `smart` | 2 | – | – | – |" in text  # amazon / imdb / yelp of an old run
    # the measured size of an old run comes from its history
    assert "| `smart` | 1.99e-05 |" in text
    assert "| P2 Twitter → UCI (accuracy on 90% UCI) | NVIDIA H200 | `aaaaaaaa` |" in brief([root])


def test_p1_plain_learning_rate_is_chosen_by_in_domain_dev(tmp_path):
    root = tmp_path / "p1"
    for seed in (1, 2, 3):
        for lr, acc in (("2e-05", 0.70), ("5e-05", 0.80), ("0.0001", 0.75)):
            write(root, record("plain", seed, tag=f"lr{lr}", acc=acc + 0.01 * seed, task="cola"))
        for algo in ("smart", "sift"):
            write(root, record(algo, seed, tag="lr5e-05", size=1e-3, acc=0.8 + 0.02 * seed, task="cola"))
            write(root, record(algo, seed, tag="mtdnn_lr5e-05", size=0.5, acc=0.78 + 0.011 * seed, task="cola"))
    text, _ = summarize([root])
    assert "**`plain-lr5e-05`**" in text
    assert "| `sift-lr5e-05` − `smart-lr5e-05` |" in text and "| `sift-mtdnn_lr5e-05` − `smart-mtdnn_lr5e-05` |" in text
    assert "| `smart-mtdnn_lr5e-05` − `plain-lr5e-05` |" in text
    # "does it hurt in domain?": the same pairs in the selection metric, with the selection's bias said
    main, _, inside = text.partition("Paired differences in `in_domain_dev_mcc`")
    assert "Paired differences in `out_of_domain_dev_mcc`" in main
    assert inside.startswith(" (same seeds)") and "`plain-lr5e-05` is the best of 3 settings" in inside
    want = statistics.fmean((0.8 + 0.02 * s - 0.4) - (0.80 + 0.01 * s - 0.4) for s in (1, 2, 3))
    row = next(line for line in inside.splitlines() if line.startswith("| `smart-lr5e-05` − `plain-lr5e-05` |"))
    assert row.split(" | ")[2] == f"{want:.3f}"
    # README's brief row: the chosen plain and SMART / SiFT at its tag, not an empty row
    (line,) = [ln for ln in brief([root]).splitlines() if ln.startswith("| P1 CoLA")]
    assert "variants `*-lr5e-05`" in line and line.count("(n=3)") == 3


def test_the_scores_figure_is_the_same_on_every_regeneration(study_dir, tmp_path):
    from siftkit.study.figures import scores_figure

    (key, variants), = _groups(study_dir).items()
    np.random.seed(123)
    before = np.random.get_state()[1].copy()
    pngs = []
    for i in range(2):
        scores_figure(key, variants).savefig(tmp_path / f"{i}.png")
        pngs.append((tmp_path / f"{i}.png").read_bytes())
    assert pngs[0] == pngs[1]  # seaborn's jitter no longer differs from run to run
    assert (np.random.get_state()[1] == before).all()  # and the caller's RNG is left as it was


# ----------------------------------------------------------------------------- figures


def test_size_curve_draws_two_lines_a_plain_band_and_one_point_per_control(study_dir):
    from matplotlib.figure import Figure

    from siftkit.study.figures import size_curve

    (key, variants), = _groups(study_dir).items()
    frame = runs_frame(variants)
    ax = size_curve(frame, "uci_test_accuracy", ax=Figure().subplots())
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    curves = [lab for lab in labels if "size curve" in lab]
    assert curves == [f"SMART size curve, projected rule ({len(CURVE_EPS)} sizes, n=5)",
                      f"SiFT size curve, projected rule ({len(CURVE_EPS)} sizes, n=5)"]
    points = sorted(lab.rsplit(" (", 1)[0] for lab in labels if "size curve" not in lab and "plain" not in lab)
    expected = sorted(f"{ {'smart': 'SMART', 'sift': 'SiFT'}[v.split('-')[0]]} {v.partition('-')[2] or 'default'}"
                      for v in variants if v != "plain" and curve_eps(v.partition("-")[2]) is None)
    assert points == expected and len(ax.containers) == len(expected)  # one errorbar container per point
    assert "plain (n=5): mean ± 95% CI" in labels
    # the band spans plain's t interval over seeds
    plain = [r.metric("uci_test_accuracy") for r in variants["plain"]]
    ref = stats.ttest_1samp(plain, 0).confidence_interval()
    (band,) = [p for p in ax.patches if p.get_alpha() == 0.15]
    assert (band.get_y(), band.get_y() + band.get_height()) == (pytest.approx(ref.low), pytest.approx(ref.high))
    assert ax.get_xscale() == "log"
    # the SiFT line passes through each size's mean over seeds, at its mean measured size
    sift_line = next(line for line in ax.get_lines() if line.get_label().startswith("SiFT size curve"))
    xs, ys = sift_line.get_data()
    want = sorted((np.mean([relative_size(r) for r in variants[f"sift-curve_eps{e:g}"]]),
                   np.mean([r.metric("uci_test_accuracy") for r in variants[f"sift-curve_eps{e:g}"]])) for e in CURVE_EPS)
    assert np.allclose(xs, [w[0] for w in want]) and np.allclose(ys, [w[1] for w in want])


def test_size_curve_on_a_log_axis_leaves_out_zero_values_and_says_so(study_dir):
    from matplotlib.figure import Figure

    from siftkit.study.figures import size_curve

    (key, variants), = _groups(study_dir).items()
    ax = size_curve(runs_frame(variants), "reg_share", ax=Figure().subplots(), plain=None, logy=True)
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert not any(lab.startswith("SMART rng_control") for lab in labels)  # adv_weight 0: share 0
    assert ax.get_legend().get_texts()[-1].get_text() == "(5 run(s) at ≤ 0 not drawn on the log axis)"


def test_summarize_command_writes_every_figure(study_dir, tmp_path):
    out = tmp_path / "new" / "folder" / "SUMMARY.md"  # --out into a missing folder: created
    res = subprocess.run([sys.executable, "-m", "siftkit", "summarize", str(study_dir), "--out", str(out)],
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    text = out.read_text()
    assert text.startswith("# siftkit results summary")
    # the group's figures are linked from its section, the size curve shown inline
    figure = "figures/twitter_to_uci_nvidia_h200_aaaaaaaa_size_uci_test_accuracy.png"
    assert f"![the main metric against measured perturbation size]({figure})" in text
    names = sorted(p.name for p in (out.parent / "figures").glob("*.png"))
    prefix = "twitter_to_uci_nvidia_h200_aaaaaaaa_"
    assert names == sorted(prefix + n for n in ("scores.png", "learning_curves.png", "size_uci_test_accuracy.png",
                                                 "size_reg_share.png", "size_smoothness.png"))


# ----------------------------------------------------------------------------- bad files


def _summarize_error(*paths) -> str:
    res = subprocess.run([sys.executable, "-m", "siftkit", "summarize", *map(str, paths)],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
    return res.stderr.strip()


def _one_run(tmp_path, text: str | bytes) -> Path:
    path = tmp_path / "r" / "seed1" / "results.json"
    path.parent.mkdir(parents=True)
    (path.write_bytes if isinstance(text, bytes) else path.write_text)(text)
    return path


def test_a_main_metric_edited_to_null_names_the_file_and_metric(tmp_path):
    rec = record("sift", 1, size=0.01)
    rec["metrics"]["uci_test_accuracy"] = None
    path = _one_run(tmp_path, json.dumps(rec))
    assert _summarize_error(path.parent.parent) == (
        f"siftkit summarize: error: {path}: metric 'uci_test_accuracy' is null; the run has no result to compare "
        "(rerun it, or move the file out of the summarized folders)")


def test_a_metric_that_is_not_a_number_names_the_file(tmp_path):
    rec = record("sift", 1, size=0.01)
    rec["metrics"]["uci_test_accuracy_yelp"] = "0.7"
    path = _one_run(tmp_path, json.dumps(rec))
    assert _summarize_error(path) == f"siftkit summarize: error: {path}: metric 'uci_test_accuracy_yelp' is '0.7', not a number"


def _cell(text: str, column: str, variant: str) -> str:
    """The cell of a SUMMARY.md table: the first table with `column` in its header, row `variant`."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| variant |") and f"| {column} |" in line + " ")
    head = [c.strip() for c in lines[start].strip("|").split("|")]
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        if cells[0] == f"`{variant}`":
            return cells[head.index(column)]
    raise AssertionError(f"no row {variant} under {column}")


def test_a_null_secondary_metric_shows_a_dash(tmp_path):
    rec = record("sift", 1, size=0.01)
    rec["metrics"]["uci_test_smoothness_0.3"] = None  # training writes a non-finite value as null
    _one_run(tmp_path, json.dumps(rec))
    text, _ = summarize([tmp_path / "r"])
    assert _cell(text, "uci_test_smoothness_0.3", "sift") == "–"
    assert _cell(text, "uci_test_smoothness_0.01", "sift") == f"{rec['metrics']['uci_test_smoothness_0.01']:.2e}"


def test_a_utf16_results_file_names_the_file(tmp_path):
    path = _one_run(tmp_path, json.dumps(record("plain", 1)).encode("utf-16"))
    assert _summarize_error(path.parent) == f"siftkit summarize: error: {path} is not UTF-8 text (byte 0); save it as UTF-8"


def test_a_results_file_holding_a_number_names_the_file(tmp_path):
    path = _one_run(tmp_path, "42")
    assert _summarize_error(path) == (f"siftkit summarize: error: {path} holds a JSON number, not an object with "
                                      "config, metrics, history and meta; not a siftkit results file")


def test_out_that_is_a_folder_is_refused(tmp_path):
    path = _one_run(tmp_path, json.dumps(record("plain", 1)))
    assert _summarize_error(path, "--out", tmp_path) == (
        f"siftkit summarize: error: --out {str(tmp_path)!r} is a folder; give the Markdown file to write, "
        f"e.g. {tmp_path / 'SUMMARY.md'}")


def test_figures_that_is_a_file_is_refused_before_anything_is_written(tmp_path):
    path = _one_run(tmp_path, json.dumps(record("plain", 1)))
    blocker = tmp_path / "figs"
    blocker.write_text("")
    out = tmp_path / "S.md"
    assert _summarize_error(path, "--out", out, "--figures", blocker).endswith(
        f"--figures {str(blocker)!r} is a file, not a folder")
    assert not out.exists()


def test_a_history_that_is_not_a_list_of_rows_names_the_file(tmp_path):
    rec = record("sift", 1, size=0.01)
    rec["history"] = [0.5, 0.4]
    path = _one_run(tmp_path, json.dumps(rec))
    assert _summarize_error(path) == (f"siftkit summarize: error: {path}: 'history' must be a list of objects "
                                      "(one per logged step)")


def test_summary_modules_import_one_way():
    """summarize may import summary_figures, never the reverse; both share siftkit.study.runs."""
    import ast

    import siftkit.study.runs
    import siftkit.study.figures

    def imports(module):
        tree = ast.parse(Path(module.__file__).read_text())
        return {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module} | {
            a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}

    assert "siftkit.study.summarize" not in imports(siftkit.study.figures)
    assert not {"siftkit.study.summarize", "siftkit.study.figures"} & imports(siftkit.study.runs)
    assert "siftkit.study.runs" in imports(siftkit.study.figures)


def test_size_curve_of_a_metric_no_run_recorded_says_so(tmp_path):
    from matplotlib.figure import Figure

    from siftkit.study.figures import size_curve

    root = tmp_path / "old"
    for seed in (1, 2):
        for algo, size in (("plain", 0), ("smart", 2e-5), ("sift", 7e-3)):
            write(root, record(algo, seed, size=size, new_metrics=False))
    (key, variants), = _groups(root).items()
    ax = size_curve(runs_frame(variants), "uci_test_smoothness_0.3", ax=Figure().subplots(), logy=True)
    assert [t.get_text() for t in ax.texts] == ["no run recorded uci_test_smoothness_0.3"] and ax.get_legend() is None


def test_a_matched_pair_missing_seeds_is_not_pooled(study_dir):
    # one SiFT size with a single finished seed must not cut every pair down to that seed
    for seed in (2, 3, 4, 5):
        (study_dir / "twitter_to_uci" / "sift-curve_eps0.1" / f"seed{seed}" / "results.json").unlink()
    (key, variants), = _groups(study_dir).items()
    pairs = matched_size_pairs(variants, "uci_test_accuracy")
    pooled = pooled_difference(variants, pairs, "uci_test_accuracy")
    assert pooled["seeds"] == [1, 2, 3, 4, 5] and pooled["n"] == 5
    assert "sift-curve_eps0.1" not in pooled["pooled_pairs"] and pooled["pairs"] == len(pairs) - 1
    rows = {r["sift"]: r for r in matched_size_table({key: variants})}
    assert rows["sift-curve_eps0.1"]["pooled"] is False and rows["sift-curve_eps0.3"]["pooled"] is True
    text, _ = summarize([study_dir])
    assert "too few seeds for an interval; not pooled (missing seeds)" in text


def test_a_push_acting_in_one_stage_is_measured_where_it_acted_even_in_older_records():
    rec = record("sift", 1, tag="ctl_stages_first", size=0.3)
    for row in rec["history"]:
        if row["stage"] == "uci":
            row["relative_perturbation"] = 0.0  # where adv_stages leaves the regularizer off
    # an older record: its mean_relative_perturbation averaged in the zeros of the stage without R
    rec["metrics"]["mean_relative_perturbation"] = float(np.mean([r["relative_perturbation"] for r in rec["history"]]))
    rec["stages"] = [{"name": "twitter", "adversarial": True}, {"name": "uci", "adversarial": False}]
    run = Run(None, rec, "twitter_to_uci", "m", "cpu", COMMIT, "sift", "ctl_stages_first", 1)
    want = np.mean([r["relative_perturbation"] for r in rec["history"] if r["stage"] == "twitter"])
    assert relative_size(run) == pytest.approx(want) and want > 1.5 * rec["metrics"]["mean_relative_perturbation"]
    rec["stages"][1]["adversarial"] = True  # acting everywhere: the recorded mean is the size
    assert relative_size(run) == rec["metrics"]["mean_relative_perturbation"]
