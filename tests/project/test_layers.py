"""The package's layers: core ← data ← methods ← run ← study ← cli (explore above study), imports only
pointing down, no cycles, and a top level that loads nothing heavy until a name is used."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import grimp
import pytest

REPO = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "datasets", "transformers", "accelerate")


def _heavy_after(code: str) -> list[str]:
    out = subprocess.run(
        [sys.executable, "-c", code + f"\nimport sys\nprint([m for m in {HEAVY!r} if m in sys.modules])"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return eval(out.strip().splitlines()[-1])  # noqa: S307 - our own printed list


@pytest.mark.subprocess
@pytest.mark.parametrize(
    "code",
    [
        "import siftkit",
        "import siftkit.study, siftkit.study.summarize, siftkit.study.budget, siftkit.study.figures, siftkit.study.runs",
        "import siftkit.study.stats, siftkit.study.tags, siftkit.study.select, siftkit.study.measured, "
        "siftkit.study.matched, siftkit.study.arms, siftkit.study.reference, siftkit.study.regime, siftkit.study.spec, "
        "siftkit.study.style, siftkit.study.tables",
        "from siftkit.cli.main import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass",
        "from siftkit.cli.main import main\ntry:\n    main(['summarize', '--help'])\nexcept SystemExit:\n    pass",
    ],
)
def test_light_entry_points_import_neither_torch_nor_datasets(code):
    assert _heavy_after(code) == []


@pytest.mark.subprocess
def test_public_names_still_load_from_the_top():
    code = (
        "from siftkit import RunConfig, train, load, load_model, DataError, EmbeddingSplit, SMART, SiFT, "
        "AdversarialRegularizer, BregmanProximalPoint, symmetric_kl, kl, js, mse, DIVERGENCES, get_divergence, "
        "AdversarialTrainer\nimport siftkit\nassert set(siftkit.__all__) <= set(dir(siftkit))"
    )
    assert "torch" in _heavy_after(code)  # loaded on use, and every name resolved


def test_unknown_top_level_name_is_an_attribute_error():
    import siftkit

    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        siftkit.nope  # noqa: B018


@pytest.mark.subprocess
def test_layers_contract_is_kept():
    """pyproject.toml's [tool.importlinter] contract, checked as `lint-imports` checks it."""
    lint = Path(sys.executable).with_name("lint-imports")
    done = subprocess.run(
        [str(lint), "--config", str(REPO / "pyproject.toml"), "--no-cache"], cwd=REPO, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout[-3000:]
    assert "1 kept, 0 broken" in done.stdout


def test_no_import_cycles_between_modules():
    graph = grimp.build_graph("siftkit", include_external_packages=False)
    modules = sorted(m for m in graph.modules if m != "siftkit")
    edges = {m: {d for d in graph.find_modules_directly_imported_by(m) if d != "siftkit"} for m in modules}
    # Tarjan's strongly connected components: any with two or more modules is a cycle.
    index, low, stack, on, cycles = {}, {}, [], set(), []

    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for m in modules:
        if m not in index:
            visit(m)
    assert cycles == []


def test_each_layer_is_a_folder():
    layers = sorted(p.name for p in (REPO / "siftkit").iterdir() if (p / "__init__.py").exists())
    assert layers == ["cli", "core", "data", "explore", "methods", "run", "study"]
    assert sorted(p.name for p in (REPO / "siftkit").glob("*.py")) == ["__init__.py", "__main__.py"]


# Inside siftkit.study: the general kit (reading and grouping runs, statistics, choosing a grid
# point, the metric registry) imports none of one study's specifics (the paper's figures, the
# regime table, a spec's conventions, the tag conventions, the budget study and its report).
STUDY_GENERAL = ("runs", "stats", "select", "metrics")
STUDY_SPECIFIC = (
    "paper",
    "regime",
    "spec",
    "tags",
    "budget",
    "report",
    "summarize",
    "figures",
    "leaderboard",
    "matched",
    "wise",
    "reference",
)


def test_the_studys_general_modules_import_no_study_specifics():
    graph = grimp.build_graph("siftkit", include_external_packages=False)
    bad = {
        f"{g} -> {s}"
        for g in STUDY_GENERAL
        for s in STUDY_SPECIFIC
        if graph.chain_exists(f"siftkit.study.{g}", f"siftkit.study.{s}")
    }
    assert bad == set()
