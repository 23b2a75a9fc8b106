"""A stage cache that does not trust its files.

An entry proves itself before it is used: the key and determinants it was stored with, and the
sha256 of each file. A copied, flipped, truncated or garbled entry is set aside with a warning
and the stage is trained again, so the run's numbers are those of a run without a cache. A
store that fails (killed, a full disk, the folder removed, a read-only folder) says so clearly
and leaves nothing behind.
"""

from __future__ import annotations

import errno
import json
import shutil
from pathlib import Path

import pytest
import torch
from helpers import robustness_log

from siftkit.run import diskspace
from siftkit.run import stage_cache as stage_cache_module
from siftkit.run.config import RunConfig
from siftkit.run.stage_cache import StageCacheWarning
from siftkit.run.training import train

BASE = dict(
    task="twitter_to_uci",
    model_name="random:bert",
    max_train_samples=8,
    max_eval_samples=8,
    per_device_train_batch_size=4,
    per_device_eval_batch_size=8,
    uci_num_train_epochs=1,
    learning_rate=1e-3,
    logging_steps=1,
    max_length=32,
    uci_val_size=40,
    seed=3,
    cpu=True,
    algo="plain",
)


def _run(tmp_path: Path, name: str, cache: bool = True, **kw) -> dict:
    cfg = RunConfig(
        **{**BASE, **kw}, output_dir=str(tmp_path / name), stage_cache_dir=str(tmp_path / "cache") if cache else None
    )
    return train(cfg, progress=False)


def _entries(tmp_path: Path) -> list[Path]:
    return sorted(p for p in (tmp_path / "cache").iterdir() if p.is_dir() and not p.name.startswith("."))


def _same_numbers(a: dict, b: dict) -> None:
    assert a["metrics"] == b["metrics"]
    assert a["history"] == b["history"]


@pytest.mark.slow
def test_an_entry_copied_under_another_key_is_not_used(tmp_path):
    """Seed 1's stage 1 copied into seed 7's key folder: seed 7 must not start from it."""
    one = _run(tmp_path, "s1", seed=1)
    seven = _run(tmp_path, "s7", seed=7)
    key1, key7 = one["stages"][0]["cache_key"], seven["stages"][0]["cache_key"]
    assert key1 != key7
    shutil.rmtree(tmp_path / "cache" / key7)
    shutil.copytree(tmp_path / "cache" / key1, tmp_path / "cache" / key7)
    with pytest.warns(StageCacheWarning) as caught:
        again = _run(tmp_path, "s7_again", seed=7)
    msg = str(caught[0].message)
    assert f"was stored under key {key1!r}, not {key7!r} (a copied or moved entry)" in msg
    assert "set aside as" in msg and msg.endswith("and the stage is trained again")
    assert again["meta"]["stages_from_cache"] == []
    _same_numbers(again, seven)
    # The stage was stored anew under its key, and the next run takes it from there.
    later = _run(tmp_path, "s7_later", seed=7)
    assert later["meta"]["stages_from_cache"] == ["twitter"]
    _same_numbers(later, seven)
    robustness_log(
        "a stage-cache entry copied into another key's folder (seed 1's stage 1 as seed 7's)",
        msg.replace(key1, "KEY1").replace(key7, "KEY7"),
        **{"cache": tmp_path / "cache"},
    )


@pytest.mark.slow
def test_an_entry_whose_determinants_were_edited_is_not_used(tmp_path):
    first = _run(tmp_path, "a", seed=5)
    key = first["stages"][0]["cache_key"]
    meta_file = tmp_path / "cache" / key / "stage.json"
    meta = json.loads(meta_file.read_text())
    meta["determinants"]["settings"]["seed"] = 6
    meta_file.write_text(json.dumps(meta))
    with pytest.warns(StageCacheWarning, match=r"was stored for other settings \(settings\.seed: 6, not 5\)"):
        again = _run(tmp_path, "b", seed=5)
    assert again["meta"]["stages_from_cache"] == []
    _same_numbers(again, first)


def _flip_in_largest_tensor(state_file: Path) -> None:
    """Flip bytes inside the largest tensor's storage (the pickle and zip structure stay valid)."""
    state = torch.load(state_file, map_location="cpu", weights_only=False)
    name, tensor = max(state["model"].items(), key=lambda kv: kv[1].numel())
    data = bytearray(state_file.read_bytes())
    raw = tensor.contiguous().view(torch.uint8).flatten().numpy().tobytes()[:64]
    at = bytes(data).find(raw)
    assert at > 0, name
    for i in range(at + 8, at + 40):
        data[i] ^= 0xFF
    state_file.write_bytes(bytes(data))


def _truncate(f: Path) -> None:
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])


DAMAGE = {
    "flipped-weights": ("state.pt", _flip_in_largest_tensor, "has a damaged state.pt"),
    "truncated-state": ("state.pt", _truncate, "has a damaged state.pt"),
    "garbage-rng": ("rng-0.pt", lambda f: f.write_text("not a pickle"), "has a damaged rng-0.pt"),
    "garbage-json": ("stage.json", lambda f: f.write_text("{"), "has an unreadable stage.json"),
    "missing-rng": ("rng-0.pt", lambda f: f.unlink(), "lacks rng-0.pt"),
}


