"""A P2 run's learning curves and accuracies read out in sentences, from the run's own numbers.

`read_curves` says, per stage, where the task loss starts and ends, how large the
regularizer's divergence R (and SMART's Bregman term) is beside it, and how large the
perturbation was; `read_zero_shot` says what Twitter validation, UCI zero-shot and UCI after
stage 2 show, with the binomial yardstick beside chance. The notebooks print these sentences
under the figures they read, so that a finding never rests on a number typed into the text
(which goes stale with the next run).

The history's points are the means over ``logging_steps`` windows, and one window is noisy
(batch 5: a window of 10 steps is 50 texts), so a stage's start and end are the means of its
first and last tenth of points (at least one point).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from siftkit.explore.analysis import binomial_yardstick
from siftkit.study.style import ALGO_LABELS

# A term below 1% of the task loss changes the objective by less than the loss moves between two
# logged windows; above 10% it is a sizeable part of what the optimizer descends.
SMALL_SHARE, LARGE_SHARE = 0.01, 0.10
# The history's columns of the methods that train on a perturbed loss with no separate term
# (FreeLB, PGD-K, FreeAT log only the size of their push).
_NO_TERM = "logs no separate regularizer term: it trains on the task loss of perturbed inputs"


def _history(record: Mapping[str, Any] | pd.DataFrame | Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    if isinstance(record, pd.DataFrame):
        return record
    if isinstance(record, Mapping):
        return pd.DataFrame(record.get("history", []))
    return pd.DataFrame(list(record))


def _window(n: int) -> int:
    """Points averaged for a stage's start and its end: a tenth of the stage, at least one."""
    return max(1, round(n / 10))


def _num(x: float) -> str:
    """A loss or divergence: three decimals from 0.01 up, two significant digits below."""
    if not math.isfinite(x):
        return "nan"
    return f"{x:.3f}" if abs(x) >= 0.01 or x == 0 else f"{x:.1e}"


def _share(part: float, whole: float) -> str:
    """A percentage: one decimal from 0.1% up, two significant digits below (never a bare 0.0%)."""
    if not whole > 0:
        return "n/a"
    pct = 100 * part / whole
    return f"{pct:.1f}%" if pct >= 0.1 or pct == 0 else f"{pct:.2g}%"


def _size_word(share: float) -> str:
    if share < SMALL_SHARE:
        return "small"
    if share < LARGE_SHARE:
        return "not negligible"
    return "a sizeable part of the objective"


def _growth(start: float, end: float) -> str:
    if not (start > 0 and end > 0):
        return ""
    ratio = end / start
    if ratio >= 1:
        return f" (×{ratio:.0f})" if ratio >= 10 else f" (×{ratio:.2g})"
    return f" (÷{1 / ratio:.0f})" if ratio <= 0.1 else f" (÷{1 / ratio:.2g})"


def _term_line(
    name: str,
    values: pd.Series,
    task_end: float,
    k: int,
    *,
    weight: float | None = None,
    weight_name: str = "λ",
    weighted_end: float | None = None,
) -> str:
    """One regularizer term of one stage: its start and end, and its end beside the task loss.

    The verdict (small, not negligible, sizeable) is on what the objective gets: the term times
    its `weight`, or `weighted_end` where the run logged the weighted term itself."""
    start, end = float(values.head(k).mean()), float(values.tail(k).mean())
    text = (
        f"  {name} goes from {_num(start)} to {_num(end)} nats{_growth(start, end)}; at the stage's end it is "
        f"{_share(end, task_end)} of the task loss"
    )
    added = end
    if weighted_end is not None:
        added = weighted_end
        text += f", and the weighted term the loss adds ({_num(weighted_end)} nats) is {_share(added, task_end)} of it"
    elif weight is not None and weight != 1.0:
        added = weight * end
        text += f", and weighted by {weight_name} = {weight:g} it adds {_share(added, task_end)} to the objective"
    if task_end > 0:
        text += f": {_size_word(added / task_end)}"
    return text + "."


