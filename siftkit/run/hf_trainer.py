"""`AdversarialTrainer`: the kit's methods for anyone who already trains with `transformers.Trainer`.

    from siftkit import AdversarialTrainer

    trainer = AdversarialTrainer(model=model, args=training_args, train_dataset=train_ds,
                                 processing_class=tokenizer, algo="sift", adv_weight=1.0)
    trainer.train()

For a method with one backward per batch (plain, SMART, SiFT, PGD) only `compute_loss`
changes: a training batch's loss is exactly what the native loop computes
(`siftkit.run.objective.AdversarialLoss`, shared, not copied), e.g. task loss + adv_weight * R
(+ bregman_weight * Bregman for SMART). A method that owns its backwards (FreeLB: K backwards
into one update; FreeAT: K replays, each an update) runs its own `train_batch` from
`training_step`, with the Trainer's accelerator, optimizer and schedule: FreeLB leaves its one
update to the Trainer; FreeAT steps the Trainer's optimizer and schedule itself for its first
K - 1 replays and leaves the last to the Trainer, and the schedule is sized in updates (K per
Trainer step). Evaluation and prediction batches get the model's own loss, as with a plain
`Trainer`. The method knobs take the names of `RunConfig`'s fields and of the methods' own
knobs (``adv_K``, ...); everything about optimisation (learning rate, batch size, precision,
devices) stays in `TrainingArguments`. SMART's Bregman teacher follows the model after each
optimizer step through a callback.

Limitations: the teacher is not part of Trainer checkpoints (a resumed run restarts it from
the resumed weights); the logged regularizer statistics are the main process's own; FreeAT
takes no gradient accumulation (each of its replays is an update).
"""

from __future__ import annotations

import difflib
import inspect
import math
from collections import defaultdict
from typing import Any

import torch
from transformers import Trainer, TrainerCallback

from siftkit import methods
from siftkit.core import spectral_norm
from siftkit.core.split import unwrap
from siftkit.methods.base import Method
from siftkit.run.config import RunConfig
from siftkit.run.objective import AdversarialLoss

# RunConfig fields that configure the regularizer and the Bregman term.
REGULARIZER_KNOBS = (
    "perturb_at",
    "adv_rule",
    "adv_epsilon",
    "adv_noise_std",
    "adv_step_size",
    "adv_steps",
    "adv_norm",
    "adv_weight",
    "divergence",
    "bregman_weight",
    "bregman_beta",
)
# The task loss's own controls (docs/comparing_fairly.md), shared with the native loop.
LOSS_KNOBS = REGULARIZER_KNOBS + ("label_smoothing", "l2sp_weight")
assert set(LOSS_KNOBS) <= set(RunConfig.field_names())

_TRAINER_ARGS = frozenset(inspect.signature(Trainer.__init__).parameters) - {"self", "kwargs"}


