"""Checkpoints that survive a SIGKILL: written under a temporary name, then renamed.

A checkpoint is a folder ``<output_dir>/checkpoints/step-<global step>/`` holding
``state.pt`` (model, optimizer, scheduler, Bregman teacher, position in the data order,
history and metrics so far) and one ``rng-<rank>.pt`` per process. It is assembled as
``.tmp-step-…`` and renamed once complete, so a folder named ``step-…`` is always whole;
resume picks the newest one.
"""

from __future__ import annotations

import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

CHECKPOINT_DIR = "checkpoints"
_NAME = re.compile(r"^step-(\d+)$")


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message names the file."""


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def checkpoint_root(output_dir: str | Path) -> Path:
    return Path(output_dir) / CHECKPOINT_DIR


def list_checkpoints(output_dir: str | Path) -> list[Path]:
    root = checkpoint_root(output_dir)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    found = list_checkpoints(output_dir)
    return found[-1] if found else None


def save_checkpoint(
    accelerator, output_dir: str | Path, global_step: int, state: dict[str, Any], keep: int = 2
) -> Path | None:
    """Write `state` (main process) and each process's RNG; every process must call this."""
    root = checkpoint_root(output_dir)
    final = root / f"step-{global_step:07d}"
    tmp = root / f".tmp-step-{global_step:07d}"
    if accelerator.is_main_process:
        root.mkdir(parents=True, exist_ok=True)
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
    accelerator.wait_for_everyone()
    _write(rng_state(), tmp / f"rng-{accelerator.process_index}.pt", tmp, output_dir)
    if accelerator.is_main_process:
        _write(state, tmp / "state.pt", tmp, output_dir)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        if final.exists():  # a stage-end save at the same step as a periodic one
            shutil.rmtree(final)
        tmp.rename(final)
        for old in list_checkpoints(output_dir)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def _write(obj: Any, file: Path, tmp: Path, output_dir) -> None:
    """torch.save, or remove the partial folder; a full disk is said as such (torch reports it
    as "enforce fail at inline_container.cc"). The last complete checkpoint stays."""
    from siftkit.run.diskspace import is_disk_full, no_space_message

    try:
        torch.save(obj, file)
    except Exception as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if not is_disk_full(exc, tmp.parent):
            raise
        last = latest_checkpoint(output_dir)
        kept = f"the last complete checkpoint {last} is kept" if last else "no earlier checkpoint exists"
        raise CheckpointError(
            f"{no_space_message(file, 'a checkpoint')}; {kept}, and resume=True continues from it"
        ) from None


def load_checkpoint(path: Path, process_index: int = 0) -> tuple[dict[str, Any], dict[str, Any]]:
    """(state, this process's RNG state) from a checkpoint folder, or CheckpointError."""
    state_file, rng_file = path / "state.pt", path / f"rng-{process_index}.pt"
    for f in (state_file, rng_file):
        if not f.is_file():
            raise CheckpointError(f"checkpoint {path} is incomplete: {f.name} is missing")
    state, rng = _read(state_file, path), _read(rng_file, path)
    if not isinstance(state, dict) or "model" not in state or "position" not in state:
        raise CheckpointError(f"checkpoint file {state_file} is not a siftkit checkpoint")
    if not isinstance(rng, dict) or "torch" not in rng:
        raise CheckpointError(f"checkpoint file {rng_file} is not a siftkit RNG state")
    return state, rng


def _read(file: Path, folder: Path) -> Any:
    try:
        # weights_only=False: the file holds optimizer state and RNG tuples that we wrote
        # ourselves; never point resume at checkpoints from an untrusted source.
        return torch.load(file, map_location="cpu", weights_only=False)
    except Exception as exc:  # torch raises many types for a truncated or garbled file
        # Name the file that failed (state.pt or rng-<rank>.pt), not always state.pt.
        raise CheckpointError(
            f"checkpoint file {file} cannot be read ({type(exc).__name__}: "
            f"{_first_sentence(str(exc)) or 'corrupt'}); delete the folder "
            f"{folder} to resume from an earlier checkpoint, or start over with overwrite=True"
        ) from None


def _first_sentence(text: str) -> str:
    """torch's load errors run to several sentences of advice; the first says what failed."""
    line = text.strip().splitlines()[0] if text.strip() else ""
    head, sep, _ = line.partition(". ")
    return head + ("." if sep and not head.endswith(".") else "") if sep else line
