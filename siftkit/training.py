"""`train(cfg)`: run one protocol end to end with plain, SMART or SiFT fine-tuning.

One regularized step costs what the math needs and no more: the clean forward gives the
task loss, the clean logits (the regularizer's target, reused — no second clean forward)
and the tensor to perturb; then K (forward + input-gradient backward) ascent steps, one
adversarial forward, one no-grad teacher forward for SMART's Bregman term, and a single
backward through everything. Forwards: plain 1, SMART/SiFT 2 + K (+1 teacher).

Each stage gets its own AdamW and linear schedule sized by that stage's step count. The
seed is set before the data split and the model's head is initialised; the data order of
every epoch is a permutation drawn from (seed, stage, epoch), which is what makes resuming
in the middle of an epoch exact. Tokenization and the evaluations after each stage live in
`siftkit.evaluation`.
"""

from __future__ import annotations

import contextlib
import math
import shutil
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterator

import torch
from torch.utils.data import DataLoader, Sampler

from siftkit.checkpoint import (CHECKPOINT_DIR, CheckpointError, latest_checkpoint, list_checkpoints, load_checkpoint,
                                save_checkpoint, set_rng_state)
from siftkit.config import ALGO_DEFAULTS, RunConfig
from siftkit.evaluation import evaluate, tokenize
from siftkit.models import load_model
from siftkit.objective import AdversarialLoss
from siftkit.outdir import OutputDirLock, missing_folders, remove_empty_folders
from siftkit.protocols import Stage, build_stages
from siftkit.results import OutputDirError, check_output_dir, environment_meta, write_results
from siftkit.split import unwrap


class EpochPermutationSampler(Sampler[int]):
    """A fresh permutation per epoch, drawn from (seed, stage, epoch) alone."""

    def __init__(self, n: int, seed: int, stage_index: int):
        self.n, self.seed, self.stage_index, self.epoch = n, seed, stage_index, 0

    # Deliberately not named `set_epoch`: accelerate's prepared loaders call `set_epoch` with
    # their own count of iterations, which restarts at 0 in a resumed run (and in the loader
    # that `skip_first_batches` builds) and would silently change the data order.
    def use_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.stage_index * 10_007 + self.epoch)
        return iter(torch.randperm(self.n, generator=g).tolist())

    def __len__(self) -> int:
        return self.n


# Seconds between two progress lines on the terminal (the first comes after step 1).
PROGRESS_EVERY_S = 30.0


class ProgressLines:
    """Throttled one-line progress reports on the process's own stderr.

    Under papermill (or any Jupyter kernel) the tqdm bar lives in the notebook, so the
    terminal shows nothing for minutes. These lines go to ``sys.__stderr__``, the kernel
    process's own stderr: the terminal that started papermill or JupyterLab shows them
    (ipykernel also copies them into the cell's output). In a script it is plain stderr.
    The first line comes after the first step, with its cost; then one every ``every_s``
    seconds, and one when the stage ends.
    """

    def __init__(self, label: str, total: int, done: int = 0, every_s: float = PROGRESS_EVERY_S,
                 stream=None, clock=time.monotonic):
        self.label, self.total, self.every_s, self.clock = label, total, every_s, clock
        self.stream = stream if stream is not None else sys.__stderr__
        self.start_step, self.start = done, clock()
        self.last: float | None = None

    def update(self, step: int, loss: float | None = None) -> None:
        now = self.clock()
        if self.last is not None and now - self.last < self.every_s and step < self.total:
            return
        self.last = now
        elapsed = now - self.start
        done_here = step - self.start_step
        line = f"siftkit: {self.label} step {step}/{self.total} ({100 * step / self.total:.0f}%)"
        if loss is not None and math.isfinite(loss):
            line += f" · loss {loss:.4f}"
        line += f" · {_duration(elapsed)}"
        if 0 < done_here and step < self.total:
            line += f", about {_duration(elapsed / done_here * (self.total - step))} left"
        if self.stream is not None:  # None under pythonw and some embedders
            print(line, file=self.stream, flush=True)


def _duration(seconds: float) -> str:
    if seconds < 10:
        return f"{seconds:.1f} s"
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def _collator(tokenizer):
    from transformers import DataCollatorWithPadding

    return DataCollatorWithPadding(tokenizer)


