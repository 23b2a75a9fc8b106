"""A study spec: the YAML file beside a study's plan (``<name>_study.yaml``) saying what
`summarize` reads about that study beyond its records, so that no study's tag names sit in the
library. Every key is optional:

- ``old_gap``, ``controls``, ``questions``: an equal-budget study's (`siftkit.study.budget`); the
  spec applies to the group that holds the old gap's arms (`siftkit.study.budget.spec_for`). A
  ``controls`` entry names a tag to read as a control although it sets no control field: the
  text of what it tests, or ``{tests: ..., varies: [field, ...]}`` with the config fields in
  which it differs from its uncontrolled partner (`listed_control`);
- ``regime``: a table of seed-paired comparisons named by variant, ``pairs`` of
  ``[a, b, what it tests]``, with its ``title``, its ``intro`` (``{sizes}`` in it: the measured
  sizes of the variants whose names match one of the ``sizes`` patterns, `re.search`) and the
  ``headline`` pairs ``[a, b]`` repeated at the top of SUMMARY.md;
- ``paired``: more ``[a, b]`` rows of each group's paired table, ``b`` a control (so never
  itself compared with its algorithm's default);
- ``markers``: the matplotlib marker of each kind of marked point in the size figures
  (`siftkit.study.tags.point_kind`);
- ``learning_curves``: the variants each group's learning-curves figure draws beside plain,
  SMART and SiFT, each with the label of its line style;
- ``leaderboard``: a benchmark across shifts (`siftkit.study.leaderboard`): ``tag_prefix``, the
  tag every benchmark arm's grid starts with, and optionally ``title``, ``question`` and the
  declared ``budget`` ``{points, seeds}`` every arm gets; its table, forest figures and verdict
  sentences open SUMMARY.md.

All but the equal-budget keys apply to every summarized group, a pair only where both of its
variants ran (`find_specs`: every spec at the top of the summarized folders).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

SPEC_SUFFIX = "_study.yaml"
SPEC_KEYS = frozenset(
    {"old_gap", "controls", "questions", "regime", "paired", "markers", "learning_curves", "leaderboard"}
)
LEADERBOARD_KEYS = frozenset({"tag_prefix", "title", "question", "budget", "step_cost"})
OLD_GAP_KEYS = frozenset({"arm", "against", "point"})
CONTROL_ENTRY_KEYS = frozenset({"tests", "varies"})
QUESTION_KEYS = ("beat_reference", "matched_size", "old_gap")
REGIME_KEYS = frozenset({"title", "intro", "sizes", "pairs", "headline"})
# Study specs as `load_spec` returns them, in the order they apply.
Specs = Sequence[Mapping[str, Any]]
# The regime table's heading when no spec names one: without a spec it holds only the controls
# at the size curve's sizes (``curve_eps<E>_<kind>``).
DEFAULT_REGIME_TITLE = "Controls at the size curve's sizes"


# ----------------------------------------------------------------------------- reading


def load_spec(path: str | Path) -> dict[str, Any]:
    """Read and check a study spec; a ValueError names the file and the bad key."""
    path = Path(path)
    spec = _read_yaml(path)
    if not isinstance(spec, dict):
        raise ValueError(f"study spec {path}: must be a mapping of {', '.join(sorted(SPEC_KEYS))}")
    unknown = sorted(set(spec) - SPEC_KEYS)
    if unknown:
        raise ValueError(
            f"study spec {path}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(SPEC_KEYS))}"
        )
    _check_equal_budget_keys(spec, path)
    _check_regime(spec.get("regime"), path)
    _check_pairs(spec.get("paired"), 2, "paired", path)
    for name in ("markers", "learning_curves"):
        _check_text_mapping(spec.get(name), name, path)
    _check_leaderboard(spec.get("leaderboard"), path)
    return {**spec, "path": str(path)}


def _check_leaderboard(entry: Any, path: Path) -> None:
    if entry is None:
        return
    if not isinstance(entry, dict) or not isinstance(entry.get("tag_prefix"), str) or not entry["tag_prefix"]:
        raise ValueError(
            f"study spec {path}: leaderboard must be a mapping with tag_prefix (the tag every benchmark "
            f"arm starts with), got {entry!r}"
        )
    unknown = sorted(set(entry) - LEADERBOARD_KEYS)
    if unknown:
        raise ValueError(
            f"study spec {path}: leaderboard: unknown key(s) {', '.join(unknown)}; known: "
            f"{', '.join(sorted(LEADERBOARD_KEYS))}"
        )
    for name in ("title", "question", "step_cost"):
        if name in entry and not isinstance(entry[name], str):
            raise ValueError(f"study spec {path}: leaderboard {name} must be text, got {entry[name]!r}")
    budget = entry.get("budget")
    if budget is not None and not (
        isinstance(budget, dict)
        and set(budget) == {"points", "seeds"}
        and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in budget.values())
    ):
        raise ValueError(
            f"study spec {path}: leaderboard budget must be {{points: N, seeds: M}} (the grid points and "
            f"selection seeds every arm gets), got {budget!r}"
        )


def leaderboard_spec(specs: Specs) -> Mapping[str, Any] | None:
    """The first spec's ``leaderboard`` entry, or None."""
    return next((s["leaderboard"] for s in specs if s.get("leaderboard")), None)


def find_specs(paths: Iterable[str | Path]) -> list[dict[str, Any]]:
    """The study specs (``*_study.yaml``) at the top of each summarized folder, each once."""
    found: dict[Path, None] = {}
    for p in map(Path, paths):
        if p.is_dir():
            for f in sorted(p.glob("*" + SPEC_SUFFIX)):
                found[f.resolve()] = None
    return [load_spec(f) for f in found]


