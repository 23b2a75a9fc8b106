"""ALUM's knobs (torch-free). Names are those of namisan/mt-dnn ``alum/adv_masked_lm_task.py``
except where `RunConfig` already owns the name (see `AlumSettings`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from siftkit.core.perturbation_specs import PERTURB_POINTS
from siftkit.methods.knobs import MethodSettings, knob

_TASK = "namisan/mt-dnn alum/adv_masked_lm_task.py"

# The values a user may leave at their defaults without using them (alum_epsilon with the code's
# normalization): a changed value would be silently dropped, so it is refused instead.
_DEFAULT_EPSILON = 1e-5


@dataclass
class AlumSettings(MethodSettings):
    """ALUM's settings.

    ``alum_step_size`` is the code's ``--adv_step_size`` and ``alum_epsilon`` the paper's epsilon:
    `RunConfig` owns ``adv_step_size`` and ``adv_epsilon`` (SMART's and SiFT's), so a knob of
    that name would be read as theirs. ``noise_var`` is the code's name, but the code multiplies a
    standard normal by it: it is the noise's standard deviation, not its variance.
    """

    algo: ClassVar[str] = "alum"
    # ALUM's code perturbs the embedding block's output (fairseq's inner_states[0]); the kit's
    # other points are embedding spaces too, and the method is the same there.
    perturb_points: ClassVar[tuple] = PERTURB_POINTS

    adv_alpha: float = knob(
        1.0,
        "weight of the adversarial term (the paper's alpha)",
        source="ALUM paper sec. 4: 1 for fine-tuning, 10 for pre-training (alum_train.sh "
        f"--adv_alpha 10); {_TASK} --adv_alpha default 1",
    )
    noise_var: float = knob(
        1e-5,
        "standard deviation of the initial noise (the code's noise_var multiplies N(0, 1))",
        source=f"{_TASK} --noise_var default 1e-5; paper sigma",
    )
    alum_step_size: float = knob(
        1e-3,
        "ascent step eta on the raw input gradient (the code's --adv_step_size)",
        source=f"{_TASK} --adv_step_size default 1e-3; paper eta",
    )
    noise_gamma: float = knob(
        1e-6, "guard added to each token's norm when delta is normalized", source=f"{_TASK} --noise_gamma default 1e-6"
    )
    project_norm_type: str = knob(
        "inf",
        "per-token norm of the normalization: inf (max |.|), l2, or l1 (sign)",
        source=f"{_TASK} --project_norm_type default 'inf'",
        choices=("inf", "l2", "l1"),
    )
    alum_projection: str = knob(
        "code",
        "code: delta <- u / (||u|| + noise_gamma), u = delta + eta g (the "
        "code's, unit size per token); paper: delta <- projection of u onto the "
        "ball ||delta|| <= alum_epsilon (Algorithm 1, line 6)",
        source="namisan/mt-dnn alum/adv_masked_lm.py (commit f0b40b6) vs the ALUM paper",
        choices=("code", "paper"),
    )
    alum_epsilon: float = knob(
        _DEFAULT_EPSILON,
        "radius of the per-token ball for alum_projection='paper'",
        source="ALUM paper sec. 4: perturbation size 1e-5",
    )

    def check(self) -> None:
        self._non_negative("adv_alpha", "noise_var", "alum_step_size")
        self._positive("noise_gamma", "alum_epsilon")
        if self.noise_var == 0 and self.alum_step_size == 0:
            raise ValueError(
                "noise_var and alum_step_size are both 0 for algo='alum': its perturbation would be "
                "exactly 0; give either a size"
            )
        if self.alum_projection == "code" and self.alum_epsilon != _DEFAULT_EPSILON:
            raise ValueError(
                f"alum_epsilon={self.alum_epsilon!r} is used by alum_projection='paper' only (the "
                f"code's normalization has no ball); leave it at {_DEFAULT_EPSILON!r} or set "
                f"alum_projection='paper'"
            )
        if self.alum_projection == "paper" and self.project_norm_type == "l1":
            raise ValueError(
                "project_norm_type='l1' (the code's sign step) has no ball to project onto for "
                "alum_projection='paper'; use 'inf' (the paper's) or 'l2'"
            )
