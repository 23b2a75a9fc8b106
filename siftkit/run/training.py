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
`siftkit.run.evaluation`.
"""

from __future__ import annotations

import math
import shutil
import sys
import time
import warnings
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Sampler

from siftkit import methods
from siftkit.core import spectral_norm, weight_space
from siftkit.core.layers import layer_lr_groups, layer_stack, reinit_top_layers
from siftkit.core.split import unwrap
from siftkit.data import shift_data
from siftkit.data.folder import resolve_data_dir, split_file_hashes
from siftkit.data.registry import DATASETS
from siftkit.data.stages import Stage
from siftkit.methods.base import Method
from siftkit.run import ood, tracking
from siftkit.run.checkpoint import (
    CHECKPOINT_DIR,
    CheckpointError,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
    set_rng_state,
)
from siftkit.run.config import ALGOS, DEFAULT_MODEL_NAME, RunConfig, probed_stages
from siftkit.run.evaluation import evaluate, tokenize
from siftkit.run.memory import RunOutOfMemoryError, is_out_of_memory, out_of_memory_message
from siftkit.run.models import load_model
from siftkit.run.objective import build_method
from siftkit.run.outdir import OutputDir
from siftkit.run.progress import ProgressLines, open_progress  # ProgressLines: the loop's type, and for callers
from siftkit.run.protocols import build_stages
from siftkit.run.records import OutputDirError, environment_meta, write_results
from siftkit.run.stage_cache import StageCache, adversarial_in_stage, stage_determinants, stage_key
from siftkit.run.threads import ThreadChoice, run_threads


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


def _collator(tokenizer):
    from transformers import DataCollatorWithPadding

    return DataCollatorWithPadding(tokenizer)


def perturbation_summary(history: list[dict[str, Any]], acting_stages: set[str] | None = None) -> dict[str, float]:
    """The run's mean per-token perturbation over its logged steps (0 for plain): the x
    axis on which runs of different rules and sizes are compared; and the mean cosine
    between delta and the ascent gradient (how adversarial the push was).

    `acting_stages`: the stages in which the regularizer ran (``adv_stages``). Only their
    rows count, so that a push acting in one stage is measured at its own size, not
    averaged with the zeros logged where it is off. None or empty: every row (plain)."""
    rows = [row for row in history if row.get("stage") in acting_stages] if acting_stages else history
    out = {}
    for key in ("relative_perturbation", "perturbation_norm", "ascent_cosine"):
        if not any(key in row for row in rows):
            continue  # ascent_cosine: only runs with a regularizer log it
        values = [row[key] for row in rows if isinstance(row.get(key), (int, float)) and math.isfinite(row[key])]
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
        if cfg.algo not in ALGOS:  # a name that is no method gets RunConfig's own message
            RunConfig(algo=cfg.algo)
        # The adversarial knobs were resolved to the old algorithm's defaults: training with
        # them would run a mix and record it under the new name.
        raise ValueError(
            f"algo was changed from {resolved!r} to {cfg.algo!r} after the RunConfig was built, "
            f"so its adversarial settings are still those of {resolved!r}; build the config with "
            f"algo={cfg.algo!r}, or use cfg.replace(algo={cfg.algo!r})"
        )
    return RunConfig.from_dict(cfg.to_dict())


_RESUME_IGNORED = {
    "resume",
    "overwrite",
    "output_dir",
    "save_steps",
    "save_model",
    "extra",
    "data_dir",
    "stage_cache_dir",
    "report_to",
    "num_threads",
}


def train(cfg: RunConfig | dict, *, progress: bool = True, accelerator=None) -> dict[str, Any]:
    """Run `cfg.task` with `cfg.algo`; write results.json/history.csv; return the record.

    While it runs, the run holds a lock on `cfg.output_dir` (`siftkit.run.outdir`): a second run
    into the same folder is refused at once. A run that fails removes the folders it created
    if they are still empty (a folder with checkpoints is kept, to resume from).
    """
    cfg = _as_config(cfg)
    start = time.time()
    folder = OutputDir(cfg.output_dir, overwrite=cfg.overwrite, resume=cfg.resume)
    with folder.prepared() as out:
        if accelerator is None:
            accelerator = _make_accelerator(cfg)
        with (
            folder.locked(accelerator.is_main_process, lambda ok: _all_processes(accelerator, ok)),
            tracking.tracked(cfg, out, accelerator),
            run_threads(cfg.num_threads, on_cpu=accelerator.device.type == "cpu") as threads,
        ):
            try:
                return _train(cfg, out, accelerator, progress, start, threads)
            except (RuntimeError, MemoryError) as exc:  # torch.OutOfMemoryError is a RuntimeError
                if not is_out_of_memory(exc):
                    raise
                raise RunOutOfMemoryError(out_of_memory_message(cfg, exc, str(accelerator.device))) from None


@dataclass
class RunState:
    """One run while it trains: the objects it trains with, and what it has done so far.

    One object, so that the phases below take the run and not a dozen of its parts. Its fields
    are in two groups. The first (settings, folder, model, objective, stages, data) every
    process builds again from the config; only the weights and the teacher's state go into a
    snapshot. The second is the run's progress: a checkpoint and a stage-cache entry hold it
    (`snapshot`), a resumed or stage-sharing run starts from it (`restore`).
    """

    cfg: RunConfig
    out: Path
    accelerator: Any
    model: Any  # as the accelerator prepared it
    tokenizer: Any
    method: Method
    stages: list[Stage]
    data: dict[str, Any]  # `data_fingerprint`: compared on resume, recorded in results.json
    show_progress: bool = False  # the bar and the progress lines (the main process only)
    threads: ThreadChoice | None = None  # torch's intra-op threads for the run, and why (siftkit.run.threads)
    theta_0: dict[str, Any] | None = None  # WiSE-FT's starting weights (`siftkit.core.weight_space`), as L2-SP's anchor

    history: list[dict[str, Any]] = field(default_factory=list)  # one row per logging window of steps
    val_history: list[dict[str, Any]] = field(default_factory=list)  # one row per validated epoch
    metrics: dict[str, float] = field(default_factory=dict)
    position: dict[str, Any] = field(
        default_factory=lambda: {"stage": 0, "epoch": 0, "step_in_epoch": 0, "global_step": 0, "stage_done": False}
    )
    nonfinite_steps: int = 0
    stage_info: list[dict[str, Any]] = field(default_factory=list)  # per stage: epochs run, best epoch, cache
    early: dict[str, Any] | None = None  # the running stage's early-stopping state

    def snapshot(self, optimizer=None, scheduler=None, window=None) -> dict[str, Any]:
        return {
            "config": self.cfg.to_dict(),
            "model": self.accelerator.unwrap_model(self.model).state_dict(),
            "optimizer": optimizer.state_dict() if optimizer is not None else None,
            "scheduler": scheduler.state_dict() if scheduler is not None else None,
            **self.method.state(),  # SMART's teacher, the skipped count
            "nonfinite_steps": self.nonfinite_steps,
            "history": self.history,
            "val_history": self.val_history,
            "metrics": self.metrics,
            "position": dict(self.position),
            "stage_info": self.stage_info,
            "early_stopping": self.early,
            # the partial logging window, so a resumed run logs the same averaged rows
            "window": {k: list(v) for k, v in (window or {}).items()},
        }

    def restore(self, state: dict[str, Any]) -> None:
        self.accelerator.unwrap_model(self.model).load_state_dict(state["model"])
        self.method.load_state(state)
        self.history, self.metrics = list(state["history"]), dict(state["metrics"])
        self.val_history = list(state.get("val_history", []))
        self.position = dict(state["position"])
        # This run's data (its folder may have moved since): a checkpoint's was checked against it,
        # a cache entry's key matched its rows.
        self.position["data"] = self.data
        self.nonfinite_steps = state.get("nonfinite_steps", 0)
        self.stage_info = [dict(s) for s in state.get("stage_info", [])]
        self.early = state.get("early_stopping")

    def save(self, optimizer=None, scheduler=None, window=None) -> None:
        save_checkpoint(
            self.accelerator, self.out, self.position["global_step"], self.snapshot(optimizer, scheduler, window)
        )


def _train(
    cfg: RunConfig, out: Path, accelerator, progress: bool, start: float, threads: ThreadChoice | None = None
) -> dict[str, Any]:
    existing = _check_before_loading(out, cfg)
    run = _prepare(cfg, out, accelerator, progress)
    run.threads = threads
    ckpt_state, resumed_from = _resume_or_start_over(run, existing)
    keys = _run_stages(run, ckpt_state)
    wise = _wise_ft(run) if cfg.wise_ft else None
    record = _record(run, keys, resumed_from, start, wise)
    if accelerator.is_main_process:
        _write_record(run, record)
    accelerator.wait_for_everyone()
    return record


def _check_before_loading(out: Path, cfg: RunConfig) -> list[Path]:
    """What can be refused before the data and the model are loaded; returns the checkpoints in `out`."""
    _check_model_folder(out, cfg)
    return OutputDir(out, overwrite=cfg.overwrite, resume=cfg.resume).earlier_checkpoints()


def _prepare(cfg: RunConfig, out: Path, accelerator, progress: bool) -> RunState:
    """Data, model and objective, in the order that makes a run repeat: the seed first."""
    from accelerate.utils import set_seed

    main = accelerator.is_main_process
    if not main:
        # Only the main process shows progress, datasets' `map` bars included.
        import datasets

        datasets.disable_progress_bars()

    set_seed(cfg.seed)  # before the data split and the classifier head's initialisation
    stages = build_stages(cfg)
    model, tokenizer = load_model(cfg.model_name, num_labels=shift_data.num_labels(cfg))
    data = data_fingerprint(cfg, stages)
    _check_max_length(cfg, model, tokenizer)
    _check_layer_settings(cfg, model, accelerator)
    if cfg.reinit_layers:
        # Before anything takes the starting weights (L2-SP's and WiSE-FT's theta_0): fine-tuning
        # starts from the re-initialised layers. Its own seeded generator: later draws are unchanged.
        reinit_top_layers(model, cfg.reinit_layers, seed=cfg.seed)
    if cfg.freeze_encoder:
        # Before `prepare`: DDP registers the parameters that need gradients when it wraps.
        unwrap(model).base_model.requires_grad_(False)
    # Before `prepare` too: what a method changes in the model (R4F's normalized head) must be
    # in place when DDP wraps it.
    methods.method_class(cfg.algo).prepare_model(model, cfg)
    model = accelerator.prepare(model)
    theta_0 = weight_space.snapshot(model, weight_space.scope_keys(model, cfg.wise_ft_scope)) if cfg.wise_ft else None
    method = build_method(model, cfg)
    run = RunState(
        cfg, out, accelerator, model, tokenizer, method, stages, data, show_progress=progress and main, theta_0=theta_0
    )
    # "data" (the files' sha256 and the stage sizes) rides in every checkpoint, so a resume
    # can refuse to continue on other data.
    run.position["data"] = data
    return run


def _resume_or_start_over(run: RunState, existing: list[Path]) -> tuple[dict | None, str | None]:
    """With resume=True, continue from the latest checkpoint: returns its state and name. With
    overwrite=True, remove the checkpoints of the run this one replaces."""
    cfg, accelerator = run.cfg, run.accelerator
    ckpt = latest_checkpoint(run.out) if cfg.resume else None
    if ckpt is not None:
        ckpt_state, rng = load_checkpoint(ckpt, accelerator.process_index)
        _check_resume_config(ckpt_state["config"], cfg, ckpt)
        _check_resume_data(ckpt_state["position"].get("data"), run.data, ckpt)
        run.restore(ckpt_state)
        set_rng_state(rng)
        return ckpt_state, ckpt.name
    if existing and cfg.overwrite and accelerator.is_main_process:
        shutil.rmtree(existing[0].parent, ignore_errors=True)
    return None, None


def _run_stages(run: RunState, ckpt_state: dict | None) -> list[str | None]:
    """Train, or take from the stage cache, every stage the run has not finished yet (a resumed
    run continues inside the checkpoint's stage). Returns each stage's cache key (None: no cache)."""
    cfg, stages = run.cfg, run.stages
    cache = StageCache(cfg.stage_cache_dir, run.accelerator) if cfg.stage_cache_dir else None
    keys: list[str | None] = []
    previous = None
    for stage_index, stage in enumerate(stages):
        determinants = (
            stage_determinants(cfg, stage, stage_index, len(stages), previous, run.accelerator)
            if cache is not None
            else None
        )
        previous = stage_key(determinants) if determinants is not None else None
        keys.append(previous)
        pos = run.position
        if stage_index < pos["stage"] or (stage_index == pos["stage"] and pos["stage_done"]):
            if cache is not None and stage_index == pos["stage"] and stage_index < len(stages) - 1:
                # Resumed at this stage's end (a run killed while storing it): store it now.
                with cache.claim(previous, f"stage {stage_index + 1} ({stage.name})"):
                    if cache.entry(previous) is None:
                        cache.store(previous, run.snapshot(), determinants, str(run.out))
            continue
        resume_here = ckpt_state is not None and stage_index == pos["stage"] and not pos["stage_done"]
        # The last stage ends the run: caching it would only duplicate results.json.
        if cache is None or resume_here or stage_index == len(stages) - 1:
            _stage(stage_index, run, ckpt_state if resume_here else None)
            if cache is not None and resume_here and stage_index < len(stages) - 1:
                # A resumed stage ends exactly as an uninterrupted one: later runs may share it.
                with cache.claim(previous, f"stage {stage_index + 1} ({stage.name})"):
                    if cache.entry(previous) is None:
                        cache.store(previous, run.snapshot(), determinants, str(run.out))
            continue
        with cache.claim(previous, f"stage {stage_index + 1} ({stage.name})"):
            cached = cache.load(previous, determinants)  # None: no entry, or a damaged one set aside
            if cached is not None:
                _stage_from_cache(stage_index, run, cached)
            else:
                _stage(stage_index, run, None)
                cache.store(previous, run.snapshot(), determinants, str(run.out))
    return keys


def _stage_from_cache(stage_index: int, run: RunState, cached: tuple[dict, dict]) -> None:
    """Continue as the run that stored stage `stage_index` (`cached`: its state and RNG) did after it."""
    state, rng = cached
    run.restore(state)
    set_rng_state(rng)
    run.stage_info[stage_index]["from_cache"] = True
    tracking.log_cached(run.accelerator, run.history, run.val_history, run.metrics, run.position["global_step"])


def _record(
    run: RunState, keys: list[str | None], resumed_from: str | None, start: float, wise: dict[str, Any] | None = None
) -> dict[str, Any]:
    """results.json's content: the run's settings, metrics, history and stages, and `meta`."""
    cfg, accelerator = run.cfg, run.accelerator
    n = len(run.stages)
    acting = {s.name for i, s in enumerate(run.stages) if adversarial_in_stage(cfg, i, n)}
    summary = perturbation_summary(run.history, acting)
    run.metrics.update(summary)
    tracking.log_metrics(accelerator, summary, run.position["global_step"])
    described = [s.describe() for s in run.stages]
    seconds = {}
    for d, info, key in zip(described, run.stage_info, keys):
        d.update(info)
        # A time is no property of the stage's result: it goes with the machine's facts in meta.
        seconds[d["name"]] = d.pop("train_seconds", None)
        if key is not None:
            d["cache_key"] = key
    record = {
        "config": cfg.to_dict(),
        "metrics": run.metrics,
        "history": run.history,
        "val_history": run.val_history,
        "stages": described,
        "meta": {
            **environment_meta(),
            "torch_threads_reason": run.threads.reason if run.threads is not None else None,
            "device": str(accelerator.device),
            "device_name": torch.cuda.get_device_name() if accelerator.device.type == "cuda" else "cpu",
            "num_processes": accelerator.num_processes,
            "mixed_precision": accelerator.mixed_precision,
            "wall_time_s": round(time.time() - start, 3),
            # each stage's training time, whoever trained it (this run, or the run a cached stage came from)
            "stage_train_seconds": seconds,
            "resumed_from": resumed_from,
            "stages_from_cache": [s.name for s, info in zip(run.stages, run.stage_info) if info.get("from_cache")],
            "skipped_adversarial_steps": _sum_over_processes(accelerator, run.method.skipped),
            "nonfinite_steps": run.nonfinite_steps,
            "data_files": run.data["files"],
            "data_rows": run.data["rows"],
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        },
    }
    if wise is not None:
        record["wise_ft"] = wise
    if cfg.task == "shift":
        record["meta"]["shift"] = shift_data.spec_meta(cfg)
    return record


def _wise_ft(run: RunState) -> dict[str, Any]:
    """WiSE-FT after the last stage (`siftkit.run.ood.wise_ft`): the last stage's metrics become
    those at the alpha chosen on its validation set, the fine-tuned model's (alpha = 1) go to the
    record's ``wise_ft`` block, and the model keeps the chosen alpha's weights (`save_model`)."""
    stage = run.stages[-1]
    finetuned = {k: run.metrics[k] for k in _stage_metric_keys(run.metrics, stage)}
    report = (
        (lambda line: print(f"siftkit: {line}", file=sys.__stderr__, flush=True))
        if run.show_progress and sys.__stderr__ is not None
        else None
    )
    chosen, block = ood.wise_ft(
        run.model, stage, run.theta_0, run.tokenizer, run.cfg, run.accelerator, finetuned, report
    )
    run.metrics.update(chosen)
    tracking.log_metrics(run.accelerator, chosen, run.position["global_step"])
    return block


def _stage_metric_keys(metrics: dict[str, float], stage: Stage) -> list[str]:
    """The metrics the evaluation after `stage` wrote (named after its evaluation sets)."""
    return [k for k in metrics if any(k.startswith(f"{name}_") for name in stage.evals)]


def _write_record(run: RunState, record: dict[str, Any]) -> None:
    """On the main process: results.json and history.csv, model/ when asked, and no checkpoints."""
    out = run.out
    staged = _stage_model(out, run.accelerator.unwrap_model(run.model), run.tokenizer) if run.cfg.save_model else None
    try:
        write_results(out, record, overwrite=run.cfg.overwrite)
    except BaseException:
        if staged is not None:
            shutil.rmtree(staged, ignore_errors=True)
        raise
    # The run's model/ is this run's, or none: an overwritten run's weights must not stay
    # beside the new record (load_run_models would measure them as the new run's).
    _replace_model(out, staged)
    # Checkpoints exist to resume an unfinished run; a finished one keeps only its
    # records (and `model/` when asked), not gigabytes of optimizer state.
    shutil.rmtree(out / CHECKPOINT_DIR, ignore_errors=True)


def _check_resume_config(saved: dict, cfg: RunConfig, ckpt: Path) -> None:
    now = cfg.to_dict()
    # A checkpoint written before a field existed holds that field's default.
    defaults = RunConfig.__dataclass_fields__
    diff = sorted(
        k for k in now if k not in _RESUME_IGNORED and saved.get(k, getattr(defaults[k], "default", None)) != now[k]
    )
    if diff:
        raise CheckpointError(
            f"checkpoint {ckpt} was written by a run with different settings ({', '.join(diff)}); "
            f"resume with the same config or choose another output_dir"
        )


def _stage(stage_index: int, run: RunState, resume_state: dict | None) -> None:
    """Train stage `stage_index`, evaluate it, mark it done and checkpoint the boundary."""
    stage = run.stages[stage_index]
    adversarial = adversarial_in_stage(run.cfg, stage_index, len(run.stages))
    run.method.active = adversarial
    if resume_state is None:
        _start_stage(stage_index, adversarial, run)
    if stage_index in probed_stages(run.cfg, len(run.stages)):
        resume_state = _lp_ft_probe(stage_index, stage, run, resume_state, adversarial)
    _run_stage(stage_index, stage, run, resume_state)
    evaluated = evaluate(run.model, stage.evals, run.tokenizer, run.cfg, run.accelerator)
    run.metrics.update(evaluated)
    tracking.log_metrics(run.accelerator, evaluated, run.position["global_step"])
    run.position.update(stage=stage_index, stage_done=True, epoch=0, step_in_epoch=0)
    run.early = None
    run.save()


def _lp_ft_probe(
    stage_index: int, stage: Stage, run: RunState, resume_state: dict | None, adversarial: bool
) -> dict | None:
    """LP-FT's head-only phase of the stage (`siftkit.run.ood`), then the full phase's start: the
    method active again and started anew from the probed head. Returns what the full phase resumes
    from: None, or `resume_state` where the checkpoint is already inside the full phase."""
    position = run.position
    if resume_state is not None and position.get("phase") == "full":
        return resume_state
    position["phase"] = "probe"
    run.method.active = False  # the probe is plain fine-tuning of the head: the method's batch is plain's
    with ood.head_only(run.model):
        _run_stage(stage_index, ood.probe_stage(stage, run.cfg), run, resume_state, phase="probe")
    position.update(phase="full", epoch=0, step_in_epoch=0, stage_nonfinite=0)
    run.early = None
    run.method.active = adversarial
    run.method.start_stage(run.model, stage_index=stage_index, fresh_head=True, active_before=False)
    return None


def _start_stage(stage_index: int, adversarial: bool, run: RunState) -> None:
    """What happens at a stage's start, before its optimizer exists: the fresh head of
    ``reinit_head``, and the method's own (SMART's teacher restarts where its term starts anew)."""
    model = run.model
    fresh_head = run.cfg.reinit_head and stage_index > 0
    if fresh_head:
        reinit_head(model)
    active_before = bool(stage_index > 0 and run.stage_info and run.stage_info[-1].get("adversarial"))
    run.method.start_stage(model, stage_index=stage_index, fresh_head=fresh_head, active_before=active_before)
    run.position.update(stage=stage_index, epoch=0, step_in_epoch=0, stage_done=False, stage_nonfinite=0)
    del run.stage_info[stage_index:]
    run.stage_info.append({"adversarial": adversarial, "from_cache": False})
    run.early = None


def fused_adamw(device: torch.device) -> dict[str, bool]:
    """AdamW's fused kernel where torch has one: the same update in one pass over the weights
    instead of a loop over every tensor. On MiniLM on CPU it cuts the optimizer step from about
    90 to 16 ms (a SiFT step is about 500 ms; `benchmarks/README.md`). Its float rounding differs
    from the loop's by about 1e-7 per weight, so runs of this code repeat exactly among
    themselves, not with runs made by the loop implementation."""
    return {"fused": True} if device.type in ("cpu", "cuda") else {}


@torch.no_grad()
def reinit_head(model) -> None:
    """Re-initialise the classification head (every part of the model outside its pre-trained
    ``base_model``) with the model's own initialiser, from the global torch RNG. A parametrized
    layer (R4F's spectral norm) gets new raw weights: the initialiser writes ``module.weight``,
    which would otherwise be a computed tensor, and the write would be lost."""
    bare = unwrap(model)
    for module in bare.children():
        if module is not bare.base_model:
            with spectral_norm.raw_weights(module):
                module.apply(bare._init_weights)


# The datasets each protocol reads (a shift spec names its own: siftkit.data.shift_data.file_hashes).
TASK_DATASETS = {"cola": ("cola",), "twitter_to_uci": ("twitter_hate", "uci_sentiment")}
_SAID_DIFFERENT: set[tuple[str, str]] = set()


class DataWarning(UserWarning):
    """A data file differs from the published one (allowed; said once per file and content)."""


def data_fingerprint(cfg: RunConfig, stages) -> dict[str, Any]:
    """sha256 of every data file the run reads (relative paths), the rows of each dataset
    split and the stages' sizes: recorded in checkpoints and results.json, compared on resume."""
    import siftkit.data.loaders as data_module

    files: dict[str, str] = {}
    rows: dict[str, int] = {}
    if cfg.task == "shift":
        # A spec's own files by the paths it gives; the rows are those of its stages' sets.
        files.update(shift_data.file_hashes(cfg))
        rows.update({f"{s.name}/train": len(s.train) for s in stages})
        rows.update({f"{s.name}/{name}": len(ds) for s in stages for name, ds in s.evals.items()})
    root = resolve_data_dir(cfg.data_dir)  # once: the hashes below read the folder the record names
    for name in TASK_DATASETS.get(cfg.task, ()):
        files.update(split_file_hashes(name, root))
        rows.update({f"{name}/{split}": len(ds) for split, ds in data_module.load(name, cfg.data_dir).items()})
    _say_unpublished(files, root)
    return {"files": files, "rows": rows, "stages": [s.describe() for s in stages], "root": str(root)}


def _say_unpublished(files: dict[str, str], root: Path) -> None:
    """A user's data folder may hold edited files; say so once, as results.json records them."""
    published = {f.path: f for info in DATASETS.values() for f in info.files}
    for rel, sha in files.items():
        spec = published.get(rel)
        if spec is None or spec.sha256 == sha or (rel, sha) in _SAID_DIFFERENT:
            continue
        _SAID_DIFFERENT.add((rel, sha))
        size = (root / rel).stat().st_size
        warnings.warn(
            f"{root / rel} differs from the published file ({size} bytes, sha256 {sha[:12]}...; published: "
            f"{spec.size} bytes, {spec.sha256[:12]}...); the run uses it as it is, and results.json "
            f"records its sha256 (meta.data_files) and the rows read (meta.data_rows)",
            DataWarning,
            stacklevel=3,
        )


def _check_resume_data(saved: dict | None, now: dict, ckpt: Path) -> None:
    """A resumed run must train on the data it started with (checkpoints from before this
    record have none to compare)."""
    if not saved:
        return
    for rel in sorted(set(saved["files"]) | set(now["files"])):
        if saved["files"].get(rel) != now["files"].get(rel):
            raise CheckpointError(
                f"checkpoint {ckpt} was written by a run on other data: {rel} now has sha256 "
                f"{str(now['files'].get(rel))[:12]}... in {now['root']}, the run started with "
                f"{str(saved['files'].get(rel))[:12]}... in {saved.get('root')}; resume with the data the run started with, or start over with "
                f"overwrite=True"
            )
    if saved.get("stages") != now["stages"]:
        raise CheckpointError(
            f"checkpoint {ckpt} was written by a run whose stages had other sizes "
            f"({saved.get('stages')} then, {now['stages']} now); resume with the same data and "
            f"settings, or start over with overwrite=True"
        )


class NonFiniteStepsWarning(RuntimeWarning):
    """Some steps of a stage were non-finite and dropped (fewer than max_nonfinite_fraction)."""


class TrainingDivergedError(ValueError):
    """Too many steps of a stage were non-finite (dropped): the run's metrics would mislead."""


def _check_nonfinite_share(cfg: RunConfig, stage: Stage, nonfinite: int, total_steps: int) -> None:
    """Say how many steps were dropped; fail the run above `cfg.max_nonfinite_fraction`."""
    if not nonfinite:
        return
    share = nonfinite / max(total_steps, 1)
    what = (
        f"stage {stage.name!r}: {nonfinite} of {total_steps} steps ({100 * share:.0f}%) had a non-finite loss or "
        f"gradient and were dropped"
    )
    if share > cfg.max_nonfinite_fraction:
        raise TrainingDivergedError(
            f"{what}, more than max_nonfinite_fraction={cfg.max_nonfinite_fraction:g}: the run diverged and its "
            f"metrics would not measure the training asked for; lower the learning rate (learning_rate="
            f"{stage.learning_rate:g} in this stage) or the regularizer's sizes, or raise max_nonfinite_fraction"
        )
    warnings.warn(
        f"{what} (max_nonfinite_fraction={cfg.max_nonfinite_fraction:g} allows up to "
        f"{100 * cfg.max_nonfinite_fraction:.0f}%); results.json counts them in meta.nonfinite_steps",
        NonFiniteStepsWarning,
        stacklevel=3,
    )


MODEL_DIR = "model"


def _check_model_folder(out: Path, cfg: RunConfig) -> None:
    """Before training: save_model must be able to write output_dir/model (transformers only
    logs an error for a file there, and the run would end with no weights and no checkpoints)."""
    target = out / MODEL_DIR
    if cfg.save_model and target.exists() and not target.is_dir():
        raise OutputDirError(
            f"{str(target)!r} is a file, but save_model=True writes the fine-tuned model to a "
            f"folder of that name; move the file away, or choose another output_dir"
        )


def _stage_model(out: Path, model, tokenizer) -> Path:
    """Write model and tokenizer to a temporary folder beside model/ and check them."""
    tmp = out / f".{MODEL_DIR}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    if spectral_norm.has_parametrizations(model):
        # R4F's head holds its raw weight and power-iteration vectors: the folder gets the plain
        # weight it computes with, so that it loads into the ordinary model class.
        model.save_pretrained(tmp, state_dict=spectral_norm.baked_state_dict(model.state_dict()))
    else:
        model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    if not (tmp / "config.json").is_file():
        shutil.rmtree(tmp, ignore_errors=True)
        raise OutputDirError(
            f"the fine-tuned model could not be saved to {str(tmp)!r}; the checkpoints in "
            f"{str(out / CHECKPOINT_DIR)!r} are kept: resume=True finishes the run again"
        )
    return tmp


def _replace_model(out: Path, staged: Path | None) -> None:
    target = out / MODEL_DIR
    if target.is_dir():
        shutil.rmtree(target)
    if staged is not None:
        staged.rename(target)


@dataclass
class _StageLoop:
    """One stage's training loop: its data order, loader, optimizer and schedule, and what it
    has counted so far (the partial logging window, the dropped steps)."""

    stage: Stage
    sampler: EpochPermutationSampler
    loader: Any  # as the accelerator prepared it
    params: list[torch.nn.Parameter]  # the ones that train (all but a frozen encoder)
    optimizer: Any
    scheduler: Any
    steps_per_epoch: int
    updates_per_batch: int = 1  # the method's (FreeAT: K replays, each an update)
    phase: str = "full"  # "probe": LP-FT's head-only phase of the stage
    window: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    nonfinite: int = 0  # this stage's steps dropped for a non-finite loss or gradient
    bar: Any = None
    lines: ProgressLines | None = None

    @property
    def total_updates(self) -> int:
        """The stage's optimizer updates: plain's, whatever the method (the schedule's length)."""
        return self.steps_per_epoch * self.stage.num_train_epochs

    @property
    def total_steps(self) -> int:
        """The stage's batches: fewer where a method makes several updates per batch (FreeAT's
        epochs divided by K), so that it makes as many updates as plain does."""
        return math.ceil(self.total_updates / self.updates_per_batch)

    @property
    def epochs(self) -> int:
        return math.ceil(self.total_steps / self.steps_per_epoch)


def _run_stage(stage_index: int, stage: Stage, run: RunState, resume_state: dict | None, phase: str = "full") -> None:
    """Train one stage's epochs (validating after each where the stage has a validation set);
    `phase` "probe" is LP-FT's head-only phase of the stage (`_lp_ft_probe`)."""
    loop = _stage_loop(stage_index, stage, run, phase)
    start_epoch, skip = _resume_loop(loop, run, resume_state) if resume_state is not None else (0, 0)
    began = time.perf_counter()
    run.model.train()
    _open_progress(loop, run, start_epoch * loop.steps_per_epoch + skip)
    epochs_run = start_epoch
    for epoch in range(start_epoch, loop.epochs):
        _train_epoch(run, loop, epoch, skip)
        skip = 0
        epochs_run = epoch + 1
        # A one-epoch stage's validation is its stage-end evaluation: no second row for it.
        if stage.val is not None and loop.epochs > 1 and _validate_epoch(stage, epoch, run):
            break  # early stopping: no better validation metric for `early_stopping_patience` epochs
    loop.bar.close()
    _check_nonfinite_share(
        run.cfg,
        stage,
        loop.nonfinite,
        min(epochs_run * loop.steps_per_epoch, loop.total_steps) * loop.updates_per_batch,
    )
    # What the stage's training cost (both of LP-FT's phases), carried with it into checkpoints and
    # cache entries, so a run that takes the stage from the cache still reports what training it
    # took (a resumed stage: the time after the resume only).
    info = run.stage_info[stage_index]
    info["train_seconds"] = round(info.get("train_seconds", 0.0) + time.perf_counter() - began, 3)
    _finish_epochs(stage_index, run, epochs_run, "probe_" if phase == "probe" else "")


def _stage_loop(stage_index: int, stage: Stage, run: RunState, phase: str = "full") -> _StageLoop:
    from transformers import get_linear_schedule_with_warmup

    cfg, accelerator = run.cfg, run.accelerator
    train_ds = tokenize(stage.train, run.tokenizer, cfg.max_length)
    sampler = EpochPermutationSampler(
        len(train_ds), cfg.seed, stage_index + (ood.PROBE_ORDER if phase == "probe" else 0)
    )
    # The loader gets its own generator: otherwise each new iterator (every epoch, and the
    # skipping iterator of a resumed epoch) draws a base seed from the global torch RNG,
    # which shifts dropout and perturbation noise: a resumed run would differ.
    dl = DataLoader(
        train_ds,
        batch_size=cfg.per_device_train_batch_size,
        sampler=sampler,
        collate_fn=_collator(run.tokenizer),
        generator=torch.Generator().manual_seed(cfg.seed),
    )
    params = [p for p in run.model.parameters() if p.requires_grad]  # all but a frozen encoder (or LP-FT's probe)
    # Layer-wise decay: one group per layer at lr * gamma^(L - l); without it, the one group as always.
    groups = (
        layer_lr_groups(run.model, params, stage.learning_rate, cfg.layer_lr_decay)
        if cfg.layer_lr_decay != 1.0 and phase == "full"
        else params
    )
    # A new optimizer and a schedule sized for *this* stage (not the previous one's).
    optimizer = torch.optim.AdamW(
        groups,
        lr=stage.learning_rate,
        eps=cfg.adam_epsilon,
        weight_decay=cfg.weight_decay,
        **fused_adamw(accelerator.device),
    )
    dl, optimizer = accelerator.prepare(dl, optimizer)
    steps_per_epoch = len(dl)
    updates = steps_per_epoch * stage.num_train_epochs
    scheduler = get_linear_schedule_with_warmup(optimizer, math.ceil(cfg.warmup_ratio * updates), updates)
    return _StageLoop(
        stage,
        sampler,
        dl,
        params,
        optimizer,
        scheduler,
        steps_per_epoch,
        updates_per_batch=run.method.updates_per_batch,
        phase=phase,
    )


def _resume_loop(loop: _StageLoop, run: RunState, resume_state: dict) -> tuple[int, int]:
    """Pick the stage up where the checkpoint left it; returns (epoch, steps of it already done)."""
    position = run.position
    loop.optimizer.load_state_dict(resume_state["optimizer"])
    loop.scheduler.load_state_dict(resume_state["scheduler"])
    loop.nonfinite = position.get("stage_nonfinite", 0)
    loop.window.update({k: list(v) for k, v in resume_state.get("window", {}).items()})
    return position["epoch"], position["step_in_epoch"]


def _open_progress(loop: _StageLoop, run: RunState, done: int) -> None:
    # siftkit.run.progress: one updating line in a notebook, tqdm's bar in a terminal, and the terminal's lines
    threads = run.threads
    loop.bar, loop.lines = open_progress(
        f"{run.cfg.algo} · {loop.stage.name}",
        loop.total_steps,
        done,
        show=run.show_progress,
        note=threads.short if threads else None,
        first_note=threads.reason if threads else None,
    )


def _train_epoch(run: RunState, loop: _StageLoop, epoch: int, skip: int) -> None:
    """Epoch `epoch`'s steps after its first `skip` (a resumed epoch's), logging and checkpointing."""
    cfg, position, window = run.cfg, run.position, loop.window
    loop.sampler.use_epoch(epoch)
    if loop.phase == "probe":
        ood.features_as_evaluated(run.model)  # again each epoch: a validation in between sets train mode
    batches = run.accelerator.skip_first_batches(loop.loader, skip) if skip else loop.loader
    for step_in_epoch, batch in enumerate(batches, start=skip):
        if epoch * loop.steps_per_epoch + step_in_epoch >= loop.total_steps:
            break  # a method with several updates per batch has made the stage's updates
        loss, parts, grad_norm, lr_used = _step(run, loop, batch)
        position.update(epoch=epoch, step_in_epoch=step_in_epoch + 1, stage_nonfinite=loop.nonfinite)
        position["global_step"] += 1
        for k, v in parts.items():
            window[k].append(v)
        step_loss = float(loss.detach())
        window["loss"].append(step_loss)
        window["grad_norm"].append(grad_norm)
        stage_step = epoch * loop.steps_per_epoch + step_in_epoch + 1
        if stage_step % cfg.logging_steps == 0 or stage_step == loop.total_steps:
            _log_window(run, loop, epoch, stage_step, lr_used)
        loop.bar.update(1)
        if loop.lines is not None:
            loop.lines.update(stage_step, step_loss)
        if cfg.save_steps and position["global_step"] % cfg.save_steps == 0 and stage_step < loop.total_steps:
            run.save(loop.optimizer, loop.scheduler, window)


class _LoopBatch:
    """The native loop's `BatchContext` for one batch: what a method may do with the optimizer."""

    def __init__(self, run: RunState, loop: _StageLoop):
        self.run, self.loop = run, loop
        self.dropped = False  # a loss since the last update was not finite: that update is dropped
        self.grad_norm = float("nan")  # of the batch's first update (the one logged)
        self.lr_used: float | None = None
        self.updates = 0

    def autocast(self):
        return self.run.accelerator.autocast()

    def backward(self, loss: torch.Tensor) -> bool:
        accelerator = self.run.accelerator
        finite = _all_processes(accelerator, bool(torch.isfinite(loss.detach())))
        if finite:
            accelerator.backward(loss)
        else:
            self.dropped = True
        return finite

    def update(self) -> bool:
        run, loop, cfg = self.run, self.loop, self.run.cfg
        finite, grad_norm = not self.dropped, float("nan")
        if finite and cfg.max_grad_norm > 0:
            grad_norm = float(run.accelerator.clip_grad_norm_(loop.params, cfg.max_grad_norm))
            finite = math.isfinite(grad_norm)
        lr_used = loop.scheduler.get_last_lr()[0]
        if finite:
            loop.optimizer.step()
        else:
            # Never let a NaN reach the weights: drop this update, count it.
            loop.nonfinite += 1
            run.nonfinite_steps += 1
        loop.scheduler.step()
        loop.optimizer.zero_grad(set_to_none=True)
        if self.updates == 0:
            self.grad_norm, self.lr_used = grad_norm, lr_used
        self.updates += 1
        self.dropped = False
        return finite


def _step(run: RunState, loop: _StageLoop, batch) -> tuple[torch.Tensor, dict[str, float], float, float]:
    """One batch through the run's method (one optimizer update, or the method's own number of
    them); returns (loss, its parts, gradient norm, learning rate used) of its first update."""
    ctx = _LoopBatch(run, loop)
    loss, parts = run.method.train_batch(run.model, batch, ctx)
    if ctx.updates != run.method.updates_per_batch:
        raise RuntimeError(
            f"method {run.method.name!r} made {ctx.updates} optimizer update(s) on a batch; it "
            f"declares {run.method.updates_per_batch}"
        )
    return loss, parts, ctx.grad_norm, ctx.lr_used


def _log_window(run: RunState, loop: _StageLoop, epoch: int, stage_step: int, lr_used: float) -> None:
    """A history row: the means over the logging window's steps, which then starts anew."""
    row = {
        "stage": loop.stage.name,
        "epoch": epoch,
        "step": stage_step,
        "global_step": run.position["global_step"],
        "learning_rate": lr_used,
    }
    row.update(_window_means(run.accelerator, loop.window))
    row["skipped_adversarial_steps"] = _sum_over_processes(run.accelerator, run.method.skipped)
    row["nonfinite_steps"] = loop.nonfinite
    run.history.append(row)
    tracking.log_row(run.accelerator, row)
    loop.window.clear()
    loop.bar.set_postfix(loss=f"{row['loss']:.4f}")


def _finish_epochs(stage_index: int, run: RunState, epochs_run: int, prefix: str = "") -> None:
    """Note the epochs the stage (or its LP-FT probe, `prefix` "probe_") ran and its best one, with
    early stopping; go back to the best epoch's weights where early stopping ran past it."""
    info = run.stage_info[stage_index]
    info[f"{prefix}epochs_run"] = epochs_run
    if run.early is not None:
        info[f"{prefix}best_epoch"] = run.early["best_epoch"]
        if run.early["best_epoch"] != epochs_run - 1:
            # Early stopping restores the best epoch's weights (and SMART's teacher of that epoch).
            run.accelerator.unwrap_model(run.model).load_state_dict(run.early["model"])
            run.method.load_state({**run.method.state(), "teacher": run.early.get("teacher")})


def _validate_epoch(stage: Stage, epoch: int, run: RunState) -> bool:
    """Evaluate the stage's validation set after `epoch` (a `val_history` row); with early stopping,
    keep the best epoch's weights and return True when the stage should stop."""
    cfg, accelerator = run.cfg, run.accelerator
    metrics = evaluate(
        run.model, {stage.val: stage.evals[stage.val]}, run.tokenizer, cfg, accelerator, smoothness=False
    )
    row = {"stage": stage.name, "epoch": epoch, "global_step": run.position["global_step"]}
    row.update({k: metrics[k] for k in (f"{stage.val}_accuracy", f"{stage.val}_mcc") if k in metrics})
    run.val_history.append(row)
    tracking.log_metrics(accelerator, {k: v for k, v in row.items() if k.startswith(stage.val)}, row["global_step"])
    if cfg.early_stopping_patience is None:
        return False
    return _early_stopping(run, epoch, metrics[stage.val_key])


def _early_stopping(run: RunState, epoch: int, value: float) -> bool:
    """Keep the weights (and SMART's teacher) of the best epoch so far; True once
    `early_stopping_patience` epochs in a row brought no better `value`."""
    early = run.early
    if early is None or (math.isfinite(value) and not value <= early["best"]):
        bare = run.accelerator.unwrap_model(run.model)
        teacher = run.method.state().get("teacher")
        run.early = {
            "best": value if math.isfinite(value) else -math.inf,
            "best_epoch": epoch,
            "bad_epochs": 0,
            "model": {k: v.detach().clone() for k, v in bare.state_dict().items()},
            "teacher": {k: v.clone() for k, v in teacher.items()} if teacher is not None else None,
        }
        return False
    early["bad_epochs"] += 1
    return early["bad_epochs"] >= run.cfg.early_stopping_patience


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
    return Accelerator(cpu=cfg.cpu, mixed_precision=cfg.mixed_precision, **tracking.accelerator_kwargs(cfg))


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


def _check_layer_settings(cfg: RunConfig, model, accelerator) -> None:
    """What the new settings need of the model and the launch, before anything trains: layers to
    re-initialise or decay by (`siftkit.core.layers`), and one process for LP-FT's probe."""
    if cfg.reinit_layers or cfg.layer_lr_decay != 1.0:
        stack = layer_stack(model, field="reinit_layers" if cfg.reinit_layers else "layer_lr_decay")
        if cfg.reinit_layers > stack.num_blocks:
            name = repr(cfg.model_name) if cfg.model_name is not None else f"the offline default {DEFAULT_MODEL_NAME}"
            raise ValueError(
                f"reinit_layers={cfg.reinit_layers} re-initialises the top {cfg.reinit_layers} encoder "
                f"layers, and model {name} has {stack.num_blocks}; use 0..{stack.num_blocks}"
            )
    if cfg.lp_ft_epochs and accelerator.num_processes > 1:
        # DDP registers the parameters that need gradients once, when it wraps the model; the
        # probe's frozen encoder would leave it waiting for gradients that never come.
        raise ValueError(
            f"lp_ft_epochs={cfg.lp_ft_epochs} freezes the encoder for a head-only phase, which DDP's "
            f"wrapped model cannot do; run LP-FT on one process ({accelerator.num_processes} launched)"
        )


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
    name = repr(cfg.model_name) if cfg.model_name is not None else f"the offline default {DEFAULT_MODEL_NAME}"
    # The tokenizer cannot cut below its special tokens (at max_length=1 it does not cut at all)
    # and at exactly their number keeps none of the text: each text needs one token (two for a pair).
    pair = cfg.task == "shift" and len(shift_data.spec_of(cfg).stages[0].data.text) == 2
    special = tokenizer.num_special_tokens_to_add(pair=pair)
    if cfg.max_length < special + 1 + pair:
        marks = " ".join(tokenizer.convert_ids_to_tokens(tokenizer("", "" if pair else None)["input_ids"]))
        raise ValueError(
            f"max_length={cfg.max_length} leaves no room for text: the tokenizer of model {name} adds "
            f"{special} special tokens to each {'pair' if pair else 'text'} ({marks}), and texts are "
            f"truncated to max_length tokens in all; use max_length >= {special + 1 + pair} (e.g. 128)"
        )
    if limits and cfg.max_length > min(limits):
        raise ValueError(
            f"max_length={cfg.max_length} is more than model {name} can take ({min(limits)} "
            f"tokens); texts are truncated to max_length, so use max_length <= {min(limits)}"
        )
