"""Checkpoint and resume: an interrupted run, resumed, ends exactly like an uninterrupted one.

Two ways to interrupt a run:

- for real: `python -m siftkit train` in a subprocess, SIGKILLed as soon as its first
  checkpoint folder appears (mid-way through stage 1), then `--resume`d in a new process;
- in process: `save_checkpoint` is wrapped so that the run raises right after writing the
  checkpoint of a chosen step; one run is interrupted and resumed four times in a row
  (mid-epoch, at the stage boundary, at an epoch boundary, in the middle of the second
  epoch of stage 2), then `train(resume=True)` finishes it.

Either way the resumed run's metrics and full history (every logged loss, gradient norm and
learning rate) must equal the uninterrupted run's bit for bit on CPU. `logging_steps` is
larger than one on purpose, so a checkpoint can fall inside a logging window.

Also here: a resume with other settings, a damaged checkpoint, a leftover `.tmp-step-*`
folder, a finished run, and checkpoints left by a run that is not resumed.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import robustness_log

import siftkit.run.training as training
from siftkit.methods.adversarial import AdversarialMethod
from siftkit.run.checkpoint import CheckpointError, latest_checkpoint, list_checkpoints
from siftkit.run.config import RunConfig
from siftkit.run.records import OutputDirError
from siftkit.run.training import train

REPO = Path(__file__).resolve().parents[2]

# Stage 1 (Twitter): 8 examples / batch 4 = 2 steps. Stage 2 (UCI): 2 epochs x 2 steps.
# Global steps 1..6; save_steps=1 puts a checkpoint after every step (steps 2 and 6 are
# the stage-end ones, written after the stage's evaluation). History rows every 2 steps.
BASE = dict(
    task="twitter_to_uci",
    algo="smart",
    model_name="random:bert",
    max_train_samples=8,
    max_eval_samples=8,
    per_device_train_batch_size=4,
    per_device_eval_batch_size=8,
    uci_num_train_epochs=2,
    learning_rate=1e-3,
    logging_steps=2,
    max_length=32,
    save_steps=1,
    seed=7,
    cpu=True,
)


_log = robustness_log  # records what the user saw for docs/robustness.md


class _Crash(Exception):
    """Stands in for a kill right after a checkpoint was written."""


def _run(output_dir, **changes):
    return train(RunConfig(**{**BASE, "output_dir": str(output_dir), **changes}), progress=False)


def _interrupt(output_dir, step: int, **changes) -> None:
    """Run until the checkpoint of global step `step` is written, then 'die'."""
    real = training.save_checkpoint

    def save_then_crash(accelerator, out, global_step, state, **kw):
        path = real(accelerator, out, global_step, state, **kw)
        if global_step == step:
            raise _Crash(step)
        return path

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(training, "save_checkpoint", save_then_crash)
        with pytest.raises(_Crash):
            _run(output_dir, **changes)
    assert not (Path(output_dir) / "results.json").exists()
    assert latest_checkpoint(output_dir).name == f"step-{step:07d}"


def _comparable(record: dict) -> dict:
    """What must not change: metrics, history, the resolved config's training knobs."""
    config = {k: v for k, v in record["config"].items() if k not in ("output_dir", "resume")}
    return {"metrics": record["metrics"], "history": record["history"], "config": config}


def _on_disk(output_dir) -> dict:
    return _comparable(json.loads((Path(output_dir) / "results.json").read_text()))


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("reference")
    record = _run(out)
    assert len(record["history"]) == 3  # stage 1: step 2; stage 2: steps 2 and 4
    return out, record


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory):
    """A run killed after its first checkpoint (mid-way through stage 1); copy before use."""
    out = tmp_path_factory.mktemp("interrupted") / "run"
    _interrupt(out, 1)
    return out


@pytest.fixture
def run_copy(interrupted, tmp_path):
    dst = tmp_path / "run"
    shutil.copytree(interrupted, dst)
    return dst


# ------------------------------------------------------------------ exact resume


# Where the chain below interrupts the run, and what is special there.
CHAIN = [
    (1, "stage 1, mid-epoch, inside a logging window"),
    (2, "stage boundary (the stage-end checkpoint, after stage 1's evaluation)"),
    (4, "stage 2, end of epoch 0 (the periodic checkpoint holds a complete epoch)"),
    (5, "stage 2, mid-way through epoch 1, inside a logging window"),
]


