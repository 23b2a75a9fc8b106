import os
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
