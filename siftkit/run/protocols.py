"""The two experiment protocols of the paper, as a list of training stages (and, for
``task: shift``, the stages of a user's own spec, built by `siftkit.data.shift_data`).

P1 ``cola``: fine-tune on CoLA's in-domain training set; evaluate MCC on ``in_domain_dev``
and ``out_of_domain_dev`` (the seed paper's "CoLA" column is the latter).

P2 ``twitter_to_uci``: stage 1 fine-tunes on Twitter hate speech (all 2,242 positives plus
the first 2,200 negatives in file order, shuffled, the first 2,000 kept, 90/10
train/validation); then the zero-shot UCI accuracy is measured; stage 2 continues on 10% of
the shuffled 3,000-sentence UCI pool and accuracy is reported on the other 90%. With
``uci_val_size`` N > 0 the N sentences after the training share are held out for
validation (``uci_val``: chosen on, never reported as the result) and the test set is the
rest; the same sentences for every algorithm at a seed, and N = 0 is the paper's split.
Twitter label 1 means hate speech, UCI label 1 positive sentiment: the label's meaning
changes between stages, so the zero-shot figure tells how far stage 1 alone transfers,
not a sentiment skill.

All shuffles draw from ``numpy.random.default_rng([seed, purpose])``: the split depends on
the seed alone, never on how much of the global RNG something else consumed.
"""

from __future__ import annotations

import numpy as np
from datasets import Dataset

from siftkit.data import loaders as data_module
from siftkit.data.stages import Stage
from siftkit.run.config import RunConfig

_TWITTER_SHUFFLE, _UCI_SHUFFLE, _TRAIN_CAP, _EVAL_CAP = 1, 2, 3, 4


def build_stages(cfg: RunConfig) -> list[Stage]:
    if cfg.task == "cola":
        stages = _cola(cfg)
    elif cfg.task == "twitter_to_uci":
        stages = _twitter_to_uci(cfg)
    elif cfg.task == "shift":
        from siftkit.data.shift_data import shift_stages

        stages = shift_stages(cfg)
    else:  # RunConfig validates task; this guards direct callers
        raise ValueError(f"task must be 'cola', 'twitter_to_uci' or 'shift'; got {cfg.task!r}")
    for stage in stages:
        # Caps draw a random subset, not the first rows: CoLA's files are grouped by source
        # book, so the first N sentences are not a sample of the corpus. Training subsets
        # follow the run's seed; evaluation subsets are the same for every seed, so runs
        # with different seeds are scored on the same sentences.
        if cfg.max_train_samples is not None:
            stage.train = _subset(stage.train, cfg.max_train_samples, [cfg.seed, _TRAIN_CAP])
        if cfg.max_eval_samples is not None:
            stage.evals = {k: _subset(v, cfg.max_eval_samples, [0, _EVAL_CAP]) for k, v in stage.evals.items()}
    return stages


def _subset(ds: Dataset, n: int, seed: list[int]) -> Dataset:
    if n >= len(ds):
        return ds
    rows = np.random.default_rng(seed).choice(len(ds), size=n, replace=False)
    return ds.select(np.sort(rows))


def _cola(cfg: RunConfig) -> list[Stage]:
    cola = data_module.load("cola", cfg.data_dir)
    return [
        Stage(
            "cola",
            _text_label(cola["train"]),
            cfg.num_train_epochs,
            cfg.learning_rate,
            {
                "in_domain_dev": _text_label(cola["in_domain_dev"]),
                "out_of_domain_dev": _text_label(cola["out_of_domain_dev"]),
            },
            val="in_domain_dev",
            val_metric="mcc",
        )
    ]


def twitter_subset(cfg: RunConfig) -> tuple[Dataset, Dataset]:
    """The seed paper's Twitter subset: (train, validation)."""
    tweets = _text_label(data_module.load("twitter_hate", cfg.data_dir)["train"])
    labels = np.asarray(tweets["label"])
    positives = np.flatnonzero(labels == 1)
    negatives = np.flatnonzero(labels == 0)[: cfg.twitter_negatives]
    chosen = np.concatenate([positives, negatives])
    rng = np.random.default_rng([cfg.seed, _TWITTER_SHUFFLE])
    chosen = rng.permutation(chosen)[: cfg.twitter_subset]
    n_val = int(round(len(chosen) * cfg.twitter_val_fraction))
    if n_val < 1 or n_val >= len(chosen):
        # RunConfig checked twitter_subset's split; here the data gave fewer tweets than that.
        raise ValueError(
            f"the Twitter subset has {len(chosen)} tweets ({len(positives)} positives + twitter_negatives="
            f"{cfg.twitter_negatives}, at most twitter_subset={cfg.twitter_subset}); twitter_val_fraction="
            f"{cfg.twitter_val_fraction} of them leaves {len(chosen) - n_val} for training and {n_val} for "
            f"validation; each needs at least one"
        )
    return tweets.select(chosen[:-n_val]), tweets.select(chosen[-n_val:])


def uci_split(cfg: RunConfig) -> tuple[Dataset, Dataset]:
    """(UCI training set, UCI test set) of `uci_parts`."""
    train, _, test = uci_parts(cfg)
    return train, test


def uci_parts(cfg: RunConfig) -> tuple[Dataset, Dataset | None, Dataset]:
    """UCI pool shuffled, then (train = first 10% or `uci_train_size`, validation = the next
    `uci_val_size` or None, test = the rest)."""
    pool = data_module.load("uci_sentiment", cfg.data_dir)["pool"]
    pool = pool.select_columns(["text", "label", "source"])
    rng = np.random.default_rng([cfg.seed, _UCI_SHUFFLE])
    order = rng.permutation(len(pool))
    n_train = cfg.uci_train_size if cfg.uci_train_size is not None else int(round(cfg.uci_train_fraction * len(pool)))
    n_val = cfg.uci_val_size
    if not 0 < n_train < len(pool) - n_val:
        # Name the field the user set: the size, or the fraction it was derived from.
        setting = (
            f"uci_train_size={n_train}"
            if cfg.uci_train_size is not None
            else f"uci_train_fraction={cfg.uci_train_fraction} ({n_train} sentences)"
        )
        if n_val:
            setting += f" with uci_val_size={n_val}"
        raise ValueError(
            f"{setting} leaves {len(pool) - n_train - n_val} of the {len(pool)} UCI sentences for "
            f"the test set and {n_train} for training; each needs at least one, so the training "
            f"size must be between 1 and {len(pool) - n_val - 1}"
        )
    val = pool.select(order[n_train : n_train + n_val]) if n_val else None
    return pool.select(order[:n_train]), val, pool.select(order[n_train + n_val :])


def _twitter_to_uci(cfg: RunConfig) -> list[Stage]:
    tw_train, tw_val = twitter_subset(cfg)
    uci_train, uci_val, uci_test = uci_parts(cfg)
    uci_lr = cfg.uci_learning_rate if cfg.uci_learning_rate is not None else cfg.learning_rate
    stage2_evals = {"uci_val": uci_val, "uci_test": uci_test} if uci_val is not None else {"uci_test": uci_test}
    return [
        Stage(
            "twitter",
            tw_train,
            cfg.num_train_epochs,
            cfg.learning_rate,
            {"twitter_val": tw_val, "uci_zero_shot": uci_test},
            val="twitter_val",
        ),
        Stage(
            "uci",
            uci_train,
            cfg.uci_num_train_epochs,
            uci_lr,
            stage2_evals,
            val="uci_val" if uci_val is not None else None,
        ),
    ]


def _text_label(ds: Dataset) -> Dataset:
    return ds.select_columns(["text", "label"])
