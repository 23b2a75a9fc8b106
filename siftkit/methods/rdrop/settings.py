"""R-Drop's knobs (torch-free). ``reg_alpha`` is its fairseq code's ``--reg-alpha``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from siftkit.methods.knobs import MethodSettings, knob


@dataclass
class RDropSettings(MethodSettings):
    """R-Drop's settings. It perturbs no input (the regularizer measures dropout alone)."""

    algo: ClassVar[str] = "rdrop"

    reg_alpha: float = knob(
        1.0,
        "weight alpha of the symmetric KL between the two dropout forwards",
        source="dropreg/R-Drop fairseq_src/examples/roberta/roberta_rdrop_src/loss/"
        "reg_cross_entropy.py --reg-alpha default 1.0, not overridden by the GLUE "
        "script examples/roberta/run.sh",
    )
    rdrop_reduction: str = knob(
        "mean",
        "how the KL term is reduced over the batch: mean (the fairseq RoBERTa GLUE "
        "code, whose sums fairseq divides by the batch size, like the "
        "cross-entropy) or sum (the Hugging Face BERT GLUE code: summed over "
        "the batch while each cross-entropy is a batch mean)",
        source="dropreg/R-Drop: modeling_bert.py bert_kl (sum) vs the fairseq "
        "reg_cross_entropy.py (mean); issues #6, #24",
        choices=("mean", "sum"),
    )

    def check(self) -> None:
        self._non_negative("reg_alpha")
