"""The leaderboard: every benchmark arm against tuned plain on every shift, from synthetic records
written as the training loop writes them (tests/helpers_grid.py)."""

from __future__ import annotations

import math

from helpers_grid import grid_record, write

from siftkit.study.leaderboard import leaderboard, leaderboard_markdown, verdict_sentences
from siftkit.study.runs import group_runs, load_runs

LR2 = ({"uci_learning_rate": 5e-05}, {"uci_learning_rate": 0.0001})


def _arm(root, algo, tag, tests_by_point, *, vals, task="twitter_to_uci", seconds=10.0):
    """tests_by_point: per grid point {seed: test}; vals: per grid point the validation metric."""
    for index, (grid, tests) in enumerate(zip(LR2, tests_by_point)):
        for seed, test in tests.items():
            rec = grid_record(algo, seed, tag, grid, index, val=vals[index], test=test, task=task)
            rec["meta"]["stage_train_seconds"] = {"twitter": seconds, "uci": seconds}
            write(root, rec)


def _board(root, **kw):
    return leaderboard(group_runs(load_runs([root])), **kw)


def test_arms_are_judged_at_the_point_validation_chose_never_on_test(tmp_path):
    base = {1: 0.80, 2: 0.82, 3: 0.81}
    # plain: the second point wins on validation; the first would win on test.
    _arm(tmp_path, "plain", "bench", [{s: t + 0.05 for s, t in base.items()}, base], vals=[0.70, 0.75])
    # freelb: chosen on validation at its first point, which is better on test than plain by 0.02-0.04.
    _arm(
        tmp_path,
        "freelb",
        "bench",
        [{1: 0.83, 2: 0.85, 3: 0.84}, {1: 0.5, 2: 0.5, 3: 0.5}],
        vals=[0.76, 0.74],
        seconds=30.0,
    )
    # r3f: its better-on-test point is not the one validation chose.
    _arm(tmp_path, "r3f", "bench", [{1: 0.95, 2: 0.95, 3: 0.95}, {1: 0.80, 2: 0.82, 3: 0.81}], vals=[0.60, 0.75])
    # another study's arm with another tag: not on the board.
    _arm(tmp_path, "vat", "other", [base, base], vals=[0.7, 0.7])
    board = _board(tmp_path, tag_prefix="bench")
    (shift,) = board.shifts
    assert shift.shift == "P2" and shift.reference == "plain-bench" and shift.equal_budgets
    freelb = board.cell("freelb-bench", "P2", "uci_test_accuracy")
    assert freelb.chosen == "uci_learning_rate5e-05" and freelb.verdict == "better"
    assert math.isclose(freelb.mean, 0.03) and math.isclose(freelb.cost, 3.0)
    r3f = board.cell("r3f-bench", "P2", "uci_test_accuracy")
    assert r3f.chosen == "uci_learning_rate0.0001" and math.isclose(r3f.mean, 0.0, abs_tol=1e-12)
    assert board.tally("freelb-bench") == {"better": 1, "same": 0, "worse": 0}
    assert "vat-other" not in board.arms
    text = "\n".join(leaderboard_markdown(board))
    assert "`freelb-bench`" in text and "tuned plain (0)" in text and "1 / 0 / 0" in text
    (sentence, *_) = verdict_sentences(board)
    assert sentence.startswith("`freelb-bench` beats tuned plain on P2 uci_test_accuracy by +0.030")


def test_unequal_budgets_are_said(tmp_path):
    base = {1: 0.80, 2: 0.82, 3: 0.81}
    _arm(tmp_path, "plain", "bench", [base, base], vals=[0.7, 0.75])
    rec = grid_record("sift", 1, "bench", LR2[0], 0, val=0.7, test=0.8)
    write(tmp_path, rec)
    for seed in (1, 2, 3):
        write(tmp_path, grid_record("sift", seed, "bench", LR2[0], 0, val=0.7, test=0.8))
    # declared: one point x 3 seeds; plain ran two points, beyond the budget
    board = _board(tmp_path, budget=(1, 3))
    assert not board.shifts[0].equal_budgets and board.shifts[0].incomplete == []
    assert "**budgets differ**" in "\n".join(leaderboard_markdown(board))


