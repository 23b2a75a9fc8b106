"""The run configuration: one validated dataclass, one name per knob.

Every field name is the same in `RunConfig`, the YAML files under `params/`, the CLI
(`--field value`) and the notebooks' `parameters` cells; where Hugging Face's
`TrainingArguments` has a knob of the same meaning, the name is theirs.

The regularizer knobs `adv_epsilon`, `adv_noise_std`, `adv_step_size` and `adv_weight`
default to ``None``, which resolves to the published default of the chosen algorithm and
perturbation rule (see `RULE_DEFAULTS`); the resolved values are what `results.json`
records. A knob the chosen rule does not use (epsilon for the rules without a ball, the
step size when ``adv_steps=0``) resolves to ``None``, and setting it is an error rather
than a value silently dropped. The Bregman knobs `bregman_weight` and `bregman_beta` are
SMART's alone: ``None`` resolves to 1.0 and 0.99 for SMART and stays ``None`` (recorded
as such) for plain and SiFT, which have no Bregman term.
"""

from __future__ import annotations

import dataclasses
import datetime
import difflib
import json
import math
import os
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, get_type_hints

from siftkit import methods

# The regularizer's choices and each rule's properties live in core (torch-free), read by the rules too.
from siftkit.core.perturbation_specs import ADV_NORMS, ADV_RULES, DIVERGENCE_NAMES, PERTURB_POINTS, check_rule_settings
from siftkit.data.yaml_files import load_yaml
from siftkit.methods.knobs import knob

# The protocols (`task`): what each runs. `train --help` and docs/config.md name them from here.
PROTOCOLS = {
    "cola": "P1: CoLA, in-domain, MCC on its dev set",
    "twitter_to_uci": "P2: Twitter hate speech, then UCI sentiment, the seed paper's shift",
    "shift": "P3: your own domain shift, a spec in the field shift (siftkit.data.shift_spec)",
}
TASKS = tuple(PROTOCOLS)
ALGOS = methods.names()  # "plain", "smart", "sift" and the rest of the family (siftkit.methods)
MIXED_PRECISION = ("no", "bf16", "fp16")
ADV_STAGES = ("all", "first", "last")
LP_FT_STAGES = ADV_STAGES
WISE_FT_SCOPES = ("encoder", "model")
# WiSE-FT's alpha grid: the sample commands of mlfoundations/wise-ft's README (`--alpha 0 0.1 ... 1.0`).
WISE_FT_ALPHAS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
# Experiment trackers a run can report to (through accelerate; siftkit.run.tracking).
TRACKERS = ("tensorboard", "mlflow")
# The model `model_name=None` means: the offline default `siftkit.run.models` loads. Named here,
# with the field it is the default of, because this module imports nothing heavy: the study and
# explore layers read it from recorded configs without loading torch (run.models imports it).
DEFAULT_MODEL_NAME = "all-MiniLM-L6-v2"

# Published defaults per algorithm (DESIGN.md section 2).
# SMART (Jiang et al. 2020): epsilon = noise std = 1e-5, step 1e-3, lambda_s = 1.
# SiFT (the seed paper): noise std 0.01 and step 1e-3 in the normalized space, weight 1.
# The seed paper gives no epsilon for SiFT (its code used epsilon only as a divide guard);
# we keep SMART's rule "epsilon = noise std", i.e. 0.01 in normalized units, so the ball
# is a real bound of the same relative size as SMART's.
ALGO_DEFAULTS: dict[str, dict[str, float]] = {
    "plain": {"adv_epsilon": 0.0, "adv_noise_std": 0.0, "adv_step_size": 0.0, "adv_weight": 0.0},
    "smart": {"adv_epsilon": 1e-5, "adv_noise_std": 1e-5, "adv_step_size": 1e-3, "adv_weight": 1.0},
    "sift": {"adv_epsilon": 1e-2, "adv_noise_std": 1e-2, "adv_step_size": 1e-3, "adv_weight": 1.0},
}
# Per (rule, algo) for the public codes' rules (siftkit.core.rules documents each rule);
# None = the rule has no such knob. mt-dnn's published SMART: noise 1e-5, step 1e-3; its
# SiFT use in the seed paper: noise 0.01 (normalized). DeBERTa's PerturbationLayer:
# init_perturbation 0.01, learning_rate 1e-4. The seed paper's code: noise 0.01, step 1e-3
# for both algorithms.
RULE_DEFAULTS: dict[str, dict[str, dict[str, float | None]]] = {
    "projected": {a: ALGO_DEFAULTS[a] for a in ("smart", "sift")},
    "mtdnn": {
        "smart": {"adv_epsilon": None, "adv_noise_std": 1e-5, "adv_step_size": 1e-3, "adv_weight": 1.0},
        "sift": {"adv_epsilon": None, "adv_noise_std": 1e-2, "adv_step_size": 1e-3, "adv_weight": 1.0},
    },
    "deberta": {
        a: {"adv_epsilon": None, "adv_noise_std": 1e-2, "adv_step_size": 1e-4, "adv_weight": 1.0}
        for a in ("smart", "sift")
    },
    "seed_code": {
        a: {"adv_epsilon": None, "adv_noise_std": 1e-2, "adv_step_size": 1e-3, "adv_weight": 1.0}
        for a in ("smart", "sift")
    },
}
# SMART's Bregman proximal point (Jiang et al. 2020): mu = 1, teacher EMA beta = 0.99.
BREGMAN_DEFAULTS: dict[str, float] = {"bregman_weight": 1.0, "bregman_beta": 0.99}
_ADV_KNOBS = ("adv_epsilon", "adv_noise_std", "adv_step_size", "adv_weight")


# The groups of RunConfig's fields, by their first field, as the `# --- title ---` lines in the class
# head them: `train --help` and docs/config.md show the fields in these groups.
FIELD_SECTIONS = (
    ("what to run", "task"),
    ("optimisation (names as in transformers.TrainingArguments)", "learning_rate"),
    ("protocol P2 (Twitter hate speech -> UCI sentiment), seed-paper defaults", "twitter_negatives"),
    ("controls that explain a gain (docs/comparing_fairly.md)", "reinit_head"),
    ("out-of-domain fine-tuning methods (docs/comparing_fairly.md; any algo)", "lp_ft_epochs"),
    ("adversarial regularizer (SMART and SiFT)", "perturb_at"),
    ("Bregman proximal point (SMART only)", "bregman_weight"),
    ("notes", "extra"),
)


