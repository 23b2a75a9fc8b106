"""The regime study's analysis (siftkit.study: runs, matched, regime, summarize, figures) on
synthetic records written the way siftkit.run.training writes them: the size curve and its figure,
the matched-size pairing, the paper's-regime verdicts and grouping by device and code."""

from __future__ import annotations

import statistics

import numpy as np
import pytest
from helpers_regime import COMMIT, CURVE_EPS, record, regime_study, write
from scipy import stats

from siftkit.study.matched import matched_size_pairs, matched_size_table, pooled_difference
from siftkit.study.measured import relative_size, runs_frame, variant_sizes
from siftkit.study.regime import regime_pairs
from siftkit.study.runs import Run, group_runs, load_runs, per_seed
from siftkit.study.summarize import brief, summarize
from siftkit.study.tags import curve_eps


@pytest.fixture
def study_dir(tmp_path):
    return regime_study(tmp_path / "study")


def _groups(root):
    return group_runs(load_runs([root]))


# ----------------------------------------------------------------------------- statistics


# ----------------------------------------------------------------------------- matched size


def test_matched_size_pairs_pick_the_nearest_smart_size_in_log_distance(study_dir):
    ((key, variants),) = _groups(study_dir).items()
    pairs = matched_size_pairs(variants, "uci_test_accuracy")
    sizes = variant_sizes(variants)
    smart_curve = {
        v: s for v, s in sizes.items() if v.startswith("smart-curve_eps") and "_" not in v[len("smart-curve_eps") :]
    }
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
    ((key, variants),) = _groups(study_dir).items()
    pairs = matched_size_pairs(variants, "uci_test_accuracy")
    pooled = pooled_difference(variants, pairs, "uci_test_accuracy")
    matched = [p for p in pairs if p["matched"]]
    per_seed = [
        np.mean(
            [
                variants[p["sift"]][s - 1].metric("uci_test_accuracy")
                - variants[p["smart"]][s - 1].metric("uci_test_accuracy")
                for p in matched
            ]
        )
        for s in range(1, 6)
    ]
    ref = stats.ttest_1samp(per_seed, 0).confidence_interval()
    assert pooled["pairs"] == len(matched) and pooled["seeds"] == [1, 2, 3, 4, 5]
    assert pooled["mean"] == pytest.approx(np.mean(per_seed))
    assert (pooled["low"], pooled["high"]) == (pytest.approx(ref.low), pytest.approx(ref.high))


def test_a_pair_far_apart_in_size_is_listed_but_not_pooled(tmp_path):
    root = tmp_path / "s"
    for seed in (1, 2, 3):
        write(root, record("smart", seed, tag="curve_eps1e-05", size=2e-5))
        write(root, record("sift", seed, tag="curve_eps0.3", size=0.2))
    ((key, variants),) = _groups(root).items()
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


# ----------------------------------------------------------------------------- SUMMARY.md


def test_summary_holds_every_regime_table(study_dir):
    text, data = summarize([study_dir])
    for heading in (
        "### The paper's claim in the paper's regime",
        "### SiFT against SMART at matched perturbation size",
        "Held-out smoothness",
        "UCI accuracy per source",
    ):
        assert heading in text
    ((key, variants),) = _groups(study_dir).items()
    a = per_seed(variants["sift-mtdnn"], "uci_test_accuracy")
    b = per_seed(variants["smart-mtdnn_no_bregman"], "uci_test_accuracy")
    diffs = [a[s] - b[s] for s in range(1, 6)]
    ref = stats.ttest_1samp(diffs, 0).confidence_interval()
    assert (
        f"| `sift-mtdnn` − `smart-mtdnn_no_bregman` | paper's regime, seed code's SMART (no Bregman) | 5 | "
        f"{np.mean(diffs):.3f} | [{ref.low:.3f}, {ref.high:.3f}] |"
    ) in text
    for row in (
        "| `sift-mtdnn` − `smart-mtdnn` |",
        "| `sift-mtdnn_random` − `smart-mtdnn_random` |",
        "| `smart-curve_eps0.3_random` − `smart-curve_eps0.3` | random control at curve size 0.3 |",
        "| `sift-curve_eps0.3_w10` − `sift-curve_eps0.3` | w10 control at curve size 0.3 |",
    ):
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

    ((key, variants),) = _groups(study_dir).items()
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

    ((key, variants),) = _groups(study_dir).items()
    frame = runs_frame(variants)
    ax = size_curve(frame, "uci_test_accuracy", ax=Figure().subplots())
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    curves = [lab for lab in labels if "size curve" in lab]
    assert curves == [
        f"SMART size curve, projected rule ({len(CURVE_EPS)} sizes, n=5)",
        f"SiFT size curve, projected rule ({len(CURVE_EPS)} sizes, n=5)",
    ]
    points = sorted(lab.rsplit(" (", 1)[0] for lab in labels if "size curve" not in lab and "plain" not in lab)
    expected = sorted(
        f"{ {'smart': 'SMART', 'sift': 'SiFT'}[v.split('-')[0]] } {v.partition('-')[2] or 'default'}"
        for v in variants
        if v != "plain" and curve_eps(v.partition("-")[2]) is None
    )
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
    want = sorted(
        (
            np.mean([relative_size(r) for r in variants[f"sift-curve_eps{e:g}"]]),
            np.mean([r.metric("uci_test_accuracy") for r in variants[f"sift-curve_eps{e:g}"]]),
        )
        for e in CURVE_EPS
    )
    assert np.allclose(xs, [w[0] for w in want]) and np.allclose(ys, [w[1] for w in want])


def test_size_curve_on_a_log_axis_leaves_out_zero_values_and_says_so(study_dir):
    from matplotlib.figure import Figure

    from siftkit.study.figures import size_curve

    ((key, variants),) = _groups(study_dir).items()
    ax = size_curve(runs_frame(variants), "reg_share", ax=Figure().subplots(), plain=None, logy=True)
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert not any(lab.startswith("SMART rng_control") for lab in labels)  # adv_weight 0: share 0
    assert ax.get_legend().get_texts()[-1].get_text() == "(5 run(s) at ≤ 0 not drawn on the log axis)"


# ----------------------------------------------------------------------------- bad files


def test_size_curve_of_a_metric_no_run_recorded_says_so(tmp_path):
    from matplotlib.figure import Figure

    from siftkit.study.figures import size_curve

    root = tmp_path / "old"
    for seed in (1, 2):
        for algo, size in (("plain", 0), ("smart", 2e-5), ("sift", 7e-3)):
            write(root, record(algo, seed, size=size, new_metrics=False))
    ((key, variants),) = _groups(root).items()
    ax = size_curve(runs_frame(variants), "uci_test_smoothness_0.3", ax=Figure().subplots(), logy=True)
    assert [t.get_text() for t in ax.texts] == ["no run recorded uci_test_smoothness_0.3"] and ax.get_legend() is None


def test_a_matched_pair_missing_seeds_is_not_pooled(study_dir):
    # one SiFT size with a single finished seed must not cut every pair down to that seed
    for seed in (2, 3, 4, 5):
        (study_dir / "twitter_to_uci" / "sift-curve_eps0.1" / f"seed{seed}" / "results.json").unlink()
    ((key, variants),) = _groups(study_dir).items()
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
