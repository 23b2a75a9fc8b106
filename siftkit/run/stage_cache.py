"""Stage sharing: a finished training stage, cached and reused by every run that would train it
again.

Runs that differ only in what happens after stage 1 (a stage-2 learning-rate grid, a fresh
head before stage 2, the regularizer in stage 2 only) train the same stage 1. The first run
to finish it stores what the next stage starts from — weights, SMART's teacher, every
process's RNG state, the history and metrics so far, the position, the counters — under a
*key* made of everything that determines that stage and its evaluations; a later run with the
same key loads it and goes on from stage 2. Starting from the cache is the same as resuming
from a stage-end checkpoint, so the run's metrics and history are bit for bit those of a run
that trained the stage itself (on CPU; `tests/run/test_stage_cache.py`).

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

An entry is trusted only when it proves itself: its ``stage.json`` must carry the key it is
stored under and the determinants the run computed (an entry copied into another key's folder
is caught), and the sha256 of each of its files, recorded when it was stored, must match (a
flipped byte in the weights, a truncated or garbled file, is caught before torch reads it). An
entry that fails is set aside as ``.damaged-<key>-…`` with a warning, and the stage is trained
again and stored anew. A store that fails (a full disk, the folder removed meanwhile) removes
its temporary folder and says why; the run goes on, as the cache only saves time.
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
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from siftkit.run.checkpoint import CheckpointError, _first_sentence, rng_state
from siftkit.run.config import probed_stages

# The fields of RunConfig that can act in any stage (beside the stage's own epochs and rate).
# The regularizer's fields join only for a stage in which it runs.
RUN_FIELDS = (
    "model_name",
    "seed",
    "weight_decay",
    "adam_epsilon",
    "warmup_ratio",
    "max_grad_norm",
    "per_device_train_batch_size",
    "per_device_eval_batch_size",
    "max_length",
    "mixed_precision",
    "logging_steps",
    "eval_smoothness",
    "label_smoothing",
    "l2sp_weight",
    "freeze_encoder",
    "early_stopping_patience",
    "reinit_layers",
    "layer_lr_decay",
)
ADVERSARIAL_FIELDS = (
    "algo",
    "algo_args",
    "perturb_at",
    "adv_epsilon",
    "adv_noise_std",
    "adv_step_size",
    "adv_rule",
    "adv_steps",
    "adv_norm",
    "adv_weight",
    "divergence",
    "bregman_weight",
    "bregman_beta",
)
_STATE, _META = "state.pt", "stage.json"


class StageCacheWarning(UserWarning):
    """A cache entry set aside as damaged, or a stage that could not be stored."""


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


def stage_determinants(
    cfg, stage, stage_index: int, n_stages: int, previous_key: str | None, accelerator
) -> dict[str, Any]:
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
        "stage": {
            "index": stage_index,
            "name": stage.name,
            "num_train_epochs": stage.num_train_epochs,
            "learning_rate": stage.learning_rate,
            "val": stage.val_key,
        },
        "settings": settings,
        "data": {"train": dataset_digest(stage.train), "evals": {k: dataset_digest(v) for k, v in stage.evals.items()}},
        "code": {
            "siftkit_source": _source_digest(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "device": accelerator.device.type,
            "num_processes": accelerator.num_processes,
        },
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
                from siftkit.core.paths import loop_note

                raise ValueError(
                    f"stage_cache_dir {str(self.root)!r} cannot be created: {exc.strerror or exc}{loop_note(self.root)}"
                ) from None
            _check_writable(self.root)
        accelerator.wait_for_everyone()

    def entry(self, key: str) -> Path | None:
        path = self.root / key
        return path if (path / _STATE).is_file() and (path / _META).is_file() else None

    @contextlib.contextmanager
    def claim(self, key: str, what: str) -> Iterator[None]:
        """Hold the key's lock (main process) while the stage is looked up, trained and stored."""
        fh = None
        if self.accelerator.is_main_process:
            self.root.mkdir(parents=True, exist_ok=True)  # removed since the run started: made again
            fh = open(self.root / f"{key}.lock", "a+")
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                print(
                    f"siftkit: waiting for another run to finish {what} (stage cache {self.root / key})",
                    file=sys.__stderr__ or sys.stderr,
                    flush=True,
                )
                started = time.monotonic()
                fcntl.flock(fh, fcntl.LOCK_EX)
                print(
                    f"siftkit: waited {time.monotonic() - started:.0f} s for {what}",
                    file=sys.__stderr__ or sys.stderr,
                    flush=True,
                )
            # Under the key's lock no other run is storing this key: a temporary folder of it is
            # what a killed store left behind.
            for stale in self.root.glob(f".tmp-{key}-*"):
                shutil.rmtree(stale, ignore_errors=True)
        self.accelerator.wait_for_everyone()
        try:
            yield
        finally:
            self.accelerator.wait_for_everyone()
            if fh is not None:
                fcntl.flock(fh, fcntl.LOCK_UN)
                fh.close()

    def store(self, key: str, state: dict[str, Any], determinants: dict[str, Any], produced_by: str) -> bool:
        """Write the entry (every process its RNG state) under a temporary name, with the sha256
        of each file, then rename it. A failed write removes the temporary folder and warns (the
        run goes on); returns whether the entry was stored."""
        acc = self.accelerator
        final, tmp = self.root / key, self.root / f".tmp-{key}-{os.getpid()}"
        failed: list[str] = []
        if acc.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
            self._attempt(lambda: tmp.mkdir(parents=True), tmp, failed)  # parents: the folder may be gone
        acc.wait_for_everyone()
        if tmp.is_dir():
            self._attempt(
                lambda: torch.save(rng_state(), tmp / f"rng-{acc.process_index}.pt"),
                tmp / f"rng-{acc.process_index}.pt",
                failed,
            )
        if acc.is_main_process and not failed:
            self._attempt(lambda: torch.save(state, tmp / _STATE), tmp / _STATE, failed)
        acc.wait_for_everyone()
        if acc.is_main_process and not failed:
            rng_files = [f"rng-{i}.pt" for i in range(acc.num_processes)]
            if all((tmp / f).is_file() for f in rng_files):  # another process may have failed its own
                meta = {
                    "key": key,
                    "determinants": determinants,
                    "produced_by": produced_by,
                    "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                    "num_processes": acc.num_processes,
                    "files": {f: _sha256(tmp / f) for f in [_STATE, *rng_files]},
                }
                self._attempt(
                    lambda: (tmp / _META).write_text(json.dumps(meta, indent=1, default=str), encoding="utf-8"),
                    tmp / _META,
                    failed,
                )
            else:
                failed.append("another process could not write its RNG state")
            if not failed:
                if final.exists():  # stored meanwhile by a run that did not share our lock file
                    shutil.rmtree(tmp, ignore_errors=True)
                else:
                    self._attempt(lambda: tmp.rename(final), final, failed)
        if failed:
            shutil.rmtree(tmp, ignore_errors=True)
            if acc.is_main_process:
                warnings.warn(
                    f"stage cache: stage not stored: {failed[0]}; the run goes on, and a later run "
                    f"trains this stage again",
                    StageCacheWarning,
                    stacklevel=3,
                )
        acc.wait_for_everyone()
        return not failed

    @staticmethod
    def _attempt(write, path: Path, failed: list[str]) -> None:
        """Run one write of an entry; a failure is noted in `failed` as one clear sentence."""
        from siftkit.run.diskspace import is_disk_full, no_space_message

        if failed:
            return
        try:
            write()
        except Exception as exc:  # OSError, or torch's RuntimeError for a full disk
            if is_disk_full(exc, path.parent):
                failed.append(
                    no_space_message(path, "a stage cache entry").replace(
                        "; free some space there, then run again", "; the partial entry was removed"
                    )
                )
            else:
                failed.append(
                    f"cannot write {path} ({type(exc).__name__}: "
                    f"{getattr(exc, 'strerror', None) or _first_sentence(str(exc))})"
                )

    def load(self, key: str, determinants: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]] | None:
        """(state, this process's RNG state) of the entry stored under `key`, or None when there is
        none or it is damaged (then it is set aside, with a warning, and the stage is trained again)."""
        acc = self.accelerator
        if acc.is_main_process:
            path = self.entry(key)
            problem = self._problem(path, key, determinants) if path is not None else None
            if problem is not None:
                aside = self.root / f".damaged-{key}-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}"
                try:
                    path.rename(aside)
                    where = f"set aside as {aside}"
                except OSError as exc:
                    shutil.rmtree(path, ignore_errors=True)
                    where = f"removed (it could not be renamed: {exc.strerror or exc})"
                warnings.warn(
                    f"stage cache entry {path} {problem}; {where}, and the stage is trained again",
                    StageCacheWarning,
                    stacklevel=3,
                )
        acc.wait_for_everyone()
        path = self.entry(key)
        if path is None:
            return None
        loaded = []
        for name in (_STATE, f"rng-{acc.process_index}.pt"):
            try:
                # weights_only=False: optimizer and RNG tuples we wrote; the sha256 checked above
                # guards against a file changed since.
                loaded.append(torch.load(path / name, map_location="cpu", weights_only=False))
            except Exception as exc:
                raise CheckpointError(
                    f"stage cache entry {path}: {name} matches its sha256 but cannot be read "
                    f"({type(exc).__name__}: {_first_sentence(str(exc))}); delete the folder "
                    f"{path} to train the stage again"
                ) from None
        return loaded[0], loaded[1]

    def _problem(self, path: Path, key: str, determinants: dict[str, Any]) -> str | None:
        """Why the entry at `path` cannot be used for `key`, or None when it checks out (read
        before any byte of it is unpickled)."""
        try:
            meta = json.loads((path / _META).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            return f"has an unreadable {_META} ({type(exc).__name__}: {_first_sentence(str(exc))})"
        if not isinstance(meta, dict) or meta.get("key") != key:
            stored = meta.get("key") if isinstance(meta, dict) else None
            return f"was stored under key {stored!r}, not {key!r} (a copied or moved entry)"
        expected = json.loads(json.dumps(determinants, default=str))
        if meta.get("determinants") != expected:
            differ = _differences(meta.get("determinants"), expected)
            return f"was stored for other settings ({'; '.join(differ[:3]) or 'its determinants differ'})"
        files = meta.get("files")
        if not isinstance(files, dict) or _STATE not in files:
            return f"has no checksums of its files in {_META}"
        for i in range(self.accelerator.num_processes):
            files.setdefault(f"rng-{i}.pt", None)
        for name, sha in files.items():
            f = path / name
            if not f.is_file():
                return f"lacks {name}"
            actual = _sha256(f)
            if actual != sha:
                return (
                    f"has a damaged {name} (sha256 {actual[:12]}..., stored as "
                    f"{str(sha)[:12]}...; {f.stat().st_size} bytes)"
                )
        return None


def _sha256(file: Path) -> str:
    h = hashlib.sha256()
    with open(file, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _differences(stored: Any, expected: Any, prefix: str = "") -> list[str]:
    """'settings.seed: 1, not 7' for each leaf where two determinant mappings differ."""
    if isinstance(stored, dict) and isinstance(expected, dict):
        out = []
        for k in sorted(set(stored) | set(expected), key=str):
            out += _differences(stored.get(k), expected.get(k), f"{prefix}{k}.")
        return out
    return [] if stored == expected else [f"{prefix[:-1]}: {stored!r}, not {expected!r}"]


def _check_writable(root: Path) -> None:
    """The cache is written (locks, entries) by every run that uses it: refuse a folder that
    cannot be, before the stage trains."""
    probe = root / f".write-test-{os.getpid()}"
    try:
        probe.touch()
        probe.unlink()
    except OSError as exc:
        raise ValueError(
            f"stage_cache_dir {str(root)!r} is not writable ({exc.strerror or exc}): each run writes "
            f"its locks and entries there; make it writable, or choose another stage_cache_dir "
            f"(or none)"
        ) from None
