"""The numbers the notebooks show: embedding statistics per domain, SMART's and SiFT's
perturbations measured on real tokens, token-norm shifts after fine-tuning (the tables of
finished runs are `siftkit.study.tables`).

Everything here works on any encoder classifier that `EmbeddingSplit` supports and returns a
tidy `pandas.DataFrame` (one row per token occurrence, or per run), so the notebooks only
plot and `siftkit.explore.plotting` draws from these frames.

Token statistics cover *real* tokens only (attention mask 1, the special ``[CLS]``/``[SEP]``
included, flagged in the ``special`` column); padding never enters a number. Models are
put in eval mode (no dropout) for the measurement and restored afterwards; nothing here
updates a parameter.

Units: a token's ``norm`` is the L2 norm ``||z_t||`` of its vector at the perturbation point,
in that tensor's own units; ``mean`` and ``std`` are the per-token statistics over the hidden
dimension that SiFT normalizes by (population std, as in `AdversarialRegularizer.token_scale`).
"""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from siftkit.core import spectral_norm
from siftkit.core.divergences import get_divergence
from siftkit.core.perturbation_specs import BLOCK_ORDER, PERTURB_POINTS, TINY
from siftkit.core.regularizers import REGULARIZERS, AdversarialRegularizer
from siftkit.core.split import EmbeddingSplit
from siftkit.run.config import RunConfig
from siftkit.study.style import ALGO_LABELS
from siftkit.study.tables import model_label

# Where each domain's texts come from: (dataset, split).
DOMAINS: dict[str, tuple[str, str]] = {
    "twitter": ("twitter_hate", "train"),
    "uci": ("uci_sentiment", "pool"),
    "cola": ("cola", "train"),
}
_DOMAIN_SAMPLE = 10  # numpy stream id of the domain samples (siftkit.run.protocols uses 1 to 4)


# ----------------------------------------------------------------------------- helpers


@contextlib.contextmanager
def eval_mode(*models: torch.nn.Module) -> Iterator[None]:
    """Models in eval mode (no dropout) inside the block, their own mode restored after."""
    modes = [m.training for m in models]
    try:
        for m in models:
            m.eval()
        yield
    finally:
        for m, mode in zip(models, modes):
            m.train(mode)


def _device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def _texts_by_domain(texts: Sequence[str] | Mapping[str, Sequence[str]]) -> dict[str, list[str]]:
    if isinstance(texts, Mapping):
        return {str(k): list(v) for k, v in texts.items()}
    if isinstance(texts, str):
        raise TypeError("texts must be a list of strings or a mapping domain -> list of strings")
    return {"": list(texts)}


def _points(at: str | Sequence[str]) -> list[str]:
    points = [at] if isinstance(at, str) else list(at)
    for p in points:
        if p not in PERTURB_POINTS:
            raise ValueError(f"perturb_at must be one of {', '.join(map(repr, PERTURB_POINTS))}; got {p!r}")
    return points


