"""The study layer reads a WiSE-FT run twice: as its own arm (alpha chosen inside the run, the
rate on the same grid as every arm's) and as plain's twin (its fine-tuned model, alpha = 1);
`summarize` reports the chosen alpha per run; the new fields are controls with a partner.
Records are synthetic, written as siftkit.run.training writes them (tests/helpers_grid.py)."""

from __future__ import annotations

import json

from helpers_grid import COMMIT, grid_record, write

from siftkit.study.arms import equal_budget
from siftkit.study.budget import control_rows, control_settings, uncontrolled_partner
from siftkit.study.runs import finetuned_twin, group_runs, load_runs, run_from_record
from siftkit.study.summarize import summarize

LR = ({"uci_learning_rate": 2e-05}, {"uci_learning_rate": 0.0001})


def wise_record(
    seed: int,
    grid: dict,
    index: int,
    *,
    alpha: float,
    val: float,
    test: float,
    val1: float,
    test1: float,
    arm_tag: str = "wise",
) -> dict:
    """A WiSE-FT grid run: metrics at the chosen alpha, the fine-tuned model's in ``wise_ft.finetuned``."""
    rec = grid_record("plain", seed, arm_tag, grid, index, val=val, test=test, controls={"wise_ft": True})
    rec["metrics"]["wise_ft_alpha"] = alpha
    finetuned = {"uci_val_accuracy": val1, "uci_val_mcc": val1 - 0.3, "uci_test_accuracy": test1}
    rec["wise_ft"] = {
        "scope": "encoder",
        "alphas": [0.0, 0.5, 1.0],
        "select_on": "uci_val_accuracy",
        "alpha": alpha,
        "curve": [],
        "finetuned": finetuned,
    }
    return rec


def _write_wise_arm(root):
    # seed -> per grid point (alpha, val, test, val at 1, test at 1)
    points = {
        1: [(0.5, 0.70, 0.71, 0.65, 0.64), (0.5, 0.88, 0.89, 0.86, 0.87)],
        2: [(1.0, 0.66, 0.67, 0.66, 0.67), (0.5, 0.90, 0.90, 0.85, 0.86)],
    }
    for seed, per_point in points.items():
        for index, (grid, (alpha, val, test, val1, test1)) in enumerate(zip(LR, per_point)):
            write(root, wise_record(seed, grid, index, alpha=alpha, val=val, test=test, val1=val1, test1=test1))


def test_a_wise_ft_run_has_a_fine_tuned_twin():
    rec = wise_record(1, LR[1], 1, alpha=0.5, val=0.88, test=0.89, val1=0.86, test1=0.87)
    run = run_from_record(rec)
    twin = finetuned_twin(run)
    assert twin.variant == "plain-wise_alpha1__uci_learning_rate0.0001" and twin.seed == 1
    assert twin.metric("uci_test_accuracy") == 0.87 and twin.metric("uci_val_accuracy") == 0.86
    assert "wise_ft_alpha" not in twin.metrics and "wise_ft" not in twin.record
    assert twin.record["config"]["wise_ft"] is False and twin.record["config"]["extra"]["arm"] == "plain-wise_alpha1"
    assert twin.record["twin_of"] == run.variant and twin.record["history"] == run.record["history"]
    assert run.metric("uci_test_accuracy") == 0.89  # the run itself stays the ensemble at its alpha
    assert (
        finetuned_twin(twin) is None
        and finetuned_twin(run_from_record(grid_record("plain", 1, "eb", LR[0], 0, val=0.5, test=0.5))) is None
    )


def test_wise_ft_is_its_own_arm_and_its_twin_is_plains_arm(tmp_path):
    _write_wise_arm(tmp_path)
    (variants,) = group_runs(load_runs([tmp_path])).values()
    eb = equal_budget(variants, "twitter_to_uci")
    arms = {a.arm: a for a in eb.arms}
    assert set(arms) == {"plain-wise", "plain-wise_alpha1"}
    wise, twin = arms["plain-wise"], arms["plain-wise_alpha1"]
    assert wise.control and not twin.control
    # both chose the rate on their own validation metric, over the same grid and seeds
    assert wise.chosen_label == twin.chosen_label == "uci_learning_rate0.0001"
    assert wise.test_per_seed == {1: 0.89, 2: 0.90} and twin.test_per_seed == {1: 0.87, 2: 0.86}
    assert eb.reference == "plain-wise_alpha1"  # plain's twin: plain, no control set
    (diff,) = [d for d in eb.differences if d.a.arm == "plain-wise"]
    assert abs(diff.diff.mean - 0.03) < 1e-12


