"""siftkit: plain, SMART and SiFT fine-tuning of text classifiers, side by side.

The public surface::

    from siftkit import RunConfig, train, load, load_model
    from siftkit import EmbeddingSplit, SMART, SiFT, BregmanProximalPoint
    from siftkit import symmetric_kl, DIVERGENCES, AdversarialTrainer

The package is in layers, each importing only the ones below it:
``core`` (the math) ← ``data`` ← ``run`` (one protocol) ← ``study`` (many runs) ← ``cli``;
``explore`` (the notebooks' helpers) may use all but ``cli``. Names here load on first use,
so ``import siftkit.study`` or ``siftkit --help`` imports neither torch nor datasets.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# public name -> the module that defines it
_HOMES = {
    "RunConfig": "siftkit.run.config",
    "train": "siftkit.run.training",
    "AdversarialTrainer": "siftkit.run.hf_trainer",
    "load_model": "siftkit.run.models",
    "load": "siftkit.data.loaders",
    "DataError": "siftkit.data.registry",
    "EmbeddingSplit": "siftkit.core.split",
    "AdversarialRegularizer": "siftkit.core.regularizers",
    "SMART": "siftkit.core.regularizers",
    "SiFT": "siftkit.core.regularizers",
    "BregmanProximalPoint": "siftkit.core.bregman",
    **{
        name: "siftkit.core.divergences"
        for name in ("DIVERGENCES", "get_divergence", "js", "kl", "mse", "symmetric_kl")
    },
}


def __getattr__(name: str):
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'siftkit' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_HOMES])


__all__ = [*_HOMES, "__version__"]
