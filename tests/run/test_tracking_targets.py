"""report_to: what a tracker would write to is checked before training, in one line.

Before, a TensorBoard folder that was a file (or could not be written) ended in accelerate's
traceback "no attribute 'writer'", an MLFLOW_TRACKING_URI at a closed port was silent for
minutes of retries and then a traceback, and a server answering 404, an unknown scheme or
MLflow 3's refused file store were tracebacks. Only 127.0.0.1 is ever contacted here, and
every wait is bounded (the connection probe's timeout, the server thread's join).
"""

from __future__ import annotations

import errno
import http.server
import socket
import threading
from pathlib import Path

import pytest
from helpers import robustness_log

from siftkit.run import tracking
from siftkit.run.config import RunConfig
from siftkit.run.training import train

pytest.importorskip("tensorboard")
pytest.importorskip("mlflow")

BASE = dict(
    task="twitter_to_uci",
    algo="plain",
    model_name="random:bert",
    max_train_samples=8,
    max_eval_samples=8,
    per_device_train_batch_size=4,
    per_device_eval_batch_size=8,
    uci_num_train_epochs=1,
    learning_rate=1e-3,
    logging_steps=1,
    max_length=32,
    seed=5,
    cpu=True,
    eval_smoothness=False,
)


@pytest.fixture(autouse=True)
def _no_tracking_uri(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)


def _refused(out: Path, report_to: list[str]) -> str:
    with pytest.raises(ValueError) as info:
        train(RunConfig(**BASE, output_dir=str(out), report_to=report_to), progress=False)
    message = str(info.value)
    assert "\n" not in message
    assert not (out / "results.json").exists()
    return message


def test_a_tensorboard_folder_that_is_a_file(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "tensorboard").write_text("notes")
    message = _refused(out, ["tensorboard"])
    assert message == (
        f"{out / 'tensorboard'} is a file, but report_to tensorboard writes its event files into a "
        f"folder of that name; move the file away, or choose another output_dir"
    )
    assert (out / "tensorboard").read_text() == "notes"
    robustness_log("report_to tensorboard, with output_dir/tensorboard a file", message, **{"runs/exp": out})


def test_a_tensorboard_folder_that_cannot_be_written(tmp_path, monkeypatch):
    out = tmp_path / "run"
    (out / "tensorboard").mkdir(parents=True)
    real_touch = Path.touch

    def touch(self, *a, **kw):
        if self.name.startswith(".siftkit-write-test-") and self.parent.name == "tensorboard":
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return real_touch(self, *a, **kw)

    monkeypatch.setattr(tracking.Path, "touch", touch)
    message = _refused(out, ["tensorboard"])
    assert message == (
        f"the TensorBoard folder {out / 'tensorboard'} cannot be written (Permission denied): "
        f"report_to tensorboard writes its event files there; make {out / 'tensorboard'} writable, "
        f"choose another output_dir, or leave tensorboard out of report_to"
    )
    robustness_log("report_to tensorboard, with a read-only output_dir/tensorboard", message, **{"runs/exp": out})


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens once it is closed


def test_mlflow_at_a_closed_port_fails_at_once(tmp_path, monkeypatch):
    port = _closed_port()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{port}")
    message = _refused(tmp_path / "run", ["mlflow"])
    assert message == (
        f"$MLFLOW_TRACKING_URI='http://127.0.0.1:{port}': no MLflow tracking server answers at "
        f"127.0.0.1:{port} (Connection refused); start it (mlflow server --host 127.0.0.1 --port "
        f"{port}), or unset MLFLOW_TRACKING_URI to log to the run's own store <output_dir>/mlflow"
    )
    robustness_log(
        "`MLFLOW_TRACKING_URI=http://127.0.0.1:PORT` with nothing listening", message.replace(str(port), "PORT")
    )


class _NotFound(http.server.BaseHTTPRequestHandler):
    def _answer(self):
        body = b"<html>not here</html>"
        self.send_response(404)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer

    def log_message(self, *args):  # quiet
        pass


def test_a_server_answering_404_is_named(tmp_path, monkeypatch):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _NotFound)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        port = server.server_address[1]
        monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{port}")
        message = _refused(tmp_path / "run", ["mlflow"])
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
    assert message == (
        f"$MLFLOW_TRACKING_URI='http://127.0.0.1:{port}': the server at 127.0.0.1:{port} answers "
        f"HTTP 404 to MLflow's API (/api/2.0/mlflow/experiments/search); is it an MLflow tracking "
        f"server, at that path? Fix the URI, or unset MLFLOW_TRACKING_URI to log to the run's own "
        f"store <output_dir>/mlflow"
    )
    robustness_log("`MLFLOW_TRACKING_URI` at a web server that answers 404", message.replace(str(port), "PORT"))


def test_an_unknown_scheme_is_named(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "nonsense://x")
    message = _refused(tmp_path / "run", ["mlflow"])
    assert message == (
        "$MLFLOW_TRACKING_URI='nonsense://x': MLflow does not know the scheme 'nonsense'; it takes "
        "the http(s)://host:port of a tracking server, sqlite:///path/mlflow.db, postgresql://..., "
        "mysql://... or databricks; fix it, or unset MLFLOW_TRACKING_URI to log to the run's own "
        "store <output_dir>/mlflow"
    )
    robustness_log("`MLFLOW_TRACKING_URI=nonsense://x`", message)


def test_a_file_store_uri_is_named(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"file://{tmp_path / 'mlruns'}")
    message = _refused(tmp_path / "run", ["mlflow"])
    assert message.startswith(f"$MLFLOW_TRACKING_URI='file://{tmp_path / 'mlruns'}': MLflow refuses its file store (")
    assert message.endswith(
        f"); use a database store, e.g. sqlite:///{tmp_path / 'mlruns'}/mlflow.db, or unset "
        f"MLFLOW_TRACKING_URI to log to the run's own store <output_dir>/mlflow"
    )
    robustness_log(
        "`MLFLOW_TRACKING_URI=file:///.../mlruns` (MLflow 3 refuses its file store)", message, **{"tmp": tmp_path}
    )


@pytest.mark.slow
def test_a_working_sqlite_uri_still_trains(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'store.db'}")
    record = train(
        RunConfig(**BASE, output_dir=str(tmp_path / "run"), report_to=["mlflow", "tensorboard"]), progress=False
    )
    assert record["metrics"]["uci_test_accuracy"] is not None
    assert (tmp_path / "run" / "tensorboard" / "siftkit").is_dir()
