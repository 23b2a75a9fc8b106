"""R3F's knobs (and R4F's switch), with the defaults of fairseq's code. Torch-free."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from siftkit.methods.knobs import MethodSettings, knob

_CRITERION = "fairseq examples/rxf/rxf_src/sentence_prediction_r3f.py (add_args)"
_MODEL = "fairseq fairseq/models/roberta/model.py (--spectral-norm-classification-head, RobertaClassificationHead)"


@dataclass
class R3FSettings(MethodSettings):
    """R3F: ``CE + r3f_lambda * symKL(f(e + noise), f(e))`` with noise on the word embeddings;
    R4F: the same with ``spectral_norm_classification_head=True``. docs/methods/r3f.md."""

    algo: ClassVar[str] = "r3f"
    # fairseq adds the noise to the token-embedding lookup (before positions and LayerNorm).
    perturb_points: ClassVar[tuple] = ("word_embeddings", "embedding_output", "pre_layernorm")

    eps: float = knob(
        1e-5, "noise size: the range of U(-eps, eps), or the std of N(0, eps^2)", source=f"{_CRITERION}: --eps 1e-5"
    )
    r3f_lambda: float = knob(
        1.0,
        "weight of the symmetric KL between the noised and the clean outputs",
        source=f"{_CRITERION}: --r3f-lambda 1.0 (examples/rxf/README.md's RTE command: 0.7)",
    )
    noise_type: str = knob(
        "uniform",
        "the noise's law: 'uniform' U(-eps, eps) or 'normal' N(0, eps^2)",
        source=f"{_CRITERION}: --noise-type uniform",
        choices=("uniform", "normal"),
    )
    mask_padding: bool = knob(
        False,
        "noise on real tokens only; False = every position, padding included, as the official code does",
        source="the official code has no padding mask",
    )
    spectral_norm_classification_head: bool = knob(
        False,
        "R4F: spectral normalization of the classification head (torch's parametrization)",
        source=f"{_MODEL}: default False",
    )
    spectral_norm_layers: str = knob(
        "output",
        "which head layers R4F normalizes: 'output' (the layer giving the logits, fairseq's out_proj) or "
        "'all' (every Linear of the head, the paper's 'classification head')",
        source=f"{_MODEL}: out_proj only",
        choices=("output", "all"),
    )

    def check(self) -> None:
        self._positive("eps")
        self._non_negative("r3f_lambda")
        if self.spectral_norm_layers != "output" and not self.spectral_norm_classification_head:
            raise ValueError(
                f"spectral_norm_layers={self.spectral_norm_layers!r} chooses the layers R4F normalizes, "
                f"but spectral_norm_classification_head=False (R3F) normalizes none; set "
                f"spectral_norm_classification_head=True or leave spectral_norm_layers unset"
            )
