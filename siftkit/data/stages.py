"""A training stage: its training data, epochs and learning rate, the sets evaluated after it
and the one it is validated on. P1, P2 (`siftkit.run.protocols`) and shift specs
(`siftkit.data.shift_data`) all describe a run as a list of these."""

from __future__ import annotations

from dataclasses import dataclass, field

from datasets import Dataset


@dataclass
class Stage:
    name: str
    train: Dataset
    num_train_epochs: int
    learning_rate: float
    evals: dict[str, Dataset] = field(default_factory=dict)  # evaluated after this stage
    # The eval set this stage is validated on: evaluated after every epoch (a history row),
    # and what early stopping watches. None: the stage has no validation set.
    val: str | None = None
    val_metric: str = "accuracy"  # "accuracy" or "mcc" of the `val` set ("macro_f1" too for a shift spec)
    # Rows each dataset of a shift spec dropped as unmapped (`unmapped: drop`), by its place in the spec.
    dropped: dict[str, int] = field(default_factory=dict)

    @property
    def val_key(self) -> str | None:
        return f"{self.val}_{self.val_metric}" if self.val else None

    def describe(self) -> dict:
        return {
            "name": self.name,
            "train_examples": len(self.train),
            "num_train_epochs": self.num_train_epochs,
            "learning_rate": self.learning_rate,
            "evals": {k: len(v) for k, v in self.evals.items()},
            "val": self.val_key,
            **({"dropped_unmapped": dict(self.dropped)} if self.dropped else {}),
        }
