import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The real data folder: $SIFTKIT_DATA_DIR, else <repo>/../shared/data; skip if absent."""
    path = Path(os.environ.get("SIFTKIT_DATA_DIR", REPO.parent / "shared" / "data"))
    if not path.is_dir():
        pytest.skip(f"data folder {path} not found")
    return path