@pytest.mark.slow
def test_resume_in_process_equals_uninterrupted(reference, tmp_path):
    """Interrupted at each point of CHAIN in turn, resumed each time: same run, bit for bit."""
    ref_dir, ref = reference
    out = tmp_path / "run"
    _interrupt(out, CHAIN[0][0])
    for (step, where), (next_step, _) in zip(CHAIN, CHAIN[1:] + [(None, None)]):
        saved = torch.load(latest_checkpoint(out) / "state.pt", weights_only=False)
        assert saved["history"] == [r for r in ref["history"] if r["global_step"] <= step], where
        if next_step is not None:
            _interrupt(out, next_step, resume=True)
    resumed = _run(out, resume=True)
    assert resumed["meta"]["resumed_from"] == f"step-{CHAIN[-1][0]:07d}"
    assert resumed["history"] == ref["history"]
    assert resumed["metrics"] == ref["metrics"]
    assert _on_disk(out) == _on_disk(ref_dir)
    assert (out / "history.csv").read_bytes() == (ref_dir / "history.csv").read_bytes()


def _nan_loss_at(steps: set[int], first_step: int = 1):
    """AdversarialMethod.objective, but the loss of the given global steps is NaN (as after an
    overflow): the loop must drop those updates and count them."""
    real = AdversarialMethod.objective
    step = {"now": first_step - 1}

    def call(self, model, batch):
        step["now"] += 1
        loss, parts = real(self, model, batch)
        return (loss * float("nan") if step["now"] in steps else loss), parts

    return call


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step\\(\\)` before:UserWarning")
def test_nonfinite_steps_are_counted_across_resume(tmp_path, monkeypatch):
    """Dropped (non-finite) steps in stage 1 and just before the kill in stage 2 are still
    counted after the resume: in the history rows and in meta.nonfinite_steps."""
    # global steps 1-2 | 3-4; half of each stage's steps dropped, so the run may not fail for it
    one_epoch = dict(uci_num_train_epochs=1, logging_steps=1, max_nonfinite_fraction=0.5)
    monkeypatch.setattr(AdversarialMethod, "objective", _nan_loss_at({1, 3}))
    ref = _run(tmp_path / "ref", **one_epoch)
    assert ref["meta"]["nonfinite_steps"] == 2
    assert [r["nonfinite_steps"] for r in ref["history"]] == [1, 1, 1, 1]  # counted per stage

    monkeypatch.setattr(AdversarialMethod, "objective", _nan_loss_at({1, 3}))
    _interrupt(tmp_path / "run", 3, **one_epoch)
    monkeypatch.setattr(AdversarialMethod, "objective", _nan_loss_at({1, 3}, first_step=4))
    resumed = _run(tmp_path / "run", resume=True, **one_epoch)
    # compared as written (NaN -> null), since NaN != NaN in the records in memory
    assert _on_disk(tmp_path / "run") == _on_disk(tmp_path / "ref")
    assert resumed["meta"]["nonfinite_steps"] == ref["meta"]["nonfinite_steps"]


def _cli(out: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "siftkit",
        "train",
        "--params",
        str(REPO / "params" / "smoke.yaml"),
        "--algo",
        "smart",
        "--seed",
        "3",
        "--save_steps",
        "2",
        "--logging_steps",
        "3",
        "--max_train_samples",
        "20",
        "--max_eval_samples",
        "8",
        "--cpu",
        "--output_dir",
        str(out),
        *extra,
    ]


def _env(hash_seed: str) -> dict:
    # A different PYTHONHASHSEED per process: nothing may depend on set/dict-of-str order.
    return dict(os.environ, PYTHONHASHSEED=hash_seed, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")


@pytest.mark.subprocess
def test_sigkill_mid_stage_then_resume_equals_uninterrupted(tmp_path):
    """The issue's test: SIGKILL a CLI run mid-stage, `--resume` it, compare to a clean run."""
    ref, run = tmp_path / "ref", tmp_path / "run"
    logs = [(tmp_path / name).open("w") for name in ("killed.log", "clean.log")]
    # Stage 1: 20 examples / batch 4 = 5 steps; the checkpoints of steps 2 and 4 are mid-stage.
    # The uninterrupted reference runs at the same time, in its own process.
    proc = subprocess.Popen(_cli(run), stdout=logs[0], stderr=subprocess.STDOUT, env=_env("1"), cwd=tmp_path)
    clean = subprocess.Popen(_cli(ref), stdout=logs[1], stderr=subprocess.STDOUT, env=_env("3"), cwd=tmp_path)
    deadline = time.monotonic() + 300
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            if list_checkpoints(run):
                os.kill(proc.pid, signal.SIGKILL)
                break
            time.sleep(0.01)
        proc.wait(timeout=60)
        assert proc.returncode == -signal.SIGKILL, (tmp_path / "killed.log").read_text()[-3000:]
        assert not (run / "results.json").exists()
        killed_at = latest_checkpoint(run)
        assert killed_at is not None
        position = torch.load(killed_at / "state.pt", weights_only=False)["position"]
        assert position["stage"] == 0 and not position["stage_done"], position  # mid-way through stage 1

        done = subprocess.run(_cli(run, "--resume"), capture_output=True, text=True, env=_env("2"), cwd=tmp_path)
        assert done.returncode == 0, done.stderr[-3000:]
        assert clean.wait(timeout=300) == 0, (tmp_path / "clean.log").read_text()[-3000:]
    finally:
        for p in (proc, clean):
            if p.poll() is None:
                p.kill()
                p.wait()
        for log in logs:
            log.close()

    resumed, reference = (json.loads((d / "results.json").read_text()) for d in (run, ref))
    assert resumed["meta"]["resumed_from"] is not None
    assert reference["meta"]["resumed_from"] is None
    assert resumed["history"] == reference["history"]
    assert resumed["metrics"] == reference["metrics"]
    assert (run / "history.csv").read_bytes() == (ref / "history.csv").read_bytes()
    # A finished run keeps no checkpoints, and no temporary file is left behind.
    assert list_checkpoints(run) == []
    assert not [p.name for p in run.iterdir() if p.name.startswith(".")]
    _log(
        "a run killed with SIGKILL mid-stage",
        "(no results.json; `--resume` continues from the newest checkpoint and ends with the same "
        "metrics and history, bit for bit, as an uninterrupted run)",
    )


# ------------------------------------------------------------------ what resume refuses


@pytest.mark.slow
def test_resume_with_changed_setting_is_refused(run_copy):
    with pytest.raises(CheckpointError) as err:
        _run(run_copy, resume=True, learning_rate=2e-3)
    msg = str(err.value)
    assert (
        f"checkpoint {run_copy / 'checkpoints' / 'step-0000001'} was written by a run with different "
        f"settings (learning_rate)" in msg
    )
    assert "resume with the same config or choose another output_dir" in msg
    _log("resume with a changed setting (learning_rate)", msg, **{"runs/exp": run_copy})


def test_truncated_state_is_a_clear_error_naming_the_file(run_copy):
    state = run_copy / "checkpoints" / "step-0000001" / "state.pt"
    state.write_bytes(state.read_bytes()[: state.stat().st_size // 2])
    with pytest.raises(CheckpointError) as err:
        _run(run_copy, resume=True)
    msg = str(err.value)
    assert msg.startswith(f"checkpoint file {state} cannot be read (")
    assert f"delete the folder {state.parent} to resume from an earlier checkpoint" in msg
    _log("corrupted checkpoint: state.pt truncated to half", msg, **{"runs/exp": run_copy})


def test_garbled_rng_file_is_named(run_copy):
    rng = run_copy / "checkpoints" / "step-0000001" / "rng-0.pt"
    rng.write_bytes(b"not a torch file")
    with pytest.raises(CheckpointError, match=f"^checkpoint file {rng} cannot be read") as err:
        _run(run_copy, resume=True)
    _log("corrupted checkpoint: rng-0.pt overwritten with text", str(err.value), **{"runs/exp": run_copy})


def test_checkpoint_missing_its_state_file(run_copy):
    folder = run_copy / "checkpoints" / "step-0000001"
    (folder / "state.pt").unlink()
    with pytest.raises(CheckpointError, match=f"^checkpoint {folder} is incomplete: state.pt is missing$") as err:
        _run(run_copy, resume=True)
    _log("checkpoint folder without its state.pt", str(err.value), **{"runs/exp": run_copy})


def test_leftover_tmp_folder_is_ignored_and_output_settings_may_change(run_copy, reference):
    """A kill while a checkpoint was being written leaves `.tmp-step-*`: it is never read.

    save_steps, data_dir and overwrite are not part of the run's identity: they may differ
    on resume, and the run still ends exactly like the uninterrupted one.
    """
    tmp = run_copy / "checkpoints" / ".tmp-step-0000002"
    tmp.mkdir()
    (tmp / "state.pt").write_bytes(b"half a file")
    assert latest_checkpoint(run_copy).name == "step-0000001"
    record = _run(run_copy, resume=True, save_steps=3, overwrite=True, data_dir=os.environ.get("SIFTKIT_DATA_DIR"))
    assert record["meta"]["resumed_from"] == "step-0000001"
    assert record["history"] == reference[1]["history"]
    assert record["metrics"] == reference[1]["metrics"]
    assert not tmp.exists()  # the real step-2 save reused that name, then renamed it
    _log(
        "leftover `.tmp-step-*` folder from a kill during a save",
        "(ignored: resume uses the newest complete step-* folder)",
    )


def test_checkpoints_without_resume_are_not_silently_discarded(run_copy):
    with pytest.raises(OutputDirError, match="holds checkpoints of an earlier run; pass resume=True") as err:
        _run(run_copy)
    _log("a new run into a killed run's output_dir, without resume", str(err.value), **{"runs/exp": run_copy})


def test_resume_of_a_finished_run_says_so(reference):
    with pytest.raises(
        OutputDirError, match="already holds results.json: that run finished, there is nothing to resume"
    ) as err:
        _run(reference[0], resume=True)
    _log("resume=True on a finished run", str(err.value), **{"runs/exp": reference[0]})