def perturbation_summary(history: list[dict[str, Any]]) -> dict[str, float]:
    """The run's mean per-token perturbation over its logged steps (0 for plain): the x
    axis on which runs of different rules and sizes are compared; and the mean cosine
    between delta and the ascent gradient (how adversarial the push was)."""
    out = {}
    for key in ("relative_perturbation", "perturbation_norm", "ascent_cosine"):
        if not any(key in row for row in history):
            continue  # ascent_cosine: only runs with a regularizer log it
        values = [row[key] for row in history if isinstance(row.get(key), (int, float)) and math.isfinite(row[key])]
        out[f"mean_{key}"] = sum(values) / len(values) if values else float("nan")
    return out


def _as_config(cfg: RunConfig | dict) -> RunConfig:
    if isinstance(cfg, RunConfig):
        return _revalidated(cfg)
    if isinstance(cfg, dict):
        return RunConfig.from_dict(cfg)
    raise TypeError(f"train() takes a RunConfig or a dict of its fields, got {type(cfg).__name__}")


def _revalidated(cfg: RunConfig) -> RunConfig:
    """`cfg` checked again: a RunConfig is a plain dataclass, and a field set after it was built
    (`cfg.algo = "SIFT"`) has not been validated. Returns a fresh, validated copy."""
    resolved = getattr(cfg, "_resolved_algo", cfg.algo)
    if cfg.algo != resolved:
        # A name that is no algorithm gets RunConfig's own message.
        RunConfig.from_dict({**cfg.to_dict(), **dict.fromkeys(ALGO_DEFAULTS[resolved])})
        # The adversarial knobs were resolved to the old algorithm's defaults: training with
        # them would run a mix and record it under the new name.
        raise ValueError(f"algo was changed from {resolved!r} to {cfg.algo!r} after the RunConfig was built, "
                         f"so its adversarial settings are still those of {resolved!r}; build the config with "
                         f"algo={cfg.algo!r}, or use cfg.replace(algo={cfg.algo!r})")
    return RunConfig.from_dict(cfg.to_dict())


_RESUME_IGNORED = {"resume", "overwrite", "output_dir", "save_steps", "save_model", "extra", "data_dir"}


def train(cfg: RunConfig | dict, *, progress: bool = True, accelerator=None) -> dict[str, Any]:
    """Run `cfg.task` with `cfg.algo`; write results.json/history.csv; return the record.

    While it runs, the run holds a lock on `cfg.output_dir` (`siftkit.outdir`): a second run
    into the same folder is refused at once. A run that fails removes the folders it created
    if they are still empty (a folder with checkpoints is kept, to resume from).
    """
    cfg = _as_config(cfg)
    start = time.time()
    created = missing_folders(cfg.output_dir)
    try:
        out = check_output_dir(cfg.output_dir, overwrite=cfg.overwrite, resume=cfg.resume)
        if accelerator is None:
            accelerator = _make_accelerator(cfg)
        with _output_dir_lock(out, cfg, accelerator):
            return _train(cfg, out, accelerator, progress, start)
    except BaseException:
        remove_empty_folders(created)
        raise


@contextlib.contextmanager
def _output_dir_lock(out: Path, cfg: RunConfig, accelerator) -> Iterator[None]:
    """The main process locks `out`; every process fails if it could not."""
    lock, error = None, None
    if accelerator.is_main_process:
        try:
            lock = OutputDirLock.acquire(out)
        except OutputDirError as exc:
            error = exc
    try:
        if not _all_processes(accelerator, error is None):
            raise error or OutputDirError(f"output_dir {str(out)!r} is in use by another run (the main "
                                          f"process could not lock it)")
        # Checked again under the lock: a run that held it may have finished meanwhile.
        check_output_dir(out, overwrite=cfg.overwrite, resume=cfg.resume)
        yield
    finally:
        if lock is not None:
            lock.release()


