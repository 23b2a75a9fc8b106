"""Experiment trackers (TensorBoard, MLflow) through accelerate's tracker API.

``RunConfig.report_to`` names the trackers (``["tensorboard", "mlflow"]``; default none).
`accelerator_kwargs` gives `Accelerator` its ``log_with`` list and project folders;
`tracked` starts the trackers with the resolved config as hyperparameters
(``init_trackers``) and ends them (MLflow's run is marked FAILED when training raised), so
several trainings in one notebook kernel each get their own run; `log_row` logs one history
row at its global step, `log_metrics` an evaluation's metrics.

Where they write:

- TensorBoard: ``<output_dir>/tensorboard/siftkit/`` (the hyperparameters in a time-stamped
  folder beside it, as accelerate does); ``tensorboard --logdir <output_dir or a study>``.
- MLflow: ``$MLFLOW_TRACKING_URI`` when set (a tracking server, a shared store), else a
  local SQLite store ``<output_dir>/mlflow/mlflow.db`` (artifacts in ``mlflow/artifacts``),
  which needs no network: ``mlflow ui --backend-store-uri sqlite:///<output_dir>/mlflow/mlflow.db``.
  The experiment is ``siftkit`` unless ``$MLFLOW_EXPERIMENT_NAME`` says otherwise.

Names: a history row's values go under ``<stage>/<key>`` (``twitter/task_loss``,
``uci/relative_perturbation``, ``uci/learning_rate``), evaluation metrics and the run's final
summaries under ``eval/<metric>`` (``eval/uci_test_accuracy``), each at the run's global
optimizer step.

A resumed run continues the same curves and logs only what comes after its checkpoint's
step; what the interrupted process logged after that step is not shown twice: TensorBoard's
writer purges it (a restarted run's "purge step"), and MLflow, which cannot delete a value,
continues the same run (its id is kept in ``<output_dir>/trackers.json``) and skips each
value whose metric already has one at that step. A fresh (not resumed) run clears the folder's
earlier tracker output first. A tracker that is named in ``report_to`` but not installed is
an error naming the pip extra (accelerate itself would drop it with only a debug line).

Before any tracker starts, what it will write to is checked, so a bad one is one line and not a
traceback minutes later: TensorBoard's folder must be a writable folder, and
``$MLFLOW_TRACKING_URI`` must be a store MLflow takes that answers within seconds (a server
is first reached with a plain connection of `MLFLOW_CONNECT_TIMEOUT_S`, then asked once, with
no retries; MLflow's own client would retry a closed port for minutes).
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shutil
import socket
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from siftkit.run.checkpoint import latest_checkpoint
from siftkit.run.config import RunConfig

PROJECT = "siftkit"
TENSORBOARD_DIR = "tensorboard"
MLFLOW_DIR = "mlflow"
STATE_FILE = "trackers.json"
PIP_EXTRA = "siftkit[trackers]"
EVAL_PREFIX = "eval"

MLFLOW_CONNECT_TIMEOUT_S = 5.0  # a tracking server that does not accept a connection by then is refused
# The URI schemes MLflow's tracking client takes (``''`` is a plain path).
_MLFLOW_SCHEMES = (
    "",
    "file",
    "sqlite",
    "postgresql",
    "mysql",
    "mssql",
    "http",
    "https",
    "databricks",
    "databricks-uc",
    "uc",
)
_LOCAL_STORE_HINT = "or unset MLFLOW_TRACKING_URI to log to the run's own store <output_dir>/mlflow"

# The module each tracker needs (what accelerate checks before it silently drops one).
_MODULES = {"tensorboard": "tensorboard", "mlflow": "mlflow"}
# History columns that place a row rather than measure anything: the step is the x axis.
_ROW_POSITION = {"stage", "step", "global_step"}


def check_installed(report_to: list[str]) -> None:
    """A ValueError naming the pip extra for every tracker in `report_to` that is missing."""
    missing = [name for name in report_to if not _installed(_MODULES[name])]
    if missing:
        raise ValueError(
            f"report_to names {', '.join(map(repr, missing))}, which {'is' if len(missing) == 1 else 'are'} "
            f'not installed; install the trackers with: python -m pip install "{PIP_EXTRA}" '
            f'(in a checkout: python -m pip install -e ".[trackers]")'
        )


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def accelerator_kwargs(cfg: RunConfig) -> dict[str, Any]:
    """``log_with`` and ``project_config`` for ``Accelerator(...)``; empty without trackers.

    An Accelerator passed to ``train(cfg, accelerator=...)`` must be built with these when
    ``cfg.report_to`` names trackers.
    """
    if not cfg.report_to:
        return {}
    check_installed(cfg.report_to)
    from accelerate.utils import ProjectConfiguration

    out = Path(cfg.output_dir)
    return {
        "log_with": list(cfg.report_to),
        "project_config": ProjectConfiguration(project_dir=str(out), logging_dir=str(out / TENSORBOARD_DIR)),
    }


def hyperparameters(cfg: RunConfig) -> dict[str, bool | int | float | str]:
    """The resolved config as flat scalars, which both trackers take: None and lists as text,
    ``extra``'s entries as ``extra.<key>``."""
    values: dict[str, Any] = {}
    for name, value in cfg.to_dict().items():
        if name == "extra":
            values.update({f"extra.{k}": _scalar(v) for k, v in sorted(value.items())})
        else:
            values[name] = _scalar(value)
    return values