@dataclass
class RunConfig:
    """Everything one run needs. Each field is a `knob`: its default, help and choices live there
    once, and `train --help`, docs/config.md (``python -m siftkit.cli.config_docs``) and the
    notebooks' parameter comments read them.

    >>> RunConfig(algo="sift").adv_noise_std
    0.01
    """

    # --- what to run -------------------------------------------------------------------
    task: str = knob(
        "twitter_to_uci", "the protocol; " + "; ".join(f"{t}: {what}" for t, what in PROTOCOLS.items()), choices=TASKS
    )
    shift: dict[str, Any] | None = knob(
        None,
        "task shift's domain-shift spec (siftkit.data.shift_spec: name, labels, "
        "stages, evals), or the path of a YAML file holding it (read at once: "
        "results.json records the mapping); P3's specs are params/*.yaml with a "
        "shift: block",
    )
    algo: str = knob("plain", "the training method (siftkit.methods; docs/methods/<algo>.md)", choices=ALGOS)
    algo_args: dict[str, Any] = knob(
        {},
        "the method's own knobs (FreeLB's adv_K, ...), also given by their own "
        "names (--adv_K 3, adv_K: 3); resolved to every knob of the method with its "
        "default",
    )
    model_name: str | None = knob(
        None,
        f"Hub name, local path or random:<arch> (a tiny random model for tests); "
        f"None: the offline {DEFAULT_MODEL_NAME}",
    )
    data_dir: str | None = knob(None, "dataset folder; None: $SIFTKIT_DATA_DIR, else ./data, else the user cache")
    output_dir: str = knob("runs/default", "where results.json, history.csv and checkpoints go")
    overwrite: bool = knob(False, "allow replacing an existing results.json in output_dir")
    seed: int = knob(42, "seeds the data split, the head's initialisation, dropout and the perturbation noise")
    report_to: list[str] = knob(
        [], "experiment trackers, a list or one comma-separated text; [] or none: none", choices=TRACKERS
    )

    # --- optimisation (names as in transformers.TrainingArguments) -----------------------
    learning_rate: float = knob(2e-5, "AdamW peak learning rate (a P3 stage may set its own)")
    weight_decay: float = knob(0.0, "AdamW decoupled weight decay")
    adam_epsilon: float = knob(1e-8, "AdamW epsilon")
    warmup_ratio: float = knob(0.0, "fraction of each stage's steps with linear warm-up")
    max_grad_norm: float = knob(1.0, "gradient clipping by global norm; 0 disables")
    num_train_epochs: int = knob(1, "epochs of the main stage: CoLA in P1, Twitter in P2, each P3 stage that sets none")
    per_device_train_batch_size: int = knob(5, "training batch size per process")
    per_device_eval_batch_size: int = knob(64, "evaluation batch size per process")
    max_length: int = knob(128, "tokens per text after truncation (dynamic padding below it)")
    max_train_samples: int | None = knob(None, "random subset (seeded) of every stage's training set; None: all")
    max_eval_samples: int | None = knob(
        None, "random subset (the same for all seeds) of every evaluation set; None: all"
    )
    mixed_precision: str = knob("no", "mixed precision through accelerate", choices=MIXED_PRECISION)
    logging_steps: int = knob(10, "record history every this many optimizer steps")
    save_steps: int = knob(0, "checkpoint every this many steps (0: only at each stage's end)")
    resume: bool = knob(False, "continue from the newest checkpoint in output_dir")
    save_model: bool = knob(False, "write the fine-tuned model and tokenizer to output_dir/model")
    cpu: bool = knob(False, "force CPU even where an accelerator exists")
    num_threads: int | None = knob(
        None,
        "torch's CPU threads; None: chosen at start from the cores free then, "
        "unless OMP_NUM_THREADS or torch.set_num_threads set them "
        "(siftkit.run.threads); results repeat exactly at a fixed count",
    )
    eval_smoothness: bool = knob(True, "held-out smoothness probes at each evaluation (2 extra forwards per example)")
    max_nonfinite_fraction: float = knob(0.1, "a stage with a larger share of non-finite (dropped) steps fails the run")

    # --- protocol P2 (Twitter hate speech -> UCI sentiment), seed-paper defaults ---------
    twitter_negatives: int = knob(2200, "P2: first N label-0 tweets kept beside all positives")
    twitter_subset: int = knob(2000, "P2: examples kept after shuffling positives and negatives")
    twitter_val_fraction: float = knob(0.1, "P2: share of the Twitter subset held out for validation")
    uci_train_fraction: float = knob(0.1, "P2: share of the shuffled 3,000-sentence UCI pool to train on")
    uci_train_size: int | None = knob(None, "P2: exact stage-2 size instead of the fraction (seed paper: 270)")
    uci_num_train_epochs: int = knob(3, "P2: epochs of stage 2 (UCI)")
    uci_learning_rate: float | None = knob(None, "P2: stage-2 learning rate; None: learning_rate")
    uci_val_size: int = knob(
        0, "P2: UCI sentences held out for validation, after the training share; 0: the paper's split"
    )

    # --- controls that explain a gain (docs/comparing_fairly.md) ------------------------
    reinit_head: bool = knob(False, "control: a fresh classification head before every stage after the first")
    adv_stages: str = knob(
        "all", "control: the stages in which the regularizer (and SMART's Bregman term) runs", choices=ADV_STAGES
    )
    label_smoothing: float = knob(0.0, "control: label smoothing of the task loss, in [0, 1)")
    l2sp_weight: float = knob(
        0.0, "control: alpha of L2-SP, alpha * ||theta - theta_0||^2 over the pre-trained encoder"
    )
    freeze_encoder: bool = knob(False, "control: a linear probe, only the classification head trains")
    early_stopping_patience: int | None = knob(
        None,
        "control: per stage, stop after this many epochs without a "
        "better validation metric and restore the best epoch's "
        "weights; None: off",
    )
    stage_cache_dir: str | None = knob(None, "reuse finished stages cached here (and cache new ones); None: no cache")

    # --- out-of-domain fine-tuning methods (docs/comparing_fairly.md; any algo) -----------
    lp_ft_epochs: int = knob(
        0,
        "LP-FT (Kumar et al. 2022): head-only epochs before fine-tuning each stage of "
        "lp_ft_stages, the encoder frozen (bit-identical) and in eval mode; 0: off",
    )
    lp_ft_learning_rate: float = knob(
        1e-3,
        "LP-FT: AdamW rate of the head-only epochs (the official codes fit "
        "logistic regression instead; docs/methods/ood.md)",
    )
    lp_ft_stages: str = knob("last", "LP-FT: the stages probed first (P2: last is stage 2, UCI)", choices=LP_FT_STAGES)
    wise_ft: bool = knob(
        False,
        "WiSE-FT (Wortsman et al. 2022): after training, evaluate (1-alpha) theta_0 + "
        "alpha theta_1 on the last stage's validation set for each alpha of "
        "wise_ft_alphas, and keep the best alpha",
    )
    wise_ft_alphas: list[float] = knob(
        list(WISE_FT_ALPHAS), "WiSE-FT: the alpha grid, numbers in [0, 1] (a list or one text such as 0,0.5,1)"
    )
    wise_ft_scope: str = knob(
        "encoder",
        "WiSE-FT: what is interpolated, the encoder (the head stays fine-tuned) or the whole model",
        choices=WISE_FT_SCOPES,
    )
    reinit_layers: int = knob(
        0,
        "re-initialise the top k encoder layers (and the pooler) before fine-tuning "
        "(Zhang et al. 2021, --reinit_layers); 0: off",
    )
    layer_lr_decay: float = knob(
        1.0,
        "layer-wise learning-rate decay gamma: layer l trains at lr * gamma^(L - l), "
        "embeddings lowest, head at lr (Howard & Ruder 2018; "
        "--layerwise_learning_rate_decay); 1: off",
    )

    # --- adversarial regularizer (SMART and SiFT) ------------------------------------------
    perturb_at: str | None = knob(
        None,
        "where the push lives in the embedding block (siftkit.core.split); None: "
        "the method's published point (SMART, SiFT: embedding_output; the methods "
        "perturbing inputs_embeds: word_embeddings)",
        choices=PERTURB_POINTS,
    )
    adv_epsilon: float | None = knob(
        None, "radius of the per-token ball (SiFT: normalized units); projected rule only; None: the published default"
    )
    adv_noise_std: float | None = knob(
        None, "std of the initial noise (SiFT: normalized units); None: the published default"
    )
    adv_step_size: float | None = knob(None, "ascent step on the normalized gradient; None: the published default")
    adv_rule: str = knob(
        "projected",
        "how delta is made: the SMART paper's projected ascent or a public code's rule (siftkit.core.rules)",
        choices=ADV_RULES,
    )
    adv_steps: int = knob(1, "K, ascent steps per batch; 0: random noise only (no ascent)")
    adv_norm: str = knob("inf", "per-token norm of the step and the ball", choices=ADV_NORMS)
    adv_weight: float | None = knob(
        None, "lambda, weight of the regularizer R in the loss; None: the published default"
    )
    divergence: str = knob(
        "sym_kl", "the divergence R measures between clean and perturbed predictions", choices=DIVERGENCE_NAMES
    )

    # --- Bregman proximal point (SMART only) ---------------------------------------------
    bregman_weight: float | None = knob(
        None, "mu, weight of SMART's Bregman term; None: 1.0; 0 turns the term off (as the seed paper's code)"
    )
    bregman_beta: float | None = knob(None, "EMA factor of SMART's teacher, t <- (1-beta) theta + beta t; None: 0.99")

    # --- notes -----------------------------------------------------------------------------
    extra: dict[str, Any] = knob(
        {}, "free-form notes recorded with the config, a mapping (e.g. {tag: ablation})", repr=False
    )

    def __post_init__(self) -> None:
        self._coerce_types()
        _choice(self, "task", TASKS)
        _choice(self, "algo", ALGOS)
        self._resolve_algo_args()
        _choice(self, "perturb_at", PERTURB_POINTS)
        _choice(self, "adv_rule", ADV_RULES)
        _choice(self, "adv_norm", ADV_NORMS)
        _choice(self, "divergence", DIVERGENCE_NAMES)
        _choice(self, "mixed_precision", MIXED_PRECISION)
        _choice(self, "adv_stages", ADV_STAGES)
        for name in (
            "learning_rate",
            "per_device_train_batch_size",
            "per_device_eval_batch_size",
            "max_length",
            "num_train_epochs",
            "uci_num_train_epochs",
            "logging_steps",
            "twitter_subset",
        ):
            _positive(self, name)
        for name in ("weight_decay", "max_grad_norm", "save_steps", "twitter_negatives", "uci_val_size", "l2sp_weight"):
            _non_negative(self, name)
        if self.bregman_weight is not None:
            _non_negative(self, "bregman_weight")
        for name in (
            "max_train_samples",
            "max_eval_samples",
            "uci_train_size",
            "uci_learning_rate",
            "early_stopping_patience",
            "num_threads",
        ):
            if getattr(self, name) is not None:
                _positive(self, name)
        if not 0.0 <= self.max_nonfinite_fraction <= 1.0:
            raise ValueError(
                f"max_nonfinite_fraction must be in [0, 1] (the share of a stage's steps that may be "
                f"non-finite before the run fails), got {self.max_nonfinite_fraction!r}"
            )
        _in_open_unit(self, "twitter_val_fraction")
        _in_open_unit(self, "uci_train_fraction")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise ValueError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio!r}")
        if self.bregman_beta is not None and not 0.0 <= self.bregman_beta < 1.0:
            raise ValueError(f"bregman_beta must be in [0, 1), got {self.bregman_beta!r}")
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed!r}")
        _check_run_fields(self)
        _check_shift(self)
        _check_ood_methods(self)
        _check_controls(self)
        self._resolve_adversarial_defaults()
        self._resolve_bregman()
        # train() compares: a later `cfg.algo = ...` would keep the old algorithm's defaults.
        self._resolved_algo = self.algo

    def _resolve_bregman(self) -> None:
        """SMART's Bregman knobs get their defaults; other algorithms record None.

        Only SMART has a Bregman term, so a plain or SiFT run records ``None`` for both
        knobs — what was used — even when a value was passed (as results.json files
        written before this rule carry ``bregman_weight: 1.0`` for SiFT runs; they must
        still rebuild a RunConfig).
        """
        if self.algo != "smart":
            _check_unused_bregman(self)
            self.bregman_weight = self.bregman_beta = None
            return
        for name, default in BREGMAN_DEFAULTS.items():
            if getattr(self, name) is None:
                setattr(self, name, default)

    # ------------------------------------------------------------------------------------
    def _resolve_adversarial_defaults(self) -> None:
        if self.algo not in methods.FLAT_KNOB_METHODS:
            _check_unused_flat_knobs(self)
            return
        if self.algo == "plain":
            for name, value in ALGO_DEFAULTS["plain"].items():
                if getattr(self, name) is None:
                    setattr(self, name, value)
            # Unused by plain, but a negative radius/step/weight or K is never meaningful:
            # say so instead of silently recording it in results.json.
            for name in _ADV_KNOBS:
                _non_negative(self, name)
            if self.adv_steps < 0:
                raise ValueError(f"adv_steps must be >= 0, got {self.adv_steps!r}")
            _check_unused_by_plain(self)
            return
        if self.adv_steps < 0:
            raise ValueError(
                f"adv_steps must be >= 0 for algo={self.algo!r} (0: random noise, no ascent), got {self.adv_steps!r}"
            )
        defaults = dict(RULE_DEFAULTS[self.adv_rule][self.algo])
        if self.adv_steps == 0:
            defaults["adv_step_size"] = None  # no ascent, no step
        for name, default in defaults.items():
            value = getattr(self, name)
            if default is None and value is not None:
                why = "it has no eps-ball" if name == "adv_epsilon" else "adv_steps=0 takes no ascent step"
                raise ValueError(
                    f"{name}={value!r} is not used by adv_rule={self.adv_rule!r} with "
                    f"adv_steps={self.adv_steps} ({why}); leave it unset"
                )
            if value is None:
                setattr(self, name, default)
        # A regularized run needs a real ball and a real step where the rule has them.
        for name in ("adv_epsilon", "adv_step_size"):
            if getattr(self, name) is not None:
                _positive(self, name)
        _non_negative(self, "adv_noise_std")
        _non_negative(self, "adv_weight")
        check_rule_settings(self.adv_rule, self.adv_norm, self.divergence)  # the same check as the regularizer's

    def _coerce_types(self) -> None:
        """Accept ints for floats and numeric strings from YAML/CLI; reject the rest by name."""
        hints = get_type_hints(type(self))
        for f in fields(self):
            if f.name == "extra":
                if not isinstance(self.extra, dict):
                    raise ValueError(f"extra must be a mapping, got {type(self.extra).__name__}")
                _check_extra_is_json(self.extra)
                if not isinstance(self.extra.get("tag") or "", str):  # summarize names variants by it
                    raise ValueError(
                        f"extra's tag must be text (it names the run's variant), got {self.extra['tag']!r}"
                    )
                continue
            if f.name == "algo_args":
                if not isinstance(self.algo_args, dict):
                    raise ValueError(f"algo_args must be a mapping of the method's knobs, got {self.algo_args!r}")
                continue
            if f.name == "report_to":
                self.report_to = _report_to(self.report_to)
                continue
            if f.name == "wise_ft_alphas":
                self.wise_ft_alphas = _alphas(self.wise_ft_alphas)
                continue
            value = getattr(self, f.name)
            setattr(self, f.name, _coerce(f.name, value, hints[f.name]))

    def _resolve_algo_args(self) -> None:
        """`algo_args` checked against the method's settings and filled with its defaults; the
        perturbation point resolved to the method's own where unset."""
        settings = methods.settings_class(self.algo)
        if settings is None:
            if self.algo_args:
                owners = methods.knob_owners()
                named = ", ".join(f"{k!r} ({'/'.join(owners[k])})" if k in owners else repr(k) for k in self.algo_args)
                raise ValueError(f"algo={self.algo!r} has no knobs of its own; algo_args holds {named}")
            if self.perturb_at is None:
                self.perturb_at = "embedding_output"
            return
        try:
            resolved = settings.from_mapping(self.algo_args)
        except ValueError as exc:
            owners = methods.knob_owners()
            others = [
                f"{k!r} is a knob of {'/'.join(owners[k])}"
                for k in self.algo_args
                if k in owners and self.algo not in owners[k]
            ]
            raise ValueError(f"{exc}{'; ' + '; '.join(others) if others else ''}") from None
        self.algo_args = resolved.to_dict()
        points = getattr(settings, "perturb_points", ())
        if self.perturb_at is None:
            self.perturb_at = points[0] if points else "embedding_output"
        elif points and self.perturb_at not in points:
            raise ValueError(
                f"perturb_at={self.perturb_at!r} is not a point algo={self.algo!r} perturbs; it takes "
                f"{', '.join(map(repr, points))}"
            )
        elif not points and self.perturb_at != "embedding_output":
            raise ValueError(
                f"perturb_at={self.perturb_at!r} is not used by algo={self.algo!r} (it perturbs no "
                f"input); leave it unset"
            )

    @property
    def settings(self):
        """The method's own knobs as its settings object (None for plain, SMART and SiFT)."""
        cls = methods.settings_class(self.algo)
        return None if cls is None else cls.from_mapping(self.algo_args)

    @property
    def regularized(self) -> bool:
        """Whether the method does anything beyond plain fine-tuning's batch (adv_stages chooses where)."""
        return self.algo != "plain"

    @property
    def uses_bregman(self) -> bool:
        return self.algo == "smart" and self.bregman_weight > 0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> RunConfig:
        """A copy with `changes`; resolved adversarial knobs are re-derived if `algo`,
        `adv_rule` or `adv_steps` (to or from 0) changes, unless `changes` sets them."""
        data = self.to_dict()
        steps = changes.get("adv_steps", self.adv_steps)
        if (
            changes.get("algo", self.algo) != self.algo
            or changes.get("adv_rule", self.adv_rule) != self.adv_rule
            or (steps == 0) != (self.adv_steps == 0)
        ):
            for name in _ADV_KNOBS:
                data[name] = None
        if changes.get("algo", self.algo) != self.algo:
            data.update(dict.fromkeys(BREGMAN_DEFAULTS))  # SMART's alone: re-derived for the new algorithm
            data.update(algo_args={}, perturb_at=None)  # the new method's own knobs and point
        data.update(changes)
        return RunConfig.from_dict(data)

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    @classmethod
    def input_names(cls) -> list[str]:
        """The names a config may be given by: the fields, and every method's own knobs."""
        return cls.field_names() + [k for k in methods.knob_owners() if k not in cls.field_names()]

    @classmethod
    def input_type(cls, name: str) -> Any:
        """The annotated type of a field, or of a method's knob of that name."""
        hints = get_type_hints(cls)
        if name in hints:
            return hints[name]
        owner = methods.knob_owners()[name][0]
        return get_type_hints(methods.settings_class(owner))[name]

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str = "config") -> RunConfig:
        """A config from field values, where a method's knobs may also be given by their own names."""
        fields_, owners = set(cls.field_names()), methods.knob_owners()
        unknown = sorted(k for k in set(data) - fields_ if k not in owners)
        if unknown:
            raise ValueError(
                f"unknown field(s) in {source}: {', '.join(unknown)}; "
                f"known fields: {', '.join(cls.field_names())}; method knobs: {', '.join(sorted(owners)) or 'none'}"
            )
        data = dict(data)
        knobs = {k: data.pop(k) for k in list(data) if k not in fields_}
        if knobs:
            nested = data.get("algo_args") or {}
            if not isinstance(nested, dict):
                raise ValueError(f"algo_args must be a mapping of the method's knobs, got {nested!r}")
            twice = sorted(set(knobs) & set(nested))
            if twice:
                raise ValueError(f"{', '.join(twice)} given both by name and in algo_args in {source}; give it once")
            data["algo_args"] = {**nested, **knobs}
        return cls(**data)

    @classmethod
    def from_yaml(cls, path: str | Path | Sequence[str | Path] | None = None, **overrides: Any) -> RunConfig:
        """Defaults, then the YAML file's overrides, then keyword overrides.

        The file is read by `load_yaml`: numbers as in YAML 1.2 (`010` is 10, `1e-3` a float),
        and a key given twice is an error. Several files (``--params a.yaml --params b.yaml``)
        are merged in the order given, a later file's value replacing an earlier one's.
        """
        paths = [] if path is None else [path] if isinstance(path, (str, Path)) else list(path)
        data: dict[str, Any] = {}
        for one in paths:
            data.update(cls._params_file(Path(one)))
        data.update({k: v for k, v in overrides.items()})
        return cls.from_dict(data, source=", ".join(map(str, paths)) if paths else "overrides")

    @classmethod
    def _params_file(cls, path: Path) -> dict[str, Any]:
        """One params file's mapping of field: value, checked (a ValueError names the file)."""
        import yaml

        if not path.is_file():
            from siftkit.core.paths import loop_note

            raise ValueError(
                f"params file {path} is a folder, not a file; name the YAML file in it"
                if path.is_dir()
                else f"params file not found: {path}{loop_note(path)}"
            )
        try:
            text = path.read_text(encoding="utf-8")
            loaded = load_yaml(text)
        except yaml.YAMLError as exc:
            raise ValueError(
                f"params file {path} is not valid YAML: {_yaml_problem(exc)}{_space_lookalike(text)}"
            ) from None
        except UnicodeDecodeError as exc:
            raise ValueError(f"params file {path} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ValueError(f"params file {path} must hold a mapping of field: value{_space_lookalike(text)}")
        unknown = sorted(set(loaded) - set(cls.input_names()), key=str)
        if unknown:
            raise ValueError(
                f"unknown field(s) in {path}: {', '.join(map(str, unknown))}"
                f"{_lookalike_keys(unknown, text, cls.input_names())}"
            )
        if "shift" in loaded:  # the spec's relative paths are the params file's, wherever the run starts
            from siftkit.data.shift_spec import anchored

            loaded["shift"] = anchored(loaded["shift"], path.resolve().parent)
        return loaded


def _yaml_problem(exc: Exception) -> str:
    """One line from a YAML error: what is wrong and where (1-based), not PyYAML's dump."""
    mark, problem = getattr(exc, "problem_mark", None), getattr(exc, "problem", None)
    if mark is None or problem is None:
        return " ".join(str(exc).split())
    text = f"{problem} at line {mark.line + 1}, column {mark.column + 1}"
    context, start = getattr(exc, "context", None), getattr(exc, "context_mark", None)
    if context and start is not None:
        text += f" ({context} at line {start.line + 1}, column {start.column + 1})"
    return text


def _char_name(ch: str) -> str:
    return f"{ch!r} (U+{ord(ch):04X} {unicodedata.name(ch, 'unnamed character')})"


def _space_lookalike(text: str) -> str:
    """'; line 2, column 14 holds ...' for the first non-ASCII space or invisible character:
    YAML reads a non-breaking space (pasted from a web page) as part of a word, so the file
    fails with an error about a missing ':' that does not show the cause."""
    for number, line in enumerate(text.split("\n"), start=1):
        for column, ch in enumerate(line, start=1):
            if ord(ch) > 127 and unicodedata.category(ch) in ("Zs", "Cf", "Cc"):
                return (
                    f"; line {number}, column {column} holds {_char_name(ch)}, which YAML does not read as "
                    f"a space: type a plain space there"
                )
    return ""


def _lookalike_keys(keys: list, text: str, names: list[str]) -> str:
    """For unknown keys with non-ASCII characters (a Cyrillic 'а' in 'leаrning_rate' looks
    exactly like the field): name the character, its line and the field it imitates."""
    notes = []
    for key in map(str, keys):
        odd = [ch for ch in key if ord(ch) > 127]
        if not odd:
            continue
        line = next((n for n, row in enumerate(text.split("\n"), start=1) if key in row), None)
        ascii_key = unicodedata.normalize("NFKD", key).encode("ascii", "ignore").decode()
        close = difflib.get_close_matches(ascii_key or key, names, n=1, cutoff=0.8)
        where = f"line {line}: " if line else ""
        note = f"{where}{key!r} holds {', '.join(map(_char_name, dict.fromkeys(odd)))}, not ASCII"
        if close:
            note += f"; did you mean {close[0]}?"
        notes.append(note)
    return " (" + "; ".join(notes) + ")" if notes else ""


# ----------------------------------------------------------------------------------------
# validation helpers: every message names the field and what is allowed


def _choice(cfg: RunConfig, name: str, allowed: tuple[str, ...]) -> None:
    value = getattr(cfg, name)
    if value not in allowed:
        odd = [ch for ch in dict.fromkeys(str(value)) if ord(ch) > 127]  # 'sіft' with a Ukrainian і looks right
        note = f" (it holds {', '.join(map(_char_name, odd))}, not ASCII)" if odd else ""
        raise ValueError(f"{name} must be one of {', '.join(map(repr, allowed))}; got {value!r}{note}")


def _positive(cfg: RunConfig, name: str) -> None:
    value = getattr(cfg, name)
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")


def _non_negative(cfg: RunConfig, name: str) -> None:
    value = getattr(cfg, name)
    if not (value >= 0 and math.isfinite(value)):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")


def _in_open_unit(cfg: RunConfig, name: str) -> None:
    value = getattr(cfg, name)
    if not 0.0 < value < 1.0:
        raise ValueError(f"{name} must be in (0, 1), got {value!r}")


_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


def _coerce(name: str, value: Any, hint: Any) -> Any:
    """Coerce `value` to the annotated type of field `name`, or raise ValueError naming it."""
    args = getattr(hint, "__args__", ())
    optional = type(None) in args
    base = next((a for a in args if a is not type(None)), hint) if args else hint
    if value is None or (isinstance(value, str) and value.lower() in {"none", "null"} and optional):
        if optional:
            return None
        raise ValueError(f"{name} must not be None")
    try:
        if base is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in _TRUE | _FALSE:
                return value.lower() in _TRUE
            if isinstance(value, int) and value in (0, 1):
                return bool(value)
            raise TypeError
        if base is int:
            if isinstance(value, bool):
                raise TypeError
            if isinstance(value, float):
                if not value.is_integer():
                    raise TypeError
                return int(value)
            return int(value)
        if base is float:
            if isinstance(value, bool):
                raise TypeError
            return float(value)
        if base is str:
            if not isinstance(value, (str, Path)):
                raise TypeError
            return str(value)
    except (TypeError, ValueError):
        tname = getattr(base, "__name__", str(base))
        raise ValueError(f"{name} must be of type {tname}, got {value!r}") from None
    return value


def _report_to(value: Any) -> list[str]:
    """`report_to` as a list of tracker names, each once, in the order given.

    Takes a list (YAML, Python) or one comma-separated text (the CLI's ``--report_to
    tensorboard,mlflow``, papermill's ``-p report_to tensorboard``); ``None``, ``"none"`` and
    ``""`` mean no tracker, as in transformers' ``TrainingArguments.report_to``. There is no
    ``"all"``: which trackers a run reports to must not depend on what happens to be installed.
    """
    if value is None:
        return []
    if isinstance(value, str):
        value = value.split(",")
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise ValueError(
            f"report_to must be a list of tracker names ({', '.join(map(repr, TRACKERS))}) or 'none', got {value!r}"
        )
    names = [v.strip().lower() for v in value if v.strip()]
    if names == ["none"]:
        return []
    bad = [v for v in names if v not in TRACKERS]
    if bad:
        raise ValueError(
            f"report_to names unknown tracker(s) {', '.join(map(repr, bad))}; choose from "
            f"{', '.join(map(repr, TRACKERS))}, or 'none'"
        )
    return list(dict.fromkeys(names))


# ----------------------------------------------------------------------------------------
# checks that span fields or need more than a sign test

# accelerate's set_seed seeds numpy's legacy generator, which takes 0 <= seed < 2**32.
SEED_MAX = 2**32 - 1
# Sizes and counts: `--per_device_train_batch_size 1e20` reached the data loader and failed as
# "Stop argument for islice()".
COUNT_MAX = 2**31 - 1
_COUNTS = (
    "per_device_train_batch_size",
    "per_device_eval_batch_size",
    "max_length",
    "num_train_epochs",
    "uci_num_train_epochs",
    "logging_steps",
    "save_steps",
    "max_train_samples",
    "max_eval_samples",
    "twitter_subset",
    "twitter_negatives",
    "uci_train_size",
    "uci_val_size",
    "early_stopping_patience",
)

# Path-like fields: '~' is the user's home (as in a shell and in the notebooks), and an empty
# string (an unset shell variable, `-p output_dir ""`) would silently mean the current folder.
_PATH_HINTS = {
    "output_dir": "name the run's folder (e.g. runs/exp); '.' if the current folder is really meant",
    "stage_cache_dir": "name the cache folder, or leave stage_cache_dir unset (None) for no cache",
    "data_dir": "name the data folder, or leave data_dir unset (None) for the default",
    "model_name": "give a Hub name or a model folder, or leave model_name unset (None) for the offline "
    f"default {DEFAULT_MODEL_NAME}",
}


def _check_run_fields(cfg: RunConfig) -> None:
    """The optimizer's epsilon, the seed's range, path fields and the Twitter split sizes."""
    _positive(cfg, "adam_epsilon")  # inf froze the weights, nan/-1 failed deep in AdamW
    _check_learning_rates(cfg)
    if cfg.seed > SEED_MAX:
        raise ValueError(f"seed must be <= {SEED_MAX} (2**32 - 1, the largest seed numpy takes), got {cfg.seed!r}")
    for name in _COUNTS:
        value = getattr(cfg, name, None)
        if isinstance(value, int) and value > COUNT_MAX:
            raise ValueError(
                f"{name} must be <= {COUNT_MAX} (2**31 - 1; torch and Python's slicing take no more), "
                f"got {value} ({float(value):g})"
            )
    for name, hint in _PATH_HINTS.items():
        value = getattr(cfg, name)
        if value is None:
            continue
        if not value.strip():
            raise ValueError(f"{name} is empty ({value!r}); {hint}")
        if value.startswith("~"):
            setattr(cfg, name, os.path.expanduser(value))
    _check_twitter_split(cfg)


def _check_controls(cfg: RunConfig) -> None:
    """The controls of docs/comparing_fairly.md: ranges, and settings that would do nothing.

    A control that cannot act in this run is refused rather than recorded as if it had: a
    stage-boundary control on a one-stage protocol, ``adv_stages`` without a regularizer,
    L2-SP on a frozen encoder.
    """
    if not (0.0 <= cfg.label_smoothing < 1.0 and math.isfinite(cfg.label_smoothing)):
        raise ValueError(f"label_smoothing must be in [0, 1), got {cfg.label_smoothing!r}")
    one_stage = cfg.task == "cola" or (cfg.task == "shift" and len(cfg.shift["stages"]) == 1)
    if cfg.reinit_head and one_stage:
        raise ValueError(
            f"reinit_head re-initialises the head before a later stage; task={cfg.task!r} has one "
            f"stage, so it would do nothing"
        )
    if cfg.adv_stages != "all" and cfg.algo == "plain":
        raise ValueError(
            f"adv_stages={cfg.adv_stages!r} chooses the stages of SMART's and SiFT's regularizer; "
            f"algo='plain' has none (leave adv_stages='all')"
        )
    if cfg.adv_stages != "all" and one_stage:
        raise ValueError(
            f"adv_stages={cfg.adv_stages!r} needs a protocol with several stages; task={cfg.task!r} "
            f"has one (leave adv_stages='all')"
        )
    if cfg.freeze_encoder and cfg.l2sp_weight > 0:
        raise ValueError(
            f"l2sp_weight={cfg.l2sp_weight!r} pulls the encoder toward its pre-trained weights, but "
            f"freeze_encoder=True keeps it there; set one of them"
        )
    if cfg.early_stopping_patience is not None and cfg.task == "shift":
        unvalidated = [s["name"] for s in cfg.shift["stages"] if s.get("validation") is None]
        if unvalidated:
            raise ValueError(
                f"early_stopping_patience={cfg.early_stopping_patience} watches each stage's validation "
                f"set, and shift stage(s) {', '.join(map(repr, unvalidated))} have none; give each a "
                f"validation (e.g. validation: {{fraction: 0.1}})"
            )
    if cfg.early_stopping_patience is not None and cfg.task == "twitter_to_uci" and not cfg.uci_val_size:
        raise ValueError(
            f"early_stopping_patience={cfg.early_stopping_patience} watches each stage's validation "
            f"set, and P2's UCI stage has none with uci_val_size=0; set uci_val_size (e.g. 300)"
        )
    if cfg.uci_val_size and cfg.task != "twitter_to_uci":
        raise ValueError(
            f"uci_val_size={cfg.uci_val_size} holds out UCI sentences of P2 (task='twitter_to_uci'); "
            f"task={cfg.task!r} selects on its own dev set"
        )


def _alphas(value: Any) -> list[float]:
    """`wise_ft_alphas` as a sorted list of distinct numbers in [0, 1].

    Takes a list (YAML, Python), one comma-separated text (the CLI's ``--wise_ft_alphas
    0,0.5,1``, a notebook's ``-p wise_ft_alphas 0,0.5,1``; a YAML-style ``[0, 0.5, 1]`` too) or one
    number.
    """
    text = value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = [value]  # one alpha (`--wise_ft_alphas 0.5` arrives as a number)
    if isinstance(value, str):
        text = value.strip().removeprefix("[").removesuffix("]")
        value = [w.strip() for w in text.split(",") if w.strip()]
    if not isinstance(value, (list, tuple)):
        raise ValueError(f"wise_ft_alphas must be a list of numbers in [0, 1] (or one text '0,0.5,1'), got {text!r}")
    alphas = []
    for item in value:
        try:
            if isinstance(item, bool):
                raise ValueError
            alpha = float(item)
        except (TypeError, ValueError):
            raise ValueError(f"wise_ft_alphas must hold numbers in [0, 1]; {item!r} is not a number") from None
        if not 0.0 <= alpha <= 1.0:  # also refuses nan
            raise ValueError(
                f"wise_ft_alphas must hold numbers in [0, 1] (theta_alpha = (1 - alpha) theta_0 + alpha "
                f"theta_1 interpolates, it does not extrapolate), got {item!r}"
            )
        alphas.append(alpha)
    if not alphas:
        raise ValueError("wise_ft_alphas is empty; give the alphas to choose among, e.g. 0,0.1,...,1 (the default)")
    twice = sorted({a for a in alphas if alphas.count(a) > 1})
    if twice:
        raise ValueError(f"wise_ft_alphas lists {', '.join(f'{a:g}' for a in twice)} more than once")
    return sorted(alphas)


def _validated_stages(cfg: RunConfig) -> list[tuple[str, bool]]:
    """(name, has a validation set) of each stage of the protocol, in order (known from the config alone)."""
    if cfg.task == "cola":
        return [("cola", True)]
    if cfg.task == "twitter_to_uci":
        return [("twitter", True), ("uci", bool(cfg.uci_val_size))]
    return [(s["name"], s.get("validation") is not None) for s in cfg.shift["stages"]]


def probed_stages(cfg: RunConfig, n_stages: int) -> list[int]:
    """The stage indices LP-FT probes before fine-tuning them (none with ``lp_ft_epochs`` 0)."""
    if not cfg.lp_ft_epochs:
        return []
    return {"all": list(range(n_stages)), "first": [0], "last": [n_stages - 1]}[cfg.lp_ft_stages]


_WHERE_VALIDATION = {
    "twitter_to_uci": "set uci_val_size (e.g. 300)",
    "shift": "give the stage a validation (e.g. validation: {fraction: 0.1})",
}


def _check_ood_methods(cfg: RunConfig) -> None:
    """LP-FT, WiSE-FT, re-initialised layers and layer-wise decay: ranges, settings that would
    do nothing, and the validation sets they need (docs/robustness.md)."""
    _choice(cfg, "lp_ft_stages", LP_FT_STAGES)
    _choice(cfg, "wise_ft_scope", WISE_FT_SCOPES)
    for name in ("lp_ft_epochs", "reinit_layers"):
        _non_negative(cfg, name)
    _positive(cfg, "lp_ft_learning_rate")
    if not (0.0 < cfg.layer_lr_decay <= 1.0):  # also refuses nan
        raise ValueError(
            f"layer_lr_decay must be in (0, 1] (layer l trains at learning_rate * layer_lr_decay^(L - l); "
            f"1 turns the decay off), got {cfg.layer_lr_decay!r}"
        )
    defaults = {
        f.name: (f.default if f.default is not dataclasses.MISSING else f.default_factory()) for f in fields(cfg)
    }
    for owner, on, knobs in (
        ("lp_ft_epochs", cfg.lp_ft_epochs > 0, ("lp_ft_learning_rate", "lp_ft_stages")),
        ("wise_ft", cfg.wise_ft, ("wise_ft_alphas", "wise_ft_scope")),
    ):
        for name in knobs:
            if not on and getattr(cfg, name) != defaults[name]:
                raise ValueError(
                    f"{name}={getattr(cfg, name)!r} is a setting of {owner}, which is off; set {owner} "
                    f"(e.g. {'--lp_ft_epochs 1' if owner == 'lp_ft_epochs' else '--wise_ft'}), or leave "
                    f"{name} at its default {defaults[name]!r}"
                )
    stages = _validated_stages(cfg)
    how = _WHERE_VALIDATION.get(cfg.task, "")
    for name, on in (("layer_lr_decay", cfg.layer_lr_decay != 1.0), ("reinit_layers", cfg.reinit_layers > 0)):
        if on and cfg.freeze_encoder:
            raise ValueError(
                f"{name}={getattr(cfg, name)!r} acts on the encoder's layers, and freeze_encoder=True "
                f"never trains them; set one of them"
            )
    if cfg.lp_ft_epochs and cfg.freeze_encoder:
        raise ValueError(
            f"lp_ft_epochs={cfg.lp_ft_epochs} probes the head before fine-tuning the whole model, but "
            f"freeze_encoder=True never fine-tunes the encoder; set one of them"
        )
    if cfg.lp_ft_epochs and cfg.early_stopping_patience is not None:
        blind = [stages[i][0] for i in probed_stages(cfg, len(stages)) if not stages[i][1]]
        if blind:
            raise ValueError(
                f"lp_ft_stages={cfg.lp_ft_stages!r} probes stage(s) {', '.join(map(repr, blind))}, which "
                f"have no validation set, and early_stopping_patience={cfg.early_stopping_patience} "
                f"chooses the probe's best epoch on one; {how or 'give each a validation set'}, or "
                f"probe other stages"
            )
    if cfg.wise_ft:
        last, validated = stages[-1]
        if not validated:
            raise ValueError(
                f"wise_ft=True chooses alpha on the last stage's validation set (never on a test set), "
                f"and stage {last!r} has none; {how or 'give it a validation set'}"
            )
        if cfg.freeze_encoder and cfg.wise_ft_scope == "encoder":
            raise ValueError(
                "wise_ft=True with wise_ft_scope='encoder' interpolates the encoder, but freeze_encoder=True "
                "keeps it at theta_0, so every alpha is the same model; set one of them (or "
                "wise_ft_scope='model')"
            )


def _check_shift(cfg: RunConfig) -> None:
    """task="shift" needs a spec (read from its file when `shift` is a path) and only it takes one."""
    if cfg.task != "shift":
        if cfg.shift is not None:
            raise ValueError(
                f"shift (a domain-shift spec) is used by task='shift' only; task={cfg.task!r} has its "
                f"own data (set task: shift, or leave shift unset)"
            )
        return
    from siftkit.data.shift_spec import load_spec_mapping, parse_spec

    if cfg.shift is None:
        raise ValueError(
            "task='shift' needs a spec in the field shift (a mapping with name, labels, stages and "
            "evals, or the path of a YAML file holding it); see docs/your_shift.md"
        )
    # Held as JSON holds it (label_map's key 1 becomes "1"): the config in memory, in
    # results.json and in a checkpoint is then one value, so a resume or a summary compares
    # like with like.
    cfg.shift = json.loads(json.dumps(load_spec_mapping(cfg.shift), ensure_ascii=False, default=str))
    parse_spec(cfg.shift)


def _check_twitter_split(cfg: RunConfig) -> None:
    """The validation share of `twitter_subset` tweets must leave both parts non-empty.

    The same rounding as `protocols.twitter_subset`, which checks again with the number of
    tweets the data really give (fewer when `twitter_negatives` is small).
    """
    n_val = int(round(cfg.twitter_subset * cfg.twitter_val_fraction))
    if not 1 <= n_val < cfg.twitter_subset:
        raise ValueError(
            f"twitter_subset={cfg.twitter_subset} with twitter_val_fraction={cfg.twitter_val_fraction} leaves "
            f"{cfg.twitter_subset - n_val} tweet(s) for training and {n_val} for validation; each needs at "
            f"least one"
        )


# AdamW's first update is learning_rate / (1 - beta1) = 10 x the rate, and torch turns it
# into a float32: a rate above this failed inside AdamW with "cannot be converted to type
# float without overflow" (1e300), after the data and the model were loaded.
_FLOAT32_MAX = 3.4028234663852886e38
LEARNING_RATE_MAX = _FLOAT32_MAX / 10


def _check_learning_rates(cfg: RunConfig) -> None:
    for name in ("learning_rate", "uci_learning_rate", "lp_ft_learning_rate"):
        value = getattr(cfg, name)
        if value is None or not math.isfinite(value):
            continue  # _positive reports nan/inf
        if value >= LEARNING_RATE_MAX:
            raise ValueError(
                f"{name} must be < {LEARNING_RATE_MAX:.3g} (AdamW's first step is 10 x the rate and "
                f"must fit a float32), got {value!r}"
            )
        # AdamW's decoupled decay multiplies the weights by 1 - rate * weight_decay (a float32).
        if math.isfinite(cfg.weight_decay) and value * cfg.weight_decay >= _FLOAT32_MAX:
            raise ValueError(
                f"{name} x weight_decay = {value * cfg.weight_decay:.3g} does not fit a float32 "
                f"(AdamW scales the weights by 1 - {name} x weight_decay); got {name}={value!r}, "
                f"weight_decay={cfg.weight_decay!r}"
            )


# Values a plain run records for the regularizer's knobs (it has none): unset, or the
# resolved 0.0; for the knobs with a fixed default, that default.
_PLAIN_UNUSED_DEFAULTS = ("adv_rule", "adv_steps", "adv_norm", "perturb_at", "divergence")
# Values of the Bregman knobs that runs of plain and SiFT have recorded (older versions wrote
# SMART's resolved defaults for every algorithm; a sweep over smart,sift with
# --bregman_weight 0 wrote 0): accepted, so those records rebuild; any other value is an error.
_RECORDED_BREGMAN = {"bregman_weight": (0.0, 1.0), "bregman_beta": (0.99,)}


def _check_unused_by_plain(cfg: RunConfig) -> None:
    """Plain fine-tuning has no regularizer: a knob of it set to something is an error,
    not a value silently recorded in results.json as if it had been used."""
    why = "plain fine-tuning has no adversarial regularizer"
    for name in _ADV_KNOBS:
        value = getattr(cfg, name)
        if value not in (None, 0.0):
            raise ValueError(
                f"{name}={value!r} is not used by algo='plain' ({why}); leave it unset, or choose "
                f"algo='smart' or 'sift'"
            )
    defaults = {f.name: f.default for f in fields(cfg)}
    defaults["perturb_at"] = "embedding_output"  # None resolves to it
    for name in _PLAIN_UNUSED_DEFAULTS:
        value = getattr(cfg, name)
        if value != defaults[name]:
            raise ValueError(
                f"{name}={value!r} is not used by algo='plain' ({why}); leave it at its default "
                f"{defaults[name]!r}, or choose algo='smart' or 'sift'"
            )


def _check_unused_flat_knobs(cfg: RunConfig) -> None:
    """A method with knobs of its own (FreeLB, R3F, ...) uses none of SMART's and SiFT's shared
    regularizer fields: setting one is an error that names the method's own knobs instead."""
    own = ", ".join(cfg.algo_args) or "none"
    for name in _ADV_KNOBS:
        value = getattr(cfg, name)
        if value is not None:
            raise ValueError(
                f"{name}={value!r} is SMART's and SiFT's knob, not used by algo={cfg.algo!r}; leave it "
                f"unset (algo={cfg.algo!r}'s knobs: {own})"
            )
    defaults = {f.name: f.default for f in fields(cfg)}
    for name in ("adv_rule", "adv_steps", "adv_norm", "divergence"):
        value = getattr(cfg, name)
        if value != defaults[name]:
            raise ValueError(
                f"{name}={value!r} is SMART's and SiFT's knob, not used by algo={cfg.algo!r}; leave it at "
                f"its default {defaults[name]!r} (algo={cfg.algo!r}'s knobs: {own})"
            )


def _check_unused_bregman(cfg: RunConfig) -> None:
    for name, recorded in _RECORDED_BREGMAN.items():
        value = getattr(cfg, name)
        if value is not None and value not in recorded:
            raise ValueError(
                f"{name}={value!r} is not used by algo={cfg.algo!r} (only SMART has a Bregman term); "
                f"leave it unset, or choose algo='smart'"
            )


def _json_problem(value: Any, where: str) -> tuple[str, Any] | None:
    """The first part of `value` that JSON cannot hold, as (where, what); None if all can."""
    if value is None or isinstance(value, (str, bool, int, float)):
        return None
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            found = _json_problem(item, f"{where}[{i}]")
            if found:
                return found
        return None
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, (str, int, float, bool)) and key is not None:
                return f"{where} key", key
            found = _json_problem(item, f"{where}[{key!r}]")
            if found:
                return found
        return None
    return where, value


def _check_extra_is_json(extra: dict) -> None:
    """results.json and checkpoints record `extra`: check up front that JSON can hold it,
    instead of failing after the whole run has trained (a YAML date, `{date: 2024-05-01}`)."""
    found = _json_problem(extra, "extra")
    if found:
        where, value = found
        # YAML reads an unquoted 2024-05-01 as a date: quoting keeps the text the user typed.
        hint = (
            f"quote it to keep it as text, e.g. '{value}'"
            if isinstance(value, (datetime.date, datetime.time))
            else "give it as text or a number"
        )
        raise ValueError(
            f"extra must hold only JSON values (text, numbers, true/false, null, lists, mappings); "
            f"{where} is {value!r} (a {type(value).__name__}); {hint}"
        )