def _batches(tokenizer, texts: Sequence[str], max_length: int, batch_size: int, device) -> Iterator[tuple[int, dict]]:
    """(index of the batch's first text, padded batch on `device`)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size!r}")
    for start in range(0, len(texts), batch_size):
        enc = tokenizer(
            list(texts[start : start + batch_size]),
            truncation=True,
            max_length=max_length,
            padding=True,
            return_tensors="pt",
        )
        yield start, {k: v.to(device) for k, v in enc.items()}


def _token_rows(batch: dict, start: int, tokenizer, columns: dict[str, torch.Tensor]) -> dict[str, list]:
    """One row per real token of `batch`: text index, position, id, token, special + columns."""
    mask = batch["attention_mask"].bool().cpu()
    ids = batch["input_ids"].cpu()
    b_idx, pos = mask.nonzero(as_tuple=True)
    tok_ids = ids[b_idx, pos]
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    rows: dict[str, list] = {
        "text": (b_idx + start).tolist(),
        "position": pos.tolist(),
        "token_id": tok_ids.tolist(),
        "token": tokenizer.convert_ids_to_tokens(tok_ids.tolist()),
        "special": [int(t) in special for t in tok_ids.tolist()],
    }
    for name, values in columns.items():
        rows[name] = values.detach().float().cpu()[b_idx, pos].tolist()
    return rows


def _frame(parts: list[dict[str, list]], constants: list[dict[str, Any]]) -> pd.DataFrame:
    frames = []
    for rows, const in zip(parts, constants):
        df = pd.DataFrame(rows)
        for k, v in reversed(list(const.items())):
            df.insert(0, k, v)
        frames.append(df)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _per_token(z: torch.Tensor) -> dict[str, torch.Tensor]:
    z = z.detach().float()
    return {"norm": z.norm(dim=-1), "mean": z.mean(-1), "std": z.var(-1, unbiased=False).sqrt()}


# ----------------------------------------------------------------------------- data


def domain_texts(
    domains: Sequence[str] = tuple(DOMAINS), n: int = 300, *, seed: int = 42, data_dir: str | Path | None = None
) -> dict[str, list[str]]:
    """`n` texts drawn without replacement from each domain (all of them if fewer).

    twitter: the Twitter hate-speech training file; uci: the 3,000-sentence UCI pool; cola:
    CoLA's in-domain training set. The draw depends on `seed` alone.
    """
    from siftkit.data.loaders import load

    if n < 1:
        raise ValueError(f"n must be >= 1, got {n!r}")
    out: dict[str, list[str]] = {}
    for i, domain in enumerate(domains):
        if domain not in DOMAINS:
            raise ValueError(f"unknown domain {domain!r}; choose from {', '.join(DOMAINS)}")
        name, split = DOMAINS[domain]
        texts = load(name, data_dir)[split]["text"]
        rng = np.random.default_rng([seed, _DOMAIN_SAMPLE, i])
        chosen = rng.choice(len(texts), size=min(n, len(texts)), replace=False)
        out[domain] = [texts[int(j)] for j in chosen]
    return out


# ----------------------------------------------------------------------------- shift specs

# Joins a sentence pair into one text for the statistics (`spec_domain_texts`): a plain space
# adds no token of its own under any tokenizer that splits on whitespace, so a pair's domain
# statistics count the two sentences' own tokens only (and never one model's separator).
PAIR_SEPARATOR = " "


def _as_spec(spec_or_cfg: Any):
    """A `ShiftSpec` from a ShiftSpec, a task='shift' RunConfig, a spec mapping or the path
    of a YAML file holding it (the spec itself, or a params file with a ``shift:`` block)."""
    from siftkit.data.shift_spec import ShiftSpec, load_spec_mapping, parse_spec

    if isinstance(spec_or_cfg, ShiftSpec):
        return spec_or_cfg
    if isinstance(spec_or_cfg, RunConfig):
        if spec_or_cfg.task != "shift":
            raise ValueError(f"a RunConfig with task='shift' has a spec; this one has task={spec_or_cfg.task!r}")
        return parse_spec(spec_or_cfg.shift)
    return parse_spec(load_spec_mapping(spec_or_cfg))


def _spec_domains(spec) -> list[tuple[str, str, Any]]:
    """(domain name, "stage" or "evaluation", DataSpec): the stages' data, then the
    evaluation sets'. A stage and an evaluation set of one name become ``<name>_stage`` and
    ``<name>_eval``."""
    both = {s.name for s in spec.stages} & {e.name for e in spec.evals}
    out = [(f"{s.name}_stage" if s.name in both else s.name, "stage", s.data) for s in spec.stages]
    out += [(f"{e.name}_eval" if e.name in both else e.name, "evaluation", e.data) for e in spec.evals]
    names = [name for name, _, _ in out]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ValueError(
            f"shift spec {spec.name!r}: domain name(s) {', '.join(map(repr, twice))} given twice "
            f"(a stage or evaluation set is named like another's renamed <name>_stage/_eval)"
        )
    return out


def spec_domain_texts(
    spec_or_cfg: Any, n: int = 300, *, seed: int = 42, data_dir: str | Path | None = None, sep: str = PAIR_SEPARATOR
) -> dict[str, list[str]]:
    """`n` texts drawn without replacement from each domain of a shift spec (all if fewer).

    The domains, in order: each training stage's data (all its rows: a validation fraction
    is part of the stage's domain), then each evaluation set, named by their spec names (a
    stage and an evaluation set sharing a name become ``<name>_stage`` and ``<name>_eval``).
    Rows are read as the run reads them (`siftkit.data.shift_data.load_data`: ``where``, label
    map, ``unmapped``). A sentence pair becomes one text, its two sentences joined by `sep`
    (`PAIR_SEPARATOR`, a space: no separator token of any one model). `spec_or_cfg` is
    anything `_as_spec` takes; a RunConfig's ``data_dir`` is used unless `data_dir` is given.
    Relative ``files`` are read from the current folder, as a run reads them. The draw
    depends on `seed` alone.
    """
    from siftkit.data.shift_data import load_data

    if n < 1:
        raise ValueError(f"n must be >= 1, got {n!r}")
    if data_dir is None and isinstance(spec_or_cfg, RunConfig):
        data_dir = spec_or_cfg.data_dir
    spec = _as_spec(spec_or_cfg)
    out: dict[str, list[str]] = {}
    for i, (name, _, data) in enumerate(_spec_domains(spec)):
        ds, _ = load_data(data, spec.labels, None if data_dir is None else str(data_dir))
        rng = np.random.default_rng([seed, _DOMAIN_SAMPLE, i])
        chosen = rng.choice(len(ds), size=min(n, len(ds)), replace=False)
        first = ds["text"]
        second = ds["text_pair"] if data.pair else None
        out[name] = [first[int(j)] if second is None else f"{first[int(j)]}{sep}{second[int(j)]}" for j in chosen]
    return out


def spec_domain_pairs(spec_or_cfg: Any) -> list[tuple[str, str]]:
    """The (domain a, domain b) pairs worth a norm-gap table (`norm_gap_tokens`): every
    evaluation set against every training stage, then each later stage against each earlier
    one, in spec order. Names as in `spec_domain_texts`."""
    domains = _spec_domains(_as_spec(spec_or_cfg))
    stages = [name for name, role, _ in domains if role == "stage"]
    evals = [name for name, role, _ in domains if role == "evaluation"]
    return [(e, s) for e in evals for s in stages] + [
        (later, earlier) for i, later in enumerate(stages) for earlier in stages[:i]
    ]


def spec_stages_table(cfg: RunConfig) -> pd.DataFrame:
    """The stages of a task='shift' config as the run trains them: epochs and learning rate
    (the stage's own, else the run's), validation, the metric it watches, the evaluation
    sets measured after it. No data are read."""
    spec = _as_spec(cfg)
    rows = []
    for s in spec.stages:
        if s.validation is None:
            validation = "none"
        elif s.validation.fraction is not None:
            validation = f"{s.validation.fraction:g} of its rows (seeded)"
        else:
            validation = s.validation.data.describe()
        rows.append(
            {
                "stage": s.name,
                "num_train_epochs": s.num_train_epochs or cfg.num_train_epochs,
                "learning_rate": s.learning_rate or cfg.learning_rate,
                "validation": validation,
                "val_metric": s.val_metric if s.validation is not None else "",
                "evaluated after it": ", ".join(e.name for e in spec.evals if s.name in e.after),
            }
        )
    return pd.DataFrame(rows)


def spec_sets_table(cfg: RunConfig) -> pd.DataFrame:
    """One row per dataset of a task='shift' config, as its run reads them: each stage's
    training rows, its validation set, then each evaluation set.

    Columns: ``set`` (the name its metrics carry in results.json), ``role`` (train,
    validation, evaluation), ``stage`` (the stage it trains or validates; for an evaluation
    set the stages it is evaluated after), ``source``, ``text`` (column, or the pair's two),
    ``rows`` (after ``where``, the label map and a validation split), ``used`` (the rows the
    run trains or evaluates on: ``rows`` capped by max_train_samples / max_eval_samples, the
    same random subset the run draws), ``dropped`` (rows dropped as unmapped), one column per
    canonical label counting it among the ``used`` rows, and ``majority`` (the share of the
    most frequent label among them: the accuracy of always predicting it).
    """
    from collections import Counter

    from siftkit.data.shift_data import shift_stages
    from siftkit.run.protocols import _EVAL_CAP, _TRAIN_CAP, _subset

    spec = _as_spec(cfg)
    stages = shift_stages(cfg)
    rows = []

    def row(name, role, stage, data, ds, dropped, train):
        # The run's own caps (siftkit.run.protocols.build_stages): training rows by the seed, evaluation rows fixed.
        cap, stream = (
            (cfg.max_train_samples, [cfg.seed, _TRAIN_CAP]) if train else (cfg.max_eval_samples, [0, _EVAL_CAP])
        )
        used = ds if cap is None else _subset(ds, cap, stream)
        counts = Counter(int(y) for y in used["label"])
        entry = {
            "set": name,
            "role": role,
            "stage": stage,
            "source": data.describe(),
            "text": " + ".join(data.text),
            "rows": len(ds),
            "used": len(used),
            "dropped": dropped,
        }
        entry.update({label: counts.get(i, 0) for i, label in enumerate(spec.labels)})
        entry["majority"] = majority_share(used["label"]) if len(used) else math.nan
        rows.append(entry)

    for s, stage in zip(spec.stages, stages):
        row(s.name, "train", s.name, s.data, stage.train, stage.dropped.get(s.data.where, 0), True)
        if stage.val is not None:
            vdata = s.validation.data if s.validation.data is not None else s.data
            dropped = stage.dropped.get(s.validation.data.where, 0) if s.validation.data is not None else 0
            row(stage.val, "validation", s.name, vdata, stage.evals[stage.val], dropped, False)
    for e in spec.evals:
        last = max(i for i, s in enumerate(spec.stages) if s.name in e.after)
        dropped = next((st.dropped[e.data.where] for st in stages if e.data.where in st.dropped), 0)
        row(e.name, "evaluation", ", ".join(e.after), e.data, stages[last].evals[e.name], dropped, False)
    return pd.DataFrame(rows)


# The algorithms `algo_configs` sets up side by side: the ones whose knobs it knows how to share.
SHIFT_ALGOS = ("plain", "smart", "sift")


def algo_configs(cfg: RunConfig, algos: Sequence[str] = SHIFT_ALGOS) -> dict[str, RunConfig]:
    """One config per algorithm, for training several on one setup: `cfg` with ``algo`` set
    and ``output_dir`` ``<cfg.output_dir>/<algo>-seed<seed>``.

    Each algorithm gets its own published epsilon, noise std, step size and weight, and SMART
    its Bregman term (the units differ between SMART and SiFT, so one number cannot serve
    both; `cfg`'s own values of these are not used); the knobs that
    mean the same for both (perturb_at, adv_rule, adv_steps, adv_norm, divergence,
    adv_stages) carry over to SMART and SiFT. Plain has no regularizer and gets their
    defaults.
    """
    from dataclasses import fields

    shared = ("perturb_at", "adv_rule", "adv_steps", "adv_norm", "divergence", "adv_stages")
    defaults = {f.name: f.default for f in fields(RunConfig) if f.name in shared}
    algos = list(algos)
    unknown = [a for a in algos if a not in SHIFT_ALGOS]
    if unknown or not algos:
        raise ValueError(
            f"algorithms must be among {', '.join(map(repr, SHIFT_ALGOS))}; got {', '.join(map(repr, algos)) or 'none'}"
        )
    twice = sorted({a for a in algos if algos.count(a) > 1})
    if twice:
        raise ValueError(f"algorithm(s) {', '.join(map(repr, twice))} given twice")
    out = {}
    for algo in algos:
        # None: RunConfig resolves the algorithm's own published value (and SMART's Bregman term).
        changes: dict[str, Any] = {
            "algo": algo,
            "output_dir": str(Path(cfg.output_dir) / f"{algo}-seed{cfg.seed}"),
            **dict.fromkeys(
                ("adv_epsilon", "adv_noise_std", "adv_step_size", "adv_weight", "bregman_weight", "bregman_beta")
            ),
        }
        if algo == "plain":
            changes.update(defaults)
        elif algo != cfg.algo:
            changes["perturb_at"] = cfg.perturb_at  # replace() re-derives the point with the algorithm
        out[algo] = cfg.replace(**changes)
    return out


def shift_target_table(
    records: Iterable[Mapping[str, Any] | str | Path], *, sets: pd.DataFrame | None = None, validation: bool = False
) -> pd.DataFrame:
    """Accuracy, MCC and macro-F1 of task='shift' runs per algorithm and evaluation target.

    One row per (algorithm, target): algorithms in the order plain, SMART, SiFT; targets in
    the spec's order (with `validation`, each stage's validation set first, ``role``
    "validation"). Columns: algo, algorithm, target, role, reference (with `validation`, an
    evaluation set's in-domain comparison: the validation set of the last validated stage it
    is evaluated after; else empty), texts (the texts scored), n (runs averaged: one per
    seed), seeds, then ``accuracy``, ``mcc``, ``macro_f1`` (mean over the runs) and each
    one's ``_std`` (sample std; NaN for one run). With `sets`
    (`spec_sets_table`), ``majority``: the target's majority-label share. `records` are
    results.json paths, run folders or loaded records, all of one spec (its sha256);
    another spec's runs are refused, never mixed in.
    """
    from siftkit.run.records import load_results

    loaded = [r if isinstance(r, Mapping) else load_results(r) for r in records]
    if not loaded:
        raise ValueError("no runs given")
    digests = {(r.get("meta", {}).get("shift") or {}).get("sha256") for r in loaded}
    if any(r["config"].get("task") != "shift" for r in loaded) or len(digests) != 1:
        raise ValueError(
            "shift_target_table compares runs of one shift spec (one meta.shift.sha256); got "
            f"{len(digests)} spec(s) among tasks {sorted({r['config'].get('task') for r in loaded})}"
        )
    spec = _as_spec(loaded[0]["config"]["shift"])
    targets = [(f"{s.name}_val", "validation") for s in spec.stages if s.validation is not None] if validation else []
    targets += [(e.name, "evaluation") for e in spec.evals]
    # An evaluation set's in-domain reference: the validation set of the last validated stage it follows.
    reference = {}
    for e in spec.evals:
        validated = [s.name for s in spec.stages if s.name in e.after and s.validation is not None]
        reference[e.name] = f"{validated[-1]}_val" if validated and validation else ""
    majority = sets.set_index("set")["majority"] if sets is not None else None
    rows = []
    for algo in [a for a in ALGO_LABELS if any(r["config"]["algo"] == a for r in loaded)]:
        mine = [r for r in loaded if r["config"]["algo"] == algo]
        for target, role in targets:
            row: dict[str, Any] = {
                "algo": algo,
                "algorithm": ALGO_LABELS[algo],
                "target": target,
                "role": role,
                "reference": reference.get(target, ""),
            }
            sizes = {st["evals"][target] for r in mine for st in r.get("stages", []) if target in st.get("evals", {})}
            row["texts"] = sizes.pop() if len(sizes) == 1 else math.nan
            row["n"] = len(mine)
            row["seeds"] = sorted(int(r["config"]["seed"]) for r in mine)
            for metric in ("accuracy", "mcc", "macro_f1"):
                values = pd.Series([r["metrics"].get(f"{target}_{metric}", math.nan) for r in mine], dtype=float)
                row[metric] = float(values.mean())
                row[f"{metric}_std"] = float(values.std(ddof=1)) if values.notna().sum() > 1 else math.nan
            if majority is not None:
                row["majority"] = float(majority.get(target, math.nan))
            rows.append(row)
    return pd.DataFrame(rows)


def majority_share(labels: Iterable[Any]) -> float:
    """The share of the most frequent label: the accuracy of always predicting it, the floor a
    classifier has to clear before its accuracy means anything."""
    from collections import Counter

    counts = Counter(int(y) for y in labels)
    if not counts:
        raise ValueError("majority_share of no labels")
    return max(counts.values()) / sum(counts.values())


def binomial_yardstick(p: float, n: int) -> float:
    """Twice the binomial standard error of one accuracy `p` measured on `n` texts,
    ``2 sqrt(p (1 - p) / n)``: how far evaluation noise alone moves an accuracy (seed-to-seed
    variation comes on top). ``p (1 - p)`` is floored at 1e-12 so that 0 and 1 give a tiny
    yardstick, not 0."""
    if not n > 0:
        raise ValueError(f"binomial_yardstick needs n > 0 texts; got {n!r}")
    return 2 * math.sqrt(max(p * (1 - p), 1e-12) / n)


def shift_target_findings(table: pd.DataFrame) -> list[str]:
    """What `shift_target_table`'s numbers do and do not show, one paragraph per evaluation
    target, generated from them: each algorithm's accuracy; the change from the in-domain
    validation set it is compared with (``reference``); each difference to plain beside
    twice the binomial standard error of one accuracy on that many texts (a yardstick for
    evaluation noise alone: seed-to-seed variation comes on top, and one run per algorithm
    does not measure it); and, with a ``majority`` column, which algorithms clear always
    predicting the most frequent label by more than that yardstick."""

    def fmt(group, column):
        return ", ".join(
            f"{ALGO_LABELS[a]} {r[column]:.3f}"
            + (f" ± {r[column + '_std']:.3f}" if not math.isnan(r[column + "_std"]) else "")
            for a, r in group.iterrows()
        )

    out = []
    by_target = {t: g.set_index("algo") for t, g in table.groupby("target", sort=False)}
    for target, group in by_target.items():
        if group["role"].iloc[0] != "evaluation":
            continue
        n_runs, texts = int(group["n"].max()), group["texts"].iloc[0]
        runs = "one run per algorithm" if n_runs == 1 else f"mean ± std over up to {n_runs} seeds"
        known = not (isinstance(texts, float) and math.isnan(texts)) and texts > 0
        size = f"{int(texts):,} texts" if known else "texts: unknown"
        lines = [f"{target} ({size}; {runs}): accuracy {fmt(group, 'accuracy')}."]
        ref = group["reference"].iloc[0] if "reference" in group else ""
        if ref and ref in by_target:
            base = by_target[ref]["accuracy"]
            change = ", ".join(
                f"{ALGO_LABELS[a]} {r['accuracy'] - base.get(a, math.nan):+.3f}" for a, r in group.iterrows()
            )
            lines.append(f"  From in domain ({ref}) to {target}, accuracy changes by: {change}.")
        if known:
            p = float(group["accuracy"].mean())
            yard = binomial_yardstick(p, texts)
            lines.append(
                f"  Yardstick: twice the binomial standard error of one accuracy near {p:.2f} on "
                f"{int(texts):,} texts is {yard:.3f}."
            )
            if "plain" in group.index:
                for algo in [a for a in group.index if a != "plain"]:
                    diff = float(group.loc[algo, "accuracy"] - group.loc["plain", "accuracy"])
                    if abs(diff) <= yard:
                        verdict = "within it: not told apart from evaluation noise on this set"
                    else:
                        verdict = "beyond it on these texts" + (
                            " (seed-to-seed variation, not measured with one run each, may still explain it)"
                            if n_runs == 1
                            else ""
                        )
                    lines.append(f"  {ALGO_LABELS[algo]} − plain = {diff:+.3f}, {verdict}.")
            if "majority" in group and group["majority"].notna().all():
                share = float(group["majority"].iloc[0])
                clear = [ALGO_LABELS[a] for a, r in group.iterrows() if r["accuracy"] - share > yard]
                rest = [ALGO_LABELS[a] for a in group.index if ALGO_LABELS[a] not in clear]
                text = f"  Always predicting the majority label scores {share:.3f}: "
                text += f"{', '.join(clear)} above it by more than the yardstick" if clear else ""
                text += "; " if clear and rest else ""
                text += (f"{', '.join(rest)} not shown to beat it" if rest else "") + "."
                lines.append(text)
        out.append("\n".join(lines))
    return out


# ----------------------------------------------------------------------------- statistics


@torch.no_grad()
def token_statistics(
    model,
    tokenizer,
    texts: Sequence[str] | Mapping[str, Sequence[str]],
    *,
    at: str | Sequence[str] = BLOCK_ORDER,
    max_length: int = 128,
    batch_size: int = 32,
) -> pd.DataFrame:
    """Per-token ``norm``, ``mean`` and ``std`` at each point of `at`, for every real token.

    `texts` is a list, or a mapping domain -> list (the domain becomes a column). Columns:
    domain, at, text, position, token_id, token, special, norm, mean, std.
    """
    split = EmbeddingSplit(model)
    parts, consts = [], []
    with eval_mode(model):
        for domain, items in _texts_by_domain(texts).items():
            for point in _points(at):
                for start, batch in _batches(tokenizer, items, max_length, batch_size, _device(model)):
                    z = split.embed(batch, point)
                    parts.append(_token_rows(batch, start, tokenizer, _per_token(z)))
                    consts.append({"domain": domain, "at": point})
    return _frame(parts, consts)


def domain_summary(
    stats: pd.DataFrame, *, by: Sequence[str] = ("at", "domain"), include_special: bool = True
) -> pd.DataFrame:
    """Per group: token and text counts, and the mean / quantiles of norm, mean and std."""
    df = stats if include_special else stats[~stats["special"]]
    g = df.groupby(list(by), sort=False)
    out = g.agg(
        tokens=("norm", "size"),
        texts=("text", "nunique"),
        norm_mean=("norm", "mean"),
        norm_p05=("norm", lambda s: s.quantile(0.05)),
        norm_median=("norm", "median"),
        norm_p95=("norm", lambda s: s.quantile(0.95)),
        mean_mean=("mean", "mean"),
        mean_sd=("mean", "std"),
        std_mean=("std", "mean"),
        std_p05=("std", lambda s: s.quantile(0.05)),
        std_p95=("std", lambda s: s.quantile(0.95)),
    )
    # Relative spread of the norm: the coefficient of variation across tokens. Near 0 means
    # every token has about the same scale (SiFT ~ SMART with a rescaled epsilon).
    out["norm_cv"] = g["norm"].std() / g["norm"].mean()
    return out.reset_index()


def norm_cv_findings(summary: pd.DataFrame) -> list[str]:
    """Sentences, one per domain, saying at which point the token norms vary most and least.

    `summary` is `domain_summary`'s frame (columns ``at``, ``domain``, ``norm_cv``). The
    notebooks print these instead of stating in prose what the numbers should show.
    """
    out = []
    for domain, group in summary.groupby("domain", sort=False):
        cv = group.set_index("at")["norm_cv"].dropna()
        if cv.empty:
            continue
        out.append(
            f"{domain}: token norms vary most at {cv.idxmax()} (norm_cv {cv.max():.3g}) "
            f"and least at {cv.idxmin()} (norm_cv {cv.min():.3g})"
        )
    return out


def norm_gap_tokens(
    stats: pd.DataFrame,
    domain_a: str,
    domain_b: str,
    *,
    at: str | None = None,
    top: int = 10,
    min_count: int = 1,
    include_special: bool = False,
) -> pd.DataFrame:
    """The tokens that make the mean token norm of `domain_a` differ from `domain_b`'s.

    With ``f_d(t)`` the share of token t among domain d's tokens, ``n_d(t)`` its mean norm
    there and ``n`` the pooled mean norm of both domains,
    ``mean_a - mean_b = sum_t [f_a(t) (n_a(t) - n) - f_b(t) (n_b(t) - n)]``: each token's
    term (``contribution``) is exact, and the terms add up to the gap (``attrs['gap']``).
    A token contributes when it is more frequent in one domain *and* its norm is far from
    the pooled mean. Returns the `top` tokens by |contribution| with counts, shares and norms.
    """
    df = stats
    if at is not None:
        df = df[df["at"] == at]
    elif df["at"].nunique() > 1:
        raise ValueError(f"stats hold several points ({', '.join(df['at'].unique())}); pass at=")
    if not include_special:
        df = df[~df["special"]]
    a, b = df[df["domain"] == domain_a], df[df["domain"] == domain_b]
    if a.empty or b.empty:
        raise ValueError(f"no tokens for domain {domain_a!r} or {domain_b!r} in stats")
    pooled = pd.concat([a, b])["norm"].mean()

    def side(d: pd.DataFrame, tag: str) -> pd.DataFrame:
        g = d.groupby("token", sort=False)["norm"].agg(["size", "mean"])
        g.columns = [f"count_{tag}", f"norm_{tag}"]
        g[f"share_{tag}"] = g[f"count_{tag}"] / len(d)
        return g

    t = side(a, "a").join(side(b, "b"), how="outer")
    t[["count_a", "count_b", "share_a", "share_b"]] = t[["count_a", "count_b", "share_a", "share_b"]].fillna(0)
    term_a = (t["share_a"] * (t["norm_a"] - pooled)).fillna(0.0)
    term_b = (t["share_b"] * (t["norm_b"] - pooled)).fillna(0.0)
    t["contribution"] = term_a - term_b
    gap = float(a["norm"].mean() - b["norm"].mean())
    t = t[(t["count_a"] + t["count_b"]) >= min_count]
    t = t.reindex(t["contribution"].abs().sort_values(ascending=False).index).head(top)
    t[["count_a", "count_b"]] = t[["count_a", "count_b"]].astype(int)
    t = t.reset_index()[["token", "count_a", "count_b", "share_a", "share_b", "norm_a", "norm_b", "contribution"]]
    t.attrs.update(gap=gap, domain_a=domain_a, domain_b=domain_b, pooled_norm=float(pooled))
    return t


# ----------------------------------------------------------------------------- perturbations


def regularizers_for(
    cfg: RunConfig | None = None, algos: Sequence[str] = ("smart", "sift"), **knobs: Any
) -> dict[str, AdversarialRegularizer]:
    """One regularizer per algorithm, each starting from *its own* published defaults.

    The perturbation point, K, norm and divergence come from `cfg`; epsilon, noise std, step
    size and weight — whose units differ between SMART (raw) and SiFT (normalized) — are the
    algorithm's defaults, or `cfg`'s values for ``cfg.algo`` itself. `knobs` (RunConfig field
    names, e.g. ``adv_epsilon=1e-3``) then apply to every algorithm alike: the same number
    means a raw radius for SMART and a radius in units of sigma_t for SiFT.
    """
    cfg = cfg if cfg is not None else RunConfig()
    out: dict[str, AdversarialRegularizer] = {}
    for algo in algos:
        if algo not in REGULARIZERS:
            raise ValueError(f"algo must be one of {', '.join(map(repr, REGULARIZERS))}; got {algo!r}")
        # replace() re-derives the algorithm's defaults, the perturbation point among them: the
        # point is the config's, the same for every algorithm measured.
        c = cfg if cfg.algo == algo else cfg.replace(algo=algo, perturb_at=cfg.perturb_at)
        if knobs:
            c = c.replace(**knobs)
        out[algo] = REGULARIZERS[algo].from_config(c)
    return out


def perturbation_sizes(
    model,
    tokenizer,
    texts: Sequence[str] | Mapping[str, Sequence[str]],
    regularizers: Mapping[str, AdversarialRegularizer],
    *,
    max_length: int = 128,
    batch_size: int = 32,
    seed: int = 0,
    progress: bool | str = False,
) -> pd.DataFrame:
    """Run each regularizer on `texts` and measure the perturbation it settles on.

    For every real token: ``norm`` ||z_t|| and ``std`` sigma_t of the clean tensor at the
    regularizer's point, ``perturbation_norm`` ||Delta_t|| (raw units, L2), ``relative``
    ||Delta_t|| / ||z_t||, ``normalized`` ||Delta_t|| / sigma_t (the size in SiFT's units),
    ``divergence``, the text's ``ls(f(z + Delta), f(z))`` in nats, and ``ball_fraction``,
    ||delta_t|| / epsilon in the rule's own units and norm (1 on the ball's surface; NaN
    for a rule without a ball) — see `ball_binding`.

    The noise is seeded with `seed` afresh for every (algorithm, domain): one algorithm's
    numbers do not depend on which others are measured with it, or in what order, and SMART
    and SiFT start from the same standard-normal draws (a paired comparison). The global RNG
    is left as it was. Models are in eval mode; parameters get no gradient (the regularizer
    differentiates w.r.t. its delta only). `progress` shows a tqdm bar over the batches (a
    string is its label).
    """
    from tqdm.auto import tqdm

    split = EmbeddingSplit(model)
    by_domain = _texts_by_domain(texts)
    n_batches = len(regularizers) * sum(math.ceil(len(v) / max(batch_size, 1)) for v in by_domain.values())
    bar = tqdm(total=n_batches, disable=not progress, desc=progress if isinstance(progress, str) else "perturbations")
    parts, consts = [], []
    with eval_mode(model), torch.random.fork_rng(devices=[]), torch.enable_grad(), bar:
        for algo, reg in regularizers.items():
            divergence = get_divergence(reg.divergence_name)
            for domain, items in by_domain.items():
                torch.manual_seed(seed)
                for start, batch in _batches(tokenizer, items, max_length, batch_size, _device(model)):
                    bar.update(1)
                    with torch.no_grad():
                        clean, z = split.forward_capture(batch, reg.perturb_at)
                    reg(split, batch, clean, z)
                    stats = _per_token(z)
                    ball = torch.full_like(stats["norm"], float("nan"))
                    if reg.last_skipped or reg.last_perturbation is None:
                        pert = torch.full_like(stats["norm"], float("nan"))
                        div = torch.full((z.shape[0],), float("nan"))
                    else:
                        if reg.adv_epsilon is not None and reg.last_delta is not None:
                            ball = _ball_fraction(reg.last_delta.detach().float(), reg.adv_norm, reg.adv_epsilon)
                        delta = reg.last_perturbation.float()
                        pert = delta.norm(dim=-1)
                        with torch.no_grad():
                            adv = split.forward_from((z.float() + delta).to(z.dtype), batch, reg.perturb_at)
                            div = torch.stack([divergence(adv[i : i + 1], clean[i : i + 1]) for i in range(len(adv))])
                    cols = {
                        "norm": stats["norm"],
                        "std": stats["std"],
                        "perturbation_norm": pert,
                        "relative": pert / stats["norm"].clamp_min(TINY),
                        "normalized": pert / stats["std"].clamp_min(TINY),
                        "divergence": div.detach().float().cpu()[:, None].expand(z.shape[:2]),
                        "ball_fraction": ball,
                    }
                    parts.append(_token_rows(batch, start, tokenizer, cols))
                    consts.append({"domain": domain, "algo": algo, "at": reg.perturb_at})
    return _frame(parts, consts)


def relative_spread(sizes: pd.DataFrame) -> pd.DataFrame:
    """Per (point, algorithm, domain): median, 5th and 95th percentile of ||Delta_t|| / ||z_t||
    over real tokens, and ``p95 / p05``, the spread of the relative push (1: the same relative
    push for every token)."""
    real = sizes[~sizes["special"] & np.isfinite(sizes["relative"])]
    spread = real.groupby(["at", "algo", "domain"], sort=False)["relative"].agg(
        median="median", p05=lambda r: r.quantile(0.05), p95=lambda r: r.quantile(0.95)
    )
    spread["p95 / p05"] = spread["p95"] / spread["p05"]
    return spread


def spread_findings(spread: pd.DataFrame) -> list[str]:
    """Sentences comparing SMART's and SiFT's spread (`relative_spread`) at each point.

    "Differ" is measured as SMART's ``p95 / p05`` divided by SiFT's, the median over domains:
    how much more unequal SMART's relative push is across tokens than SiFT's.
    """
    table = spread["p95 / p05"].unstack("algo")
    if not {"smart", "sift"} <= set(table.columns):
        return []
    ratio = (table["smart"] / table["sift"]).groupby(level="at", sort=False).median().dropna()
    if ratio.empty:
        return []
    lines = [f"{at}: SMART's p95/p05 spread is {r:.3g}× SiFT's (median over domains)" for at, r in ratio.items()]
    if len(ratio) > 1:
        lines.append(f"SMART and SiFT differ most at {ratio.idxmax()} and least at {ratio.idxmin()}")
    return lines


def _ball_fraction(delta: torch.Tensor, norm: str, epsilon: float) -> torch.Tensor:
    """||delta_t|| / epsilon per token, in the rule's own units and norm (1: on the ball)."""
    size = delta.abs().amax(-1) if norm == "inf" else delta.norm(dim=-1)
    return size / epsilon


def ball_binding(sizes: pd.DataFrame, *, tol: float = 1e-3) -> pd.Series:
    """Per algorithm, the share of real tokens whose delta ends on the ball's surface.

    0 means the projection never acted: epsilon did not bound anything, and changing it
    changes nothing until it falls below the size the noise and the K steps reach. NaN
    for a rule without a ball. `sizes` is `perturbation_sizes`' frame.
    """
    real = sizes[~sizes["special"]] if "special" in sizes else sizes
    on = real["ball_fraction"].where(real["ball_fraction"].isna(), real["ball_fraction"] >= 1 - tol)
    return on.astype(float).groupby(real["algo"], sort=False).mean().rename("on the ball")


@torch.no_grad()
def split_check(model, tokenizer, text: str, *, max_length: int = 128) -> pd.DataFrame:
    """The embedding split on one text: per point, the tensor's shape, its mean token norm,
    and max |forward_from(embed(x)) - model(x)| (0 up to float error: the split is exact)."""
    split = EmbeddingSplit(model)
    rows = []
    with eval_mode(model):
        _, batch = next(_batches(tokenizer, [text], max_length, 1, _device(model)))
        logits = model(**batch).logits
        for point in BLOCK_ORDER:
            try:
                z = split.embed(batch, point)
            except TypeError as exc:  # UnsupportedModelError: e.g. no LayerNorm in the block
                rows.append(
                    {
                        "at": point,
                        "shape": None,
                        "mean_token_norm": math.nan,
                        "max_abs_logit_diff": math.nan,
                        "note": str(exc),
                    }
                )
                continue
            again = split.forward_from(z, batch, point)
            rows.append(
                {
                    "at": point,
                    "shape": tuple(z.shape),
                    "mean_token_norm": float(z.float().norm(dim=-1).mean()),
                    "max_abs_logit_diff": float((again - logits).abs().max()),
                    "note": "",
                }
            )
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------- fine-tuned runs


def load_run_models(run: str | Path) -> dict[str, Any]:
    """The base and the fine-tuned model of a finished run folder.

    The fine-tuned weights are the run's ``model/`` folder (written by ``save_model=True``),
    else the ``model`` of its newest checkpoint, if it is the end of the run. The base is
    rebuilt as train() built it, seed first, so a random smoke model's initialisation is
    reproduced exactly. Returns a dict with ``base``, ``tuned``, ``tokenizer``, ``config``
    (RunConfig) and ``record`` (results.json).
    """
    from accelerate.utils import set_seed

    from siftkit.data.shift_data import num_labels
    from siftkit.run.checkpoint import latest_checkpoint, load_checkpoint
    from siftkit.run.models import load_model
    from siftkit.run.records import load_results

    run = Path(run)
    folder = run.parent if run.is_file() else run
    record = load_results(folder)
    cfg = RunConfig.from_dict({k: v for k, v in record["config"].items() if k in RunConfig.field_names()})
    saved, ckpt = folder / "model", latest_checkpoint(folder)
    if not saved.is_dir() and ckpt is None:
        raise ValueError(
            f"run {folder} kept no fine-tuned weights: train it with save_model=True "
            f"(-p save_model True) to get {saved}"
        )
    set_seed(cfg.seed)  # as in train(): the base model is built right after seeding
    base, tokenizer = load_model(cfg.model_name, num_labels=num_labels(cfg))
    tuned = copy.deepcopy(base)
    if saved.is_dir():
        state = type(base).from_pretrained(str(saved)).state_dict()
    else:
        checkpoint, _ = load_checkpoint(ckpt)
        position = checkpoint.get("position", {})
        if not position.get("stage_done") or position.get("stage") != len(record.get("stages", [])) - 1:
            raise ValueError(f"the newest checkpoint of {folder} ({ckpt.name}) is not the end of the run")
        # R4F's head is saved with its raw weight and power-iteration vectors: plain form here.
        state = spectral_norm.baked_state_dict(checkpoint["model"])
    tuned.load_state_dict(state)
    base.eval()
    tuned.eval()
    return {"base": base, "tuned": tuned, "tokenizer": tokenizer, "config": cfg, "record": record}


@torch.no_grad()
def token_norm_shift(
    base,
    tuned,
    tokenizer,
    texts: Sequence[str] | Mapping[str, Sequence[str]],
    *,
    at: str | Sequence[str] = BLOCK_ORDER,
    max_length: int = 128,
    batch_size: int = 32,
) -> pd.DataFrame:
    """How far fine-tuning moved each real token's vector at each point of `at`.

    Columns beside the token ones: ``base_norm`` and ``tuned_norm`` (||z_t|| before/after),
    ``shift`` ||z_t(tuned) - z_t(base)||, ``relative_shift`` shift / base_norm, and
    ``norm_change`` tuned_norm / base_norm - 1 (the relative change of the token's scale).
    """
    base_split, tuned_split = EmbeddingSplit(base), EmbeddingSplit(tuned)
    parts, consts = [], []
    with eval_mode(base, tuned):
        for domain, items in _texts_by_domain(texts).items():
            for point in _points(at):
                for start, batch in _batches(tokenizer, items, max_length, batch_size, _device(base)):
                    zb = base_split.embed(batch, point).float()
                    zt = (
                        tuned_split.embed({k: v.to(_device(tuned)) for k, v in batch.items()}, point)
                        .float()
                        .to(zb.device)
                    )
                    bn, tn = zb.norm(dim=-1), zt.norm(dim=-1)
                    shift = (zt - zb).norm(dim=-1)
                    cols = {
                        "base_norm": bn,
                        "tuned_norm": tn,
                        "shift": shift,
                        "relative_shift": shift / bn.clamp_min(TINY),
                        "norm_change": tn / bn.clamp_min(TINY) - 1.0,
                    }
                    parts.append(_token_rows(batch, start, tokenizer, cols))
                    consts.append({"domain": domain, "at": point})
    return _frame(parts, consts)


def runs_token_norm_shift(
    runs: Iterable[str | Path],
    texts: Mapping[str, Sequence[str]],
    *,
    at: str | Sequence[str] = BLOCK_ORDER,
    max_length: int | None = None,
    batch_size: int = 32,
) -> pd.DataFrame:
    """`token_norm_shift` for every run folder (one model pair in memory at a time), with the
    run's ``algo``, ``seed``, ``model`` and ``run`` as columns."""
    frames = []
    for run in runs:
        loaded = load_run_models(run)
        cfg = loaded["config"]
        df = token_norm_shift(
            loaded["base"],
            loaded["tuned"],
            loaded["tokenizer"],
            texts,
            at=at,
            max_length=max_length or cfg.max_length,
            batch_size=batch_size,
        )
        df.insert(0, "run", str(Path(run).parent if Path(run).is_file() else Path(run)))
        df.insert(0, "seed", cfg.seed)
        df.insert(0, "model", model_label(cfg.model_name))
        df.insert(0, "algo", cfg.algo)
        frames.append(df)
        del loaded
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def run_domains(runs: Iterable[str | Path], domains: Iterable[str]) -> pd.DataFrame:
    """Per run folder (or results.json): its algorithm, seed and training stages, and which
    of `domains` it was trained on — a domain named like one of its stages (P2's ``twitter``
    and ``uci``, a spec's stage names) — and which it never trained on."""
    from siftkit.run.records import load_results

    domains = list(domains)
    rows = []
    for run in runs:
        record = load_results(run)
        stages = [s["name"] for s in record.get("stages", [])]
        rows.append(
            {
                "run": str(Path(run).parent if Path(run).is_file() else Path(run)),
                "algo": record["config"]["algo"],
                "seed": record["config"]["seed"],
                "stages": ", ".join(stages),
                "trained on": ", ".join(d for d in domains if d in stages) or "none of these",
                "never trained on": ", ".join(d for d in domains if d not in stages) or "none",
            }
        )
    return pd.DataFrame(rows)
