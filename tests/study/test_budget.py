"""The equal-budget study past its table (siftkit.study.budget, its sections in siftkit.study.summarize and
its figures): the controls and their uncontrolled partners, the size curve at the tuned point
with tuned plain as the band, and the three verdicts, on synthetic records written the way
siftkit.run.training and `sweep --grid` / `--at-chosen` write them."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pandas as pd
import pytest
from helpers_budget import (
    COMMIT,
    CURVE,
    PLAIN_TEST,
    SIFT_03,
    SPEC,
    TUNED,
    at_chosen,
    budget_record,
    equal_budget_study,
    grid_arm,
    wobble,
    write_budget_run,
)

from siftkit.study import budget
from siftkit.study.arms import equal_budget
from siftkit.study.matched import matched_size_pairs, pooled_difference
from siftkit.study.reference import reference_plain
from siftkit.study.runs import group_runs, load_runs
from siftkit.study.spec import load_spec
from siftkit.study.stats import paired_difference
from siftkit.study.summarize import main as summarize_main
from siftkit.study.summarize import summarize
from siftkit.study.tags import curve_eps, curve_families, curve_family

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def eb_dir(tmp_path_factory):
    root = equal_budget_study(tmp_path_factory.mktemp("eb"))
    shutil.copy(SPEC, root / SPEC.name)
    return root


def _group(root):
    ((key, variants),) = group_runs(load_runs([root])).items()
    return key, variants


# ----------------------------------------------------------------------------- the curve tags


@pytest.mark.parametrize(
    "tag, eps, family",
    [
        ("curve_eps0.3", 0.3, ""),
        ("tuned_curve_eps0.3", 0.3, "tuned"),
        ("tuned_curve_eps1e-05", 1e-05, "tuned"),
        ("lr_tuned_curve_eps0.01", 0.01, "lr_tuned"),
        ("curve_eps0.3_random", None, None),
        ("ctl_size0.3_reinit_head", None, None),
        ("tuned_curve_epsx", None, "x"),
        ("eb_size0.3", None, None),
        (None, None, None),
    ],
)
def test_curve_tags_with_a_family_prefix(tag, eps, family):
    assert curve_eps(tag) == eps
    assert curve_family(tag) == (None if eps is None else family)


def test_two_curve_families_of_one_group_are_never_paired_with_each_other(tmp_path):
    from helpers_regime import record, write

    for seed in (1, 2, 3):
        write(tmp_path, record("sift", seed, tag="curve_eps0.3", size=0.3))
        write(tmp_path, record("smart", seed, tag="tuned_curve_eps0.15", size=0.3))  # nearest in size, other curve
        write(tmp_path, record("smart", seed, tag="curve_eps0.05", size=0.1))
    (variants,) = group_runs(load_runs([tmp_path])).values()
    (pair,) = matched_size_pairs(variants, "uci_test_accuracy")
    assert (pair["sift"], pair["smart"], pair["family"]) == ("sift-curve_eps0.3", "smart-curve_eps0.05", "")
    assert matched_size_pairs(variants, "uci_test_accuracy", "tuned") == []
    assert curve_families(variants) == ["", "tuned"]


# ----------------------------------------------------------------------------- controls


def test_each_control_is_paired_with_its_uncontrolled_partner_found_by_config(eb_dir):
    key, variants = _group(eb_dir)
    partner = {
        v: budget.uncontrolled_partner(v, variants)
        for v in budget.control_variants(variants, equal_budget(variants, "twitter_to_uci"), {})
    }
    # SiFT's grid point at 1e-4 has the same config as the curve's 0.3 run but fewer seeds
    assert partner["sift-ctl_size0.3_reinit_head"] == "sift-tuned_curve_eps0.3"
    assert partner["sift-ctl_size0.3_stages_first"] == "sift-tuned_curve_eps0.3"
    assert partner["sift-ctl_noise_size0.3"] == "sift-tuned_curve_eps0.3"  # the ascent at the same ε
    assert partner["plain-ctl_reinit_head"] == "plain-eb__uci_learning_rate0.0001"
    assert partner["plain-ctl_l2sp__l2sp_weight0.01"] == "plain-eb__uci_learning_rate0.0001"
    assert "plain-ctl_l2sp__l2sp_weight0.001" not in partner  # a point of its own grid that was not chosen
    assert not any(v.startswith(("sift-tuned", "smart-tuned", "sift-eb")) for v in partner)


def test_a_partner_is_found_by_config_not_by_name(tmp_path):
    # the tag that reads like the partner (tuned_curve_eps0.3) ran another ε; the real one is named zz
    at_chosen(tmp_path, "sift", "ctl_size0.3_reinit_head", {**SIFT_03, "reinit_head": True}, lambda s: 0.85)
    at_chosen(tmp_path, "sift", "tuned_curve_eps0.3", {**SIFT_03, "adv_epsilon": 0.31}, lambda s: 0.9)
    at_chosen(tmp_path, "sift", "zz", SIFT_03, lambda s: 0.8 + 0.01 * s)
    at_chosen(tmp_path, "plain", "zz", {}, lambda s: 0.7)  # another algorithm, same config otherwise
    _, variants = _group(tmp_path)
    assert budget.uncontrolled_partner("sift-ctl_size0.3_reinit_head", variants) == "sift-zz"


def test_controls_table_against_the_reference_and_the_partner(eb_dir):
    key, variants = _group(eb_dir)
    rows = pd.DataFrame(budget.control_rows(key, variants), columns=budget.CONTROL_COLUMNS)
    reinit = rows[rows["control"] == "sift-ctl_size0.3_reinit_head"].set_index("against_is")
    assert reinit.loc["reference", "against"] == "plain-eb__uci_learning_rate0.0001"
    assert reinit.loc["uncontrolled", "against"] == "sift-tuned_curve_eps0.3"
    seeds = range(1, 6)
    expect = paired_difference(
        {s: 0.85 + wobble(s, 4) for s in seeds}, {s: CURVE["sift"][0.3] + wobble(s, 3.0) for s in seeds}
    )
    assert reinit.loc["uncontrolled", "n"] == 5
    assert reinit.loc["uncontrolled", "mean"] == pytest.approx(expect["mean"])
    assert reinit.loc["uncontrolled", "ci_low"] == pytest.approx(expect["low"])
    assert "label flip" in reinit.loc["reference", "what it tests"]
    # the sweep records the taken value as typed (1e-4); it reads as the grid labels it
    assert reinit.loc["reference", "at"] == "plain-eb's chosen uci_learning_rate0.0001"
    noise = rows[rows["control"] == "sift-ctl_noise_size0.3"].iloc[0]
    assert noise["sets"] == "adv_steps 0, adv_noise_std 9.487" and "random noise" in noise["what it tests"]
    # plain's control: tuned plain is both the reference and the uncontrolled partner, one row
    plain = rows[rows["control"] == "plain-ctl_reinit_head"]
    assert list(plain["against_is"]) == ["reference, uncontrolled"]
    # the curve runs and the arms' own points are not controls
    assert not rows["control"].str.contains("tuned_curve|eb_size").any()


def test_a_controls_own_grid_is_no_arm_of_the_comparison_and_is_read_among_the_controls(eb_dir):
    from siftkit.study.arms import equal_budget_differences, equal_budget_table

    key, variants = _group(eb_dir)
    eb = equal_budget(variants, "twitter_to_uci")
    assert [a.arm for a in eb.compared] == ["plain-eb", "smart-eb_size0.3", "sift-eb_size0.3"]
    (grid,) = eb.control_grids
    assert grid.arm == "plain-ctl_l2sp" and grid.at == "plain-eb" and grid.chosen_label == "l2sp_weight0.01"
    groups = {key: variants}
    assert "plain-ctl_l2sp" not in {r["arm"] for r in equal_budget_table(groups)}
    assert not any("l2sp" in r["difference"] for r in equal_budget_differences(groups))
    text, _ = summarize([eb_dir])
    table_line = next(line for line in text.splitlines() if line.startswith("**The equal-budget table**"))
    assert "budgets differ" not in table_line  # its 3 weights on top of plain's 4 rates are no other budget
    assert (
        "Not arms of this comparison: `plain-ctl_l2sp` tuned l2sp_weight ∈ {0.001, 0.01, 0.1} at `plain-eb`'s "
        "chosen point and chose `l2sp_weight0.01`"
    ) in text
    rows = budget.control_rows(key, variants)
    assert [r["against"] for r in rows if r["control"] == "plain-ctl_l2sp__l2sp_weight0.01"] == [
        "plain-eb__uci_learning_rate0.0001"
    ]


def test_a_listed_control_that_varies_a_rule_is_paired_with_its_algorithm_at_the_same_point(tmp_path):
    root = equal_budget_study(tmp_path / "runs")
    # SMART at its defaults on plain's grid, and the mtdnn rule at plain's chosen rate
    grid_arm(
        root,
        "smart",
        "eb_default",
        {},
        lambda x, s: 0.8 - abs(math.log10(x / 5e-5)) * 0.1,
        lambda x, s: 0.86 + wobble(s, 9),
    )
    at_chosen(root, "smart", "ctl_mtdnn", {"adv_rule": "mtdnn", "adv_epsilon": None}, lambda s: 0.88 + wobble(s, 11))
    key, variants = _group(root)
    tests = "the public codes' rule"
    spec = {"controls": {"ctl_mtdnn": {"tests": tests, "varies": ["adv_rule", "adv_epsilon"]}}}
    rows = [r for r in budget.control_rows(key, variants, spec) if r["control"] == "smart-ctl_mtdnn"]
    assert [(r["against"], r["against_is"]) for r in rows] == [
        ("plain-eb__uci_learning_rate0.0001", "reference"),
        ("smart-eb_default__uci_learning_rate0.0001", "uncontrolled"),
    ]
    assert rows[1]["n"] == 3 and rows[1]["mean"] == pytest.approx(
        sum(0.88 + wobble(s, 11) - 0.86 - wobble(s, 9) for s in (1, 2, 3)) / 3
    )
    assert rows[1]["sets"] == "adv_rule mtdnn, adv_epsilon none" and rows[1]["what it tests"] == tests
    # listed by its text alone, it varies no field: no partner, only tuned plain
    only_text = {"controls": {"ctl_mtdnn": tests}}
    assert [
        r["against_is"] for r in budget.control_rows(key, variants, only_text) if r["control"] == "smart-ctl_mtdnn"
    ] == ["reference"]


@pytest.mark.parametrize("entry", ["{tests: 3}", "{varies: adv_rule}", "{tests: x, why: y}", "[adv_rule]"])
def test_a_bad_listed_control_is_refused_naming_its_tag(tmp_path, entry):
    bad = tmp_path / "bad_study.yaml"
    bad.write_text(f"controls:\n  ctl_x: {entry}\n")
    with pytest.raises(ValueError, match="bad_study.yaml: controls: ctl_x: must be the text of what it tests"):
        load_spec(bad)


def test_in_an_equal_budget_group_the_reference_plain_is_the_reference_arms_chosen_point(eb_dir):
    _, variants = _group(eb_dir)
    assert reference_plain(variants, "twitter_to_uci") == "plain-eb__uci_learning_rate0.0001"
    text, _ = summarize([eb_dir])
    # not P1's choice among tagged plains on twitter_val_accuracy
    assert "plain's settings:" not in text and "chosen on this same metric" not in text
    assert "Seed-to-seed spread of `plain-eb__uci_learning_rate0.0001`" in text


# ----------------------------------------------------------------------------- the curve at the tuned point


def test_the_tuned_curve_band_is_the_reference_arms_chosen_point(eb_dir):
    key, variants = _group(eb_dir)
    rows = budget.tuned_curve_rows(key, variants)
    band = rows[0]
    assert band["role"] == "band" and band["variant"] == "plain-eb__uci_learning_rate0.0001"
    assert band["n"] == 5 and band["test_mean"] == pytest.approx(0.88 + sum(wobble(s, 5) for s in range(1, 6)) / 5)
    curve = {r["variant"]: r for r in rows[1:]}
    assert set(curve) == {f"{a}-tuned_curve_eps{e:g}" for a, es in CURVE.items() for e in es}
    top = curve["sift-tuned_curve_eps0.3"]
    assert top["size"] == pytest.approx(0.3) and top["family"] == "tuned"
    assert top["minus_reference"] == pytest.approx(0.01 + sum(wobble(s, 3.0) - wobble(s, 5) for s in range(1, 6)) / 5)


def test_tuned_curve_figure_draws_the_band_at_the_chosen_point(eb_dir):
    from siftkit.study import figures as summary_figures

    key, variants = _group(eb_dir)
    fig = summary_figures.tuned_curve_figure(key, variants)
    ax = fig.axes[0]
    band = [line for line in ax.lines if line.get_linestyle() == "--"]
    ref = [0.88 + wobble(s, 5) for s in range(1, 6)]
    assert len(band) == 1 and band[0].get_ydata()[0] == pytest.approx(sum(ref) / 5)
    labels = ax.get_legend_handles_labels()[1]
    assert any("SiFT size curve" in x and "4 sizes" in x for x in labels)
    assert "plain-eb's chosen uci_learning_rate0.0001" in ax.get_title()


def test_the_size_figure_leaves_out_the_runs_at_no_chosen_point(eb_dir):
    from siftkit.study import figures as summary_figures

    key, variants = _group(eb_dir)
    unchosen = summary_figures.off_the_chosen_points(variants, "twitter_to_uci")
    assert len(unchosen) == 3 * 3 + 2  # three arms of 4 rates and L2-SP's 3 weights, one chosen each
    assert "sift-eb_size0.3__uci_learning_rate2e-05" in unchosen
    assert "sift-eb_size0.3__uci_learning_rate5e-05" not in unchosen
    fig = summary_figures.size_figures(key, variants)["size_uci_test_accuracy"]
    labels = fig.axes[0].get_legend_handles_labels()[1]
    assert any("eb_size0.3__uci_learning_rate5e-05" in x for x in labels)
    assert not any("uci_learning_rate2e-05" in x for x in labels)
    assert "runs at no chosen point left out" in fig.axes[0].get_title()


# ----------------------------------------------------------------------------- verdicts


def test_verdict_1_picks_the_largest_difference_and_reports_every_arm(eb_dir):
    key, variants = _group(eb_dir)
    rows = [r for r in budget.verdict_rows(key, variants) if r["verdict"] == "1"]
    largest, *arms = rows
    assert largest["row"].startswith("largest: sift-eb_size0.3 (uci_learning_rate5e-05) − plain-eb")
    assert "of 2 arm(s)" in largest["row"] and "2 regularizer arm(s) compared" in largest["rests_on"]
    assert [r["row"].split(" ")[0] for r in arms] == ["sift-eb_size0.3", "smart-eb_size0.3"]
    assert largest["mean"] == max(r["mean"] for r in arms) and largest["n"] == 5
    assert largest["mean"] == pytest.approx(0.01 + sum(wobble(s, 4) - wobble(s, 5) for s in range(1, 6)) / 5)


def test_verdict_2_is_the_pooled_matched_size_difference_on_the_tuned_curve(eb_dir):
    key, variants = _group(eb_dir)
    (row,) = [r for r in budget.verdict_rows(key, variants) if r["verdict"] == "2"]
    pooled = pooled_difference(
        variants, matched_size_pairs(variants, "uci_test_accuracy", "tuned"), "uci_test_accuracy"
    )
    assert row["mean"] == pytest.approx(pooled["mean"]) and row["n"] == 5 and row["seeds"] == [1, 2, 3, 4, 5]
    assert "4 matched pair(s)" in row["rests_on"] and "tuned_curve_eps<E>" in row["row"]


def test_verdict_3_reads_the_old_gap_at_the_2e5_grid_points(eb_dir):
    key, variants = _group(eb_dir)
    spec = load_spec(eb_dir / SPEC.name)
    rows = [r for r in budget.verdict_rows(key, variants, spec) if r["verdict"] == "3"]
    old, tuned, tuning = rows[:3]
    assert old["row"] == (
        "old gap: sift-eb_size0.3__uci_learning_rate2e-05 − plain-eb__uci_learning_rate2e-05 "
        "(both at uci_learning_rate2e-05)"
    )
    assert old["mean"] == pytest.approx(0.20 + sum(wobble(s, 4) - wobble(s, 5) for s in (1, 2, 3)) / 3)
    assert old["seeds"] == [1, 2, 3]
    assert tuned["row"].startswith("gap at the chosen points: sift-eb_size0.3__uci_learning_rate5e-05")
    assert tuned["n"] == 5 and tuning["mean"] == pytest.approx(0.19) and tuning["n"] == 3
    effects = {r["row"].split(":")[0]: r for r in rows[3:]}
    assert "control sift-ctl_size0.3_reinit_head − sift-tuned_curve_eps0.3" in effects
    both = effects["gap with reinit_head true on both sides"]
    assert both["row"].endswith("sift-ctl_size0.3_reinit_head − plain-ctl_reinit_head")
    assert both["mean"] == pytest.approx(-0.01 + sum(wobble(s, 4) - wobble(s, 3) for s in range(1, 6)) / 5)
    assert spec["questions"]["old_gap"] == rows[0]["question"]


def test_verdict_3_reads_the_controls_run_at_the_old_gaps_rate(tmp_path):
    root = equal_budget_study(tmp_path / "runs")
    old_rate = {"uci_learning_rate": 2e-05}
    tests = {
        ("plain", "gap_reinit_head", (("reinit_head", True),)): (0.80, 12),
        ("sift", "gap_size0.3_reinit_head", (*SIFT_03.items(), ("reinit_head", True))): (0.83, 13),
        ("sift", "gap_size0.3_stages_last", (*SIFT_03.items(), ("adv_stages", "last"))): (0.70, 14),
    }
    for (algo, tag, settings), (base, k) in tests.items():
        for seed in (1, 2, 3):
            rec = budget_record(
                algo,
                seed,
                {"tag": tag},
                {**dict(settings), **old_rate},
                val=0.7,
                test=base + wobble(seed, k),
                size=0.3 if algo == "sift" else 0.0,
            )
            write_budget_run(root, f"{algo}-{tag}", rec)
    key, variants = _group(root)
    assert budget.old_point_controls(variants, old_rate) == [
        "plain-gap_reinit_head",
        "sift-gap_size0.3_reinit_head",
        "sift-gap_size0.3_stages_last",
    ]
    rows = {
        r["row"].split(":")[0] + r["row"].split(":")[1].split(" − ")[0]: r
        for r in budget.verdict_rows(key, variants, load_spec(SPEC))
        if r["verdict"] == "3"
    }
    seeds = (1, 2, 3)
    mean = lambda f: sum(f(s) for s in seeds) / 3  # noqa: E731
    plain = rows["control at uci_learning_rate2e-05 plain-gap_reinit_head"]
    assert plain["row"].startswith(
        "control at uci_learning_rate2e-05: plain-gap_reinit_head − "
        "plain-eb__uci_learning_rate2e-05: confidence carried across the label flip"
    )
    assert plain["mean"] == pytest.approx(mean(lambda s: 0.80 + wobble(s, 12) - 0.64 - wobble(s, 5)))
    old = mean(lambda s: 0.84 + wobble(s, 4) - 0.64 - wobble(s, 5))
    left = mean(lambda s: 0.83 + wobble(s, 13) - 0.80 - wobble(s, 12))
    both = next(r for r in rows.values() if r["row"].startswith("gap at uci_learning_rate2e-05 with reinit_head"))
    assert both["row"].endswith("sift-gap_size0.3_reinit_head − plain-gap_reinit_head") and both["n"] == 3
    assert both["mean"] == pytest.approx(left)
    removes = next(r for r in rows.values() if r["row"].startswith("what reinit_head true removes"))
    assert removes["row"] == "what reinit_head true removes at uci_learning_rate2e-05: old gap − that gap"
    assert removes["mean"] == pytest.approx(old - left)
    (sentence,) = budget.control_shares(
        [r for r in budget.verdict_rows(key, variants, load_spec(SPEC)) if r["verdict"] == "3"]
    )
    assert sentence.startswith(
        f"With reinit_head true on both sides at uci_learning_rate2e-05, {old - left:+.3f} of "
        f"the old gap of {old:+.3f} goes ({(old - left) / old:.0%}, 95% CI ["
    )
    stages = [
        r for r in rows.values() if "sift-gap_size0.3_stages_last − sift-eb_size0.3__uci_learning_rate2e-05" in r["row"]
    ]
    assert len(stages) == 1 and stages[0]["mean"] == pytest.approx(
        mean(lambda s: 0.70 + wobble(s, 14) - 0.84 - wobble(s, 4))
    )
    # they are no controls at tuned plain's rate, and no size figure draws them against its band
    assert not any(r["control"].startswith(("plain-gap", "sift-gap")) for r in budget.control_rows(key, variants))
    from siftkit.study import figures as summary_figures

    assert {"plain-gap_reinit_head", "sift-gap_size0.3_stages_last"} <= summary_figures.off_the_chosen_points(
        variants, "twitter_to_uci"
    )


def test_where_stage_2_starts_at_the_old_gaps_point_is_read_from_each_runs_first_logged_row(tmp_path):
    root = equal_budget_study(tmp_path / "runs")
    for seed in (1, 2, 3):  # plain's stage-1 head, confidently wrong after the flip; a fresh one
        path = root / "twitter_to_uci" / "plain-eb__uci_learning_rate2e-05" / f"seed{seed}" / "results.json"
        rec = json.loads(path.read_text())
        rec["history"][0]["task_loss"] = 1.2 + 0.01 * seed
        path.write_text(json.dumps(rec))
        fresh = budget_record(
            "plain",
            seed,
            {"tag": "gap_reinit_head"},
            {"reinit_head": True, "uci_learning_rate": 2e-05},
            val=0.8,
            test=0.88,
        )
        fresh["history"][0]["task_loss"] = 0.69
        write_budget_run(root, "plain-gap_reinit_head", fresh)
    key, variants = _group(root)
    rows = {r["variant"]: r for r in budget.start_loss_rows(key, variants, load_spec(SPEC))}
    assert list(rows) == [
        "plain-eb__uci_learning_rate2e-05",
        "sift-eb_size0.3__uci_learning_rate2e-05",
        "plain-gap_reinit_head",
    ]
    assert rows["plain-eb__uci_learning_rate2e-05"]["start_mean"] == pytest.approx(1.22)
    assert rows["plain-eb__uci_learning_rate2e-05"]["role"] == "old gap: reference"
    assert (
        rows["plain-gap_reinit_head"]["start_mean"] == pytest.approx(0.69) and rows["plain-gap_reinit_head"]["n"] == 3
    )
    assert rows["sift-eb_size0.3__uci_learning_rate2e-05"]["start_mean"] == pytest.approx(0.5)  # its records' rows
    assert budget.start_loss_rows(key, variants, {}) == []  # no old gap, nothing to read
    shutil.copy(SPEC, root / SPEC.name)
    text, _ = summarize([root])
    assert "| `plain-gap_reinit_head` | control at the old gap's point | 3 | 0.690 [" in text


def test_the_spec_applies_only_to_the_group_with_its_arms_and_bad_specs_are_refused(eb_dir, tmp_path):
    spec = load_spec(SPEC)
    other = {"old_gap": {"arm": "sift-x", "against": "plain-y", "point": {"uci_learning_rate": 2e-5}}}
    _, variants = _group(eb_dir)
    assert budget.spec_for(variants, [other, spec])["path"] == str(SPEC)
    assert budget.spec_for(variants, [other]) == {}
    bad = tmp_path / "bad_study.yaml"
    bad.write_text("old_gap: {arm: sift-eb, against: plain-eb}\n")
    with pytest.raises(ValueError, match="bad_study.yaml: old_gap must have exactly arm, against and point"):
        load_spec(bad)
    bad.write_text("old_gapp: {}\n")
    with pytest.raises(ValueError, match="unknown key\\(s\\) old_gapp"):
        load_spec(bad)


@pytest.mark.slow
def test_summary_carries_the_controls_the_tuned_curve_and_the_verdicts(eb_dir, tmp_path):
    text, study = summarize([eb_dir])
    for heading in (
        "### The controls",
        "### The size curve at the tuned point",
        "### The verdicts",
        "### SiFT against SMART at matched perturbation size (the `tuned_curve_eps<E>` curve)",
    ):
        assert heading in text
    assert "| `sift-ctl_size0.3_reinit_head` | reinit_head true |" in text
    assert "**(3) " in text and "old gap: sift-eb_size0.3__uci_learning_rate2e-05" in text
    assert "(`equal_budget_study.yaml`)" in text
    assert [r for r in study.groups.values() if r.budget.verdicts][0].budget.verdicts[0].verdict == "1"
    # without the spec: no verdict 3, verdicts 1 and 2 stay
    (eb_dir / "elsewhere").mkdir(exist_ok=True)
    text2, _ = summarize([eb_dir], specs=[])
    assert "**(1) " in text2 and "**(3) " not in text2
    out = tmp_path / "S.md"
    assert summarize_main([str(eb_dir), "--out", str(out), "--figures", str(tmp_path / "fig")]) == 0
    figs = sorted(p.name for p in (tmp_path / "fig").glob("*.png"))
    assert f"twitter_to_uci_cpu_{COMMIT[:8]}_tuned_curve_uci_test_accuracy.png" in figs
    assert (
        f"![the size curve at the tuned point](fig/twitter_to_uci_cpu_{COMMIT[:8]}_tuned_curve_uci_test_accuracy.png)"
        in out.read_text()
    )


def test_curves_by_group_are_side_by_side_panels_titled_with_their_group(eb_dir, tmp_path):
    from helpers_regime import regime_study

    from siftkit.study import figures as summary_figures

    old = regime_study(tmp_path / "old", seeds=(1, 2), device="cpu")
    groups = group_runs(load_runs([eb_dir, old]))
    fig = summary_figures.curves_by_group_figure(groups, "twitter_to_uci")
    titles = [ax.get_title() for ax in fig.axes]
    assert len(titles) == 2
    assert f"code {COMMIT[:8]}" in titles[0] + titles[1] and "code aaaaaaaa" in titles[0] + titles[1]
    assert all(("aaaaaaaa" in t) != (COMMIT[:8] in t) for t in titles)  # one group per panel
    written = summary_figures.write_curves_by_group(groups, tmp_path / "fig")
    assert [k[2] for k in written] == [COMMIT]


def test_the_reading_guide_is_printed_from_the_verdict_rows(eb_dir):
    key, variants = _group(eb_dir)
    rows = budget.verdict_rows(key, variants, load_spec(eb_dir / SPEC.name))
    guide = budget.reading_guide(rows)
    largest = rows[0]
    assert guide[0].startswith(
        f"(1, twitter_to_uci, cpu, code {COMMIT[:8]}) Against tuned plain: {largest['row']}: "
        f"{largest['mean']:+.3f} [{largest['ci_low']:+.3f}, {largest['ci_high']:+.3f}], n=5"
    )
    assert sum(line.startswith("(1,") for line in guide) == 1  # the arms one by one stay in the table
    old = next(r for r in rows if r["row"].startswith("old gap"))
    assert guide[-1].startswith(
        f"(3, code {COMMIT[:8]}) Tuning the rate removes +0.190 of the old gap of {old['mean']:+.3f}"
    )


def test_verdict_1_says_when_an_arms_budget_is_not_the_references(tmp_path):
    # SiFT's grid has run one point on one seed so far: its "choice" is no equal-budget choice
    grid_arm(tmp_path, "plain", "eb", {}, lambda x, s: 0.8 - abs(math.log10(x / TUNED)), lambda x, s: PLAIN_TEST[x])
    grid_arm(
        tmp_path,
        "sift",
        "eb_size0.3",
        SIFT_03,
        lambda x, s: 0.8,
        lambda x, s: 0.86,
        values=(2e-05,),
        seeds=(1,),
        then=(),
        size=0.3,
    )
    key, variants = _group(tmp_path)
    largest = budget.verdict_rows(key, variants)[0]
    assert (
        "**budgets differ** from the reference's 4 point(s) × 3 selection seed(s): sift-eb_size0.3 1 × 1"
        in largest["rests_on"]
    )
    full = budget.verdict_rows(*_group(equal_budget_study(tmp_path / "full")))[0]
    assert "budgets differ" not in full["rests_on"]
