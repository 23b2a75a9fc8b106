"""FreeLB's knobs (torch-free): the names of its scripts' flags, the defaults of its fine-tuning script.

The defaults are the SST-2 row of the official fine-tuning script for the Hugging Face code
(zhuchen03/FreeLB ``huggingface-transformers/launch/run_glue.sh``, ALBERT-xxlarge: ``--adv-lr
1e-1 --adv-init-mag 6e-1 --adv-max-norm 0 --adv-steps 2``), the single-sentence sentiment task
closest to the kit's tweets; ``--norm-type`` is not set there, so it is
``run_glue_freelb.py``'s default, l2. (That file's own argparse defaults, ``--adv-lr 0
--adv-steps 1 --adv-init-mag 0``, are plain fine-tuning.) Its CoLA row, for P1: ``adv_lr=0.04
adv_init_mag=0.05 adv_K=3``.
"""

from __future__ import annotations

from dataclasses import dataclass

from siftkit.methods.embedding_attack_knobs import NORM_TYPES, EmbeddingAttackSettings
from siftkit.methods.knobs import knob

_SCRIPT = "zhuchen03/FreeLB huggingface-transformers/launch/run_glue.sh, SST-2 row"


@dataclass
class FreeLBSettings(EmbeddingAttackSettings):
    algo = "freelb"

    adv_K: int = knob(
        2,
        "ascent steps K: K forwards and backwards per batch, each loss divided by K, one "
        "update (the last step does not move delta)",
        source=f"{_SCRIPT} (--adv-steps 2)",
    )
    adv_lr: float = knob(
        0.1,
        "size of each ascent step, along the gradient normalized over the whole sequence",
        source=f"{_SCRIPT} (--adv-lr 1e-1)",
    )
    adv_init_mag: float = knob(
        0.6,
        "size of the random start: l2, adv_init_mag / sqrt(L_i * d) per entry of a "
        "sequence of L_i real tokens; linf, U(-adv_init_mag, adv_init_mag); 0: start at 0",
        source=f"{_SCRIPT} (--adv-init-mag 6e-1)",
    )
    adv_max_norm: float = knob(
        0.0,
        "radius of the ball delta is kept in after each step (l2: per sequence; linf: per entry); 0: no ball",
        source=f"{_SCRIPT} (--adv-max-norm 0)",
    )
    adv_norm_type: str = knob(
        "l2",
        "the norm of the start, the step's normalization and the ball",
        source="run_glue_freelb.py --norm-type (default l2)",
        choices=NORM_TYPES,
    )
    adv_clean_weight: float = knob(
        0.0,
        "weight of an extra clean-input loss with its own backward (0: none, as "
        "the code); 1 is the variant reported in FreeLB issue #10",
        source="zhuchen03/FreeLB issue #10 (not in the code)",
    )
    adv_sync_dropout: bool = knob(
        True,
        "the same dropout masks in all K forwards of a batch, as FreeLB's patched "
        "models keep them (dp_masks); False: fresh masks at every step",
        source="run_glue_freelb.py dp_masks; fairseq code: --no-sync-dp off",
    )

    def check(self) -> None:
        super().check()
        self._non_negative("adv_clean_weight")