def test_no_winner_is_said_in_one_sentence(tmp_path):
    base = {1: 0.80, 2: 0.82, 3: 0.81}
    _arm(tmp_path, "plain", "bench", [base, base], vals=[0.7, 0.75])
    _arm(tmp_path, "sift", "bench", [{1: 0.79, 2: 0.83, 3: 0.81}, base], vals=[0.8, 0.7])
    assert (
        verdict_sentences(_board(tmp_path))[0]
        == "No arm beats tuned plain on any of the 1 shift-target cells judged so far at 95% (1 arms)."
    )


def test_forest_figure_draws_one_panel_per_target(tmp_path):
    from siftkit.study.figures import forest_figure, write_forest_figures

    base = {1: 0.80, 2: 0.82, 3: 0.81}
    _arm(tmp_path, "plain", "bench", [base, base], vals=[0.7, 0.75])
    _arm(tmp_path, "sift", "bench", [{1: 0.79, 2: 0.83, 3: 0.81}, base], vals=[0.8, 0.7])
    _arm(tmp_path, "freelb", "bench", [{1: 0.83, 2: 0.85, 3: 0.84}, base], vals=[0.8, 0.7])
    board = _board(tmp_path)
    fig = forest_figure(board, "P2")
    assert len(fig.axes) == 1
    assert sorted(t.get_text() for t in fig.axes[0].get_yticklabels()) == ["freelb-bench", "sift-bench"]
    assert forest_figure(board, "nowhere") is None
    paths = write_forest_figures(board, tmp_path)
    assert paths["P2"].name == "leaderboard_p2.png" and paths["P2"].stat().st_size > 0


def test_a_study_spec_with_a_leaderboard_opens_summary_md_with_it(tmp_path):
    from siftkit.cli.main import main as cli_main

    base = {1: 0.80, 2: 0.82, 3: 0.81}
    _arm(tmp_path, "plain", "bench", [base, base], vals=[0.7, 0.75])
    _arm(tmp_path, "freelb", "bench", [{1: 0.83, 2: 0.86, 3: 0.84}, base], vals=[0.8, 0.7])
    (tmp_path / "bench_study.yaml").write_text("leaderboard: {tag_prefix: bench, title: The benchmark}\n")
    assert cli_main(["summarize", str(tmp_path)]) == 0
    text = (tmp_path / "SUMMARY.md").read_text()
    head = text.split("\n## ")[1]
    assert head.startswith("The benchmark") and "`freelb-bench`" in head and "beats tuned plain" in head
    assert (
        "![leaderboard_p2](figures/leaderboard_p2.png)" in head and (tmp_path / "figures/leaderboard_p2.png").exists()
    )


def test_a_bad_leaderboard_entry_names_the_spec(tmp_path):
    import pytest

    from siftkit.study.spec import load_spec

    (tmp_path / "x_study.yaml").write_text("leaderboard: {tag_prefx: bench}\n")
    with pytest.raises(ValueError, match="x_study.yaml: leaderboard must be a mapping with tag_prefix"):
        load_spec(tmp_path / "x_study.yaml")


