"""The notebooks' first cell: parameters in, a validated `RunConfig` and a safe output folder out.

Every notebook has one ``parameters`` cell of plain literals (papermill injects its ``-p``
values in a cell right after it); the next cell calls `config_from_parameters(globals(), ...)`.
The rules, the same in every notebook:

- A parameter named like a `RunConfig` field *is* that field. ``None`` means "not set here":
  the value comes from ``params_file`` (a YAML of overrides, e.g. ``params/smoke.yaml``), else
  from `RunConfig`'s default. So a YAML value is never shadowed by a notebook default.
- Any other parameter must be one of `NOTEBOOK_PARAMETERS` (notebook-only knobs such as
  ``params_file`` or ``results_glob``). A misspelt name (``-p lerning_rate 1e-3``) or a bad
  value (``-p algo smrt``) raises `ValueError` in the first cell, with RunConfig's message.
- Relative paths (``params_file``, ``output_dir``, ``data_dir``, globs) are taken from the
  project root, the folder holding ``params/`` and ``notebooks/``: the same files whether
  the notebook runs in JupyterLab (cwd ``notebooks/``) or under papermill from the root.

Which names are parameters is read from the kernel's input history (``In``): the cells that
hold only ``name = literal`` lines are the ``parameters`` cell and papermill's injected
one. Later cells that define ordinary variables are therefore never mistaken for parameters
when the first cells are re-run out of order in JupyterLab.
"""

from __future__ import annotations

import ast
import difflib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from siftkit.run.config import RunConfig

# Notebook-only parameters (not RunConfig fields), with their meaning. tests/notebooks/test_notebooks.py
# keeps its own explicit allow-list and checks every notebook against it.
NOTEBOOK_PARAMETERS: dict[str, str] = {
    "params_file": "YAML of RunConfig overrides, e.g. params/smoke.yaml",
    "sentence": "00_tour: the sentence whose embeddings are perturbed",
    "interactive": "00_tour: build the ipywidgets panel (harmless without a frontend)",
    "texts_per_domain": "01, 05: texts sampled from each domain",
    "perturbation_texts": "01: texts per domain for the SMART/SiFT perturbation measurement",
    "runs_glob": "01: results.json of fine-tuned runs for the token-norm shift",
    "results_glob": "04: results.json files to compare",
    "study_glob": "04: the committed regime study, added to the size curves and verdicts",
    "equal_budget_glob": "04: the equal-budget study's runs, for its tables, curve at the tuned rate and verdicts",
    "study_spec": "04: the equal-budget study's spec (YAML beside its plan: the old gap, the verdicts' questions)",
    "benchmark_glob": "04: a benchmark's runs, for the leaderboard across shifts",
    "benchmark_spec": "04: the benchmark's study spec (tag prefix, declared budget, step costs)",
    "shift_spec": "01, 05: a shift spec (a YAML file holding it, or a params file with a shift: block)",
    "algos": "05: the algorithms trained on the spec, comma-separated",
    "include_test_models": "04: also compare runs on random test models (smoke runs), left out by default",
}

# Names IPython itself puts in a fresh kernel's namespace.
_IPYTHON_NAMES = {"In", "Out", "get_ipython", "exit", "quit", "open"}
_LITERAL_TYPES = (type(None), bool, int, float, str)


# ----------------------------------------------------------------------------- paths


def project_root(start: str | Path | None = None) -> Path:
    """The nearest folder at or above `start` (default: cwd) holding ``params/`` and
    ``notebooks/``; else the checkout siftkit is imported from; else `start` itself."""
    start = Path.cwd() if start is None else Path(start)
    start = start.resolve()
    for folder in (start, *start.parents):
        if _is_root(folder):
            return folder
    checkout = Path(__file__).resolve().parent.parent
    return checkout if _is_root(checkout) else start


def _is_root(folder: Path) -> bool:
    return (folder / "params").is_dir() and (folder / "notebooks").is_dir()


def resolve_path(path: str | Path, root: str | Path | None = None) -> Path:
    """An absolute `path` as is; a relative one under the project root."""
    path = Path(path).expanduser()
    if path.is_absolute():
        return path
    return (Path(root) if root is not None else project_root()) / path


# ----------------------------------------------------------------------------- parameters


