"""VAT's knobs, named and set as the flags of the official text-classification code. Torch-free."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from siftkit.methods.knobs import MethodSettings, knob

_FLAGS = "tensorflow/models research/adversarial_text/adversarial_losses.py flag default"
_README = "research/adversarial_text/README.md's IMDB classifier command"


@dataclass
class VATSettings(MethodSettings):
    """VAT: ``CE + adv_reg_coeff * KL(p(.|e) || p(.|e + delta))``, delta the virtual adversarial
    direction found by power iteration, of L2 norm ``perturb_norm_length`` per example. docs/methods/vat.md."""

    algo: ClassVar[str] = "vat"
    # The official code perturbs the (frequency-normalized) word embeddings fed to its LSTM.
    perturb_points: ClassVar[tuple] = ("word_embeddings", "embedding_output", "pre_layernorm")

    perturb_norm_length: float = knob(
        5.0,
        "epsilon: the L2 norm of each example's perturbation, over all its tokens and features together",
        source=f"{_FLAGS} 5.0 ('optimal on IMDB with virtual adversarial training'); {_README}: 5.0",
    )
    small_constant_for_finite_diff: float = knob(
        0.1,
        "xi: the L2 norm per example of the probe of the finite-difference power iteration",
        source=f"{_FLAGS} 1e-1",
    )
    num_power_iteration: int = knob(1, "power iterations that find the direction", source=f"{_FLAGS} 1")
    adv_reg_coeff: float = knob(
        1.0,
        "weight of the virtual adversarial KL term in the loss",
        source=f"{_FLAGS} 1.0 (graphs.py: total_loss = loss + adv_reg_coeff * adv_loss)",
    )

    def check(self) -> None:
        self._positive("perturb_norm_length", "small_constant_for_finite_diff")
        self._non_negative("adv_reg_coeff")
        if self.num_power_iteration < 1:
            raise ValueError(
                f"num_power_iteration must be an int >= 1 for algo='vat' (the direction comes from at "
                f"least one power iteration), got {self.num_power_iteration!r}"
            )
