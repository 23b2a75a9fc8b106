"""Equal tuning budgets in the study: `summarize` chooses each arm's point on its validation metric
and reads the test metric only there, and pairs the arms at their chosen points (how `sweep --grid`
plans the grids: tests/cli/test_sweep.py). Records are synthetic, written the
way siftkit.run.training writes them (with the fields a newer RunConfig adds, read with defaults)."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest
from helpers_grid import grid_record, write, write_arm

from siftkit.study.arms import EQUAL_BUDGET_COLUMNS, equal_budget, equal_budget_differences, equal_budget_table
from siftkit.study.runs import group_runs, load_runs
from siftkit.study.select import select_point
from siftkit.study.stats import mean_ci, paired_difference
from siftkit.study.summarize import summarize


def _groups(root):
    return group_runs(load_runs([root]))


def _arms(root, task="twitter_to_uci"):
    (variants,) = _groups(root).values()
    return {a.arm: a for a in equal_budget(variants, task).arms}


LR = ({"learning_rate": 2e-05}, {"learning_rate": 0.0001})


# ----------------------------------------------------------------------------- the choice in summarize


def test_the_chosen_point_is_the_validation_one_and_its_test_numbers_are_reported(tmp_path):
    # validation favours lr 2e-05, the test metric favours lr 1e-4: the choice must not follow the test
    val_pt = {1: (0.80, 0.60), 2: (0.82, 0.62), 3: (0.81, 0.61)}
    test_pt = {1: (0.70, 0.75), 2: (0.71, 0.77), 3: (0.72, 0.76)}
    write_arm(tmp_path, "sift", "lr", [(LR[0], val_pt), (LR[1], test_pt)])
    arm = _arms(tmp_path)["sift-lr"]
    assert arm.chosen_label == "learning_rate2e-05" and arm.selection_seeds == (1, 2, 3)
    tests = [v[1] for v in val_pt.values()]
    expect = mean_ci(tests)
    assert arm.test.mean == pytest.approx(0.61) and arm.test.low == pytest.approx(expect["low"])
    assert arm.gap == pytest.approx(0.81 - 0.61)
    text, study = summarize([tmp_path])
    assert "Chosen: **`learning_rate2e-05`**" in text
    assert f"`uci_test_accuracy` 0.610 [{expect['low']:.3f}, {expect['high']:.3f}]" in text
    row = pd.DataFrame(equal_budget_table(_groups(tmp_path)), columns=EQUAL_BUDGET_COLUMNS).iloc[0]
    assert (row["arm"], row["chosen"], row["select_on"], row["points"]) == (
        "sift-lr",
        "learning_rate2e-05",
        "uci_val_accuracy",
        2,
    )
    assert row["test_mean"] == pytest.approx(0.61) and row["tuned"] == "learning_rate ∈ {2e-05, 0.0001}"
    assert "sift-lr" in next(iter(study.groups.values())).equal_budget.arms[0].arm


def test_selection_seeds_leave_out_a_points_extra_seeds_which_then_count_at_the_chosen_point(tmp_path):
    # point 1 is better over seeds 1-3; point 2 would win if its extra seeds 4-5 (0.99) counted
    write_arm(
        tmp_path,
        "plain",
        "lr",
        [
            (LR[0], {1: (0.75, 0.6), 2: (0.75, 0.6), 3: (0.75, 0.6)}),
            (LR[1], {1: (0.74, 0.7), 2: (0.74, 0.7), 3: (0.74, 0.7), 4: (0.99, 0.7), 5: (0.99, 0.7)}),
        ],
    )
    arm = _arms(tmp_path)["plain-lr"]
    assert arm.selection_seeds == (1, 2, 3) and arm.chosen_label == "learning_rate2e-05"
    assert [p.select.n for p in arm.points] == [3, 3]
    # --then-seeds runs at the chosen point carry its tag: its numbers are over all five seeds
    for seed in (4, 5):
        write(tmp_path, grid_record("plain", seed, "lr", LR[0], 0, val=0.76, test=0.65, chosen=True))
    arm = _arms(tmp_path)["plain-lr"]
    assert arm.chosen_label == "learning_rate2e-05" and arm.selection_seeds == (1, 2, 3)
    assert arm.test.n == 5 and arm.test.mean == pytest.approx((3 * 0.6 + 2 * 0.65) / 5)


def test_a_tie_goes_to_the_first_point_in_grid_order_not_in_value_order(tmp_path):
    # grid order: 1e-4 first (grid_index 0), 2e-05 second; equal validation means
    write_arm(
        tmp_path, "smart", "lr", [(LR[1], {1: (0.7, 0.6), 2: (0.8, 0.6)}), (LR[0], {1: (0.8, 0.9), 2: (0.7, 0.9)})]
    )
    arm = _arms(tmp_path)["smart-lr"]
    assert [p.label for p in arm.points] == ["learning_rate0.0001", "learning_rate2e-05"]
    assert arm.chosen_label == "learning_rate0.0001"
    assert select_point([{1: 0.5}, {1: 0.5}, {1: 0.4}])["chosen"] == 0


def test_a_point_missing_the_validation_metric_cannot_be_chosen_and_says_so(tmp_path):
    write_arm(
        tmp_path, "sift", "lr", [(LR[0], {1: (0.70, 0.6), 2: (0.70, 0.6)}), (LR[1], {1: (0.95, 0.8), 2: (None, 0.8)})]
    )
    arm = _arms(tmp_path)["sift-lr"]
    assert arm.chosen_label == "learning_rate2e-05" and arm.points[1].missing == (2,)
    text, _ = summarize([tmp_path])
    assert "cannot be chosen: missing for seed(s) 2" in text
    # no point with the metric at all: no choice, no test number read
    other = tmp_path / "none"
    write_arm(other, "sift", "lr", [(LR[0], {1: (None, 0.6)}), (LR[1], {1: (None, 0.8)})])
    arm = _arms(other)["sift-lr"]
    assert arm.chosen is None and math.isnan(arm.test.mean)
    assert "No point can be chosen" in summarize([other])[0]


def test_arms_are_paired_at_their_chosen_points_against_the_reference_arm(tmp_path):
    seeds = (1, 2, 3)
    plain = {s: (0.70, 0.60 + 0.01 * s) for s in seeds}
    write_arm(tmp_path, "plain", "lr", [(LR[0], plain), (LR[1], {s: (0.60, 0.90) for s in seeds})])
    write_arm(
        tmp_path, "plain", "b", [(LR[0], {s: (0.70, 0.50) for s in seeds}), (LR[1], {s: (0.6, 0.5) for s in seeds})]
    )
    # a control arm whose base tag sorts first is not the reference
    write_arm(
        tmp_path,
        "plain",
        "a_ls",
        [(LR[0], {s: (0.70, 0.99) for s in seeds}), (LR[1], {s: (0.6, 0.99) for s in seeds})],
        controls={"label_smoothing": 0.1},
    )
    smart = {s: (0.65, 0.62 + 0.02 * s) for s in seeds}
    sift = {s: (0.60, 0.70 + 0.005 * s * s) for s in seeds}
    write_arm(tmp_path, "smart", "lr", [(LR[0], {s: (0.50, 0.99) for s in seeds}), (LR[1], smart)])
    write_arm(tmp_path, "sift", "lr", [(LR[0], sift), (LR[1], {s: (0.55, 0.10) for s in seeds})])
    groups = _groups(tmp_path)
    (variants,) = groups.values()
    eb = equal_budget(variants, "twitter_to_uci")
    assert eb.reference == "plain-b" and "`plain-lr` also qualifies" in eb.reference_note
    rows = {r["difference"]: r for r in equal_budget_differences(groups)}
    assert set(rows) == {
        "plain-a_ls − plain-b",
        "plain-lr − plain-b",
        "smart-lr − plain-b",
        "sift-lr − plain-b",
        "sift-lr − smart-lr",
    }
    d = rows["sift-lr − smart-lr"]
    ref = paired_difference({s: sift[s][1] for s in seeds}, {s: smart[s][1] for s in seeds})
    assert (d["a_chosen"], d["b_chosen"]) == ("learning_rate2e-05", "learning_rate0.0001")
    assert d["n"] == 3 and d["mean"] == pytest.approx(ref["mean"]) and d["ci_low"] == pytest.approx(ref["low"])
    assert d["tuned"] == "learning_rate ∈ {2e-05, 0.0001}" and d["select_on"] == "uci_val_accuracy"
    text, _ = summarize([tmp_path])
    assert "Reference arm: `plain-b`" in text and "| `sift-lr` − `smart-lr` | `learning_rate2e-05` − " in text


def test_a_record_that_selected_on_a_test_metric_is_refused(tmp_path):
    write_arm(tmp_path, "sift", "lr", [(LR[0], {1: (0.7, 0.6)})], select_on="uci_test_accuracy")
    with pytest.raises(ValueError, match="extra.select_on: --select-on uci_test_accuracy is a test metric"):
        summarize([tmp_path])


# ----------------------------------------------------------------------------- a real grid sweep, summarized


@pytest.mark.subprocess
def test_a_real_grid_sweep_records_its_points_and_summarizes(tmp_path, smoke_params, data_dir):
    """Real `train` processes: the typed `extra` reaches results.json, and the chosen-point run
    trains with the chosen point's setting."""
    import subprocess
    import sys

    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "siftkit",
            "sweep",
            "--params",
            str(smoke_params),
            "--task",
            "cola",
            "--algos",
            "plain",
            "--seeds",
            "1",
            "--tag",
            "lr",
            "--grid",
            "learning_rate=1e-3,1e-4",
            "--then-seeds",
            "2",
            "--max_train_samples",
            "8",
            "--output-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("can start now that what it waited for is finished") == 1
    point = json.loads((tmp_path / "cola" / "plain-lr__learning_rate0.0001" / "seed1" / "results.json").read_text())
    assert point["config"]["extra"] == {
        "tag": "lr__learning_rate0.0001",
        "arm": "plain-lr",
        "grid": {"learning_rate": 0.0001},
        "grid_index": 1,
        "select_on": "in_domain_dev_mcc",
    }
    arm = _arms(tmp_path, "cola")["plain-lr"]
    chosen = json.loads((tmp_path / "cola" / "plain-lr__chosen" / "seed2" / "results.json").read_text())["config"]
    assert chosen["extra"]["chosen"] is True and chosen["extra"]["tag"] == f"lr__{arm.chosen_label}"
    assert chosen["learning_rate"] == chosen["extra"]["grid"]["learning_rate"] and arm.test.n == 2