def test_summarize_reports_the_chosen_alpha_per_run(tmp_path):
    _write_wise_arm(tmp_path)
    text, study = summarize([tmp_path])
    assert "WiSE-FT: alpha chosen per run on `uci_val_accuracy`" in text
    (block,) = study.groups.values()
    assert sorted(
        (r["seed"], r["alpha"], r["test_at_1"]) for r in block.wise_runs if r["variant"].endswith("0.0001")
    ) == [(1, 0.5, 0.87), (2, 0.5, 0.86)]
    assert any(
        d["variant"] == "plain-wise__uci_learning_rate0.0001"
        and d["twin"] == "plain-wise_alpha1__uci_learning_rate0.0001"
        and abs(d["mean"] - 0.03) < 1e-12
        for d in block.wise_differences
    )
    assert "| `plain-wise__uci_learning_rate0.0001` | 2 | encoder | 0.5 |" in text


def test_the_new_fields_are_controls_with_their_uncontrolled_partner(tmp_path):
    at = {"arm": "plain-eb", "point": {"uci_learning_rate": "1e-4"}, "select_on": "uci_val_accuracy"}
    for seed in (1, 2):
        for tag, controls in {
            "ctl_lpft": {"lp_ft_epochs": 3, "lp_ft_learning_rate": 0.01},
            "ctl_llrd": {"layer_lr_decay": 0.95},
            "ctl_reinit": {"reinit_layers": 1},
            "ctl_none": {},
        }.items():
            rec = grid_record("plain", seed, "x", LR[1], 0, val=0.8, test=0.8 + 0.01 * seed, controls=controls)
            rec["config"]["extra"] = {"tag": tag, "at_chosen": at}
            write(tmp_path, rec)
        rec = wise_record(seed, LR[1], 0, alpha=0.5, val=0.9, test=0.9, val1=0.8, test1=0.85)
        rec["config"]["extra"] = {"tag": "ctl_wise", "at_chosen": at}
        rec["config"]["wise_ft_scope"] = "model"
        write(tmp_path, rec)
    ((key, variants),) = group_runs(load_runs([tmp_path])).items()
    assert control_settings(variants["plain-ctl_lpft"][0]) == {"lp_ft_epochs": 3}
    assert control_settings(variants["plain-ctl_wise"][0]) == {"wise_ft": True}
    for control in ("plain-ctl_lpft", "plain-ctl_llrd", "plain-ctl_reinit"):
        assert uncontrolled_partner(control, variants) == "plain-ctl_none"
    # WiSE-FT's partner is its own twin (same runs, same seeds, at the same point), its scope aside
    assert uncontrolled_partner("plain-ctl_wise", variants) == "plain-ctl_wise_alpha1"
    rows = control_rows(key, variants)
    wise = [r for r in rows if r["control"] == "plain-ctl_wise"]
    assert wise and wise[0]["against"] == "plain-ctl_wise_alpha1" and abs(wise[0]["mean"] - 0.05) < 1e-12
    assert "WiSE-FT" in wise[0]["what it tests"]
    assert any("LP-FT" in r["what it tests"] for r in rows if r["control"] == "plain-ctl_lpft")
    json.dumps(rows)  # rows are plain data
    assert COMMIT in {r.commit for recs in variants.values() for r in recs}


def test_the_alpha_curve_figure_marks_the_chosen_alpha(tmp_path):
    from siftkit.explore import plotting

    rec = wise_record(1, LR[1], 1, alpha=0.6, val=0.9, test=0.8, val1=0.85, test1=0.87)
    rec["wise_ft"]["curve"] = [
        {"alpha": a, "uci_val_accuracy": 0.9 - abs(a - 0.6), "uci_test_accuracy": 0.9 - abs(a - 0.2)}
        for a in (0.0, 0.2, 0.6, 1.0)
    ]
    frame = plotting.wise_ft_frame(rec)
    assert list(frame.index) == [0.0, 0.2, 0.6, 1.0]
    fig = plotting.wise_ft_curve(rec)
    ax = fig.axes[0]
    chosen = [line for line in ax.get_lines() if line.get_label().startswith("chosen alpha")]
    assert len(chosen) == 1 and list(chosen[0].get_xdata()) == [0.6, 0.6]
    assert "0.800 at the chosen alpha 0.6, 0.870 at alpha 1" in ax.get_title()
    assert plotting.save_figure(fig, tmp_path / "curve.png").stat().st_size > 0
    assert plotting.wise_ft_curve(grid_record("plain", 1, "eb", LR[0], 0, val=0.5, test=0.5)) is None
