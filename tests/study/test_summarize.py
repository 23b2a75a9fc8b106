"""`summarize` (siftkit.study.summarize) on synthetic records written the way siftkit.run.training
writes them: the summary's statistics against an independent computation, its markdown and
figures, duplicate and overlapping runs, and each bad record or option refused with a message
naming the file, field or option (docs/robustness.md rows, through `robustness_log`).
"""

from __future__ import annotations

import json
import math
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import robustness_log
from helpers_regime import record, regime_study, write
from scipy import stats

from siftkit.study.runs import load_runs
from siftkit.study.stats import paired_difference, t_critical
from siftkit.study.summarize import brief, summarize


@pytest.fixture
def study_dir(tmp_path):
    return regime_study(tmp_path / "study")


# ----------------------------------------------------------------------------- bad records and options, in process


def _study(tmp_path, *changes: dict) -> Path:
    root = tmp_path / "sw"
    for seed, change in enumerate(changes, start=1):
        rec = record("plain", seed)
        rec["config"].update(change)
        write(root, rec)
    return root


def _summarize_error(*args: str) -> str:
    from siftkit.study.summarize import main

    with pytest.raises(ValueError) as err:
        main([*map(str, args), "--no-figures"])
    return str(err.value)


def test_summarize_refuses_one_variant_with_two_settings(tmp_path):
    root = _study(tmp_path, {}, {"learning_rate": 0.05, "max_length": 8})
    msg = _summarize_error(root, "--out", tmp_path / "S.md")
    a, b = (root / "twitter_to_uci" / "plain" / f"seed{k}" / "results.json" for k in (1, 2))
    assert msg == (
        f"runs of variant 'plain' (task twitter_to_uci, device NVIDIA H200, code {'a' * 40}) differ in "
        f"learning_rate, max_length: {a} (learning_rate=2e-05, max_length=128) and {b} (learning_rate=0.05, "
        f"max_length=8); runs of one variant may differ only in the seed (and where their files go): give "
        f"each setting its own tag (sweep --tag, or extra: {{tag: ...}}), or move one out of the summarized "
        f"folders"
    )
    robustness_log("two untagged plain runs, one at learning_rate 0.05 and max_length 8", msg, sw=root)


def test_settings_that_cannot_change_a_result_may_differ(tmp_path):
    from siftkit.study.summarize import summarize

    root = _study(
        tmp_path,
        {"output_dir": "a", "logging_steps": 5, "extra": {"note": "x"}, "data_dir": "/d1"},
        {"output_dir": "b", "cpu": True, "save_steps": 3, "data_dir": "/d2"},
    )
    text, study = summarize([root])
    (stats,) = study.groups[("twitter_to_uci", "NVIDIA H200", "a" * 40, "all-MiniLM-L6-v2")].stats
    assert stats.variant == "plain" and len(stats.seeds) == 2


@pytest.mark.parametrize("value", ["NaN", "Infinity"])
def test_a_non_finite_main_metric_is_refused_like_null(tmp_path, value):
    root = _study(tmp_path, {}, {})
    path = root / "twitter_to_uci" / "plain" / "seed2" / "results.json"
    path.write_text(path.read_text().replace('"uci_test_accuracy": 0.', f'"uci_test_accuracy": {value}, "x": 0.', 1))
    msg = _summarize_error(root, "--out", tmp_path / "S.md")
    shown = "nan" if value == "NaN" else "inf"
    assert msg == (
        f"{path}: metric 'uci_test_accuracy' is {shown}; the run has no result to compare (rerun it, or "
        f"move the file out of the summarized folders)"
    )
    robustness_log(f'the protocol\'s metric edited to {value} (`"uci_test_accuracy": {value}`)', msg, sw=root)


def test_an_infinite_secondary_metric_shows_a_dash(tmp_path):
    from siftkit.study.summarize import summarize

    root = _study(tmp_path, {}, {})
    path = root / "twitter_to_uci" / "plain" / "seed2" / "results.json"
    path.write_text(path.read_text().replace('"uci_zero_shot_accuracy": 0.45', '"uci_zero_shot_accuracy": Infinity', 1))
    text, data = summarize([root])  # was: AttributeError from statistics
    assert "inf" not in text.lower().replace("information", "")


@pytest.mark.parametrize("name", ["results.json", "history.csv"])
def test_summarize_out_never_replaces_a_run_record(tmp_path, name):
    root = _study(tmp_path, {}, {})
    target = root / "twitter_to_uci" / "plain" / "seed1" / name
    if name == "history.csv":
        target.write_text("step\n")
    before = target.read_bytes()
    msg = _summarize_error(root, "--out", target)
    assert msg == (
        f"--out '{target}' would replace a run record; give the Markdown file to write, e.g. "
        f"{target.parent / 'SUMMARY.md'}"
    )
    assert target.read_bytes() == before
    robustness_log(f"`summarize --out sw/r/seed1/{name}`", msg, sw=root)