def _train(cfg: RunConfig, out: Path, accelerator, progress: bool, start: float) -> dict[str, Any]:
    from accelerate.utils import set_seed
    from tqdm.auto import tqdm

    existing = list_checkpoints(out)
    if existing and not cfg.resume and not cfg.overwrite:
        raise OutputDirError(
            f"output_dir {str(out)!r} holds checkpoints of an earlier run; pass resume=True "
            f"(--resume) to continue it, or overwrite=True to start over")
    main = accelerator.is_main_process
    if not main:
        # Only the main process shows progress, datasets' `map` bars included.
        import datasets

        datasets.disable_progress_bars()

    set_seed(cfg.seed)  # before the data split and the classifier head's initialisation
    stages = build_stages(cfg)
    model, tokenizer = load_model(cfg.model_name, num_labels=2)
    _check_max_length(cfg, model, tokenizer)
    model = accelerator.prepare(model)
    objective = AdversarialLoss(model, cfg)

    history: list[dict[str, Any]] = []
    metrics: dict[str, float] = {}
    position = {"stage": 0, "epoch": 0, "step_in_epoch": 0, "global_step": 0, "stage_done": False}
    nonfinite_steps = 0
    resumed_from = None

    ckpt = latest_checkpoint(out) if cfg.resume else None
    if ckpt is not None:
        state, rng = load_checkpoint(ckpt, accelerator.process_index)
        _check_resume_config(state["config"], cfg, ckpt)
        accelerator.unwrap_model(model).load_state_dict(state["model"])
        if objective.bregman is not None and state.get("teacher") is not None:
            objective.bregman.load_checkpoint_state(state["teacher"])
        if objective.regularizer is not None:
            objective.regularizer.skipped = state.get("skipped", 0)
        history, metrics, position = state["history"], state["metrics"], state["position"]
        nonfinite_steps = state.get("nonfinite_steps", 0)
        set_rng_state(rng)
        resumed_from = ckpt.name
    elif existing and cfg.overwrite and main:
        shutil.rmtree(existing[0].parent, ignore_errors=True)

    for stage_index, stage in enumerate(stages):
        if stage_index < position["stage"] or (stage_index == position["stage"] and position["stage_done"]):
            continue
        resume_here = stage_index == position["stage"] and ckpt is not None and not position["stage_done"]
        nonfinite_steps = _run_stage(
            stage_index, stage, model, tokenizer, objective, cfg, accelerator, history, position,
            state if resume_here else None, metrics, out, tqdm, progress and main, nonfinite_steps)
        metrics.update(evaluate(model, stage.evals, tokenizer, cfg, accelerator))
        position.update(stage=stage_index, stage_done=True, epoch=0, step_in_epoch=0)
        _save(accelerator, out, cfg, model, objective, None, None, history, metrics, position, nonfinite_steps)

    metrics.update(perturbation_summary(history))
    record = {
        "config": cfg.to_dict(),
        "metrics": metrics,
        "history": history,
        "stages": [s.describe() for s in stages],
        "meta": {
            **environment_meta(),
            "device": str(accelerator.device),
            "device_name": torch.cuda.get_device_name() if accelerator.device.type == "cuda" else "cpu",
            "num_processes": accelerator.num_processes,
            "mixed_precision": accelerator.mixed_precision,
            "wall_time_s": round(time.time() - start, 3),
            "resumed_from": resumed_from,
            "skipped_adversarial_steps": _sum_over_processes(accelerator, objective.skipped),
            "nonfinite_steps": nonfinite_steps,
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        },
    }
    if main:
        write_results(out, record, overwrite=cfg.overwrite)
        if cfg.save_model:
            accelerator.unwrap_model(model).save_pretrained(out / "model")
            tokenizer.save_pretrained(out / "model")
        # Checkpoints exist to resume an unfinished run; a finished one keeps only its
        # records (and `model/` when asked), not gigabytes of optimizer state.
        shutil.rmtree(out / CHECKPOINT_DIR, ignore_errors=True)
    accelerator.wait_for_everyone()
    return record


def _check_resume_config(saved: dict, cfg: RunConfig, ckpt: Path) -> None:
    now = cfg.to_dict()
    diff = sorted(k for k in now if k not in _RESUME_IGNORED and saved.get(k) != now[k])
    if diff:
        raise CheckpointError(
            f"checkpoint {ckpt} was written by a run with different settings ({', '.join(diff)}); "
            f"resume with the same config or choose another output_dir")


def _save(accelerator, out, cfg, model, objective, optimizer, scheduler, history, metrics, position,
          nonfinite_steps, window=None) -> None:
    state = {
        "config": cfg.to_dict(),
        "model": accelerator.unwrap_model(model).state_dict(),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "teacher": objective.bregman.state_dict_for_checkpoint() if objective.bregman is not None else None,
        "skipped": objective.skipped,
        "nonfinite_steps": nonfinite_steps,
        "history": history,
        "metrics": metrics,
        "position": dict(position),
        # the partial logging window, so a resumed run logs the same averaged rows
        "window": {k: list(v) for k, v in (window or {}).items()},
    }
    save_checkpoint(accelerator, out, position["global_step"], state)