def parameter_names(namespace: Mapping[str, Any]) -> list[str]:
    """Names assigned in the notebook's parameter cells, in order of first assignment.

    Parameter cells are found in the kernel's input history (``In``) as the cells whose
    statements are all ``name = literal`` (annotated or not). Without a history (a plain
    Python namespace) every public global holding a plain literal counts.
    """
    history = namespace.get("In")
    if isinstance(history, list) and any(isinstance(s, str) and s.strip() for s in history):
        names: list[str] = []
        for source in history:
            for name in _literal_cell_names(source) or ():
                if name not in names:
                    names.append(name)
        return names
    return [
        k
        for k, v in namespace.items()
        if not k.startswith("_") and k not in _IPYTHON_NAMES and isinstance(v, _LITERAL_TYPES)
    ]


def _literal_cell_names(source: Any) -> list[str] | None:
    """The assigned names if `source` holds only ``name[: type] = literal`` lines, else None."""
    if not isinstance(source, str) or not source.strip():
        return None
    try:
        tree = ast.parse(source)
    except SyntaxError:  # IPython magics and the like: not a parameter cell
        return None
    names = []
    for node in tree.body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
            target, value = node.target.id, node.value
        elif isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            target, value = node.targets[0].id, node.value
        else:
            return None
        try:
            ast.literal_eval(value)
        except ValueError:
            return None
        names.append(target)
    return names or None


def collect_parameters(namespace: Mapping[str, Any]) -> dict[str, Any]:
    """``{name: value}`` of the notebook's parameters; ValueError for an unknown name."""
    fields = RunConfig.input_names()  # the fields and the methods' own knobs
    names = parameter_names(namespace)
    unknown = [n for n in names if n not in fields and n not in NOTEBOOK_PARAMETERS]
    if unknown:
        known = [f for f in fields if f != "extra"] + list(NOTEBOOK_PARAMETERS)
        hints = []
        for name in unknown:
            close = difflib.get_close_matches(name, known, n=1)
            hints.append(f"{name} (did you mean {close[0]}?)" if close else name)
        raise ValueError(
            f"unknown parameter(s): {', '.join(hints)}; a notebook parameter is a RunConfig field "
            f"({', '.join(f for f in fields if f != 'extra')}) or one of the notebook-only "
            f"parameters ({', '.join(NOTEBOOK_PARAMETERS)})"
        )
    return {n: namespace[n] for n in names if n in namespace}


def config_from_parameters(
    namespace: Mapping[str, Any], *, default_output_dir: str | None = None, **fixed: Any
) -> RunConfig:
    """The validated RunConfig for this notebook's parameters.

    Precedence: RunConfig defaults < ``params_file`` < parameters that are not None.
    `fixed` holds what the notebook itself decides (``task="cola"`` in 03_cola); a params
    file or parameter that sets it to something else is an error, not silently ignored.
    When neither a parameter nor the params file sets ``output_dir``, it is
    `default_output_dir` formatted with the config's fields (``"runs/03_cola/{algo}-seed{seed}"``);
    a smoke run (a ``random:`` model, as ``params/smoke.yaml`` sets) goes to the same path
    under ``runs/smoke/`` instead, so it never replaces a full run's results or figures.
    """
    params = collect_parameters(namespace)
    fields = set(RunConfig.input_names())
    overrides = {k: v for k, v in params.items() if k in fields and v is not None}
    params_file = params.get("params_file")
    path = resolve_path(params_file) if params_file else None
    from_file = _yaml_mapping(path) if path is not None and path.is_file() else {}

    for key, value in fixed.items():
        for source, where in ((overrides, "a parameter"), (from_file, f"params_file {params_file}")):
            if key in source and source[key] != value:
                raise ValueError(
                    f"{key} must be {value!r} in this notebook, but {where} sets "
                    f"{key}={source[key]!r}; use the notebook made for that {key}"
                )
    # RunConfig.from_yaml validates every name and value (and reports a missing file).
    cfg = RunConfig.from_yaml(path, **{**overrides, **fixed})

    changes: dict[str, Any] = {}
    if "output_dir" not in overrides and "output_dir" not in from_file and default_output_dir:
        default = default_output_dir.format(**cfg.to_dict())
        changes["output_dir"] = smoke_output_dir(default) if is_smoke(cfg) else default
    output_dir = changes.get("output_dir", cfg.output_dir)
    changes["output_dir"] = str(resolve_path(output_dir))
    if cfg.data_dir is not None:
        changes["data_dir"] = str(resolve_path(cfg.data_dir))
    return cfg.replace(**changes)


