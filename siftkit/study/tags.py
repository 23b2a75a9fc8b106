"""What a variant's tag says, by the conventions every study shares: the size curve, its
controls, and the order variants are listed in.

A size-curve run's tag is ``curve_eps<E>``, or ``<family>_curve_eps<E>`` for another curve of the
same sizes (``tuned_curve_eps0.3``: the curve re-run at another setting); the family keeps two
curves of one group apart. ``curve_eps<E>_<kind>`` is a control at that size. Any other tag names
a variant of its own.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

CURVE_TAG = re.compile(r"^(?:(?P<family>[A-Za-z0-9]+(?:_[A-Za-z0-9]+)*?)_)?curve_eps(?P<eps>[0-9.eE+-]+)$")
CURVE_CONTROL_TAG = re.compile(r"^curve_eps(?P<eps>[0-9.eE+-]+?)_(?P<kind>.+)$")


def curve_eps(tag: str | None) -> float | None:
    """The E of a size-curve tag ``curve_eps<E>`` or ``<family>_curve_eps<E>``; None for any other tag."""
    m = CURVE_TAG.match(tag or "")
    if not m:
        return None
    try:
        return float(m.group("eps"))
    except ValueError:
        return None


def curve_family(tag: str | None) -> str | None:
    """The family of a size-curve tag: ``""`` for ``curve_eps<E>``, ``tuned`` for
    ``tuned_curve_eps<E>``; None when the tag is no size-curve tag."""
    if curve_eps(tag) is None:
        return None
    return CURVE_TAG.match(tag).group("family") or ""


def curve_families(variants: Mapping[str, Sequence[Any]]) -> list[str]:
    """The size-curve families of a group (``""`` for ``curve_eps<E>``), sorted."""
    return sorted({f for recs in variants.values() if (f := curve_family(recs[0].tag)) is not None})


def point_kind(tag: str | None) -> str:
    """How a marked point is drawn: ``default`` (no tag), the control kind of a curve size
    (``curve_eps0.3_random`` -> ``random``), or the tag itself."""
    if not tag:
        return "default"
    m = CURVE_CONTROL_TAG.match(tag)
    return m.group("kind") if m else tag


def variant_order(variant: str) -> tuple:
    """Sort key: plain, SMART, SiFT; inside each the other variants by name, then the size
    curve by its E (numerically, so 1e-05 comes before 0.0001), each size's controls after it."""
    algo, _, tag = variant.partition("-")
    control = CURVE_CONTROL_TAG.match(tag)
    eps = curve_eps(tag) if control is None else curve_eps(f"curve_eps{control.group('eps')}")
    family = curve_family(tag) or ""  # one curve after the other, never interleaved by size
    return (
        {"plain": 0, "smart": 1, "sift": 2}.get(algo, 3),
        eps is not None,
        family,
        eps or 0.0,
        control is not None,
        variant,
    )