def _scalar(value: Any) -> bool | int | float | str:
    if isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value)) or "none"
    return "None" if value is None else json.dumps(value, sort_keys=True, default=str)


def row_values(row: dict[str, Any]) -> dict[str, float]:
    """One history row as tracker scalars: every number under ``<stage>/<key>``."""
    stage = row.get("stage", "train")
    return {
        f"{stage}/{key}": float(value)
        for key, value in row.items()
        if key not in _ROW_POSITION and isinstance(value, (int, float))
    }


class RunTracking:
    """The trackers of one run: started by `tracked`, fed by `log_row` / `log_metrics`."""

    def __init__(self, cfg: RunConfig, out: Path, accelerator):
        self.cfg, self.out, self.accelerator = cfg, Path(out), accelerator
        self.main = accelerator.is_main_process
        # Values at or before this step were logged before the checkpoint the run resumes from.
        self.resume_step = 0
        # MLflow metric -> the last step the interrupted process logged it at.
        self.mlflow_logged: dict[str, int] = {}
        self._set_uri = False

    # ---------------------------------------------------------------- start and end
    def start(self) -> None:
        names = self._check_log_with()
        if self.main:
            if "tensorboard" in names:
                check_tensorboard_folder(self.out / TENSORBOARD_DIR)
            if "mlflow" in names and os.environ.get("MLFLOW_TRACKING_URI"):
                check_mlflow_uri(os.environ["MLFLOW_TRACKING_URI"])
        resume_step = _checkpoint_step(self.out) if self.cfg.resume else None
        if "mlflow" in names:
            self._use_mlflow_store()
        if resume_step is None and self.main:
            self._clear_earlier_output()
        run_id = self._earlier_mlflow_run() if resume_step is not None and "mlflow" in names else None
        tensorboard_is_new = not (self.out / TENSORBOARD_DIR / PROJECT).is_dir()
        self.resume_step = resume_step or 0
        self.mlflow_logged = {k: s for k, s in self._mlflow_last_steps(run_id).items() if s > self.resume_step}
        init_kwargs = {"mlflow": self._mlflow_kwargs(run_id)}
        if resume_step is not None:
            # The interrupted process may have logged past the checkpoint: TensorBoard hides
            # those events, and they are logged again from here.
            init_kwargs["tensorboard"] = {"purge_step": resume_step + 1}
        hparams = hyperparameters(self.cfg)
        # A resumed run's hyperparameters were stored when it started (MLflow refuses to
        # change a logged parameter, and `resume` itself differs); a tracker new to it stores them.
        self.accelerator.init_trackers(
            PROJECT, config=hparams if resume_step is None else None, init_kwargs=init_kwargs
        )
        if resume_step is not None and self.main:
            new = {"tensorboard": tensorboard_is_new, "mlflow": run_id is None}
            for name in names:
                if new[name]:
                    self.accelerator.get_tracker(name).store_init_configuration(hparams)
        if "mlflow" in names and self.main:
            self._write_state({"mlflow_run_id": self.accelerator.get_tracker("mlflow", unwrap=True).info.run_id})

    def _check_log_with(self) -> list[str]:
        """The Accelerator's trackers, which must be those `report_to` names."""
        names = [str(t) for t in self.accelerator.log_with]
        if sorted(names) != sorted(self.cfg.report_to):
            raise ValueError(
                f"report_to={self.cfg.report_to} but the Accelerator given to train() reports to "
                f"{names or 'nothing'}; build it as Accelerator(**siftkit.run.tracking."
                f"accelerator_kwargs(cfg)) or let train() build it"
            )
        return names

    def _earlier_mlflow_run(self) -> str | None:
        """The MLflow run the interrupted process logged to, if the store still has it."""
        run_id = self._read_state().get("mlflow_run_id")
        if run_id is not None and not self._mlflow_run_exists(run_id):
            return None  # another store than the interrupted process's: a new run
        return run_id

    def end(self, succeeded: bool) -> None:
        """Finish every tracker (TensorBoard's writer closed, MLflow's run ended)."""
        acc = self.accelerator
        try:
            if not succeeded and self.main and any(t.name == "mlflow" for t in acc.trackers):
                import mlflow

                mlflow.end_run(status="FAILED")
            # What `accelerator.end_training()` does for trackers, without also destroying
            # the process group, which a caller's Accelerator (or the next run) may still use.
            for tracker in acc.trackers:
                tracker.finish()
        finally:
            acc.trackers = []  # the next init_trackers on this Accelerator starts afresh
            self._restore_uri()

    # ---------------------------------------------------------------- logging
    def log_row(self, row: dict[str, Any]) -> None:
        self._log(row_values(row), int(row["global_step"]))

    def log_metrics(self, metrics: dict[str, Any], step: int) -> None:
        self._log(
            {
                f"{EVAL_PREFIX}/{k}": float(v)
                for k, v in metrics.items()
                if isinstance(v, (int, float)) and not isinstance(v, bool)
            },
            step,
        )

    def _log(self, values: dict[str, float], step: int) -> None:
        if step <= self.resume_step or not values:
            return
        again = {k for k in values if step <= self.mlflow_logged.get(k, 0)}
        if not again:
            self.accelerator.log(values, step=step)
            return
        # Only after a resume, up to where the interrupted process got: MLflow already has these.
        for tracker in self.accelerator.trackers:
            kept = {k: v for k, v in values.items() if k not in again} if tracker.name == "mlflow" else values
            if kept:
                tracker.log(kept, step=step)

    # ---------------------------------------------------------------- MLflow's store
    def _use_mlflow_store(self) -> None:
        """$MLFLOW_TRACKING_URI, else this run's local SQLite store (set for the run only)."""
        if os.environ.get("MLFLOW_TRACKING_URI"):
            return
        store = (self.out / MLFLOW_DIR).resolve()
        if self.main:
            store.mkdir(parents=True, exist_ok=True)
        self._set_uri = True
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{store / 'mlflow.db'}"

    def _restore_uri(self) -> None:
        if self._set_uri:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
            self._set_uri = False

    def _mlflow_kwargs(self, run_id: str | None) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "run_name": _run_name(self.out),
            "tags": {
                "siftkit.output_dir": str(self.out.resolve()),
                "siftkit.task": self.cfg.task,
                "siftkit.algo": self.cfg.algo,
                "siftkit.seed": str(self.cfg.seed),
            },
            "run_id": run_id,
        }
        if self._set_uri:
            # The default artifact root of an SQLite store is ./mlruns in the working folder.
            kwargs["logging_dir"] = str((self.out / MLFLOW_DIR / "artifacts").resolve())
        return kwargs

    def _mlflow_run_exists(self, run_id: str) -> bool:
        if not self.main:
            return True
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient

        try:
            MlflowClient().get_run(run_id)
        except MlflowException:
            return False
        return True

    def _mlflow_last_steps(self, run_id: str | None) -> dict[str, int]:
        """Each metric of an existing run -> the last step it has a value at."""
        if run_id is None or not self.main:
            return {}
        from mlflow.tracking import MlflowClient

        client = MlflowClient()
        return {
            key: max(m.step for m in client.get_metric_history(run_id, key))
            for key in client.get_run(run_id).data.metrics
        }

    # ---------------------------------------------------------------- the run folder
    def _clear_earlier_output(self) -> None:
        """A fresh run owns its folder's tracker output: an earlier attempt's curves (a run
        that failed before its first checkpoint, or one overwritten) would mix with its own.

        The earlier attempt's MLflow run in the folder's own store is deleted the way MLflow
        deletes (marked deleted, hidden from searches and the UI), not by removing the
        database, which MLflow keeps open for the rest of the process. A run in a store named
        by $MLFLOW_TRACKING_URI is left alone: that store is not the folder's.
        """
        shutil.rmtree(self.out / TENSORBOARD_DIR, ignore_errors=True)
        earlier = self._read_state().get("mlflow_run_id")
        if earlier and self._set_uri and (self.out / MLFLOW_DIR / "mlflow.db").is_file():
            from mlflow.exceptions import MlflowException
            from mlflow.tracking import MlflowClient

            with contextlib.suppress(MlflowException):
                MlflowClient().delete_run(earlier)
        (self.out / STATE_FILE).unlink(missing_ok=True)

    def _read_state(self) -> dict[str, Any]:
        try:
            state = json.loads((self.out / STATE_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return state if isinstance(state, dict) else {}

    def _write_state(self, state: dict[str, Any]) -> None:
        tmp = self.out / f".{STATE_FILE}.tmp"
        tmp.write_text(json.dumps(state, indent=2) + "\n", encoding="utf-8")
        tmp.replace(self.out / STATE_FILE)


def check_tensorboard_folder(folder: Path) -> None:
    """TensorBoard writes its event files into `folder`: a file there, or a folder that cannot be
    written, is refused in one line (accelerate would fail with "no attribute 'writer'")."""
    if folder.exists() and not folder.is_dir():
        raise ValueError(
            f"{folder} is a file, but report_to tensorboard writes its event files into a folder of "
            f"that name; move the file away, or choose another output_dir"
        )
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    probe = existing / f".siftkit-write-test-{os.getpid()}"
    try:
        probe.touch()
        probe.unlink()
    except OSError as exc:
        raise ValueError(
            f"the TensorBoard folder {folder} cannot be written ({exc.strerror or exc}): report_to "
            f"tensorboard writes its event files there; make {existing} writable, choose another "
            f"output_dir, or leave tensorboard out of report_to"
        ) from None


def check_mlflow_uri(uri: str) -> None:
    """Refuse, in one line and within seconds, a $MLFLOW_TRACKING_URI that MLflow cannot use: an
    unknown scheme, a server that does not answer, one that is not an MLflow server, a store
    MLflow refuses (the file store of MLflow 3)."""
    from urllib.parse import urlparse

    where = f"$MLFLOW_TRACKING_URI={uri!r}"
    parsed = urlparse(uri)
    scheme = parsed.scheme.split("+")[0].lower()  # postgresql+psycopg2://...
    if scheme not in _MLFLOW_SCHEMES:
        raise ValueError(
            f"{where}: MLflow does not know the scheme {parsed.scheme!r}; it takes the "
            f"http(s)://host:port of a tracking server, sqlite:///path/mlflow.db, postgresql://..., "
            f"mysql://... or databricks; fix it, {_LOCAL_STORE_HINT}"
        )
    if scheme in ("http", "https"):
        host, port = parsed.hostname, parsed.port or (443 if scheme == "https" else 80)
        if not host:
            raise ValueError(f"{where} names no host; give it as http://host:port, {_LOCAL_STORE_HINT}")
        try:
            socket.create_connection((host, port), timeout=MLFLOW_CONNECT_TIMEOUT_S).close()
        except OSError as exc:
            reason = (
                "no answer within " + f"{MLFLOW_CONNECT_TIMEOUT_S:g} s"
                if isinstance(exc, TimeoutError)
                else (exc.strerror or str(exc))
            )
            raise ValueError(
                f"{where}: no MLflow tracking server answers at {host}:{port} ({reason}); start it "
                f"(mlflow server --host {host} --port {port}), {_LOCAL_STORE_HINT}"
            ) from None
    if scheme not in ("http", "https", "file", ""):
        return  # a database or Databricks: MLflow's own errors name them, at once
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    saved = {k: os.environ.get(k) for k in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT")}
    os.environ.update(MLFLOW_HTTP_REQUEST_MAX_RETRIES="0", MLFLOW_HTTP_REQUEST_TIMEOUT="10")
    try:
        MlflowClient(tracking_uri=uri).search_experiments(max_results=1)
    except (MlflowException, OSError) as exc:
        text = " ".join(str(exc).split())
        if scheme in ("file", ""):
            raise ValueError(
                f"{where}: MLflow refuses its file store ({_first_sentence(text)}); use a database "
                f"store, e.g. sqlite:///{parsed.path or '/path'}/mlflow.db, {_LOCAL_STORE_HINT}"
            ) from None
        status = next((w for w in ("404", "401", "403", "500", "502", "503") if f"error code {w}" in text), None)
        what = f"answers HTTP {status}" if status else f"cannot be used ({_first_sentence(text)[:200]})"
        raise ValueError(
            f"{where}: the server at {parsed.netloc} {what} to MLflow's API "
            f"(/api/2.0/mlflow/experiments/search); is it an MLflow tracking server, at that path? "
            f"Fix the URI, {_LOCAL_STORE_HINT}"
        ) from None
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _first_sentence(text: str) -> str:
    head, sep, _ = text.partition(". ")
    return head + "." if sep else head


def _checkpoint_step(out: Path) -> int | None:
    """The global step of the checkpoint a resumed run starts from (None: a fresh run)."""
    ckpt = latest_checkpoint(out)
    return None if ckpt is None else int(ckpt.name.split("-", 1)[1])


def _run_name(out: Path) -> str:
    """``twitter_to_uci/sift-mtdnn/seed1`` for a sweep's run folder: its last three parts."""
    return "/".join(out.resolve().parts[-3:])


# The active run's tracking per Accelerator, so the training loop's hooks need only the
# accelerator they already have.
_ACTIVE: weakref.WeakKeyDictionary[Any, RunTracking] = weakref.WeakKeyDictionary()


@contextlib.contextmanager
def tracked(cfg: RunConfig, out: Path, accelerator) -> Iterator[RunTracking | None]:
    """Trackers started for the block and ended after it, also when it raises."""
    if not cfg.report_to:
        yield None
        return
    run = RunTracking(cfg, out, accelerator)
    succeeded = False
    try:
        run.start()
        _ACTIVE[accelerator] = run
        yield run
        succeeded = True
    finally:
        _ACTIVE.pop(accelerator, None)
        run.end(succeeded)


def log_row(accelerator, row: dict[str, Any]) -> None:
    """Log one history row at its global step (nothing without trackers)."""
    run = _ACTIVE.get(accelerator)
    if run is not None:
        run.log_row(row)


def log_metrics(accelerator, metrics: dict[str, Any], step: int) -> None:
    """Log evaluation metrics at global step `step` (nothing without trackers)."""
    run = _ACTIVE.get(accelerator)
    if run is not None:
        run.log_metrics(metrics, step)


def log_cached(
    accelerator, history: list[dict[str, Any]], val_history: list[dict[str, Any]], metrics: dict[str, Any], step: int
) -> None:
    """Log a stage taken from the stage cache as if it had just been trained: its history rows,
    its per-epoch validation rows and its evaluation metrics (at the stage's last step)."""
    run = _ACTIVE.get(accelerator)
    if run is None:
        return
    for row in history:
        run.log_row(row)
    for row in val_history:
        run.log_metrics(
            {k: v for k, v in row.items() if k not in ("stage", "epoch", "global_step")}, int(row["global_step"])
        )
    run.log_metrics(metrics, step)