def spec_parameters(shift_spec: str | Path, params_file: str | Path | None = None) -> tuple[Path, dict, str | None]:
    """A notebook's ``shift_spec`` parameter: (the spec file, the spec mapping, the params file).

    `shift_spec` is resolved like every notebook path (from the project root). The params
    file is `params_file` when given; else the spec file itself when it is a params file (a
    ``shift:`` block beside run settings, as ``params/uci_cross_source.yaml``, whose
    ``num_train_epochs`` then apply); else None. A params file that sets ``algo`` is refused:
    the notebook trains each algorithm it is asked to.
    """
    from siftkit.data.shift_spec import load_spec_mapping

    path = resolve_path(shift_spec)
    mapping = load_spec_mapping(path)  # a ValueError naming the file if it is missing or not a spec
    settings = str(resolve_path(params_file)) if params_file else None
    if settings is None and "shift" in _yaml_mapping(path) and "stages" not in _yaml_mapping(path):
        settings = str(path)
    if settings is not None and Path(settings).is_file() and "algo" in _yaml_mapping(Path(settings)):
        raise ValueError(
            f"params file {settings} sets algo={_yaml_mapping(Path(settings))['algo']!r}; this notebook "
            f"trains the algorithms of its algos parameter (e.g. -p algos sift): remove algo from the file"
        )
    return path, mapping, settings


def without_test_models(runs: list, include: bool = False) -> tuple[list, list]:
    """(runs to compare, runs left out): a run on a random test model (``model_name``
    ``random:<arch>``, what ``params/smoke.yaml`` and the tests use) measures the plumbing, not
    an algorithm, so a comparison leaves it out unless `include`. `runs` are
    `siftkit.study.runs.Run` objects (their ``model``)."""
    if include:
        return list(runs), []
    kept = [r for r in runs if not str(r.model).startswith("random:")]
    return kept, [r for r in runs if str(r.model).startswith("random:")]


SMOKE_DIR = "smoke"


def is_smoke(cfg: RunConfig) -> bool:
    """A smoke run: a tiny random model (``random:<arch>``), whose numbers mean nothing."""
    return cfg.model_name is not None and str(cfg.model_name).startswith("random:")


def smoke_output_dir(default: str) -> str:
    """``runs/02_x/sift-seed42`` -> ``runs/smoke/02_x/sift-seed42`` (else ``smoke/`` in front)."""
    parts = Path(default).parts
    if len(parts) > 1 and parts[0] == "runs":
        return str(Path("runs", SMOKE_DIR, *parts[1:]))
    return str(Path(SMOKE_DIR, default))


def _yaml_mapping(path: Path) -> dict[str, Any]:
    import yaml

    from siftkit.data.yaml_files import load_yaml

    try:
        loaded = load_yaml(path.read_text(encoding="utf-8"))
    except yaml.YAMLError:
        return {}  # RunConfig.from_yaml reports the syntax error with its own message
    return loaded if isinstance(loaded, dict) else {}


def changed_fields(cfg: RunConfig) -> dict[str, Any]:
    """The fields of `cfg` that differ from RunConfig's defaults for its algorithm."""
    base = RunConfig(algo=cfg.algo, task=cfg.task).to_dict()
    return {k: v for k, v in cfg.to_dict().items() if v != base.get(k) or k in ("task", "algo")}


# ----------------------------------------------------------------------------- output folder


def prepare_output_dir(cfg: RunConfig) -> Path:
    """Check, in the first cell, that training will be able to write `cfg.output_dir`.

    The same checks `train()` makes before it loads anything, with the notebook's way out
    in the message: an earlier results.json needs ``-p overwrite True`` (or another
    ``output_dir``), an interrupted run's checkpoints ``-p resume True``.
    """
    from siftkit.run.outdir import OutputDir, WaysOut

    hint = (
        "in this notebook set overwrite = True in the parameters cell, or run papermill with "
        "-p overwrite True (or -p output_dir <another folder>)"
    )
    # The advice helps only where an earlier run's files are in the way (not for a folder that
    # cannot be written, where overwrite changes nothing).
    ways_out = WaysOut(
        results=hint,
        checkpoints=f"holds checkpoints of an unfinished run; continue it with "
        f"-p resume True (resume = True in the parameters cell), or start "
        f"over: {hint}",
    )
    # Only a check: train() makes the folder, and removes it again if the run fails.
    return OutputDir(cfg.output_dir, overwrite=cfg.overwrite, resume=cfg.resume, ways_out=ways_out).preflight()


def figures_dir(output_dir: str | Path) -> Path:
    """``<output_dir>/figures``: every notebook saves its PNGs there.

    Not created here: `plotting.save_figure` makes it with the first figure, so a notebook
    that stops before drawing anything leaves no empty ``figures/`` behind.
    """
    return Path(output_dir) / "figures"
