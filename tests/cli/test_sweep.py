"""The study tools: resumable sweep (one process per run) and the generated summary."""

import json
import math
import statistics
import subprocess
import sys

import pytest
from scipy import stats

from siftkit.study.stats import paired_difference, t_critical
from siftkit.study.summarize import brief, summarize
from siftkit.cli.sweep import parse_algos, parse_seeds


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
    return subprocess.run([sys.executable, "-m", "siftkit", "sweep", "--params", str(smoke_params),
                           "--algos", "plain", "--seeds", "1-2", "--output-dir", str(tmp_path / "study"),
                           "--max_train_samples", "8", *extra], capture_output=True, text=True, timeout=600)


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


def _record(algo, seed, acc, tag=None):
    cfg = {"task": "twitter_to_uci", "algo": algo, "seed": seed, "model_name": None, "adv_weight": 1.0,
           "bregman_weight": 0.0, "extra": {"tag": tag} if tag else {}}
    hist = [{"stage": stage, "global_step": i + 1, "task_loss": 0.5 + 0.01 * i, "adv_loss": 0.01,
             "bregman_loss": 0.0, "relative_perturbation": 0.1}
            for i, stage in enumerate(["twitter"] * 6 + ["uci"] * 4)]
    return {"config": cfg, "metrics": {"uci_test_accuracy": acc, "uci_zero_shot_accuracy": 0.5,
                                       "twitter_val_accuracy": 0.8},
            "history": hist, "meta": {"device": "cpu", "device_name": "cpu", "wall_time_s": 1.0}}


def test_summary_statistics_match_an_independent_computation(tmp_path):
    smart = {1: 0.70, 2: 0.66, 3: 0.72, 4: 0.61}
    sift = {1: 0.71, 2: 0.69, 3: 0.72, 4: 0.65}
    for algo, accs in (("smart", smart), ("sift", sift)):
        for seed, acc in accs.items():
            d = tmp_path / algo / f"seed{seed}"
            d.mkdir(parents=True)
            (d / "results.json").write_text(json.dumps(_record(algo, seed, acc)))
    diffs = [sift[s] - smart[s] for s in smart]
    m, sd = statistics.mean(diffs), statistics.stdev(diffs)
    half = stats.t.ppf(0.975, 3) * sd / math.sqrt(4)
    d = paired_difference(sift, smart)
    assert d["n"] == 4 and d["mean"] == pytest.approx(m)
    assert (d["low"], d["high"]) == (pytest.approx(m - half), pytest.approx(m + half))
    text, data = summarize([tmp_path])
    assert f"{statistics.mean(smart.values()):.3f} ± {statistics.stdev(smart.values()):.3f}" in text
    assert f"`sift` − `smart` | 4 | {m:.3f} | [{m - half:.3f}, {m + half:.3f}]" in text
    assert "no detectable difference (CI includes 0)" in text
    assert "| 0.70 | 0.80 |" in text and "| 0.80 | 0.91 |" in text  # the paper's figures stand beside ours
    assert "| P2 Twitter → UCI" in brief([tmp_path])
    # exact quantiles, not a table rounded down in degrees of freedom
    assert t_critical(1) == pytest.approx(12.7062, abs=1e-4) and t_critical(200) == pytest.approx(1.9719, abs=1e-4)


def test_summarize_command_writes_markdown_and_figures(tmp_path):
    for seed, acc in ((1, 0.6), (2, 0.7)):
        d = tmp_path / "r" / f"seed{seed}"
        d.mkdir(parents=True)
        (d / "results.json").write_text(json.dumps(_record("plain", seed, acc)))
    out = subprocess.run([sys.executable, "-m", "siftkit", "summarize", str(tmp_path / "r")],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "r" / "SUMMARY.md").read_text().startswith("# siftkit results summary")
    pngs = list((tmp_path / "r" / "figures").glob("*.png"))
    assert len(pngs) == 2 and all(p.stat().st_size > 5000 for p in pngs)
    bad = tmp_path / "bad" / "results.json"
    bad.parent.mkdir()
    bad.write_text("{not json")
    err = subprocess.run([sys.executable, "-m", "siftkit", "summarize", str(bad.parent)],
                         capture_output=True, text=True, timeout=300)
    assert err.returncode == 2 and "not valid JSON" in err.stderr
