"""siftkit: plain, SMART and SiFT fine-tuning of text classifiers, side by side."""

from siftkit.config import RunConfig

__version__ = "0.1.0"

__all__ = ["RunConfig", "__version__"]