def read_curves(
    record: Mapping[str, Any] | pd.DataFrame | Sequence[Mapping[str, Any]], *, num_classes: int = 2
) -> list[str]:
    """Sentences that read a run's learning curves: one paragraph per stage, then the push.

    `record` is a results.json record (its ``config`` gives the algorithm and the weights λ
    and μ), or its ``history`` alone (then the terms are read unweighted). Each stage says
    where the task loss goes (the means of its first and last tenth of logged points); a
    later stage says whether it starts above the previous stage's end and above ln C, the loss
    of a classifier with no opinion on `num_classes` classes; a regularized stage says where
    R goes and what share of the task loss it is at the end (and the weighted share where the
    weight is not 1), and where SMART's Bregman term goes.
    """
    hist = _history(record)
    cfg = record.get("config", {}) if isinstance(record, Mapping) else {}
    algo = cfg.get("algo")
    label = ALGO_LABELS.get(algo, algo) if algo else "this run"
    if hist.empty or "task_loss" not in hist:
        return ["The run logged no training history: there are no curves to read."]
    if "stage" not in hist:
        hist = hist.assign(stage="training")
    no_opinion = math.log(num_classes)
    has_r = "adv_loss" in hist and (hist["adv_loss"].fillna(0) > 0).any()
    has_bregman = "bregman_loss" in hist and (hist["bregman_loss"].fillna(0) > 0).any()
    # R's weight: R-Drop and R3F log the weighted term themselves (reg_loss); SMART and SiFT
    # weight it by adv_weight (lambda).
    weight = None if "reg_loss" in hist else cfg.get("adv_weight")
    out: list[str] = []
    previous_end = None
    previous_name = None
    for name, stage in hist.groupby("stage", sort=False):
        k = _window(len(stage))
        steps = stage["global_step"] if "global_step" in stage else pd.Series(range(1, len(stage) + 1))
        task = stage["task_loss"].astype(float)
        start, end = float(task.head(k).mean()), float(task.tail(k).mean())
        lines = [
            f"{name} (optimizer steps {int(steps.iloc[0])}–{int(steps.iloc[-1])}, {len(stage)} logged points): "
            f"the task loss goes from {_num(start)} to {_num(end)} nats "
            + (f"(means of the first and last {k} points)." if k > 1 else "(its first and last points).")
        ]
        if previous_end is not None:
            higher = "above" if start > previous_end else "below"
            line = f"  It starts {higher} the end of {previous_name} ({_num(previous_end)})"
            if start > no_opinion:
                line += (
                    f" and above ln {num_classes} = {no_opinion:.3f}, the loss of a classifier with no opinion: "
                    f"the head starts this stage worse than having no opinion, carrying the previous stage's "
                    f"confidence into labels it does not fit"
                )
            else:
                line += f", at or below ln {num_classes} = {no_opinion:.3f} (the loss of a classifier with no opinion)"
            lines.append(line + ".")
        if has_r:
            r = stage["adv_loss"].fillna(0).astype(float)
            if (r > 0).any():
                weighted_end = (
                    float(stage["reg_loss"].fillna(0).astype(float).tail(k).mean()) if "reg_loss" in stage else None
                )
                lines.append(
                    _term_line(
                        "R, the regularizer's divergence (unweighted),",
                        r,
                        end,
                        k,
                        weight=weight,
                        weighted_end=weighted_end,
                    )
                )
            else:
                lines.append("  R is 0 in this stage: the regularizer does not run here (adv_stages).")
        elif algo == "plain" or (algo is None and not has_bregman):
            lines.append("  Plain fine-tuning has no regularizer: its objective is the task loss alone.")
        elif not has_bregman:
            lines.append(f"  {label} {_NO_TERM}.")
        if has_bregman and (stage["bregman_loss"].fillna(0) > 0).any():
            lines.append(
                _term_line(
                    "SMART's Bregman term (unweighted)",
                    stage["bregman_loss"].fillna(0).astype(float),
                    end,
                    k,
                    weight=cfg.get("bregman_weight"),
                    weight_name="μ",
                )
            )
        out.append("\n".join(lines))
        previous_end, previous_name = end, name
    if "relative_perturbation" in hist and (hist["relative_perturbation"].fillna(0) > 0).any():
        rel = hist["relative_perturbation"].astype(float)
        rel = rel[rel > 0]
        spread = "" if f"{rel.min():.2g}" == f"{rel.max():.2g}" else f" (from {rel.min():.2g} to {rel.max():.2g})"
        out.append(
            f"The push: the mean ‖Δ_t‖/‖z_t‖ over the logged points is {rel.mean():.2g} of each token's norm{spread}."
        )
    if has_r:
        out.append(
            "These are R's values beside the task loss, not its pull on the weights: that is R's gradient, "
            "which the history does not record."
        )
    return out


# ----------------------------------------------------------------------------- accuracies


def _texts(record: Mapping[str, Any], eval_set: str) -> int | None:
    """How many texts `eval_set` was evaluated on (the record's ``stages[*].evals``)."""
    for stage in record.get("stages", []) or []:
        n = (stage.get("evals") or {}).get(eval_set)
        if isinstance(n, int) and n > 0:
            return n
    return None


