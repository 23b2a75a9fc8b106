"""Stage sharing: a finished training stage, cached and reused by every run that would train it
again.

Runs that differ only in what happens after stage 1 (a stage-2 learning-rate grid, a fresh
head before stage 2, the regularizer in stage 2 only) train the same stage 1. The first run
to finish it stores what the next stage starts from — weights, SMART's teacher, every
process's RNG state, the history and metrics so far, the position, the counters — under a
*key* made of everything that determines that stage and its evaluations; a later run with the
same key loads it and goes on from stage 2. Starting from the cache is the same as resuming
from a stage-end checkpoint, so the run's metrics and history are bit for bit those of a run
that trained the stage itself (on CPU; `tests/test_stage_cache.py`).

The key of stage k (`stage_key`) hashes:
- the key of stage k - 1 (so a stage is only ever shared after identical earlier stages);
- the run settings that act in stage k: model, seed, optimisation, batch and length settings,
  the controls, re-initialised layers and layer-wise decay, the stage's epochs and learning rate,
  and the regularizer's settings *only if the regularizer runs in that stage* (``adv_stages``): a
  SiFT run with ``adv_stages=last`` shares plain's stage 1, which is exactly what it trains; LP-FT's
  probe settings likewise only for a stage it probes (``lp_ft_stages``). WiSE-FT acts after the
  last stage, which is never cached, so it is in no key: a WiSE-FT run shares plain's stage 1;
- the stage's data as the run sees it: every text and label of its training set and of each
  set it is evaluated on (a change to a data file, a split setting or a subset cap is a miss);
- the code and libraries: a hash of the siftkit package's source, torch's and transformers'
  versions, the device type and the number of processes.

Fields that cannot change a stage's result (output folder, checkpointing, notes) are not part
of it. Concurrency: a run that misses takes an exclusive lock on the key (`fcntl.flock`,
released by the kernel if the process dies) while it trains the stage; another run wanting
the same key waits on that lock and then loads what the first stored, so two runs never both
train it. An entry is written under a temporary name and renamed when complete: a reader
never sees half an entry.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import torch

from siftkit.run.checkpoint import CheckpointError, _read, rng_state
from siftkit.run.config import probed_stages

# The fields of RunConfig that can act in any stage (beside the stage's own epochs and rate).
# The regularizer's fields join only for a stage in which it runs.
RUN_FIELDS = ("model_name", "seed", "weight_decay", "adam_epsilon", "warmup_ratio", "max_grad_norm",
              "per_device_train_batch_size", "per_device_eval_batch_size", "max_length", "mixed_precision",
              "logging_steps", "eval_smoothness", "label_smoothing", "l2sp_weight", "freeze_encoder",
              "early_stopping_patience", "reinit_layers", "layer_lr_decay")
ADVERSARIAL_FIELDS = ("algo", "algo_args", "perturb_at", "adv_epsilon", "adv_noise_std", "adv_step_size", "adv_rule",
                      "adv_steps", "adv_norm", "adv_weight", "divergence", "bregman_weight", "bregman_beta")
_STATE, _META = "state.pt", "stage.json"


def adversarial_in_stage(cfg, stage_index: int, n_stages: int) -> bool:
    """Whether the regularizer (and SMART's Bregman term) runs in stage `stage_index`."""
    if not cfg.regularized:
        return False
    return {"all": True, "first": stage_index == 0, "last": stage_index == n_stages - 1}[cfg.adv_stages]


def dataset_digest(ds) -> str:
    """sha256 of a dataset's rows as the run sees them (every column, in order)."""
    h = hashlib.sha256()
    for name in sorted(ds.column_names):
        h.update(name.encode())
        h.update(json.dumps(list(ds[name]), ensure_ascii=False).encode())
    return h.hexdigest()


@functools.lru_cache(maxsize=1)
def _source_digest() -> str:
    """sha256 of the siftkit package's .py files: a stage trained by other code is not reused."""
    root = Path(__file__).resolve().parent
    h = hashlib.sha256()
    for f in sorted(root.rglob("*.py")):
        h.update(str(f.relative_to(root)).encode())
        h.update(f.read_bytes())
    return h.hexdigest()


def stage_determinants(cfg, stage, stage_index: int, n_stages: int, previous_key: str | None,
                       accelerator) -> dict[str, Any]:
    """Everything that decides stage `stage_index`'s result, as a JSON-able dict (see the module)."""
    import transformers

    settings = {name: getattr(cfg, name) for name in RUN_FIELDS}
    adversarial = adversarial_in_stage(cfg, stage_index, n_stages)
    settings["adversarial"] = {name: getattr(cfg, name) for name in ADVERSARIAL_FIELDS} if adversarial else None
    # Bregman's teacher carries over from an adversarial stage into the next one.
    settings["reinit_head"] = cfg.reinit_head and stage_index > 0
    if stage_index in probed_stages(cfg, n_stages):
        settings["lp_ft"] = {"epochs": cfg.lp_ft_epochs, "learning_rate": cfg.lp_ft_learning_rate}
    return {
        "previous": previous_key,
        "stage": {"index": stage_index, "name": stage.name, "num_train_epochs": stage.num_train_epochs,
                  "learning_rate": stage.learning_rate, "val": stage.val_key},
        "settings": settings,
        "data": {"train": dataset_digest(stage.train), "evals": {k: dataset_digest(v) for k, v in stage.evals.items()}},
        "code": {"siftkit_source": _source_digest(), "torch": torch.__version__,
                 "transformers": transformers.__version__, "device": accelerator.device.type,
                 "num_processes": accelerator.num_processes},
    }


def stage_key(determinants: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(determinants, sort_keys=True, default=str).encode()).hexdigest()[:32]


class StageCache:
    """A folder of cached stages, one sub-folder per key."""

    def __init__(self, root: str | Path, accelerator):
        self.root = Path(root)
        self.accelerator = accelerator
        if accelerator.is_main_process:
            try:
                self.root.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise ValueError(f"stage_cache_dir {str(self.root)!r} cannot be created: {exc.strerror or exc}") \
                    from None
        accelerator.wait_for_everyone()

    def entry(self, key: str) -> Path | None:
        path = self.root / key
        return path if (path / _STATE).is_file() and (path / _META).is_file() else None

    @contextlib.contextmanager
    def claim(self, key: str, what: str) -> Iterator[None]:
        """Hold the key's lock (main process) while the stage is looked up, trained and stored."""
        fh = None
        if self.accelerator.is_main_process:
            fh = open(self.root / f"{key}.lock", "a+")
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                print(f"siftkit: waiting for another run to finish {what} (stage cache {self.root / key})",
                      file=sys.__stderr__ or sys.stderr, flush=True)
                started = time.monotonic()
                fcntl.flock(fh, fcntl.LOCK_EX)
                print(f"siftkit: waited {time.monotonic() - started:.0f} s for {what}",
                      file=sys.__stderr__ or sys.stderr, flush=True)
        self.accelerator.wait_for_everyone()
        try:
            yield
        finally:
            self.accelerator.wait_for_everyone()
            if fh is not None:
                fcntl.flock(fh, fcntl.LOCK_UN)
                fh.close()

    def store(self, key: str, state: dict[str, Any], determinants: dict[str, Any], produced_by: str) -> None:
        """Write the entry (every process its RNG state) under a temporary name, then rename it."""
        acc = self.accelerator
        final, tmp = self.root / key, self.root / f".tmp-{key}-{os.getpid()}"
        if acc.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir()
        acc.wait_for_everyone()
        torch.save(rng_state(), tmp / f"rng-{acc.process_index}.pt")
        if acc.is_main_process:
            torch.save(state, tmp / _STATE)
            meta = {"key": key, "determinants": determinants, "produced_by": produced_by,
                    "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "num_processes": acc.num_processes}
            (tmp / _META).write_text(json.dumps(meta, indent=1, default=str), encoding="utf-8")
        acc.wait_for_everyone()
        if acc.is_main_process:
            if final.exists():  # stored meanwhile by a run that did not share our lock file
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                tmp.rename(final)
        acc.wait_for_everyone()

    def load(self, key: str) -> tuple[dict[str, Any], dict[str, Any]]:
        """(state, this process's RNG state) of a stored entry."""
        path = self.root / key
        rng_file = path / f"rng-{self.accelerator.process_index}.pt"
        if not rng_file.is_file():
            raise CheckpointError(f"stage cache entry {path} has no RNG state for process "
                                  f"{self.accelerator.process_index}; delete the folder to train the stage again")
        return _read(path / _STATE, path), _read(rng_file, path)