def test_a_wise_ft_arm_is_judged_against_tuned_plain_and_its_own_alpha1_twin(tmp_path):
    base = {1: 0.80, 2: 0.82, 3: 0.81}
    _arm(tmp_path, "plain", "bench", [base, base], vals=[0.7, 0.75])
    # WiSE-FT runs: metrics at the chosen alpha, the fine-tuned model's (alpha = 1) in wise_ft.finetuned.
    for index, grid in enumerate(LR2):
        for seed, test in base.items():
            rec = grid_record(
                "plain",
                seed,
                "bench_wise",
                grid,
                index,
                val=0.76 - 0.01 * index,
                test=test + 0.02,
                controls={"wise_ft": True},
            )
            rec["wise_ft"] = {
                "alpha": 0.5,
                "scope": "encoder",
                "select_on": "uci_val_accuracy",
                "finetuned": {"uci_val_accuracy": 0.7, "uci_test_accuracy": test - 0.01},
            }
            write(tmp_path, rec)
    board = _board(tmp_path, tag_prefix="bench")
    assert board.shifts[0].reference == "plain-bench"
    assert "plain-bench_wise_alpha1" not in board.arms and "plain-bench_wise" in board.arms
    assert math.isclose(board.cell("plain-bench_wise", "P2", "uci_test_accuracy").mean, 0.02)
    own = board.against_base[("plain-bench_wise", "P2", "uci_test_accuracy")]
    assert math.isclose(own.mean, 0.03) and own.n == 3
    assert any("against its own fine-tuned model" in s for s in verdict_sentences(board))


def test_an_arm_whose_grid_is_still_running_is_not_judged(tmp_path):
    base = {1: 0.80, 2: 0.82, 3: 0.81}
    _arm(tmp_path, "plain", "bench", [base, base], vals=[0.7, 0.75])
    write(tmp_path, grid_record("freelb", 1, "bench", LR2[0], 0, val=0.9, test=0.95))  # 1 point, 1 seed so far
    board = _board(tmp_path)
    (shift,) = board.shifts
    assert shift.incomplete == ["freelb-bench"] and shift.equal_budgets
    assert board.cell("freelb-bench", "P2", "uci_test_accuracy") is None
    text = "\n".join(leaderboard_markdown(board))
    assert (
        "Still running (not judged until every grid point has every seed): `freelb-bench` (1 points × 1 seeds)" in text
    )


def test_cost_counts_each_stage_where_it_was_trained_over_every_run_of_the_arm(tmp_path):
    """A stage read from the stage cache was timed by another run: it must not count twice, and a
    run that waited on a loaded machine moves a median, not the whole ratio."""
    from siftkit.study.leaderboard import _cost
    from siftkit.study.runs import Run

    def run(seconds, cached=()):
        return Run(
            path=None,
            record={"meta": {"stage_train_seconds": seconds, "stages_from_cache": list(cached)}},
            task="twitter_to_uci",
            model="m",
            device="cpu",
            commit="c",
            algo="plain",
            tag=None,
            seed=1,
        )

    plain = [
        run({"twitter": 100.0, "uci": 10.0}),
        run({"twitter": 100.0, "uci": 10.0}, cached=["twitter"]),
        run({"twitter": 100.0, "uci": 12.0}, cached=["twitter"]),
    ]
    # freelb: twice plain's stage 1, 3x its stage 2; one stage-2 run slowed 10x by a busy machine.
    freelb = [
        run({"twitter": 200.0, "uci": 30.0}),
        run({"twitter": 200.0, "uci": 300.0}, cached=["twitter"]),
        run({"twitter": 200.0, "uci": 30.0}, cached=["twitter"]),
    ]
    assert math.isclose(_cost(freelb, plain), (200.0 + 30.0) / (100.0 + 10.0))
    # a run read every stage from the cache: nothing of its own to time, the ratio unchanged
    assert math.isclose(
        _cost(freelb + [run({"twitter": 1.0, "uci": 1.0}, cached=["twitter", "uci"])], plain),
        (200.0 + 30.0) / (100.0 + 10.0),
    )
    # an arm that trained only stage 2 itself (stage 1 from plain's cache) is timed on stage 2
    assert math.isclose(_cost([run({"twitter": 100.0, "uci": 5.0}, cached=["twitter"])], plain), 0.5)
    assert _cost([run({"twitter": 1.0}, cached=["twitter"])], plain) is None  # nothing timed: no ratio


