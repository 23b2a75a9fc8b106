"""Run records: `results.json` (config, metrics, history, meta) and `history.csv`.

Files are written to a temporary name in the same folder and renamed into place, so a
kill never leaves a half-written file that a resume or a summary would read, and an
existing `results.json` is only replaced when the run was asked to (`overwrite=True`).
Whether a run may use its output folder at all is decided before, by `siftkit.run.outdir`.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import platform
import subprocess
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

RESULTS_FILE = "results.json"
HISTORY_FILE = "history.csv"


class OutputDirError(ValueError):
    """The output folder cannot take this run's files; the message says why.

    Defined here, with the writers that raise it (`write_results`), and raised as well by the
    folder's preparation in `siftkit.run.outdir`, which imports this module (never the reverse)."""


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write `text` under a temporary name, then rename it to `path`. The file gets the mode
    any new file gets (0666 less the umask), not mkstemp's private 0600: a group sharing a
    cluster folder reads results.json, history.csv and SUMMARY.md like the rest of it."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _umask() -> int:
    """The process's umask (read by setting it, so set back at once)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _json_safe(value: Any) -> Any:
    """NaN/inf become None so the file is strict JSON that any reader accepts."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if hasattr(value, "item") and callable(value.item):  # numpy / torch scalars
        return _json_safe(value.item())
    return value


def write_results(output_dir: str | Path, record: dict[str, Any], *, overwrite: bool) -> Path:
    out = Path(output_dir)
    path = out / RESULTS_FILE
    if path.exists() and not overwrite:
        raise OutputDirError(f"refusing to replace {path}: pass overwrite=True")
    text = json.dumps(_json_safe(record), indent=2, allow_nan=False) + "\n"  # fails before any write
    # history.csv first: results.json is what marks a run as finished (sweep, summarize), so
    # a kill between the two renames never leaves a "finished" run with a stale history.csv.
    atomic_write_text(out / HISTORY_FILE, history_csv(record.get("history", [])))
    atomic_write_text(path, text)
    return path


def history_csv(rows: Iterable[dict[str, Any]]) -> str:
    rows = list(rows)
    columns: list[str] = []
    for row in rows:
        columns.extend(k for k in row if k not in columns)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
    return buf.getvalue()


def load_results(path: str | Path) -> dict[str, Any]:
    """Read a results.json (or the one inside a run folder), with a clear error if broken."""
    path = Path(path)
    if path.is_dir():
        path = path / RESULTS_FILE
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"no results file at {path}") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON (line {exc.lineno}): {exc.msg}") from None
    except UnicodeDecodeError as exc:  # e.g. saved as UTF-16 by an editor
        raise ValueError(f"{path} is not UTF-8 text (byte {exc.start}); save it as UTF-8") from None
    if not isinstance(record, dict):
        kind = {bool: "boolean", int: "number", float: "number", str: "string", list: "array"}.get(type(record), "null")
        raise ValueError(
            f"{path} holds a JSON {kind}, not an object with config, "
            f"metrics, history and meta; not a siftkit results file"
        )
    for key in ("config", "metrics", "history", "meta"):
        if key not in record:
            raise ValueError(f"{path} has no {key!r} section; not a siftkit results file")
    return record


def environment_meta() -> dict[str, Any]:
    import accelerate
    import datasets
    import numpy
    import torch
    import transformers

    import siftkit

    return {
        "versions": {
            "siftkit": siftkit.__version__,
            "python": platform.python_version(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "datasets": datasets.__version__,
            "accelerate": accelerate.__version__,
            "numpy": numpy.__version__,
        },
        "platform": platform.platform(),
        "torch_threads": torch.get_num_threads(),
        "git_commit": git_commit(),
    }


def git_commit() -> str | None:
    """The commit of the siftkit checkout in use (with '+dirty' for local changes), if any.

    A source copy without `.git` (a tarball on a cluster) can name its commit in the
    environment variable SIFTKIT_GIT_COMMIT.
    """
    if os.environ.get("SIFTKIT_GIT_COMMIT"):
        return os.environ["SIFTKIT_GIT_COMMIT"]
    root = Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return sha + ("+dirty" if dirty else "") if sha else None
