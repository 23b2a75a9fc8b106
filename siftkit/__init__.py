"""siftkit: plain, SMART and SiFT fine-tuning of text classifiers, side by side.

The public surface::

    from siftkit import RunConfig, train, load, load_model
    from siftkit import EmbeddingSplit, SMART, SiFT, BregmanProximalPoint
    from siftkit import symmetric_kl, DIVERGENCES, AdversarialTrainer
"""

from siftkit.config import RunConfig
from siftkit.data import DataError, load
from siftkit.divergences import DIVERGENCES, get_divergence, js, kl, mse, symmetric_kl
from siftkit.models import load_model
from siftkit.regularizers import SMART, AdversarialRegularizer, BregmanProximalPoint, SiFT
from siftkit.split import EmbeddingSplit

__version__ = "0.1.0"


def train(cfg, **kwargs):
    """Run one protocol; see `siftkit.training.train`."""
    from siftkit.training import train as _train

    return _train(cfg, **kwargs)


def __getattr__(name):
    # The Trainer subclass imports transformers.Trainer (slow); load it on first use.
    if name == "AdversarialTrainer":
        from siftkit.hf_trainer import AdversarialTrainer

        return AdversarialTrainer
    raise AttributeError(f"module 'siftkit' has no attribute {name!r}")


__all__ = [
    "RunConfig", "train", "load", "load_model", "DataError", "EmbeddingSplit", "SMART", "SiFT",
    "AdversarialRegularizer", "BregmanProximalPoint", "symmetric_kl", "kl", "js", "mse",
    "DIVERGENCES", "get_divergence", "AdversarialTrainer", "__version__",
]
