"""`sweep` (siftkit.cli.sweep): a resumable sweep, one process per run; `--grid` plans every arm's
grid on the same seeds, `--then-seeds` runs extra seeds at the point chosen on validation, and
`--at-chosen` runs wait for another arm's grid; the committed plans plan every run they say."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from helpers_grid import grid_record

from siftkit.cli.main import main as cli_main
from siftkit.cli.sweep import PlannedRun, parse_algos, parse_seeds, plan, plan_file
from siftkit.run.config import RunConfig
from siftkit.study.select import DEFAULT_SELECT_ON

REPO = Path(__file__).resolve().parents[2]
SMOKE = REPO / "params" / "smoke.yaml"


def test_parse_seeds_and_algos():
    assert parse_seeds("1-5") == [1, 2, 3, 4, 5]
    assert parse_seeds("2-3,9,3") == [2, 3, 9]
    for bad in ("5-1", "a", "", "-1"):
        with pytest.raises(ValueError, match="--seeds"):
            parse_seeds(bad)
    assert parse_algos("plain,sift") == ["plain", "sift"]
    with pytest.raises(ValueError, match="--algos"):
        parse_algos("plain,smrt")


def _sweep(tmp_path, smoke_params, *extra):
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "siftkit",
            "sweep",
            "--params",
            str(smoke_params),
            "--algos",
            "plain",
            "--seeds",
            "1-2",
            "--output-dir",
            str(tmp_path / "study"),
            "--max_train_samples",
            "8",
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.subprocess
def test_sweep_runs_skips_finished_runs_and_reports_failures(tmp_path, smoke_params):
    first = _sweep(tmp_path, smoke_params)
    assert first.returncode == 0, first.stderr
    assert "2 to run" in first.stdout
    runs = sorted((tmp_path / "study" / "twitter_to_uci" / "plain").glob("seed*/results.json"))
    assert [p.parent.name for p in runs] == ["seed1", "seed2"]
    assert json.loads(runs[1].read_text())["config"]["seed"] == 2
    again = _sweep(tmp_path, smoke_params)
    assert again.returncode == 0 and "2 already done, 0 to run" in again.stdout
    # a run that fails (missing data folder) is reported; the sweep still tries the other one
    failed = _sweep(tmp_path, smoke_params, "--tag", "broken", "--data_dir", str(tmp_path / "nowhere"))
    assert failed.returncode == 1
    assert failed.stdout.count("FAILED") == 2 and "2 run(s) failed" in failed.stderr


# ----------------------------------------------------------------------------- grids and the chosen point


def _extra(run: PlannedRun) -> dict:
    return json.loads(run.args[run.args.index("--extra") + 1])


def test_grid_is_the_cross_product_in_the_order_given_with_compact_tags(tmp_path):
    runs = plan(
        str(SMOKE),
        ["smart", "sift"],
        [1, 2],
        tmp_path,
        "lr",
        {"task": "cola"},
        grid=["learning_rate=2e-5,1e-4", "adv_weight=1,5"],
    )
    assert len(runs) == 2 * 4 * 2
    names = [f"{r.run_dir.parent.name}/{r.run_dir.name}" for r in runs[:8]]
    assert names == [
        f"smart-lr__{p}/seed{s}"
        for p in (
            "learning_rate2e-05_adv_weight1",
            "learning_rate2e-05_adv_weight5",
            "learning_rate0.0001_adv_weight1",
            "learning_rate0.0001_adv_weight5",
        )
        for s in (1, 2)
    ]
    assert runs[8].run_dir == tmp_path / "cola" / "sift-lr__learning_rate2e-05_adv_weight1" / "seed1"
    extra = _extra(runs[9])
    assert extra == {
        "tag": "lr__learning_rate2e-05_adv_weight1",
        "arm": "sift-lr",
        "grid": {"learning_rate": 2e-05, "adv_weight": 1.0},
        "grid_index": 0,
        "select_on": "in_domain_dev_mcc",
    }
    assert isinstance(extra["grid"]["adv_weight"], float)
    assert "--learning_rate=2e-5" in runs[9].args and "--adv_weight=1" in runs[9].args
    # every value is checked at plan time, as the run will build it
    with pytest.raises(ValueError, match="adv_weight must be a finite number >= 0, got -2.0"):
        plan(str(SMOKE), ["sift"], [1], tmp_path, "w", {"task": "cola"}, grid=["adv_weight=1,-2"])


@pytest.mark.parametrize(
    "kwargs, overrides, message",
    [
        (
            {"grid": ["learning_rate=1e-4"], "select_on": "out_of_domain_dev_mcc"},
            {"task": "cola"},
            "--select-on out_of_domain_dev_mcc is a test metric: nothing in siftkit selects on a test metric",
        ),
        (
            {"grid": ["learning_rate=1e-4"], "select_on": "uci_zero_shot_accuracy"},
            {},
            "--select-on uci_zero_shot_accuracy is a test metric",
        ),
        (
            {"grid": ["learning_rate=1e-4,2e-5"]},
            {"task": "cola", "learning_rate": "1e-3"},
            "--grid learning_rate is also set as a fixed --learning_rate 1e-3; give it one way",
        ),
        (
            {"grid": ["learning_rate=1e-4"]},
            {},
            "--grid chooses on uci_val_accuracy (the default for twitter_to_uci), but uci_val_size is 0: P2 then holds "
            "out no UCI validation sentences; set --uci_val_size (e.g. 300)",
        ),
        ({"grid": ["seed=1,2"]}, {"task": "cola"}, "--grid seed: this field cannot be gridded"),
        ({"grid": ["learnig_rate=1e-4"]}, {"task": "cola"}, "--grid learnig_rate: not a RunConfig field"),
        ({"grid": ["learning_rate"]}, {"task": "cola"}, "--grid must look like FIELD=V1,V2"),
        ({"grid": ["learning_rate=1e-4,0.0001"]}, {"task": "cola"}, "--grid learning_rate lists 0.0001 more than once"),
        ({"grid": ["learning_rate=1e-4"], "then_seeds": [2, 3]}, {"task": "cola"}, "--then-seeds repeats --seeds seed"),
        ({"then_seeds": [3]}, {"task": "cola"}, "--select-on and --then-seeds choose among the points of a --grid"),
    ],
)
def test_bad_grid_plans_are_refused_with_a_clear_message(tmp_path, kwargs, overrides, message):
    with pytest.raises(ValueError) as err:
        plan(str(SMOKE), ["plain"], [1, 2], tmp_path, "lr", overrides, **kwargs)
    assert message in str(err.value)


def test_grid_needs_a_tag(tmp_path):
    with pytest.raises(ValueError, match="--grid needs --tag"):
        plan(str(SMOKE), ["plain"], [1], tmp_path, None, {"task": "cola"}, grid=["learning_rate=1e-4"])


def test_p2_may_choose_on_another_validation_metric(tmp_path):
    runs = plan(
        str(SMOKE), ["plain"], [1], tmp_path, "lr", {}, grid=["learning_rate=1e-4"], select_on="twitter_val_accuracy"
    )
    assert _extra(runs[0])["select_on"] == "twitter_val_accuracy"


@pytest.mark.skipif("uci_val_size" not in RunConfig.field_names(), reason="RunConfig has no uci_val_size yet")
def test_p2_with_a_validation_set_chooses_on_uci_val_accuracy(tmp_path):
    runs = plan(str(SMOKE), ["plain"], [1], tmp_path, "lr", {"uci_val_size": "300"}, grid=["learning_rate=1e-4"])
    assert _extra(runs[0])["select_on"] == "uci_val_accuracy"


def _finish(run: PlannedRun, val: float, test: float) -> None:
    extra = _extra(run)
    rec = grid_record(
        run.algo,
        run.seed,
        extra["arm"].partition("-")[2],
        extra["grid"],
        extra["grid_index"],
        val=val,
        test=test,
        task="cola",
        chosen=extra.get("chosen", False),
    )
    run.run_dir.mkdir(parents=True, exist_ok=True)
    (run.run_dir / "results.json").write_text(json.dumps(rec))


def _cola_grid(tmp_path, **kw):
    return plan(
        str(SMOKE),
        ["plain"],
        [1, 2],
        tmp_path,
        "lr",
        {"task": "cola"},
        grid=["learning_rate=2e-5,1e-4"],
        then_seeds=[3, 4],
        **kw,
    )


def test_then_seeds_wait_for_the_grid_then_run_at_the_point_chosen_on_validation(tmp_path):
    runs = _cola_grid(tmp_path)
    chosen = [r for r in runs if r.run_dir.parent.name == "plain-lr__chosen"]
    assert [r.run_dir for r in chosen] == [tmp_path / "cola" / "plain-lr__chosen" / f"seed{s}" for s in (3, 4)]
    assert runs[-2:] == chosen  # after the algo's grid runs, at positions fixed by the plan
    assert all(r.waiting == "4 of 4 grid runs not finished" and not r.runnable for r in chosen)
    grid = runs[:4]
    # validation favours lr 1e-4 (the second point), the test metric lr 2e-5
    for run in grid[:3]:
        _finish(run, val=0.3 if "2e-05" in str(run.run_dir) else 0.5, test=0.6 if "2e-05" in str(run.run_dir) else 0.2)
    again = _cola_grid(tmp_path)
    assert [r.waiting for r in again[-2:]] == ["1 of 4 grid runs not finished"] * 2
    _finish(grid[3], val=0.5, test=0.2)
    again = _cola_grid(tmp_path)
    assert [r.run_dir for r in again] == [r.run_dir for r in runs]  # the same list, in the same order
    run = again[-2]
    assert run.runnable and run.waiting is None
    assert run.args[run.args.index("--output_dir") + 1] == str(tmp_path / "cola" / "plain-lr__chosen" / "seed3")
    assert run.args[run.args.index("--seed") + 1] == "3" and "--learning_rate=1e-4" in run.args
    assert _extra(run) == {
        "tag": "lr__learning_rate0.0001",
        "arm": "plain-lr",
        "grid": {"learning_rate": 0.0001},
        "grid_index": 1,
        "select_on": "in_domain_dev_mcc",
        "chosen": True,
    }


def test_dry_run_lists_waiting_chosen_point_runs(tmp_path, capsys):
    code = cli_main(
        [
            "sweep",
            "--params",
            str(SMOKE),
            "--task",
            "cola",
            "--algos",
            "plain",
            "--seeds",
            "1",
            "--tag",
            "lr",
            "--grid",
            "learning_rate=2e-5,1e-4",
            "--then-seeds",
            "2",
            "--output-dir",
            str(tmp_path),
            "--dry-run",
        ]
    )
    out = capsys.readouterr().out.splitlines()
    assert code == 0
    assert out == [
        "sweep: 3 runs, 0 already done, 2 to run, 1 waiting for a grid to finish",
        f"todo  {tmp_path / 'cola' / 'plain-lr__learning_rate2e-05' / 'seed1'}",
        f"todo  {tmp_path / 'cola' / 'plain-lr__learning_rate0.0001' / 'seed1'}",
        f"wait  {tmp_path / 'cola' / 'plain-lr__chosen' / 'seed2'}  (2 of 2 grid runs not finished)",
    ]


def _fake_runs(monkeypatch, fail=()):
    """Replace training by a results.json whose validation metric favours the larger learning rate."""
    from siftkit.cli import sweep

    started = []

    def fake(run, log_dir):
        started.append(run.run_dir)
        if any(f in str(run.run_dir) for f in fail):
            return run, 1, 0.0
        lr = float(next(a for a in run.args if a.startswith("--learning_rate=")).partition("=")[2])
        _finish(run, val=lr * 1000, test=0.5)
        return run, 0, 0.0

    monkeypatch.setattr(sweep, "run_one", fake)
    return started


def test_one_sweep_runs_the_grid_then_the_chosen_point(tmp_path, monkeypatch, capsys):
    started = _fake_runs(monkeypatch)
    plan_path = tmp_path / "study.plan"
    plan_path.write_text(
        f"# a grid, then two more seeds at its chosen point\n"
        f"--params {SMOKE} --task cola --algos plain --seeds 1-2 --tag lr "
        f"--grid learning_rate=2e-5,1e-4 --then-seeds 3-4\n"
    )
    code = cli_main(["sweep", "--plan", str(plan_path), "--output-dir", str(tmp_path / "out")])
    out = capsys.readouterr().out
    assert code == 0 and out.count("can start now that what it waited for is finished") == 2
    assert [p.parent.name for p in started[-2:]] == ["plain-lr__chosen"] * 2
    rec = json.loads((tmp_path / "out" / "cola" / "plain-lr__chosen" / "seed4" / "results.json").read_text())
    assert rec["config"]["extra"]["tag"] == "lr__learning_rate0.0001" and rec["config"]["extra"]["chosen"] is True
    runs = plan_file(plan_path, tmp_path / "out")
    assert len(runs) == 6 and all(r.done for r in runs)


def test_a_failed_grid_point_leaves_its_chosen_runs_waiting_and_the_sweep_fails(tmp_path, monkeypatch, capsys):
    started = _fake_runs(monkeypatch, fail=("learning_rate2e-05/seed2",))
    code = cli_main(
        [
            "sweep",
            "--params",
            str(SMOKE),
            "--task",
            "cola",
            "--algos",
            "plain",
            "--seeds",
            "1-2",
            "--tag",
            "lr",
            "--grid",
            "learning_rate=2e-5,1e-4",
            "--then-seeds",
            "3",
            "--output-dir",
            str(tmp_path),
        ]
    )
    err = capsys.readouterr().err
    assert code == 1 and len(started) == 4
    assert "1 run(s) still waiting for a grid" in err and "(1 of 4 grid runs not finished)" in err
    assert "1 run(s) failed" in err
    assert not (tmp_path / "cola" / "plain-lr__chosen").exists()


def _finish_lr_grid(runs) -> None:
    """Finish a learning_rate=2e-5,1e-4 grid: validation favours 1e-4, the test metric 2e-5."""
    for run in runs:
        low = "2e-05" in str(run.run_dir)
        _finish(run, val=0.3 if low else 0.5, test=0.6 if low else 0.2)


def test_at_chosen_runs_wait_for_another_arms_grid_then_take_its_chosen_point(tmp_path):
    plan_path = tmp_path / "p.plan"
    plan_path.write_text(
        f"--params {SMOKE} --task cola --algos plain --seeds 1-2 --tag lr --grid learning_rate=2e-5,1e-4\n"
        f"--params {SMOKE} --task cola --algos plain --seeds 1-2 --tag smooth --label_smoothing 0.1 "
        f"--at-chosen plain-lr\n"
    )
    runs = plan_file(plan_path, tmp_path / "out")
    control = runs[4:]
    assert [r.run_dir for r in control] == [tmp_path / "out" / "cola" / "plain-smooth" / f"seed{s}" for s in (1, 2)]
    assert all(r.waiting == "4 of 4 grid runs of plain-lr not finished" for r in control)
    _finish_lr_grid(runs[:4])
    control = plan_file(plan_path, tmp_path / "out")[4:]
    assert all(r.runnable for r in control)
    args = control[0].args
    assert "--learning_rate=1e-4" in args and "--label_smoothing=0.1" in args
    assert json.loads(args[args.index("--extra") + 1]) == {
        "tag": "smooth",
        "at_chosen": {"arm": "plain-lr", "point": {"learning_rate": "1e-4"}, "select_on": "in_domain_dev_mcc"},
    }


@pytest.mark.parametrize(
    "line, message",
    [
        ("--algos plain --seeds 1 --tag x --at-chosen plain-nope", "no earlier line of the plan has a grid arm"),
        ("--algos plain --seeds 1 --tag x --at-chosen plain-lr --learning_rate 1e-3", "sets learning_rate from its"),
        ("--algos plain --seeds 1 --at-chosen plain-lr", "--at-chosen needs --tag"),
    ],
)
def test_bad_at_chosen_lines_are_refused(tmp_path, line, message):
    plan_path = tmp_path / "p.plan"
    plan_path.write_text(
        f"--params {SMOKE} --task cola --algos plain --seeds 1 --tag lr --grid learning_rate=2e-5,1e-4\n"
        f"--params {SMOKE} --task cola {line}\n"
    )
    with pytest.raises(ValueError, match=f"line 2: .*{message}"):
        plan_file(plan_path, tmp_path / "out")


def test_a_sweeps_runs_share_one_stage_cache_under_the_output_root(tmp_path):
    runs = plan(str(SMOKE), ["plain", "sift"], [1], tmp_path, None, {})
    assert all(f"--stage_cache_dir={tmp_path / '.stage_cache'}" in r.args for r in runs)
    off = plan(str(SMOKE), ["plain"], [1], tmp_path, None, {"stage_cache_dir": "none"})
    assert [a for a in off[0].args if a.startswith("--stage_cache_dir")] == ["--stage_cache_dir=none"]
    assert off[0].config.stage_cache_dir is None


def test_a_grid_at_another_arms_chosen_point(tmp_path):
    plan_path = tmp_path / "p.plan"
    plan_path.write_text(
        f"--params {SMOKE} --task cola --algos plain --seeds 1-2 --tag lr --grid learning_rate=2e-5,1e-4\n"
        f"--params {SMOKE} --task cola --algos plain --seeds 1-2 --then-seeds 3 --tag l2sp "
        f"--grid l2sp_weight=0.01,0.1 --at-chosen plain-lr\n"
    )
    runs = plan_file(plan_path, tmp_path / "out")
    l2sp = runs[4:]
    assert [f"{r.run_dir.parent.name}/{r.run_dir.name}" for r in l2sp] == [
        "plain-l2sp__l2sp_weight0.01/seed1",
        "plain-l2sp__l2sp_weight0.01/seed2",
        "plain-l2sp__l2sp_weight0.1/seed1",
        "plain-l2sp__l2sp_weight0.1/seed2",
        "plain-l2sp__chosen/seed3",
    ]
    assert all(r.waiting and not r.runnable for r in l2sp)
    _finish_lr_grid(runs[:4])
    l2sp = plan_file(plan_path, tmp_path / "out")[4:]
    assert [r.runnable for r in l2sp] == [True] * 4 + [False]  # the extra seed waits for this grid
    first = l2sp[0]
    assert "--learning_rate=1e-4" in first.args and "--l2sp_weight=0.01" in first.args
    extra = json.loads(first.args[first.args.index("--extra") + 1])
    assert extra["arm"] == "plain-l2sp" and extra["grid"] == {"l2sp_weight": 0.01}
    assert extra["at_chosen"] == {
        "arm": "plain-lr",
        "point": {"learning_rate": "1e-4"},
        "select_on": "in_domain_dev_mcc",
    }
    bad = tmp_path / "bad.plan"
    bad.write_text(
        plan_path.read_text().splitlines()[0] + "\n"
        f"--params {SMOKE} --task cola --algos plain --seeds 1 --tag x --grid learning_rate=1e-3,1e-2 "
        f"--at-chosen plain-lr\n"
    )
    with pytest.raises(ValueError, match="line 2: --grid learning_rate is what --at-chosen plain-lr chooses"):
        plan_file(bad, tmp_path / "out")


@pytest.mark.slow
@pytest.mark.parametrize(
    "name, runs, tasks",
    [
        ("equal_budget_study.plan", 188, {"twitter_to_uci"}),
        ("equal_budget_study_p1.plan", 36, {"cola"}),
        ("benchmark_study_p1.plan", 196, {"cola"}),
    ],
)
def test_the_committed_equal_budget_plans_plan_every_run_they_say(tmp_path, monkeypatch, name, runs, tasks):
    monkeypatch.chdir(REPO)  # their --params paths are relative to the checkout
    planned = plan_file(REPO / "results" / name, tmp_path / "out")
    assert len(planned) == runs
    assert {r.run_dir.parents[1].name for r in planned} == tasks
    # every grid chooses on its protocol's validation metric, never on a test metric
    assert {r.select_on for r in planned if r.select_on} == {DEFAULT_SELECT_ON[t] for t in tasks}


@pytest.mark.slow
def test_the_committed_benchmark_plans_equal_budgets_on_three_shifts(tmp_path, monkeypatch):
    """results/benchmark_study.plan: every arm 4 grid points x seeds 1-3 then seeds 4-5 at its chosen
    point, on P2, P3 and the tweets' topics, each chosen on its shift's source-side validation metric."""
    from collections import Counter, defaultdict

    monkeypatch.chdir(REPO)
    planned = plan_file(REPO / "results" / "benchmark_study.plan", tmp_path / "out")
    assert len(planned) == 588
    shifts = {r.run_dir.parents[1].name for r in planned}
    assert shifts == {"twitter_to_uci", "shift-uci_cross_source", "shift-tweets_topics"}
    assert {r.select_on for r in planned if r.select_on} == {
        "uci_val_accuracy",
        "amazon_val_accuracy",
        "airline_val_accuracy",
    }
    points, seeds = defaultdict(set), defaultdict(Counter)
    for r in planned:
        # a chosen-point run waits for its grid (arm and point unknown yet): its folder names the arm
        arm = r.arm or r.run_dir.parent.name.removesuffix("__chosen")
        key = (r.run_dir.parents[1].name, arm)
        if r.point is not None:
            points[key].add(json.dumps(r.point, sort_keys=True))
        seeds[key][r.run_dir.name] += 1
    assert len(points) == 14 * 3  # 14 arms (WiSE-FT and three out-of-domain plain arms among them) x 3 shifts
    assert {len(p) for p in points.values()} == {4}  # equal budgets: four grid points per arm
    for key, counts in seeds.items():
        assert counts == Counter({"seed1": 4, "seed2": 4, "seed3": 4, "seed4": 1, "seed5": 1}), key
