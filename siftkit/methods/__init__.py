"""Training methods: what one training batch does. One name per method, everywhere.

``algo`` names a method in `RunConfig`, YAML, the command line, the notebooks and
results.json. Each method is a `siftkit.methods.base.Method` (torch) and, where it has knobs
of its own, a `siftkit.methods.knobs.MethodSettings` (torch-free); each has a page,
``docs/methods/<algo>.md``: what it perturbs, its loss, its cost, suggested settings, sources.

This module is torch-free: it names where each method lives, and loads a module only when
asked for it.
"""

from __future__ import annotations

import importlib
from typing import Any

# algo -> (module of its Method class, its class name; module of its settings or None, class name)
_REGISTRY: dict[str, tuple[str, str, str | None, str | None]] = {
    "plain": ("siftkit.methods.adversarial", "Plain", None, None),
    "smart": ("siftkit.methods.adversarial", "SmartMethod", None, None),
    "sift": ("siftkit.methods.adversarial", "SiftMethod", None, None),
    "freelb": ("siftkit.methods.freelb.method", "FreeLB", "siftkit.methods.freelb.settings", "FreeLBSettings"),
    "pgd": ("siftkit.methods.pgd.method", "PGD", "siftkit.methods.pgd.settings", "PGDSettings"),
    "freeat": ("siftkit.methods.freeat.method", "FreeAT", "siftkit.methods.freeat.settings", "FreeATSettings"),
    "vat": ("siftkit.methods.vat.method", "VATMethod", "siftkit.methods.vat.settings", "VATSettings"),
    "r3f": ("siftkit.methods.r3f.method", "R3FMethod", "siftkit.methods.r3f.settings", "R3FSettings"),
    "alum": ("siftkit.methods.alum.method", "Alum", "siftkit.methods.alum.settings", "AlumSettings"),
    "rdrop": ("siftkit.methods.rdrop.method", "RDrop", "siftkit.methods.rdrop.settings", "RDropSettings"),
}

# Methods whose knobs are RunConfig's own shared adversarial fields (adv_epsilon, adv_steps, ...),
# kept flat for the records written before methods had settings of their own.
FLAT_KNOB_METHODS = ("plain", "smart", "sift")


def names() -> tuple[str, ...]:
    return tuple(_REGISTRY)


def method_class(algo: str) -> Any:
    module, name, _, _ = _REGISTRY[algo]
    return getattr(importlib.import_module(module), name)


def settings_class(algo: str) -> Any | None:
    """The method's settings dataclass, or None for a method without knobs of its own."""
    _, _, module, name = _REGISTRY[algo]
    return None if module is None else getattr(importlib.import_module(module), name)


def knob_owners() -> dict[str, list[str]]:
    """Every method knob's name -> the methods that have a knob of that name."""
    owners: dict[str, list[str]] = {}
    for algo in _REGISTRY:
        cls = settings_class(algo)
        for name in cls.knob_names() if cls is not None else ():
            owners.setdefault(name, []).append(algo)
    return owners