def _read_yaml(path: Path) -> Any:
    import yaml

    try:
        return yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"study spec {path}: cannot be read as YAML ({exc})") from None


def _check_equal_budget_keys(spec: Mapping[str, Any], path: Path) -> None:
    gap = spec.get("old_gap")
    if gap is not None:
        if not isinstance(gap, dict) or set(gap) != OLD_GAP_KEYS or not isinstance(gap["point"], dict):
            raise ValueError(
                f"study spec {path}: old_gap must have exactly arm, against and point (a mapping of "
                f"grid field to value), got {gap!r}"
            )
    for name, kind in (("controls", dict), ("questions", dict)):
        if not isinstance(spec.get(name) or {}, kind):
            raise ValueError(f"study spec {path}: {name} must be a mapping, got {spec[name]!r}")
    for tag, entry in (spec.get("controls") or {}).items():
        _check_listed_control(tag, entry, path)
    bad = sorted(set(spec.get("questions") or {}) - set(QUESTION_KEYS))
    if bad:
        raise ValueError(
            f"study spec {path}: questions: unknown verdict(s) {', '.join(bad)}; known: {', '.join(QUESTION_KEYS)}"
        )


def _check_listed_control(tag: str, entry: Any, path: Path) -> None:
    """A ``controls`` entry: what the control tests, as text, or a mapping ``tests`` (text) and
    ``varies`` (the config fields it sets that are not control fields, e.g. ``adv_rule``)."""
    if isinstance(entry, str):
        return
    varies = entry.get("varies", []) if isinstance(entry, dict) else None
    if not (
        isinstance(entry, dict)
        and set(entry) <= CONTROL_ENTRY_KEYS
        and isinstance(entry.get("tests", ""), str)
        and isinstance(varies, list)
        and all(isinstance(f, str) for f in varies)
    ):
        raise ValueError(
            f"study spec {path}: controls: {tag}: must be the text of what it tests, or a mapping of "
            f"tests (text) and varies (a list of config field names), got {entry!r}"
        )


def listed_control(spec: Mapping[str, Any], tag: str) -> tuple[str | None, tuple[str, ...]]:
    """(what it tests, the fields it varies) of a tag the spec lists under ``controls``;
    (None, ()) for a tag it does not list."""
    entry = (spec.get("controls") or {}).get(tag)
    if isinstance(entry, dict):
        return entry.get("tests") or None, tuple(entry.get("varies") or ())
    return entry, ()


def _check_regime(regime: Any, path: Path) -> None:
    if regime is None:
        return
    if not isinstance(regime, dict) or set(regime) - REGIME_KEYS:
        raise ValueError(
            f"study spec {path}: regime must be a mapping of {', '.join(sorted(REGIME_KEYS))}, got {regime!r}"
        )
    for name in ("title", "intro"):
        if not isinstance(regime.get(name, ""), str):
            raise ValueError(f"study spec {path}: regime: {name} must be text, got {regime[name]!r}")
    _check_pairs(regime.get("pairs"), 3, "regime: pairs", path)
    _check_pairs(regime.get("headline"), 2, "regime: headline", path)
    sizes = regime.get("sizes") or []
    if not isinstance(sizes, list) or not all(isinstance(p, str) for p in sizes):
        raise ValueError(f"study spec {path}: regime: sizes must be a list of patterns, got {sizes!r}")
    for pattern in sizes:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ValueError(f"study spec {path}: regime: sizes: {pattern!r} is not a pattern ({exc})") from None


def _check_pairs(pairs: Any, width: int, name: str, path: Path) -> None:
    """A list of rows of `width` texts: two variants (and what comparing them tests)."""
    if pairs is None:
        return
    if not isinstance(pairs, list) or not all(
        isinstance(p, list) and len(p) == width and all(isinstance(x, str) for x in p) for p in pairs
    ):
        what = "[a, b, what it tests]" if width == 3 else "[a, b]"
        raise ValueError(f"study spec {path}: {name} must be a list of {what} rows of variant names, got {pairs!r}")


def _check_text_mapping(value: Any, name: str, path: Path) -> None:
    if value is not None and not (
        isinstance(value, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in value.items())
    ):
        raise ValueError(f"study spec {path}: {name} must be a mapping of text to text, got {value!r}")


# ----------------------------------------------------------------------------- what the specs say, together


def regime_section(specs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Every spec's ``regime`` together: the first title and intro given, the others' pairs,
    size patterns and headline pairs after the first's."""
    regimes = [s["regime"] for s in specs if s.get("regime")]
    return {
        "title": next((r["title"] for r in regimes if r.get("title")), DEFAULT_REGIME_TITLE),
        "intro": next((r["intro"] for r in regimes if r.get("intro")), ""),
        "sizes": [p for r in regimes for p in r.get("sizes") or ()],
        "pairs": [tuple(p) for r in regimes for p in r.get("pairs") or ()],
        "headline": [tuple(p) for r in regimes for p in r.get("headline") or ()],
    }


def paired_rows(specs: Sequence[Mapping[str, Any]]) -> list[tuple[str, str]]:
    """Every spec's ``paired`` rows, in spec order."""
    return [tuple(p) for s in specs for p in s.get("paired") or ()]


def point_markers(specs: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    """The specs' ``markers`` together; the first spec naming a kind wins."""
    out: dict[str, str] = {}
    for s in reversed(specs):
        out.update(s.get("markers") or {})
    return out


def learning_curve_variants(specs: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    """The specs' ``learning_curves`` together (variant -> its line style's label), in spec order."""
    out: dict[str, str] = {}
    for s in specs:
        for variant, label in (s.get("learning_curves") or {}).items():
            out.setdefault(variant, label)
    return out
