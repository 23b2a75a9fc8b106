"""Bad input to the notebooks' helpers (siftkit.explore.notebook), tried: each is refused with a
message naming the parameter, or leaves no empty folder behind (docs/robustness.md rows, through
`robustness_log`)."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import robustness_log

from siftkit.run.config import RunConfig
from siftkit.run.records import OutputDirError

REPO = Path(__file__).resolve().parents[2]
SMOKE = REPO / "params" / "smoke.yaml"


def _error(call, *args, kind=ValueError, **kwargs) -> str:
    with pytest.raises(kind) as err:
        call(*args, **kwargs)
    return str(err.value)


def test_notebook_empty_output_dir_is_refused():
    """papermill `-p output_dir ""` made the notebook write into the project root."""
    from siftkit.explore.notebook import config_from_parameters

    with pytest.raises(ValueError) as err:
        config_from_parameters({"output_dir": "", "params_file": str(SMOKE)})
    assert str(err.value).startswith("output_dir is empty ('');")
    robustness_log('papermill `-p output_dir ""`', f"ValueError: {err.value}")


def test_notebook_figures_folder_is_made_by_the_first_figure(tmp_path):
    from siftkit.explore.notebook import figures_dir

    folder = figures_dir(tmp_path / "run")
    assert folder == tmp_path / "run" / "figures" and not (tmp_path / "run").exists()
    import matplotlib.pyplot as plt

    from siftkit.explore import plotting

    fig = plt.figure()
    plotting.save_figure(fig, folder / "x.png")
    plt.close(fig)
    assert (folder / "x.png").is_file()
    robustness_log(
        "a notebook whose run fails after the first cell",
        "(no empty folder: the first cell only checks output_dir, and figures/ is made by the first saved figure)",
    )


def test_notebook_advice_only_where_it_helps(tmp_path):
    from siftkit.explore.notebook import prepare_output_dir

    (tmp_path / "notes.txt").write_text("x")
    cfg = RunConfig(output_dir=str(tmp_path / "notes.txt" / "run"))
    msg = _error(prepare_output_dir, cfg, kind=OutputDirError)
    assert msg == f"output_dir '{tmp_path / 'notes.txt' / 'run'}' is not writable: Not a directory"
    robustness_log(
        "notebook `-p output_dir notes.txt/run` (below a file)",
        msg,
        **{"notes.txt/run": tmp_path / "notes.txt" / "run"},
    )
