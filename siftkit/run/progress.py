"""What a run shows while it trains: one updating line in a notebook, throttled lines on the
terminal, and a time-left estimate that says "estimating…" until it can be trusted.

Where the output goes:

- **In a Jupyter kernel** (JupyterLab, Colab, papermill): one line in the cell's output,
  updated in place (an IPython display handle: plain text and a small HTML bar, which a
  notebook saved to disk and a static page keep, unlike a widget). The throttled
  ``siftkit: ...`` lines go to the terminal that started the kernel *only*: ipykernel copies
  whatever the kernel writes to its stderr into the cell as well, so they are written to the
  copy of the original stderr that ipykernel keeps (papermill's terminal shows them; the cell
  does not pile them up into a wall).
- **In a terminal or script**: tqdm's bar on stderr, as before, and the same throttled lines.

The estimate (`RemainingTime`): the mean step time after the first step (which pays for
start-up: allocations, the first batch), and only once at least `min_steps` steps are timed,
the time left is known to within ``tolerance`` (twice its relative standard error, from the
mean's uncertainty and the remaining steps' own spread: about 95%) and the recent half of the
steps agrees with the whole to within ``tolerance / 2``. Until then the
line says "estimating…". With steady steps this keeps a shown estimate within ``tolerance``
(30%) of the time the stage's remaining steps take; on a machine whose load keeps changing it
may say "estimating…" for a whole stage, which is the truth.
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Callable
from typing import Any

# Seconds between two progress lines on the terminal (the first comes after step 1).
PROGRESS_EVERY_S = 30.0
# Seconds between two updates of the notebook's line.
NOTEBOOK_EVERY_S = 1.0


class RemainingTime:
    """The time left for a stage's remaining steps, or None while it cannot be trusted."""

    def __init__(
        self,
        total: int,
        done: int = 0,
        *,
        start: float,
        tolerance: float = 0.3,
        min_steps: int = 5,
        warmup_steps: int = 1,
    ):
        self.total, self.tolerance, self.min_steps = total, tolerance, min_steps
        self.warmup_left = warmup_steps
        self.last_step, self.last_time = done, start
        self.durations: list[float] = []  # seconds per step, one entry per timed step

    def add(self, step: int, now: float) -> None:
        steps = step - self.last_step
        if steps <= 0:
            return
        per_step = (now - self.last_time) / steps
        self.last_step, self.last_time = step, now
        if self.warmup_left > 0:  # the first step carries the start-up: never part of the rate
            self.warmup_left -= 1
            return
        self.durations.extend([per_step] * steps)

    def seconds_left(self) -> float | None:
        n = len(self.durations)
        if n < self.min_steps:
            return None
        mean = sum(self.durations) / n
        if mean <= 0:
            return None
        var = sum((d - mean) ** 2 for d in self.durations) / (n - 1)
        left = self.total - self.last_step
        # The time left is `left` future steps: its uncertainty is the mean's (known from n steps)
        # plus their own spread (which a few remaining noisy steps do not average out).
        if left > 0 and 2 * math.sqrt(var / n + var / left) / mean > self.tolerance:
            return None  # not known to within the tolerance (about 95%)
        recent = self.durations[n // 2 :]
        if abs(sum(recent) / len(recent) - mean) / mean > self.tolerance / 2:
            return None  # the step time is still changing
        return mean * left


def duration(seconds: float) -> str:
    if seconds < 10:
        return f"{seconds:.1f} s"
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


class ProgressLines:
    """Throttled one-line progress reports: the terminal's lines, and a notebook's one line.

    The first terminal line comes after the first step; then one every ``every_s`` seconds,
    and one when the stage ends. `stream` is where the terminal lines go (None: the process's
    own stderr, ``sys.__stderr__``); `notebook` a `NotebookLine` updated at most every second
    (and at the end). The time left is `RemainingTime`'s.
    """

    def __init__(
        self,
        label: str,
        total: int,
        done: int = 0,
        every_s: float = PROGRESS_EVERY_S,
        stream=None,
        clock: Callable[[], float] = time.monotonic,
        notebook: NotebookLine | None = None,
        note: str | None = None,
        first_note: str | None = None,
    ):
        self.label, self.total, self.every_s, self.clock = label, total, every_s, clock
        # `note` ends every line (the run's threads: "1 thread (auto)"); `first_note` ends the
        # stage's first terminal line instead (why: "auto: 2 cores, 1.0 busy with other work → 1 thread").
        self.note, self.first_note = note, first_note or note
        self.stream = stream if stream is not None else sys.__stderr__
        self.notebook = notebook
        self.start = clock()
        self.left = RemainingTime(total, done, start=self.start)
        self.last: float | None = None
        self.last_shown: float | None = None

    def text(self, step: int, loss: float | None, now: float, note: str | None = None) -> str:
        line = f"{self.label} step {step}/{self.total} ({100 * step / self.total:.0f}%)"
        if loss is not None and math.isfinite(loss):
            line += f" · loss {loss:.4f}"
        line += f" · {duration(now - self.start)}"
        if step < self.total:
            left = self.left.seconds_left()
            line += f", about {duration(left)} left" if left is not None else ", time left: estimating…"
        return line + (f" · {note}" if note else "")

    def update(self, step: int, loss: float | None = None) -> None:
        now = self.clock()
        self.left.add(step, now)
        final = step >= self.total
        terminal = self.last is None or now - self.last >= self.every_s or final
        shown = self.notebook is not None and (
            self.last_shown is None or now - self.last_shown >= NOTEBOOK_EVERY_S or final
        )
        if not (terminal or shown):
            return
        if terminal:
            note = self.first_note if self.last is None else self.note
            self.last = now
            if self.stream is not None:  # None under pythonw and some embedders
                print(f"siftkit: {self.text(step, loss, now, note)}", file=self.stream, flush=True)
        if shown:
            self.last_shown = now
            self.notebook.show(self.text(step, loss, now, self.note), step, self.total)


class NotebookLine:
    """One line in the running cell's output, updated in place (an IPython display handle)."""

    def __init__(self):
        from IPython.display import display

        self.handle = display(self._bundle("starting…", 0, 1), raw=True, display_id=True)

    @staticmethod
    def _bundle(line: str, step: int, total: int) -> dict[str, str]:
        from html import escape

        return {
            "text/plain": line,
            "text/html": f'<progress value="{step}" max="{total}" style="width:12em;vertical-align:middle">'
            f"</progress> <code>{escape(line)}</code>",
        }

    def show(self, line: str, step: int, total: int) -> None:
        if self.handle is not None:
            self.handle.update(self._bundle(line, step, total), raw=True)


class _NoBar:
    """Stands in for tqdm's bar where the notebook line shows the progress."""

    def update(self, n: int = 1) -> None:
        pass

    def set_postfix(self, *args, **kwargs) -> None:  # the loss is on the line already
        pass

    def close(self) -> None:
        pass


def in_notebook_kernel() -> bool:
    """True inside a Jupyter kernel (JupyterLab, Colab, papermill), False in a terminal."""
    shell = sys.modules.get("IPython") and _ipython()
    return shell is not None and type(shell).__name__ in ("ZMQInteractiveShell", "Shell")  # Shell: Colab


def _ipython() -> Any:
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - IPython ships with the notebooks extra
        return None
    return get_ipython()


_TERMINAL: dict[int, Any] = {}  # one writer per descriptor ipykernel kept, opened once per process


def terminal_stream():
    """The kernel's original stderr (the terminal that started it), bypassing ipykernel's copy
    into the cell; where ipykernel does not watch the descriptor, ``sys.__stderr__``."""
    copy = getattr(sys.stderr, "_original_stdstream_copy", None)
    if isinstance(copy, int) and getattr(sys.stderr, "_should_watch", False):
        if copy not in _TERMINAL:
            try:
                _TERMINAL[copy] = os.fdopen(os.dup(copy), "w", buffering=1, encoding="utf-8", errors="replace")
            except OSError:
                return sys.__stderr__
        return _TERMINAL[copy]
    return sys.__stderr__


def open_progress(
    label: str, total: int, done: int, *, show: bool, note: str | None = None, first_note: str | None = None
):
    """(bar, lines) for one stage: tqdm's bar and terminal lines in a terminal; in a notebook
    one updating line in the cell and the terminal lines on the kernel's own stderr only.
    `note` and `first_note` end the lines (`ProgressLines`)."""
    from tqdm.auto import tqdm

    if not show:
        return tqdm(total=total, initial=done, disable=True), None
    notes = {"note": note, "first_note": first_note}
    if in_notebook_kernel():
        return _NoBar(), ProgressLines(label, total, done, stream=terminal_stream(), notebook=NotebookLine(), **notes)
    return tqdm(total=total, initial=done, desc=label, leave=False), ProgressLines(label, total, done, **notes)