@pytest.mark.slow
@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_damaged_entry_is_set_aside_and_the_stage_retrained(tmp_path, damage):
    name, hurt, said = DAMAGE[damage]
    first = _run(tmp_path, "a")
    key = first["stages"][0]["cache_key"]
    hurt(tmp_path / "cache" / key / name)
    with pytest.warns(StageCacheWarning) as caught:
        again = _run(tmp_path, "b")
    msg = str(caught[0].message)
    assert msg.startswith(f"stage cache entry {tmp_path / 'cache' / key} {said}"), msg
    assert again["meta"]["stages_from_cache"] == [] and again["stages"][0]["from_cache"] is False
    _same_numbers(again, first)
    aside = list((tmp_path / "cache").glob(f".damaged-{key}-*"))
    assert len(aside) == 1
    assert [p.name for p in _entries(tmp_path)] == [key]  # stored anew
    shown = msg.replace(key, "KEY").replace(aside[0].name, ".damaged-KEY-TIME-PID")
    robustness_log(f"stage-cache entry damaged: {damage}", shown, **{"cache": tmp_path / "cache"})


@pytest.mark.slow
def test_a_store_killed_midway_is_cleaned_and_the_resumed_run_stores_the_stage(tmp_path, monkeypatch):
    class Killed(Exception):
        pass

    real_store = stage_cache_module.StageCache.store

    def killed_store(self, key, state, determinants, produced_by):
        tmp = self.root / f".tmp-{key}-999999"
        tmp.mkdir()
        (tmp / "state.pt").write_bytes(b"half")
        raise Killed

    monkeypatch.setattr(stage_cache_module.StageCache, "store", killed_store)
    with pytest.raises(Killed):
        _run(tmp_path, "a")
    assert list((tmp_path / "cache").glob(".tmp-*")) and not _entries(tmp_path)
    monkeypatch.setattr(stage_cache_module.StageCache, "store", real_store)
    resumed = _run(tmp_path, "a", resume=True)
    assert not list((tmp_path / "cache").glob(".tmp-*"))
    assert [p.name for p in _entries(tmp_path)] == [resumed["stages"][0]["cache_key"]]
    later = _run(tmp_path, "b")
    assert later["meta"]["stages_from_cache"] == ["twitter"]
    _same_numbers(later, resumed)
    alone = _run(tmp_path, "c", cache=False)
    _same_numbers(alone, resumed)
    robustness_log(
        "a run killed while it stores a stage-cache entry (a `.tmp-<key>-<pid>` folder left), then `--resume`",
        "accepted: the leftover folder is removed under the key's lock, and the "
        "resumed run stores the stage it had finished; a later run takes it from the cache",
    )


def test_disk_full_while_storing_warns_removes_the_partial_entry_and_goes_on(tmp_path, monkeypatch):
    real = torch.save

    def save(obj, f, *a, **kw):
        if ".tmp-" in str(f) and "cache" in str(f) and str(f).endswith("state.pt"):
            raise RuntimeError("[enforce fail at inline_container.cc:626] . unexpected pos 512 vs 448")
        return real(obj, f, *a, **kw)

    monkeypatch.setattr(torch, "save", save)
    monkeypatch.setattr(diskspace.shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(100, 100, 0))
    with pytest.warns(StageCacheWarning) as caught:
        record = _run(tmp_path, "a")
    msg = str(caught[0].message)
    assert msg.startswith("stage cache: stage not stored: no space left on device /")
    assert f" at {tmp_path / 'cache'}/.tmp-" in msg and "unexpected pos" not in msg
    assert msg.endswith("the partial entry was removed; the run goes on, and a later run trains this stage again")
    assert not list((tmp_path / "cache").glob(".tmp-*")) and not _entries(tmp_path)
    assert record["meta"]["stages_from_cache"] == []
    shown = (
        "stage cache: stage not stored: no space left on device MOUNT at cache/.tmp-KEY-PID/state.pt"
        + msg.split("state.pt", 1)[1]
    )
    robustness_log("disk full while a stage-cache entry is stored", shown)


@pytest.mark.slow
def test_the_cache_folder_deleted_during_stage_1_is_made_again(tmp_path, monkeypatch):
    import siftkit.run.training as training

    real_stage = training._stage

    def stage_then_delete(stage_index, run, resume_state):
        real_stage(stage_index, run, resume_state)
        if stage_index == 0:
            shutil.rmtree(tmp_path / "cache")  # as README's advice to clear the cache, mid-run

    monkeypatch.setattr(training, "_stage", stage_then_delete)
    record = _run(tmp_path, "a")
    monkeypatch.setattr(training, "_stage", real_stage)
    assert [p.name for p in _entries(tmp_path)] == [record["stages"][0]["cache_key"]]
    later = _run(tmp_path, "b")
    assert later["meta"]["stages_from_cache"] == ["twitter"]
    _same_numbers(later, record)
    robustness_log(
        "the stage-cache folder deleted while stage 1 trains",
        "accepted: the folder is made again when the stage is stored; a later run takes the stage from it",
    )


def test_a_read_only_cache_folder_is_refused_before_training(tmp_path, monkeypatch):
    real_touch = Path.touch

    def touch(self, *a, **kw):
        if self.name.startswith(".write-test-"):
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return real_touch(self, *a, **kw)

    monkeypatch.setattr(stage_cache_module.Path, "touch", touch)
    with pytest.raises(ValueError) as info:
        _run(tmp_path, "a")
    assert str(info.value) == (
        f"stage_cache_dir {str(tmp_path / 'cache')!r} is not writable (Permission denied): "
        f"each run writes its locks and entries there; make it writable, or choose another "
        f"stage_cache_dir (or none)"
    )
    assert not (tmp_path / "a" / "results.json").exists()
    robustness_log("a read-only stage-cache folder", str(info.value), **{"cache": tmp_path / "cache"})