def _split_kwargs(kwargs: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(Trainer's own arguments, method knobs); anything else is a ValueError naming it."""
    trainer_kwargs, knobs = {}, {}
    method_knobs = methods.knob_owners()  # every method's own knobs (FreeLB's adv_K, ...)
    for name, value in kwargs.items():
        if name in LOSS_KNOBS or name in method_knobs or name == "algo_args":
            knobs[name] = value
        elif name in _TRAINER_ARGS:
            trainer_kwargs[name] = value
        elif name in RunConfig.field_names():
            raise ValueError(
                f"{name} is not a regularizer knob of AdversarialTrainer; optimisation and run "
                f"settings go in TrainingArguments (args=...)"
            )
        else:
            close = difflib.get_close_matches(
                name, LOSS_KNOBS + tuple(sorted(method_knobs)) + tuple(sorted(_TRAINER_ARGS)), n=1
            )
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ValueError(
                f"unknown argument {name!r} for AdversarialTrainer{hint} "
                f"(loss knobs: {', '.join(LOSS_KNOBS)}; method knobs: {', '.join(method_knobs)})"
            )
    return trainer_kwargs, knobs


def _check_label_range(labels: torch.Tensor, num_labels: int) -> None:
    """Class ids must index the model's logits (torch's cross-entropy fails with a bare
    IndexError, or a device-side assert on a GPU)."""
    if labels.numel() == 0:
        return
    low, high = int(labels.min()), int(labels.max())
    if low < 0 or high >= num_labels:
        bad = high if high >= num_labels else low
        raise ValueError(
            f"AdversarialTrainer got label {bad} for a model with num_labels={num_labels} (class ids "
            f"0 to {num_labels - 1}); build the model with num_labels covering every label "
            f"(from_pretrained(..., num_labels=...)) or fix the dataset's labels"
        )


class BregmanTeacherCallback(TrainerCallback):
    """Moves SMART's Bregman teacher towards the model after every optimizer step."""

    def __init__(self, trainer: AdversarialTrainer):
        self.trainer = trainer
        self.updates = 0

    def on_step_end(self, args, state, control, **kwargs):
        trainer = self.trainer
        bregman = getattr(trainer.adversarial_loss.method, "bregman", None)  # SMART's alone
        # Same rule as the native loop: the teacher follows only steps that were taken.
        if bregman is not None and not trainer.accelerator.optimizer_step_was_skipped:
            bregman.update(trainer.model)
            self.updates += 1
        return control


class AdversarialTrainer(Trainer):
    """A `transformers.Trainer` that trains with one of the kit's methods (`siftkit.methods`).

    ``AdversarialTrainer(model=..., args=..., train_dataset=..., algo="sift", **knobs)``
    where `knobs` are any of `LOSS_KNOBS` (the `RunConfig` names: the regularizer's, plus
    ``label_smoothing`` and ``l2sp_weight`` toward the weights the model has when the trainer
    is built) or the chosen method's own knobs (``adv_K``, ...); unset knobs take the method's
    published defaults. The model must be an encoder ``*ForSequenceClassification`` with
    single-label classification (integer `labels`).
    """

    # Our loss is a per-batch mean: the Trainer divides it by the gradient-accumulation steps.
    loss_is_scaled_for_ga = False

    def __init__(self, *args, algo: str = "sift", **kwargs):
        trainer_kwargs, knobs = _split_kwargs(kwargs)
        # Validates every knob by name (a method's own knobs too).
        self.run_config = RunConfig.from_dict({"algo": algo, **knobs}, source="AdversarialTrainer's arguments")
        super().__init__(*args, **trainer_kwargs)
        if self.model is None:
            raise ValueError("AdversarialTrainer needs model=... (model_init is not supported)")
        # The training loss is the native loop's cross-entropy + regularizers; say so rather
        # than silently ignore a different loss.
        if self.compute_loss_func is not None:
            raise ValueError(
                "compute_loss_func is not supported by AdversarialTrainer (its training loss is "
                "cross-entropy + the regularizer terms)"
            )
        if self.args.n_gpu > 1:
            # nn.DataParallel would run the clean forward on replicas (the split's hooks would
            # fire once per GPU); DDP runs one process per GPU and is what the kit supports.
            raise ValueError(
                "AdversarialTrainer runs one process per GPU: launch with `accelerate launch` or "
                "`torchrun --nproc_per_node N` instead of one process seeing several GPUs"
            )
        if self.args.label_smoothing_factor:
            raise ValueError(
                "label_smoothing_factor is not supported by AdversarialTrainer; leave it at 0 and "
                "pass label_smoothing=... to AdversarialTrainer (the kit's task loss takes it)"
            )
        bare = unwrap(self.model)
        if getattr(bare, "base_model", None) is bare:
            # transformers' base_model is the model itself when it has no head on top.
            raise ValueError(
                f"AdversarialTrainer needs a classifier that returns logits (a "
                f"*ForSequenceClassification, e.g. from AutoModelForSequenceClassification); "
                f"{type(bare).__name__} is a bare encoder without a classification head"
            )
        config = getattr(unwrap(self.model), "config", None)
        num_labels = getattr(config, "num_labels", 2)
        problem = getattr(config, "problem_type", None)
        if num_labels < 2 or problem in ("regression", "multi_label_classification"):
            raise ValueError(
                f"AdversarialTrainer trains single-label classifiers (num_labels >= 2); this model "
                f"has num_labels={num_labels}, problem_type={problem!r}"
            )
        # Built after Trainer placed the model on its device, so the teacher lives there too.
        self.adversarial_loss = AdversarialLoss(self.model, self.run_config)
        method = self.adversarial_loss.method
        if method.updates_per_batch > 1 and self.args.gradient_accumulation_steps > 1:
            raise ValueError(
                f"algo={algo!r} makes {method.updates_per_batch} optimizer updates on every batch (one "
                f"per replay), so it cannot accumulate gradients over batches; got "
                f"gradient_accumulation_steps={self.args.gradient_accumulation_steps} in TrainingArguments: "
                f"use gradient_accumulation_steps=1 (and a larger per_device_train_batch_size)"
            )
        self.bregman_callback = BregmanTeacherCallback(self)
        self.add_callback(self.bregman_callback)
        self._parts: dict[str, list[float]] = defaultdict(list)

    @property
    def algo(self) -> str:
        return self.run_config.algo

    @property
    def owns_backwards(self) -> bool:
        """Whether the method runs its own backwards and updates (FreeLB, FreeAT): it then trains
        from `training_step` instead of `compute_loss`."""
        return type(self.adversarial_loss.method).train_batch is not Method.train_batch

    def create_scheduler(self, num_training_steps: int, optimizer=None):
        # The schedule counts optimizer updates: FreeAT makes K of them per Trainer step.
        updates = num_training_steps * self.adversarial_loss.method.updates_per_batch
        return super().create_scheduler(updates, optimizer)

    def training_step(self, model, inputs, num_items_in_batch=None):
        if not self.owns_backwards:
            return super().training_step(model, inputs, num_items_in_batch)
        # Trainer.training_step's preparation, then the method's own backwards and updates.
        model.train()
        if hasattr(self.optimizer, "train") and callable(self.optimizer.train):
            self.optimizer.train()
        inputs = self._prepare_inputs(inputs)
        self._check_training_batch(model, inputs)
        method = self.adversarial_loss.method
        ctx = _TrainerBatch(self, model, method.updates_per_batch)
        loss, parts = method.train_batch(model, inputs, ctx)
        if ctx.updates != method.updates_per_batch:
            raise RuntimeError(
                f"method {method.name!r} made {ctx.updates} optimizer update(s) on a batch; it "
                f"declares {method.updates_per_batch}"
            )
        for key, value in parts.items():
            self._parts[key].append(value)
        return loss.detach() / self.current_gradient_accumulation_steps

    def _check_training_batch(self, model, inputs) -> None:
        if "labels" not in inputs:
            raise ValueError(
                "AdversarialTrainer needs `labels` in every training batch (a DataCollatorWithPadding "
                "renames a `label` column to `labels`)"
            )
        if torch.is_floating_point(inputs["labels"]):
            raise ValueError(
                f"AdversarialTrainer trains single-label classifiers: labels must be integer class ids, "
                f"got {inputs['labels'].dtype}; cast the dataset's label column to int64 "
                f"(dataset.cast_column('label', datasets.Value('int64')))"
            )
        _check_label_range(inputs["labels"], getattr(unwrap(model).config, "num_labels", 2))

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if not (model.training and torch.is_grad_enabled()):
            # Evaluation / prediction: the model's own loss, as a plain Trainer reports it.
            return super().compute_loss(
                model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch
            )
        if self.owns_backwards and self.adversarial_loss.method.active:
            raise ValueError(
                f"algo={self.algo!r} runs its own backwards and updates, so it has no single training "
                f"loss: it trains from AdversarialTrainer.training_step, not compute_loss"
            )
        self._check_training_batch(model, inputs)
        captured: list = []
        handle = None
        if return_outputs:
            # The first forward of the bare model in a step is the clean one.
            handle = unwrap(model).register_forward_hook(
                lambda _m, _a, out: captured.append(out) if not captured else None
            )
        try:
            loss, parts = self.adversarial_loss(model, inputs)
        finally:
            if handle is not None:
                handle.remove()
        for key, value in parts.items():
            self._parts[key].append(value)
        if not return_outputs:
            return loss
        outputs = captured[0]
        rows = len(inputs["labels"])
        if outputs.logits.shape[0] != rows:
            # A method that forwards the batch repeated (R-Drop's [x; x]): its first copy's rows.
            outputs["logits"] = outputs.logits[:rows]
        return loss, outputs

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """As Trainer's; a model saved for use (not a checkpoint of this run) gets R4F's
        spectrally normalized head as the plain weight it computes with, so the folder loads into
        the ordinary model class. Checkpoints keep the raw weight and its vectors, to resume."""
        self._export_plain = not _internal_call
        try:
            super().save_model(output_dir, _internal_call=_internal_call)
        finally:
            self._export_plain = False

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        bare = unwrap(self.model)
        if getattr(self, "_export_plain", False) and spectral_norm.has_parametrizations(bare):
            state_dict = spectral_norm.baked_state_dict(bare.state_dict() if state_dict is None else state_dict)
        super()._save(output_dir, state_dict=state_dict)

    def log(self, logs: dict[str, float], *args, **kwargs) -> None:
        # Add the regularizer's terms (means since the last training log) to a training log.
        if "loss" in logs and self._parts:
            for key, values in self._parts.items():
                finite = [v for v in values if math.isfinite(v)]
                if finite:
                    logs[key] = sum(finite) / len(finite)
            self._parts.clear()
        super().log(logs, *args, **kwargs)


class _TrainerBatch:
    """The `BatchContext` of one `AdversarialTrainer.training_step`: the Trainer's accelerator,
    optimizer and schedule. The batch's last update is the Trainer's own (it clips, steps and
    schedules after `training_step`); the ones before it (FreeAT's first K - 1 replays) are made
    here, the way the Trainer makes its own."""

    def __init__(self, trainer: AdversarialTrainer, model, planned_updates: int):
        self.trainer, self.model, self.planned = trainer, model, planned_updates
        self.updates = 0
        self.dropped = False

    def autocast(self):
        return self.trainer.compute_loss_context_manager()

    def backward(self, loss: torch.Tensor) -> bool:
        from siftkit.run.training import _all_processes

        trainer = self.trainer
        if not _all_processes(trainer.accelerator, bool(torch.isfinite(loss.detach()))):
            self.dropped = True
            return False
        # As Trainer.training_step: a per-batch mean, divided by the accumulation steps.
        trainer.accelerator.backward(loss / trainer.current_gradient_accumulation_steps)
        return True

    def update(self) -> bool:
        self.updates += 1
        applied = not self.dropped
        self.dropped = False
        if self.updates == self.planned:
            return applied  # the Trainer's own update follows training_step
        trainer = self.trainer
        if trainer.args.max_grad_norm > 0:
            trainer._clip_grad_norm(self.model)
        # A dropped update has no gradients (nothing was back-propagated): the step moves nothing.
        trainer.optimizer.step()
        if not trainer.accelerator.optimizer_step_was_skipped:
            trainer.lr_scheduler.step()
        self.model.zero_grad()
        return applied and not trainer.accelerator.optimizer_step_was_skipped