def test_summarize_flags_runs_with_dropped_steps(tmp_path):
    from siftkit.study.summarize import summarize

    root = _study(tmp_path, {}, {})
    path = root / "twitter_to_uci" / "plain" / "seed2" / "results.json"
    rec = json.loads(path.read_text())
    rec["meta"]["nonfinite_steps"] = 3
    path.write_text(json.dumps(rec))
    text, _ = summarize([root])
    line = (
        "**Runs with non-finite (dropped) training steps**, whose numbers come from fewer updates: "
        "`plain` seed 2 (3 steps)."
    )
    assert line in text
    robustness_log("summarize over a run with non-finite (dropped) steps", f"accepted, flagged under the table: {line}")


def test_summarize_on_a_folder_named_results_json(tmp_path):
    root = _study(tmp_path, {})
    (root / "results.json").mkdir()
    from siftkit.study.summarize import summarize

    text, study = summarize([root])  # was: "no results file at sw/results.json/results.json"
    assert sum(len(r.stats) for r in study.groups.values()) == 1
    empty = tmp_path / "results.json"
    empty.mkdir()
    msg = _summarize_error(empty)
    assert msg == f"no results.json files found in {empty}"
    robustness_log("summarize on an empty folder named results.json", msg, **{"sw/results.json": empty})


def test_summarize_out_onto_a_file_that_is_not_markdown(tmp_path):
    root = _study(tmp_path, {})
    target = root / "twitter_to_uci" / "plain" / "model" / "config.json"
    target.parent.mkdir()
    target.write_text("{}")
    msg = _summarize_error(root, "--out", target)
    assert msg == (
        f"--out '{target}' would replace a file that is not Markdown; give the Markdown file to write, "
        f"e.g. {target.parent / 'SUMMARY.md'}"
    )
    assert target.read_text() == "{}"
    robustness_log("`summarize --out sw/r/model/config.json` (an existing file, not Markdown)", msg, sw=root)


# ----------------------------------------------------------------------------- the runs read, the summary written


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