def test_step_costs_come_from_the_one_process_measurement_by_method(tmp_path):
    import json

    import pytest

    from siftkit.study.leaderboard import read_step_costs

    base = {1: 0.80, 2: 0.82, 3: 0.81}
    _arm(tmp_path, "plain", "bench", [base, base], vals=[0.7, 0.75])
    _arm(tmp_path, "freelb", "bench", [base, base], vals=[0.7, 0.75])
    _arm(tmp_path, "plain", "bench_wise", [base, base], vals=[0.7, 0.75])
    costs = tmp_path / "costs.json"
    costs.write_text(json.dumps({"rows": {"plain": {"ratio_to_plain": 1.0}, "freelb": {"ratio_to_plain": 1.75}}}))
    board = _board(tmp_path / "twitter_to_uci", tag_prefix="bench", step_costs=read_step_costs(costs))
    assert board.step_cost("freelb-bench") == 1.75 and board.step_cost("plain-bench_wise") == 1.0
    text = "\n".join(leaderboard_markdown(board))
    assert "step × plain" in text and "| 1.75 |" in text
    costs.write_text(json.dumps({"rows": {"freelb": {"ratio_to_plain": "fast"}}}))
    with pytest.raises(ValueError, match="rows.freelb.ratio_to_plain must be a positive number"):
        read_step_costs(costs)
    with pytest.raises(ValueError, match="does not exist"):
        read_step_costs(tmp_path / "missing.json")


def test_an_out_of_domain_arm_is_read_against_plain_at_its_own_learning_rate(tmp_path):
    """LP-FT (plain with head-only epochs first) chooses a learning rate and a number of epochs; read
    against tuned plain it mixes the two choices, so it is also read against plain's own grid point
    at the same rate, seed for seed: what the head-only epochs add."""
    from helpers_grid import write_arm

    low = {1: (0.60, 0.5), 2: (0.60, 0.5), 3: (0.60, 0.5)}
    plain = [
        ({"uci_learning_rate": 2e-05}, low),
        ({"uci_learning_rate": 5e-05}, {1: (0.70, 0.80), 2: (0.70, 0.82), 3: (0.70, 0.81)}),
        ({"uci_learning_rate": 0.0001}, {1: (0.75, 0.85), 2: (0.75, 0.86), 3: (0.75, 0.84)}),
        ({"uci_learning_rate": 0.0002}, low),
    ]  # the same budget as LP-FT's: 4 points x 3 seeds
    write_arm(tmp_path, "plain", "bench", plain)
    # LP-FT chooses 5e-5 with 5 epochs: +0.04 over plain at 5e-5, -0.01 against tuned plain (1e-4)
    lpft = [
        ({"uci_learning_rate": 5e-05, "lp_ft_epochs": 1}, {1: (0.60, 0.5), 2: (0.60, 0.5), 3: (0.60, 0.5)}),
        ({"uci_learning_rate": 5e-05, "lp_ft_epochs": 5}, {1: (0.80, 0.84), 2: (0.80, 0.85), 3: (0.80, 0.86)}),
        ({"uci_learning_rate": 0.0001, "lp_ft_epochs": 1}, {1: (0.60, 0.5), 2: (0.60, 0.5), 3: (0.60, 0.5)}),
        ({"uci_learning_rate": 0.0001, "lp_ft_epochs": 5}, {1: (0.60, 0.5), 2: (0.60, 0.5), 3: (0.60, 0.5)}),
    ]
    write_arm(tmp_path, "plain", "bench_lpft", lpft)
    board = _board(tmp_path, tag_prefix="bench")
    vs_tuned = board.cell("plain-bench_lpft", "P2", "uci_test_accuracy")
    assert math.isclose(vs_tuned.mean, 0.0, abs_tol=1e-9)  # (0.84+0.85+0.86 - 0.85-0.86-0.84) / 3
    own = board.against_base[("plain-bench_lpft", "P2", "uci_test_accuracy")]
    assert math.isclose(own.mean, 0.04) and own.verdict == "better"
    assert "`plain-bench` at its own uci_learning_rate 5e-05" in own.base
    assert ("plain-bench", "P2", "uci_test_accuracy") not in board.against_base  # the reference has no base
    assert any(
        s.startswith("`plain-bench_lpft` against `plain-bench` at its own uci_learning_rate 5e-05")
        for s in verdict_sentences(board)
    )