def _run_stage(stage_index: int, stage: Stage, model, tokenizer, objective: AdversarialLoss, cfg: RunConfig,
               accelerator, history: list, position: dict, resume_state: dict | None, metrics: dict,
               out: Path, tqdm, show_progress: bool, nonfinite_total: int = 0) -> int:
    """Train one stage; return the run's total count of non-finite (dropped) steps."""
    from transformers import get_linear_schedule_with_warmup

    train_ds = tokenize(stage.train, tokenizer, cfg.max_length)
    sampler = EpochPermutationSampler(len(train_ds), cfg.seed, stage_index)
    # The loader gets its own generator: otherwise each new iterator (every epoch, and the
    # skipping iterator of a resumed epoch) draws a base seed from the global torch RNG,
    # which shifts dropout and perturbation noise: a resumed run would differ.
    dl = DataLoader(train_ds, batch_size=cfg.per_device_train_batch_size, sampler=sampler,
                    collate_fn=_collator(tokenizer), generator=torch.Generator().manual_seed(cfg.seed))
    # A new optimizer and a schedule sized for *this* stage (not the previous one's).
    optimizer = torch.optim.AdamW(model.parameters(), lr=stage.learning_rate, eps=cfg.adam_epsilon,
                                  weight_decay=cfg.weight_decay)
    dl, optimizer = accelerator.prepare(dl, optimizer)
    steps_per_epoch = len(dl)
    total_steps = steps_per_epoch * stage.num_train_epochs
    scheduler = get_linear_schedule_with_warmup(optimizer, math.ceil(cfg.warmup_ratio * total_steps), total_steps)

    start_epoch, skip, nonfinite = 0, 0, 0
    window: dict[str, list[float]] = defaultdict(list)
    if resume_state is not None:
        optimizer.load_state_dict(resume_state["optimizer"])
        scheduler.load_state_dict(resume_state["scheduler"])
        start_epoch, skip = position["epoch"], position["step_in_epoch"]
        nonfinite = position.get("stage_nonfinite", 0)
        window.update({k: list(v) for k, v in resume_state.get("window", {}).items()})
    else:
        position.update(stage=stage_index, epoch=0, step_in_epoch=0, stage_done=False, stage_nonfinite=0)

    model.train()
    bar = tqdm(total=total_steps, initial=start_epoch * steps_per_epoch + skip, disable=not show_progress,
               desc=f"{cfg.algo} · {stage.name}", leave=False)
    lines = ProgressLines(f"{cfg.algo} · {stage.name}", total_steps, start_epoch * steps_per_epoch + skip) \
        if show_progress else None
    params = [p for p in model.parameters() if p.requires_grad]
    for epoch in range(start_epoch, stage.num_train_epochs):
        sampler.use_epoch(epoch)
        batches = accelerator.skip_first_batches(dl, skip) if skip else dl
        for step_in_epoch, batch in enumerate(batches, start=skip):
            with accelerator.autocast():
                loss, parts = objective(model, batch)
            finite = _all_processes(accelerator, bool(torch.isfinite(loss.detach())))
            grad_norm = float("nan")
            if finite:
                accelerator.backward(loss)
                if cfg.max_grad_norm > 0:
                    grad_norm = float(accelerator.clip_grad_norm_(params, cfg.max_grad_norm))
                finite = math.isfinite(grad_norm) if cfg.max_grad_norm > 0 else True
            lr_used = scheduler.get_last_lr()[0]
            if finite:
                optimizer.step()
                if objective.bregman is not None:
                    objective.bregman.update(model)
            else:
                # Never let a NaN reach the weights: drop this batch's update, count it.
                nonfinite += 1
                nonfinite_total += 1
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)

            position.update(epoch=epoch, step_in_epoch=step_in_epoch + 1, stage_nonfinite=nonfinite)
            position["global_step"] += 1
            for k, v in parts.items():
                window[k].append(v)
            step_loss = float(loss.detach())
            window["loss"].append(step_loss)
            window["grad_norm"].append(grad_norm)
            stage_step = epoch * steps_per_epoch + step_in_epoch + 1
            if stage_step % cfg.logging_steps == 0 or stage_step == total_steps:
                row = {"stage": stage.name, "epoch": epoch, "step": stage_step, "global_step": position["global_step"],
                       "learning_rate": lr_used}
                row.update(_window_means(accelerator, window))
                row["skipped_adversarial_steps"] = _sum_over_processes(accelerator, objective.skipped)
                row["nonfinite_steps"] = nonfinite
                history.append(row)
                window.clear()
                bar.set_postfix(loss=f"{row['loss']:.4f}")
            bar.update(1)
            if lines is not None:
                lines.update(stage_step, step_loss)
            if cfg.save_steps and position["global_step"] % cfg.save_steps == 0 and stage_step < total_steps:
                _save(accelerator, out, cfg, model, objective, optimizer, scheduler, history, metrics,
                      position, nonfinite_total, window)
        skip = 0
    bar.close()
    return nonfinite_total