@pytest.mark.subprocess
def test_summarize_command_writes_every_figure(study_dir, tmp_path):
    out = tmp_path / "new" / "folder" / "SUMMARY.md"  # --out into a missing folder: created
    res = subprocess.run(
        [sys.executable, "-m", "siftkit", "summarize", str(study_dir), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert res.returncode == 0, res.stderr
    text = out.read_text()
    assert text.startswith("# siftkit results summary")
    # the group's figures are linked from its section, the size curve shown inline
    figure = "figures/twitter_to_uci_nvidia_h200_aaaaaaaa_size_uci_test_accuracy.png"
    assert f"![the main metric against measured perturbation size]({figure})" in text
    names = sorted(p.name for p in (out.parent / "figures").glob("*.png"))
    prefix = "twitter_to_uci_nvidia_h200_aaaaaaaa_"
    assert names == sorted(
        prefix + n
        for n in (
            "scores.png",
            "learning_curves.png",
            "size_uci_test_accuracy.png",
            "size_reg_share.png",
            "size_smoothness.png",
        )
    )


# ----------------------------------------------------------------------------- bad files, through `python -m siftkit summarize`


def _summarize_cli_error(*paths) -> str:
    """`python -m siftkit summarize PATHS` in a subprocess: exit code 2, one line, no traceback."""
    res = subprocess.run(
        [sys.executable, "-m", "siftkit", "summarize", *map(str, paths)], capture_output=True, text=True, timeout=300
    )
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
    return res.stderr.strip()


def _one_run(tmp_path, text: str | bytes) -> Path:
    path = tmp_path / "r" / "seed1" / "results.json"
    path.parent.mkdir(parents=True)
    (path.write_bytes if isinstance(text, bytes) else path.write_text)(text)
    return path


@pytest.mark.subprocess
def test_a_main_metric_edited_to_null_names_the_file_and_metric(tmp_path):
    rec = record("sift", 1, size=0.01)
    rec["metrics"]["uci_test_accuracy"] = None
    path = _one_run(tmp_path, json.dumps(rec))
    assert _summarize_cli_error(path.parent.parent) == (
        f"siftkit summarize: error: {path}: metric 'uci_test_accuracy' is null; the run has no result to compare "
        "(rerun it, or move the file out of the summarized folders)"
    )


@pytest.mark.subprocess
def test_a_metric_that_is_not_a_number_names_the_file(tmp_path):
    rec = record("sift", 1, size=0.01)
    rec["metrics"]["uci_test_accuracy_yelp"] = "0.7"
    path = _one_run(tmp_path, json.dumps(rec))
    assert (
        _summarize_cli_error(path)
        == f"siftkit summarize: error: {path}: metric 'uci_test_accuracy_yelp' is '0.7', not a number"
    )


def _cell(text: str, column: str, variant: str) -> str:
    """The cell of a SUMMARY.md table: the first table with `column` in its header, row `variant`."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| variant |") and f"| {column} |" in line + " ")
    head = [c.strip() for c in lines[start].strip("|").split("|")]
    for line in lines[start + 2 :]:
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


@pytest.mark.subprocess
def test_a_utf16_results_file_names_the_file(tmp_path):
    path = _one_run(tmp_path, json.dumps(record("plain", 1)).encode("utf-16"))
    assert (
        _summarize_cli_error(path.parent)
        == f"siftkit summarize: error: {path} is not UTF-8 text (byte 0); save it as UTF-8"
    )


@pytest.mark.subprocess
def test_a_results_file_holding_a_number_names_the_file(tmp_path):
    path = _one_run(tmp_path, "42")
    assert _summarize_cli_error(path) == (
        f"siftkit summarize: error: {path} holds a JSON number, not an object with "
        "config, metrics, history and meta; not a siftkit results file"
    )


@pytest.mark.subprocess
def test_out_that_is_a_folder_is_refused(tmp_path):
    path = _one_run(tmp_path, json.dumps(record("plain", 1)))
    assert _summarize_cli_error(path, "--out", tmp_path) == (
        f"siftkit summarize: error: --out {str(tmp_path)!r} is a folder; give the Markdown file to write, "
        f"e.g. {tmp_path / 'SUMMARY.md'}"
    )


@pytest.mark.subprocess
def test_figures_that_is_a_file_is_refused_before_anything_is_written(tmp_path):
    path = _one_run(tmp_path, json.dumps(record("plain", 1)))
    blocker = tmp_path / "figs"
    blocker.write_text("")
    out = tmp_path / "S.md"
    assert _summarize_cli_error(path, "--out", out, "--figures", blocker).endswith(
        f"--figures {str(blocker)!r} is a file, not a folder"
    )
    assert not out.exists()


@pytest.mark.subprocess
def test_a_history_that_is_not_a_list_of_rows_names_the_file(tmp_path):
    rec = record("sift", 1, size=0.01)
    rec["history"] = [0.5, 0.4]
    path = _one_run(tmp_path, json.dumps(rec))
    assert _summarize_cli_error(path) == (
        f"siftkit summarize: error: {path}: 'history' must be a list of objects (one per logged step)"
    )


# ----------------------------------------------------------------------------- the modules


def test_summary_modules_import_one_way():
    """summarize may import summary_figures, never the reverse; both share siftkit.study.runs."""
    import ast

    import siftkit.study.figures
    import siftkit.study.runs

    def imports(module):
        tree = ast.parse(Path(module.__file__).read_text())
        return {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module} | {
            a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names
        }

    assert "siftkit.study.summarize" not in imports(siftkit.study.figures)
    assert not {"siftkit.study.summarize", "siftkit.study.figures"} & imports(siftkit.study.runs)
    assert "siftkit.study.runs" in imports(siftkit.study.figures)


# ----------------------------------------------------------------------------- the statistics and the command


def _record(algo, seed, acc, tag=None):
    cfg = {
        "task": "twitter_to_uci",
        "algo": algo,
        "seed": seed,
        "model_name": None,
        "adv_weight": 1.0,
        "bregman_weight": 0.0,
        "extra": {"tag": tag} if tag else {},
    }
    hist = [
        {
            "stage": stage,
            "global_step": i + 1,
            "task_loss": 0.5 + 0.01 * i,
            "adv_loss": 0.01,
            "bregman_loss": 0.0,
            "relative_perturbation": 0.1,
        }
        for i, stage in enumerate(["twitter"] * 6 + ["uci"] * 4)
    ]
    return {
        "config": cfg,
        "metrics": {"uci_test_accuracy": acc, "uci_zero_shot_accuracy": 0.5, "twitter_val_accuracy": 0.8},
        "history": hist,
        "meta": {"device": "cpu", "device_name": "cpu", "wall_time_s": 1.0},
    }


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


@pytest.mark.subprocess
def test_summarize_command_writes_markdown_and_figures(tmp_path):
    for seed, acc in ((1, 0.6), (2, 0.7)):
        d = tmp_path / "r" / f"seed{seed}"
        d.mkdir(parents=True)
        (d / "results.json").write_text(json.dumps(_record("plain", seed, acc)))
    out = subprocess.run(
        [sys.executable, "-m", "siftkit", "summarize", str(tmp_path / "r")], capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "r" / "SUMMARY.md").read_text().startswith("# siftkit results summary")
    pngs = list((tmp_path / "r" / "figures").glob("*.png"))
    assert len(pngs) == 2 and all(p.stat().st_size > 5000 for p in pngs)
    bad = tmp_path / "bad" / "results.json"
    bad.parent.mkdir()
    bad.write_text("{not json")
    err = subprocess.run(
        [sys.executable, "-m", "siftkit", "summarize", str(bad.parent)], capture_output=True, text=True, timeout=300
    )
    assert err.returncode == 2 and "not valid JSON" in err.stderr
