"""summarize reads hand-edited records: a field of the wrong JSON type is named, never used.

Before, an ``extra.grid`` that was a string or null left its grid point out of the arm (the arm
then read "tuned over {0.002}", and its chosen point and test accuracy changed), a
``grid_index`` of ``"0"`` or ``0.0`` sorted last and flipped the tie-break, and a number, list
or object where text belongs raised a raw TypeError.
"""

from __future__ import annotations

import json

import pytest
from helpers import robustness_log
from helpers_grid import write_arm

from siftkit.cli.main import main as cli_main
from siftkit.study.arms import equal_budget
from siftkit.study.runs import group_runs, load_runs

POINTS = [
    ({"learning_rate": 0.001}, {1: (0.80, 0.70), 2: (0.82, 0.71), 3: (0.81, 0.72)}),
    ({"learning_rate": 0.002}, {1: (0.70, 0.60), 2: (0.71, 0.61), 3: (0.72, 0.62)}),
]


def _study(tmp_path):
    write_arm(tmp_path, "plain", "lr", POINTS)
    return tmp_path


def _first_point_files(root):
    return sorted(root.rglob("plain-lr__learning_rate0.001/seed*/results.json"))


def _edit(path, section: str, name: str, value) -> None:
    rec = json.loads(path.read_text())
    target = rec["config"]["extra"] if section == "extra" else rec[section]
    target[name] = value
    path.write_text(json.dumps(rec))


def _summarize_error(capsys, root) -> str:
    try:
        code = cli_main(["summarize", str(root), "--out", str(root / "S.md")])
    except SystemExit as exc:
        code = exc.code
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and "\n" not in err, err
    return err


def test_the_untouched_study_chooses_the_first_point(tmp_path):
    root = _study(tmp_path)
    (variants,) = group_runs(load_runs([root])).values()
    (arm,) = equal_budget(variants, "twitter_to_uci").arms
    assert arm.chosen_label == "learning_rate0.001" and arm.tuned == {"learning_rate": [0.001, 0.002]}


CASES = {
    "grid-string": (
        "extra",
        "grid",
        "0.001",
        'config extra.grid is "0.001" (text), but must be an object of field: value (the grid point)',
    ),
    "grid-null": (
        "extra",
        "grid",
        None,
        "config extra.grid is null, but must be an object of field: value (the grid point)",
    ),
    "grid-index-text": (
        "extra",
        "grid_index",
        "0",
        'config extra.grid_index is "0" (text), but must be a whole number (the point\'s place in grid order)',
    ),
    "grid-index-float": (
        "extra",
        "grid_index",
        0.0,
        "config extra.grid_index is 0.0 (a number), but must be a whole number (the point's place in grid order)",
    ),
    "commit-number": ("meta", "git_commit", 1234567, "meta.git_commit is 1234567 (a number), not text"),
    "model-list": ("config", "model_name", ["a", "b"], 'config.model_name is ["a", "b"] (a list), not text'),
    "task-list": ("config", "task", ["twitter_to_uci"], 'config.task is ["twitter_to_uci"] (a list), not text'),
    "device-object": (
        "meta",
        "device_name",
        {"gpu": "H100"},
        'meta.device_name is {"gpu": "H100"} (an object), not text',
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_field_of_the_wrong_type_is_named(tmp_path, capsys, case):
    section, name, value, said = CASES[case]
    root = _study(tmp_path)
    path = _first_point_files(root)[0]
    _edit(path, section, name, value)
    err = _summarize_error(capsys, root)
    assert err.startswith(f"siftkit summarize: error: {path}: {said}"), err
    assert err.endswith("fix the file, or move it out of the summarized folders")
    robustness_log(
        f"a results.json with `{section if section != 'extra' else 'config.extra'}.{name}` = {json.dumps(value)}",
        err,
        **{"sw/r/seed1/results.json": path},
    )
