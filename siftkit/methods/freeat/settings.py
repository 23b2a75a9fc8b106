"""FreeAT's knobs (torch-free): FreeLB's names, the defaults of the official FreeAT fine-tuning script.

The official code is zhuchen03/FreeLB's fairseq ``--per-step-adv`` (``freeat_train_step`` in
``fairseq-RoBERTa/fairseq/trainer.py``, ``freeat_adv_train_step`` in
``fairseq-RoBERTa/fairseq/tasks/sentence_prediction.py``); the defaults are its SST-2 script,
``fairseq-RoBERTa/launch/FreeAT/sst-fp32-clip.sh`` (``--adv-lr 1e-1 --adv-steps 2 --rand-init-mag 1
--max-norm 6e-1``). Its start, step and ball are l2 only. Its CoLA script, for P1: ``adv_lr=0.05
adv_K=3 adv_init_mag=0.4 adv_max_norm=0.2``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from siftkit.methods.embedding_attack_knobs import NORM_TYPES, EmbeddingAttackSettings
from siftkit.methods.knobs import knob

_SCRIPT = "zhuchen03/FreeLB fairseq-RoBERTa/launch/FreeAT/sst-fp32-clip.sh"


@dataclass
class FreeATSettings(EmbeddingAttackSettings):
    algo = "freeat"
    l2_only: ClassVar[str | None] = (
        "its official code (fairseq --per-step-adv, freeat_adv_train_step) draws an "
        "l2 start and takes l2 steps in an l2 ball only"
    )
    _k_means: ClassVar[str] = "replays of each batch, each an optimizer update"

    adv_K: int = knob(
        2,
        "replays K of each batch, each a forward, a backward and an optimizer update; delta "
        "carried from replay to replay (the stage runs 1/K of plain's batches)",
        source=f"{_SCRIPT} (--adv-steps 2)",
    )
    adv_lr: float = knob(
        0.1,
        "size of each step of delta, along the gradient normalized over the whole sequence",
        source=f"{_SCRIPT} (--adv-lr 1e-1)",
    )
    adv_init_mag: float = knob(
        1.0,
        "size of the random start: adv_init_mag / sqrt(L_i * d) per entry of a "
        "sequence of L_i real tokens (l2); 0: start at 0",
        source=f"{_SCRIPT} (--rand-init-mag 1)",
    )
    adv_max_norm: float = knob(
        0.6,
        "radius of the l2 ball (per sequence) delta is kept in after each step; 0: no ball",
        source=f"{_SCRIPT} (--max-norm 6e-1)",
    )
    adv_norm_type: str = knob(
        "l2",
        "the norm of the start, the step's normalization and the ball (l2 only in the official FreeAT code)",
        source="freeat_adv_train_step (l2 only)",
        choices=NORM_TYPES,
    )
    adv_scale_loss: bool = knob(
        True,
        "divide each replay's loss by 1 + adv_K, as the official code does (it "
        "matters through gradient clipping and Adam's epsilon); False: the plain loss",
        source="freeat_adv_train_step: loss / (1 + args.adv_steps)",
    )
