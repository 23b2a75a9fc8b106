"""The statistics every table and figure of a study shares, and how they are written.

Intervals are two-sided 95% Student t intervals from `scipy.stats`; a difference is paired by
seed (the runs of one seed share the data split and the head's initialisation). Missing values
(NaN) never enter a number.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from scipy import stats as _stats

CONFIDENCE = 0.95


def t_critical(df: int, confidence: float = CONFIDENCE) -> float:
    """Two-sided Student t critical value (scipy.stats.t), NaN without degrees of freedom."""
    return float(_stats.t.ppf(0.5 + confidence / 2, df)) if df >= 1 else math.nan


def mean_ci(values: Sequence[float], confidence: float = CONFIDENCE) -> dict[str, float]:
    """n, mean, sample std and the t interval of the mean; NaN where undefined."""
    xs = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    n = len(xs)
    if n == 0:
        return {"n": 0, "mean": math.nan, "std": math.nan, "low": math.nan, "high": math.nan}
    m = statistics.fmean(xs)
    if n == 1:
        return {"n": 1, "mean": m, "std": math.nan, "low": math.nan, "high": math.nan}
    sd = statistics.stdev(xs)
    if sd == 0:  # scipy returns NaN for a zero-width interval; the interval is the point
        return {"n": n, "mean": m, "std": 0.0, "low": m, "high": m}
    low, high = _stats.t.interval(confidence, n - 1, loc=m, scale=sd / math.sqrt(n))
    return {"n": n, "mean": m, "std": sd, "low": float(low), "high": float(high)}


def t_interval(values: Sequence[float]) -> tuple[float, float]:
    """(low, high) of `mean_ci`, the point itself for fewer than two values (seaborn's
    ``errorbar`` callable: no band where there is no interval)."""
    ci = mean_ci(values)
    return (ci["mean"], ci["mean"]) if math.isnan(ci["low"]) else (ci["low"], ci["high"])


def paired_difference(a: Mapping[int, float], b: Mapping[int, float]) -> dict[str, Any]:
    """Mean of a − b over the seeds both have (and both recorded), with its 95% t interval."""
    seeds = sorted(s for s in set(a) & set(b) if not (math.isnan(a[s]) or math.isnan(b[s])))
    out = mean_ci([a[s] - b[s] for s in seeds])
    return {**out, "seeds": seeds}


@dataclass(frozen=True)
class Estimate:
    """A mean over seeds (or over seed-paired differences) with its sample std and 95% t
    interval, and the seeds it is over; NaN where undefined (`mean_ci`, `paired_difference`)."""

    n: int
    mean: float
    std: float
    low: float
    high: float
    seeds: tuple[int, ...] = ()

    @classmethod
    def of(cls, values: Sequence[float], seeds: Sequence[int] = ()) -> Estimate:
        """`mean_ci` of `values`, over `seeds` (the seeds they came from, given by the caller)."""
        return cls(**mean_ci(values), seeds=tuple(seeds))

    @classmethod
    def paired(cls, a: Mapping[int, float], b: Mapping[int, float]) -> Estimate:
        """`paired_difference`: a − b over the seeds both have."""
        d = paired_difference(a, b)
        return cls(n=d["n"], mean=d["mean"], std=d["std"], low=d["low"], high=d["high"], seeds=tuple(d["seeds"]))

    @classmethod
    def none(cls) -> Estimate:
        """No values: n 0, every number NaN."""
        return cls.of([])

    @property
    def reading(self) -> str:
        return reading(self.as_dict())

    def as_dict(self) -> dict[str, Any]:
        """The dict `mean_ci` returns, with ``seeds`` as a list."""
        return {
            "n": self.n,
            "mean": self.mean,
            "std": self.std,
            "low": self.low,
            "high": self.high,
            "seeds": list(self.seeds),
        }


def reading(d: Mapping[str, Any]) -> str:
    """What an interval says, in words."""
    if d["n"] < 2 or math.isnan(d["low"]):
        return "too few seeds for an interval"
    if d["low"] > 0:
        return "positive (CI excludes 0)"
    if d["high"] < 0:
        return "negative (CI excludes 0)"
    return "no detectable difference (CI includes 0)"


# ----------------------------------------------------------------------------- as text


def _missing(x: Any) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def format_mean_std(
    mean: float | None, std: float | None = None, n: float | int | None = None, digits: int = 3, *, missing: str = "—"
) -> str:
    """``0.512 ± 0.013 (n=3)``; ``0.512 (n=1)`` for one run; `missing` without runs. The n is
    left out when not given (SUMMARY.md has it in a column of its own)."""
    if _missing(mean):
        return missing
    text = f"{mean:.{digits}f}"
    if not _missing(std):
        text += f" ± {std:.{digits}f}"
    if not _missing(n):
        text += f" (n={int(n)})"
    return text


def format_ci(d: Mapping[str, Any], digits: int = 3, *, missing: str = "–") -> str:
    """``[0.690, 0.734]``: the interval of `d` (``low``, ``high``), each end `missing` where undefined."""
    return (
        f"[{format_mean_std(d['low'], digits=digits, missing=missing)}, "
        f"{format_mean_std(d['high'], digits=digits, missing=missing)}]"
    )


def format_mean_ci(d: Mapping[str, Any], *, missing: str = "–") -> str:
    """``0.712 [0.690, 0.734]``; the mean alone where there is no interval (one seed)."""
    if math.isnan(d["mean"]):
        return missing
    return format_mean_std(d["mean"]) + ("" if math.isnan(d["low"]) else f" {format_ci(d, missing=missing)}")
