import multiprocessing.process
import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
_DEFAULT_DATA = REPO.parent / "shared" / "data"

# Tests never reach the Hub: the offline default model ships in a package.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
# Trackers stay offline and quiet: no usage telemetry from MLflow (or anything honouring DO_NOT_TRACK).
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")
# Runs started by tests (train(), subprocesses, papermill kernels) find the real data here.
if "SIFTKIT_DATA_DIR" not in os.environ and _DEFAULT_DATA.is_dir():
    os.environ["SIFTKIT_DATA_DIR"] = str(_DEFAULT_DATA)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The real data folder: $SIFTKIT_DATA_DIR, else <repo>/../shared/data; skip if absent."""
    path = Path(os.environ.get("SIFTKIT_DATA_DIR", _DEFAULT_DATA))
    if not path.is_dir():
        pytest.skip(f"data folder {path} not found")
    return path


@pytest.fixture(scope="session")
def smoke_params() -> Path:
    return REPO / "params" / "smoke.yaml"


@pytest.fixture(scope="session", autouse=True)
def _one_thread():
    """Every test runs torch on one intra-op thread: tiny models on a shared CPU are several
    times faster without thread contention, and exact comparisons do not depend on how many
    threads split a reduction. Restored at the end of the session."""
    from helpers import single_thread

    with single_thread():
        yield


# Marks that allow a test to start processes; the fast loop (README, Tests) deselects them.
_STARTS_PROCESSES = {"subprocess", "multiprocess", "notebooks"}
# Every train() records its commit with `git` and its platform (platform.platform() asks `uname -p`
# once per process): siftkit.run.records. Quick, and no reason to leave a test out of the fast loop.
_ALLOWED_COMMANDS = {"git", "uname"}


@pytest.fixture(autouse=True)
def _processes_only_where_marked(request, monkeypatch):
    """A test that starts a process (subprocess, papermill's kernel, nbconvert, torch.multiprocessing)
    without its mark fails here, naming the command: the fast loop must hold no such test."""
    marks = {m.name for m in request.node.iter_markers()}
    if not marks & _STARTS_PROCESSES:
        real_execute = subprocess.Popen._execute_child

        def refuse_child(self, args, *rest, **kwargs):
            argv = [args] if isinstance(args, (str, bytes, os.PathLike)) else list(args)
            if Path(os.fsdecode(argv[0]).split()[0]).name not in _ALLOWED_COMMANDS:
                pytest.fail(
                    f"{request.node.nodeid} starts a process ({' '.join(map(os.fsdecode, argv))[:200]}); "
                    "mark it @pytest.mark.subprocess (or notebooks, multiprocess)",
                    pytrace=False,
                )
            return real_execute(self, args, *rest, **kwargs)

        monkeypatch.setattr(subprocess.Popen, "_execute_child", refuse_child)
    if "multiprocess" not in marks:

        def refuse_start(self):
            pytest.fail(
                f"{request.node.nodeid} starts a process ({self!r}); mark it @pytest.mark.multiprocess", pytrace=False
            )

        monkeypatch.setattr(multiprocessing.process.BaseProcess, "start", refuse_start)
