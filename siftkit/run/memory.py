"""Running out of memory, said with the settings that decide how much a run needs.

torch reports an exhausted CPU as a RuntimeError from ``DefaultCPUAllocator`` (or Python's
MemoryError) and a full GPU as ``torch.OutOfMemoryError``, each with a traceback from deep
inside a forward; neither says that the batch size and the text length are what to lower.
"""

from __future__ import annotations

import torch

_SIGNS = ("DefaultCPUAllocator: can't allocate memory", "CUDA out of memory", "out of memory", "Cannot allocate memory")


class RunOutOfMemoryError(ValueError):
    """A run that ran out of memory; the message names the settings to lower."""


def is_out_of_memory(exc: BaseException) -> bool:
    if isinstance(exc, (MemoryError, torch.OutOfMemoryError)):
        return True
    return isinstance(exc, RuntimeError) and any(sign in str(exc) for sign in _SIGNS)


def out_of_memory_message(cfg, exc: BaseException, device: str) -> str:
    first = " ".join(str(exc).split())
    first = first[:160] + ("..." if len(first) > 160 else "") if first else type(exc).__name__
    return (
        f"out of memory on {device} ({first}) with per_device_train_batch_size={cfg.per_device_train_batch_size}, "
        f"per_device_eval_batch_size={cfg.per_device_eval_batch_size} and max_length={cfg.max_length}: lower "
        f"per_device_train_batch_size (per_device_eval_batch_size if it ran out while evaluating) or max_length, "
        f"or use a smaller model; a run that has checkpoints continues with resume=True"
    )