def _mean(values: list[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return sum(finite) / len(finite) if finite else float("nan")


def _make_accelerator(cfg: RunConfig):
    from accelerate import Accelerator, PartialState
    from accelerate.state import AcceleratorState

    # On CPU accelerate ignores fp16 without a word (no autocast, no scaler): the run would
    # be float32 while results.json says fp16.
    if cfg.mixed_precision == "fp16" and PartialState(cpu=cfg.cpu).device.type == "cpu":
        raise ValueError("mixed_precision='fp16' needs a GPU; on CPU use mixed_precision='bf16' or 'no'")
    # accelerate keeps one process-wide state and refuses a second Accelerator with another
    # precision; a notebook that runs bf16 after fp32 needs it reset (as transformers'
    # Trainer does). The process group (PartialState) is kept.
    if AcceleratorState._shared_state and AcceleratorState().mixed_precision != cfg.mixed_precision:
        AcceleratorState._reset_state()
    return Accelerator(cpu=cfg.cpu, mixed_precision=cfg.mixed_precision)


def _all_processes(accelerator, flag: bool) -> bool:
    """`flag` and-ed over processes: all must take the same branch around a DDP backward."""
    if accelerator.num_processes == 1:
        return flag
    t = torch.tensor(float(flag), device=accelerator.device)
    return bool(accelerator.reduce(t, reduction="sum").item() == accelerator.num_processes)


def _sum_over_processes(accelerator, count: int) -> int:
    if accelerator.num_processes == 1:
        return count
    return int(accelerator.reduce(torch.tensor(count, device=accelerator.device), reduction="sum").item())


def _window_means(accelerator, window: dict[str, list[float]]) -> dict[str, float]:
    """Mean of each logged value over the window's steps and over all processes.

    Each process's values are means over its share of the global batch (equal shares), so
    the mean over processes is the value a single process with the whole batch logs.
    Non-finite entries are left out, as in `_mean`.
    """
    if accelerator.num_processes == 1:
        return {k: _mean(v) for k, v in window.items()}
    keys = list(window)  # the same keys in the same order on every process
    finite = [[v for v in window[k] if math.isfinite(v)] for k in keys]
    stats = torch.tensor([[sum(f), len(f)] for f in finite], dtype=torch.float64, device=accelerator.device)
    stats = accelerator.reduce(stats, reduction="sum").tolist()
    return {k: s / n if n else float("nan") for k, (s, n) in zip(keys, stats)}


def _check_max_length(cfg: RunConfig, model, tokenizer) -> None:
    """Texts are truncated to max_length tokens: the model must have that many positions.

    Otherwise a long text fails deep inside the embedding block with a shape error.
    """
    limits = []
    if 0 < getattr(tokenizer, "model_max_length", 0) < 1_000_000:  # unset: a huge sentinel
        limits.append(int(tokenizer.model_max_length))
    config = getattr(unwrap(model), "config", None)
    if getattr(config, "position_biased_input", True) and getattr(config, "max_position_embeddings", None):
        limits.append(int(config.max_position_embeddings))
    if limits and cfg.max_length > min(limits):
        name = repr(cfg.model_name) if cfg.model_name is not None else "the offline default all-MiniLM-L6-v2"
        raise ValueError(f"max_length={cfg.max_length} is more than model {name} can take ({min(limits)} "
                         f"tokens); texts are truncated to max_length, so use max_length <= {min(limits)}")
