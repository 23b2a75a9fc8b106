"""PGD-K's knobs (torch-free): FreeLB's names, the defaults of the official PGD fine-tuning script.

The official code is zhuchen03/FreeLB's fairseq ``--std-adv`` (``std_adv_train_step`` in
``fairseq-RoBERTa/fairseq/tasks/sentence_prediction.py``); the defaults are its SST-2 script,
``fairseq-RoBERTa/launch/VanillaPGD/stdadv-sst-fp32-clip.sh`` (``--adv-lr 1e-1 --adv-steps 2
--rand-init-mag 1 --max-norm 6e-1``). Its start, step and ball are l2 only. Its CoLA script,
for P1: ``adv_lr=0.05 adv_K=3 adv_init_mag=0.4 adv_max_norm=0.2``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from siftkit.methods.embedding_attack_knobs import NORM_TYPES, EmbeddingAttackSettings
from siftkit.methods.knobs import knob

_SCRIPT = "zhuchen03/FreeLB fairseq-RoBERTa/launch/VanillaPGD/stdadv-sst-fp32-clip.sh"


@dataclass
class PGDSettings(EmbeddingAttackSettings):
    algo = "pgd"
    l2_only: ClassVar[str | None] = (
        "its official code (fairseq --std-adv, std_adv_train_step) draws an l2 start "
        "and takes l2 steps in an l2 ball only"
    )

    adv_K: int = knob(
        2,
        "ascent steps K on delta (input gradients only); then one backward of the last adversarial loss",
        source=f"{_SCRIPT} (--adv-steps 2)",
    )
    adv_lr: float = knob(
        0.1,
        "size of each ascent step, along the gradient normalized over the whole sequence",
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
        "the norm of the start, the step's normalization and the ball (l2 only in the official PGD code)",
        source="std_adv_train_step (l2 only)",
        choices=NORM_TYPES,
    )
    adv_sync_dropout: bool = knob(
        True,
        "the same dropout masks in all K + 1 forwards of a batch, as the code's "
        "later forwards reuse the first's; False: fresh masks in each",
        source="std_adv_train_step: init_dp=True, then init_dp=--no-sync-dp (off)",
    )