def _score(metrics: Mapping[str, Any], eval_set: str) -> tuple[float, float] | None:
    acc, mcc = metrics.get(f"{eval_set}_accuracy"), metrics.get(f"{eval_set}_mcc")
    if not isinstance(acc, (int, float)) or not math.isfinite(acc):
        return None
    return float(acc), float(mcc) if isinstance(mcc, (int, float)) else math.nan


def _size(n: int | None) -> str:
    return f"{n:,} texts" if n else "texts: not recorded"


def read_zero_shot(record: Mapping[str, Any], *, chance: float = 0.5) -> list[str]:
    """Sentences that read P2's accuracies: Twitter validation, UCI zero-shot, UCI after stage 2.

    The zero-shot accuracy is set beside `chance` (0.5: UCI is balanced) and the yardstick
    twice the binomial standard error of an accuracy of `chance` on that many texts: below
    chance by more than the yardstick is the label flip (Twitter's 1 is hate speech, UCI's 1
    positive sentiment), within it is not told apart from chance, above it a transfer with
    the labels' meanings aligned. A record without UCI zero-shot metrics (not P2) gets one
    sentence saying so.
    """
    metrics = record.get("metrics", {})
    zero = _score(metrics, "uci_zero_shot")
    if zero is None:
        task = record.get("config", {}).get("task")
        return [
            (
                f"This run has no UCI zero-shot evaluation (task {task!r}): the zero-shot reading is P2's "
                f"(twitter_to_uci)."
            )
        ]
    out = []
    val = _score(metrics, "twitter_val")
    if val is not None:
        line = (
            f"Twitter validation ({_size(_texts(record, 'twitter_val'))}), in domain after stage 1: "
            f"accuracy {val[0]:.3f}, MCC {val[1]:.3f}"
        )
        if val[1] == 0:
            line += " (MCC 0: no correlation with the labels, what predicting one label for every text gets)"
        out.append(line + ".")
    acc, mcc = zero
    n = _texts(record, "uci_zero_shot")
    line = f"UCI zero-shot ({_size(n)}), straight after stage 1: accuracy {acc:.3f}, MCC {mcc:.3f}."
    if n:
        yard = binomial_yardstick(chance, n)
        gap = acc - chance
        line += (
            f" Chance on balanced UCI is {chance:.1f}, and twice the binomial standard error of an accuracy of "
            f"{chance:.1f} on {n:,} texts is {yard:.3f}."
        )
        if gap < -yard and not mcc < 0:
            line += (
                f" {acc:.3f} is below chance by {-gap:.3f}, more than that yardstick, but the MCC is not "
                f"negative: the evaluated sentences are not balanced, and chance on them is not {chance:.1f}."
            )
        elif gap < -yard:
            line += (
                f" {acc:.3f} is below chance by {-gap:.3f}, more than that yardstick, and the MCC is negative: "
                "the predictions are anti-correlated with UCI's labels. This is the label flip: stage 1 learned Twitter's 1 = hate speech, and UCI's 1 means "
                "positive sentiment, so what the model calls hateful lines up with UCI's negative sentences. "
                f"The same predictions with 0 and 1 swapped would score {1 - acc:.3f}: the zero-shot number "
                "says how far stage 1 transfers, with a sign the labels' meanings decide; it is no "
                "sentiment skill, and no failure of stage 1."
            )
        elif gap > yard:
            line += (
                f" {acc:.3f} is above chance by {gap:.3f}, more than that yardstick: what stage 1 calls label 1 "
                f"goes with UCI's positive sentences more often than not."
            )
        else:
            line += (
                f" {acc:.3f} is within it ({gap:+.3f}): not told apart from chance; stage 1's predictions carry "
                f"no detectable information about UCI's labels in either direction."
            )
            if mcc == 0:
                line += " MCC 0 exactly: a classifier that predicts one label for every text gets exactly that."
    else:
        line += " (The record does not say how many texts, so no yardstick is drawn.)"
    out.append(line)
    test = _score(metrics, "uci_test")
    if test is not None:
        n_test = _texts(record, "uci_test")
        train = next((s.get("train_examples") for s in record.get("stages", []) or [] if s.get("name") == "uci"), None)
        after = f"after stage 2 ({train:,} UCI sentences)" if isinstance(train, int) else "after stage 2"
        line = (
            f"UCI test ({_size(n_test)}), {after}: accuracy {test[0]:.3f}, MCC {test[1]:.3f}, "
            f"{test[0] - acc:+.3f} from zero-shot."
        )
        if n_test:
            line += (
                f" Twice the binomial standard error of an accuracy near {test[0]:.2f} on {n_test:,} texts is "
                f"{binomial_yardstick(test[0], n_test):.3f}: a difference between two runs smaller than that is "
                f"evaluation noise before any seed-to-seed variation."
            )
        out.append(line)
    return out
