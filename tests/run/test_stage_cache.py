"""Stage sharing: a run that starts from a cached stage 1 ends exactly like one that trained it.

P2 on a tiny random model. The cache key must change with every stage-1 setting and with the
data, and must not change with stage-2 settings, so a stage-2 grid trains stage 1 once. Two
runs started at the same moment with the same stage 1 train it once between them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import robustness_log

from siftkit.run.config import RunConfig
from siftkit.run.training import train

REPO = Path(__file__).resolve().parents[2]

BASE = dict(
    task="twitter_to_uci",
    model_name="random:bert",
    max_train_samples=8,
    max_eval_samples=8,
    per_device_train_batch_size=4,
    per_device_eval_batch_size=8,
    uci_num_train_epochs=2,
    learning_rate=1e-3,
    logging_steps=1,
    max_length=32,
    uci_val_size=40,
    seed=3,
    cpu=True,
)


def _run(tmp_path: Path, name: str, cache: bool = True, **kw) -> dict:
    cfg = RunConfig(
        **{**BASE, **kw}, output_dir=str(tmp_path / name), stage_cache_dir=str(tmp_path / "cache") if cache else None
    )
    return train(cfg, progress=False)


@pytest.mark.slow
@pytest.mark.parametrize("algo", ["plain", "smart", "sift"])
def test_a_cached_stage_gives_the_same_run_bit_for_bit(tmp_path, algo):
    alone = _run(tmp_path, "alone", cache=False, algo=algo)
    producer = _run(tmp_path, "producer", algo=algo)
    consumer = _run(tmp_path, "consumer", algo=algo)
    assert producer["meta"]["stages_from_cache"] == []
    assert consumer["meta"]["stages_from_cache"] == ["twitter"]
    # A stage's training time is the producer's, carried by the cache entry; stage 2 is the run's own.
    assert consumer["meta"]["stage_train_seconds"]["twitter"] == producer["meta"]["stage_train_seconds"]["twitter"] > 0
    assert consumer["meta"]["stage_train_seconds"]["uci"] > 0
    assert [s["from_cache"] for s in consumer["stages"]] == [True, False]
    for record in (producer, consumer):
        assert record["metrics"] == alone["metrics"]
        assert record["history"] == alone["history"]


@pytest.mark.slow
def test_a_stage2_grid_reuses_stage1_and_matches_an_uncached_run(tmp_path):
    _run(tmp_path, "first", algo="sift")
    other_rate = _run(tmp_path, "rate", algo="sift", uci_learning_rate=5e-4, reinit_head=True)
    assert other_rate["meta"]["stages_from_cache"] == ["twitter"]
    alone = _run(tmp_path, "rate_alone", cache=False, algo="sift", uci_learning_rate=5e-4, reinit_head=True)
    assert other_rate["metrics"] == alone["metrics"] and other_rate["history"] == alone["history"]


@pytest.mark.slow
def test_the_regularizer_in_stage2_only_shares_plains_stage1(tmp_path):
    plain = _run(tmp_path, "plain", algo="plain")
    last = _run(tmp_path, "sift_last", algo="sift", adv_stages="last")
    assert last["meta"]["stages_from_cache"] == ["twitter"]
    assert last["stages"][0]["cache_key"] == plain["stages"][0]["cache_key"]
    alone = _run(tmp_path, "sift_last_alone", cache=False, algo="sift", adv_stages="last")
    assert last["metrics"] == alone["metrics"] and last["history"] == alone["history"]


@pytest.mark.slow
@pytest.mark.parametrize(
    "change",
    [
        {"learning_rate": 2e-3},
        {"seed": 4},
        {"per_device_train_batch_size": 2},
        {"max_length": 24},
        {"algo": "sift"},
        {"label_smoothing": 0.1},
        {"max_train_samples": 6},
        {"twitter_negatives": 2000},
        {"uci_val_size": 30},  # stage 1's zero-shot evaluation is on a different test set
    ],
)
def test_any_stage1_setting_misses_the_cache(tmp_path, change):
    first = _run(tmp_path, "first", algo="plain")
    second = _run(tmp_path, "second", **{"algo": "plain", **change})
    assert second["meta"]["stages_from_cache"] == []
    assert second["stages"][0]["cache_key"] != first["stages"][0]["cache_key"]


@pytest.mark.slow
def test_changed_data_misses_the_cache(tmp_path, data_dir):
    first = _run(tmp_path, "first", algo="plain", data_dir=str(data_dir))
    copy = tmp_path / "data"
    shutil.copytree(data_dir, copy)
    tweets = copy / "twitter_hate" / "train.csv"
    lines = tweets.read_text(encoding="utf-8").splitlines(keepends=True)
    header, rows = lines[0], lines[1:]
    tweets.write_text(header + "".join(rows[1:] + rows[:1]), encoding="utf-8")  # a different file order
    second = _run(tmp_path, "second", algo="plain", data_dir=str(copy))
    assert second["meta"]["stages_from_cache"] == []
    assert second["stages"][0]["cache_key"] != first["stages"][0]["cache_key"]


@pytest.mark.slow
def test_stage2_settings_keep_the_key(tmp_path):
    first = _run(tmp_path, "first", algo="plain")
    for name, change in {
        "a": {"uci_learning_rate": 1e-4},
        "b": {"uci_num_train_epochs": 1},
        "c": {"reinit_head": True},
        "d": {"save_steps": 1},
    }.items():
        record = _run(tmp_path, name, algo="plain", **change)
        assert record["meta"]["stages_from_cache"] == ["twitter"], change
        assert record["stages"][0]["cache_key"] == first["stages"][0]["cache_key"]


@pytest.mark.subprocess
def test_two_runs_at_once_train_the_shared_stage_once(tmp_path):
    """Started together, one run trains stage 1 while the other waits on its lock and loads it."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    args = [f"--{k}={v}" for k, v in BASE.items() if k != "cpu"] + [
        "--cpu",
        "--algo",
        "plain",
        "--stage_cache_dir",
        str(tmp_path / "cache"),
    ]
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "siftkit",
                "train",
                *args,
                "--output_dir",
                str(tmp_path / n),
                "--uci_learning_rate",
                lr,
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n, lr in (("a", "1e-3"), ("b", "5e-4"))
    ]
    errs = [p.communicate(timeout=600)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errs
    cached = [json.loads((tmp_path / n / "results.json").read_text())["meta"]["stages_from_cache"] for n in "ab"]
    assert sorted(cached) == [[], ["twitter"]], cached
    assert len([p for p in (tmp_path / "cache").iterdir() if p.is_dir()]) == 1
    assert not list((tmp_path / "cache").glob(".tmp-*"))


def test_a_bad_cache_folder_is_a_clear_error(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="stage_cache_dir .* cannot be created") as info:
        train(
            RunConfig(**BASE, output_dir=str(tmp_path / "r"), stage_cache_dir=str(tmp_path / "file" / "c")),
            progress=False,
        )
    robustness_log("stage_cache_dir inside a file", str(info.value), **{"tmp": tmp_path})


@pytest.mark.slow
def test_a_stage_finished_by_a_resumed_run_is_cached_for_the_next(tmp_path):
    """Interrupted in stage 1, resumed, the run stores stage 1; a later run starts from it."""
    import siftkit.run.training as training

    class Crash(Exception):
        pass

    real = training.save_checkpoint

    def save_then_crash(accelerator, out, global_step, state, **kw):
        path = real(accelerator, out, global_step, state, **kw)
        if global_step == 1:
            raise Crash
        return path

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(training, "save_checkpoint", save_then_crash)
        with pytest.raises(Crash):
            _run(tmp_path, "a", algo="plain", save_steps=1)
    assert not [p for p in (tmp_path / "cache").iterdir() if p.is_dir()]
    resumed = _run(tmp_path, "a", algo="plain", save_steps=1, resume=True)
    assert resumed["meta"]["stages_from_cache"] == []
    later = _run(tmp_path, "b", algo="plain")
    assert later["meta"]["stages_from_cache"] == ["twitter"]
    assert later["metrics"] == resumed["metrics"] and later["history"] == resumed["history"]
