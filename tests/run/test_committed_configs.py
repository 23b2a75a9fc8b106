"""Every distinct training setting of the committed runs (results/) trains on the smoke params to
exactly the numbers the code that produced those runs gives: metrics and history, bit for bit.

The reference (`fixtures/committed_smoke.json`) was written by `fixtures/make_committed_smoke.py`
with the code before training methods became objects of their own (`siftkit.methods`); a change
that moves any committed configuration's numbers fails here.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from fixtures.make_committed_smoke import smoke_run

CASES = json.loads((Path(__file__).resolve().parents[1] / "fixtures" / "committed_smoke.json").read_text())


def _same(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def test_the_reference_covers_every_algorithm_and_control():
    settings = [c["settings"] for c in CASES]
    assert {s["algo"] for s in settings} == {"plain", "smart", "sift"}
    assert {s["adv_rule"] for s in settings if "adv_rule" in s} >= {"projected", "mtdnn", "deberta", "seed_code"}
    assert any(s.get("adv_stages") == "last" for s in settings) and any(s.get("reinit_head") for s in settings)


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES, ids=[f"{i}-{c['settings']['algo']}" for i, c in enumerate(CASES)])
def test_committed_setting_trains_to_the_same_numbers(case, tmp_path):
    got = json.loads(json.dumps(smoke_run(case["settings"], tmp_path / "run")))
    assert _same(got["metrics"], case["metrics"])
    assert _same(got["history"], case["history"])
