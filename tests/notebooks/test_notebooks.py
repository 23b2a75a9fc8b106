"""The notebooks: committed stripped, parameters that match RunConfig, and every notebook run
headless with papermill on params/smoke.yaml, checked through the files it wrote.

The full executions carry the ``notebooks`` mark (deselect with ``-m "not notebooks"``); they
share one set of smoke runs made in a temporary folder. Executed copies are written to
``notebooks/executed/`` (git-ignored).
"""

import ast
import glob
import json
import re
import warnings
from pathlib import Path

import nbformat
import pytest

from siftkit.run.config import ALGOS, RunConfig
from siftkit.explore.notebook import (NOTEBOOK_PARAMETERS, changed_fields, collect_parameters, config_from_parameters,
                              parameter_names, prepare_output_dir, project_root, resolve_path)
from siftkit.run.records import OutputDirError

REPO = Path(__file__).resolve().parents[2]
ALGO_CHOICES = ", ".join(map(repr, ALGOS))  # the registered methods, as RunConfig lists them
NOTEBOOKS = REPO / "notebooks"
EXECUTED = NOTEBOOKS / "executed"
SMOKE = "params/smoke.yaml"
NAMES = ["00_tour", "01_embedding_statistics", "02_twitter_to_uci", "03_cola", "04_compare", "05_your_shift"]

# Notebook-only parameters (not RunConfig fields), allowed explicitly. Anything else in a
# parameters cell must be a RunConfig field: this is the drift check.
ALLOWED_NOTEBOOK_ONLY = {"params_file", "sentence", "interactive", "texts_per_domain", "perturbation_texts",
                         "runs_glob", "results_glob", "study_glob", "equal_budget_glob", "study_spec", "benchmark_glob", "benchmark_spec", "shift_spec",
                         "algos", "include_test_models"}

with warnings.catch_warnings():
    # The mark is registered in pyproject.toml's markers once that file lists it; until then
    # creating it must not warn at collection.
    warnings.simplefilter("ignore", pytest.PytestUnknownMarkWarning)
    notebooks_mark = pytest.mark.notebooks


def _notebook(name):
    return nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)


def _parameters_cell(nb):
    cells = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(cells) == 1, "exactly one cell tagged 'parameters'"
    return cells[0]


# Parameters named as a RunConfig field that mean the notebook's own folder (its figures and tables,
# or the parent of several runs), not one run's output_dir: their comments say so instead of the field's help.
OWN_MEANING = {("00_tour", "output_dir"), ("01_embedding_statistics", "output_dir"), ("04_compare", "output_dir"),
               ("05_your_shift", "output_dir")}

# ----------------------------------------------------------------------------- committed notebooks


def test_all_notebooks_exist():
    assert sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb")) == NAMES


@pytest.mark.parametrize("name", NAMES)
def test_committed_notebook_is_stripped(name):
    nb = _notebook(name)
    nbformat.validate(nb)
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            assert cell.outputs == [], f"{name} cell {i} has outputs"
            assert cell.execution_count is None, f"{name} cell {i} has an execution count"
        assert "papermill" not in cell.metadata and "execution" not in cell.metadata
    assert "widgets" not in nb.metadata and "papermill" not in nb.metadata
    assert nb.metadata["kernelspec"]["name"] == "python3"


@pytest.mark.parametrize("name", NAMES)
def test_parameters_cell_is_plain_annotated_literals(name):
    cell = _parameters_cell(_notebook(name))
    tree = ast.parse(cell.source)
    for node, line in zip(tree.body, cell.source.splitlines()):
        assert isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name), line
        ast.literal_eval(node.value)  # a plain literal, nothing computed
        # `name: type = value  # meaning`, one '=' (papermill's parser skips a line with two)
        assert re.match(r"^\w+: .+ = .+  # \S.*$", line), line
        assert line.count("=") == 1, f"{line!r}: no '=' in the comment"
    assert len(tree.body) == len(cell.source.splitlines())


@pytest.mark.parametrize("name", NAMES)
def test_parameter_comments_start_with_the_fields_help(name):
    """A RunConfig field's comment is its help (the field's knob metadata, as `train --help` and
    docs/config.md show it), then the notebook's own note in parentheses; a field with choices lists them."""
    from siftkit.methods.knobs import knob_docs

    docs = {d.name: d for d in knob_docs(RunConfig)}
    checked = 0
    for line in _parameters_cell(_notebook(name)).source.splitlines():
        pname, comment = line.split(":", 1)[0], line.split("  # ", 1)[1]
        if pname not in docs or (name, pname) in OWN_MEANING:
            continue
        help_ = docs[pname].help
        assert comment == help_ or comment.startswith(help_ + " ("), (
            f"{name}: the comment of {pname} must start with the field's help {help_!r} (a note may follow in "
            f"parentheses); got {comment!r}")
        if pname != "report_to":  # a list of trackers; its help names the form
            for choice in docs[pname].choices or ():
                assert f'"{choice}"' in comment, f"{name}: the comment of {pname} does not list the choice {choice!r}"
        checked += 1
    assert checked or name == "04_compare"


@pytest.mark.parametrize("name", NAMES)
def test_parameters_match_runconfig_fields(name):
    import papermill

    inferred = papermill.inspect_notebook(str(NOTEBOOKS / f"{name}.ipynb"))
    names = list(inferred)
    assert names == parameter_names({"In": ["", _parameters_cell(_notebook(name)).source]})
    drift = set(names) - set(RunConfig.field_names()) - ALLOWED_NOTEBOOK_ONLY
    assert not drift, f"{name}: parameters {sorted(drift)} are neither RunConfig fields nor allowed notebook-only"
    assert "extra" not in names
    for pname, p in inferred.items():
        assert p["help"], f"{name}: parameter {pname} has no '# meaning' comment"
        assert p["inferred_type_name"] != "None", f"{name}: parameter {pname} has no type"


def test_notebook_only_allow_list_matches_siftkit():
    assert set(NOTEBOOK_PARAMETERS) == ALLOWED_NOTEBOOK_ONLY
    assert not ALLOWED_NOTEBOOK_ONLY & set(RunConfig.field_names())


def test_run_notebooks_use_every_knob_by_its_field_name():
    for name in ("02_twitter_to_uci", "03_cola"):
        names = set(papermill_params(name))
        assert {"algo", "seed", "learning_rate", "num_train_epochs", "per_device_train_batch_size", "max_length",
                "max_train_samples", "max_eval_samples", "perturb_at", "adv_epsilon", "output_dir",
                "overwrite", "params_file"} <= names


def papermill_params(name):
    import papermill

    return papermill.inspect_notebook(str(NOTEBOOKS / f"{name}.ipynb"))


# ----------------------------------------------------------------------------- siftkit.explore.notebook


def _ns(params_cell, injected=None, **values):
    """A kernel namespace: the values, and `In` holding the parameter cells' sources."""
    history = ["", params_cell] + ([injected] if injected else []) + ["cfg = config_from_parameters(globals())"]
    ns = {"In": history, "Out": {}, "get_ipython": None}
    exec(params_cell, {}, ns)
    if injected:
        exec(injected, {}, ns)
    ns.update(values)
    return ns


PARAMS = 'algo: str = "plain"  # a\nseed: "Optional[int]" = None  # b\nparams_file: "Optional[str]" = None  # c\n'


def test_parameter_names_come_from_literal_cells_only():
    ns = _ns(PARAMS, '# Parameters\nalgo = "sift"\nlearning_rate = 0.001\n')
    ns["In"].append("threshold = 3")  # a later one-line cell of literals also counts...
    ns["In"].append("import os\nx = 1")  # ...but not a cell with code
    assert parameter_names(ns) == ["algo", "seed", "params_file", "learning_rate", "threshold"]
    # without a history: every public plain-literal global
    assert parameter_names({"algo": "x", "_hidden": 1, "In": [], "model": object()}) == ["algo"]


def test_config_from_parameters_precedence(tmp_path):
    yaml_file = tmp_path / "over.yaml"
    yaml_file.write_text("learning_rate: 1.0e-3\nseed: 5\nmax_length: 16\n")
    injected = f'# Parameters\nparams_file = "{yaml_file}"\nmax_length = 64\n'
    cell = PARAMS + 'max_length: "Optional[int]" = None  # d\noutput_dir: "Optional[str]" = None  # e\n'
    cfg = config_from_parameters(_ns(cell, injected), default_output_dir=str(tmp_path / "runs/{algo}-seed{seed}"),
                                 task="cola")
    # RunConfig default < params file < non-None parameter; None leaves the file's value
    assert (cfg.task, cfg.algo, cfg.learning_rate, cfg.seed, cfg.max_length) == ("cola", "plain", 1e-3, 5, 64)
    assert cfg.output_dir == str(tmp_path / "runs" / "plain-seed5")
    explicit = config_from_parameters(_ns(cell, injected, output_dir="mine"), default_output_dir="x/{algo}")
    assert explicit.output_dir == str(project_root() / "mine")  # relative paths: from the project root


def test_smoke_runs_default_to_their_own_folder(tmp_path):
    # A smoke run must not replace a full run's results or figures.
    full = config_from_parameters(_ns(PARAMS), default_output_dir="runs/01_embedding_statistics")
    smoke = config_from_parameters(_ns(PARAMS, f'# Parameters\nparams_file = "{SMOKE}"\n'),
                                   default_output_dir="runs/02_twitter_to_uci/{algo}-seed{seed}")
    assert full.output_dir == str(project_root() / "runs" / "01_embedding_statistics")
    assert smoke.output_dir == str(project_root() / "runs" / "smoke" / "02_twitter_to_uci" / "plain-seed42")
    chosen = config_from_parameters(_ns(PARAMS, f'# Parameters\nparams_file = "{SMOKE}"\noutput_dir = "mine"\n'),
                                    default_output_dir="runs/x")
    assert chosen.output_dir == str(project_root() / "mine")  # an explicit folder is kept


def test_config_from_parameters_errors(tmp_path):
    with pytest.raises(ValueError, match=rf"algo must be one of {re.escape(ALGO_CHOICES)}; got 'smrt'"):
        config_from_parameters(_ns(PARAMS, '# Parameters\nalgo = "smrt"\n'))
    with pytest.raises(ValueError, match=r"unknown parameter\(s\): lerning_rate \(did you mean learning_rate\?\)"):
        config_from_parameters(_ns(PARAMS, "# Parameters\nlerning_rate = 0.1\n"))
    with pytest.raises(ValueError, match="task must be 'cola' in this notebook, but a parameter sets"):
        config_from_parameters(_ns(PARAMS, '# Parameters\ntask = "twitter_to_uci"\n'), task="cola")
    other = tmp_path / "p2.yaml"
    other.write_text("task: twitter_to_uci\n")
    with pytest.raises(ValueError, match="but params_file .* sets task='twitter_to_uci'"):
        config_from_parameters(_ns(PARAMS, f'# Parameters\nparams_file = "{other}"\n'), task="cola")
    with pytest.raises(ValueError, match="params file not found"):
        config_from_parameters(_ns(PARAMS, '# Parameters\nparams_file = "params/nope.yaml"\n'))
    assert collect_parameters(_ns(PARAMS, "# Parameters\nresults_glob = 'x'\n"))["results_glob"] == "x"


def test_changed_fields_show_what_a_run_changes():
    changed = changed_fields(RunConfig(algo="sift", learning_rate=1e-3, max_length=64))
    assert changed == {"task": "twitter_to_uci", "algo": "sift", "learning_rate": 1e-3, "max_length": 64}


def test_resolve_path_and_project_root(tmp_path):
    assert project_root(REPO / "notebooks") == REPO
    assert resolve_path("params/smoke.yaml") == REPO / "params" / "smoke.yaml"
    assert resolve_path(tmp_path / "a") == tmp_path / "a"


def test_spec_parameters_find_the_spec_and_its_run_settings(tmp_path):
    import yaml

    from siftkit.explore.notebook import spec_parameters

    # P3's file is a params file: its run settings (num_train_epochs: 3) apply unless params_file is given
    path, mapping, settings = spec_parameters("params/uci_cross_source.yaml")
    assert path == REPO / "params" / "uci_cross_source.yaml" and settings == str(path)
    assert mapping["name"] == "uci_cross_source" and [e["name"] for e in mapping["evals"]] == ["imdb", "yelp"]
    assert spec_parameters("params/uci_cross_source.yaml", SMOKE)[2] == str(REPO / SMOKE)
    bare = tmp_path / "spec.yaml"
    bare.write_text(yaml.safe_dump(mapping))
    assert spec_parameters(str(bare)) == (bare, mapping, None)  # a bare spec carries no run settings
    with_algo = tmp_path / "algo.yaml"
    with_algo.write_text(yaml.safe_dump({"task": "shift", "algo": "smart", "shift": mapping}))
    with pytest.raises(ValueError, match=r"sets algo='smart'; this notebook trains the algorithms of its algos"):
        spec_parameters(str(with_algo))
    with pytest.raises(ValueError, match="shift spec file not found"):
        spec_parameters("params/no_such_spec.yaml")


def test_prepare_output_dir_tells_the_notebook_way_out(tmp_path):
    cfg = RunConfig(output_dir=str(tmp_path / "run"))
    assert prepare_output_dir(cfg) == tmp_path / "run"
    assert not (tmp_path / "run").exists()  # only checked: a notebook that stops leaves no empty folder
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "results.json").write_text("{}")
    with pytest.raises(OutputDirError, match="-p overwrite True"):
        prepare_output_dir(cfg)
    prepare_output_dir(cfg.replace(overwrite=True))
    (tmp_path / "run" / "results.json").unlink()
    (tmp_path / "run" / "checkpoints" / "step-0000001").mkdir(parents=True)
    with pytest.raises(OutputDirError, match="-p resume True"):
        prepare_output_dir(cfg)


# ----------------------------------------------------------------------------- papermill runs


def _execute(name, tmp_path, **parameters):
    """Run notebook `name` headless from the project root; return the executed notebook.

    A cell that times out (300 s; smoke cells take seconds) is retried once, on a fresh
    kernel and a clean output_dir: rarely the kernel finishes a cell but its reply never
    reaches the client (seen once with 00_tour's widget cell: kernel idle, client waiting),
    which is the messaging layer's fault, not the notebook's. A notebook that really hangs
    times out twice and fails; an error in a cell fails at once.
    """
    import shutil

    import papermill
    from nbclient.exceptions import CellTimeoutError, DeadKernelError

    EXECUTED.mkdir(exist_ok=True)
    out = EXECUTED / f"test-{name}.ipynb"
    for attempt in (1, 2):
        try:
            papermill.execute_notebook(str(NOTEBOOKS / f"{name}.ipynb"), str(out), parameters=parameters,
                                       cwd=str(REPO), kernel_name="python3", progress_bar=False,
                                       execution_timeout=300)
            break
        except (CellTimeoutError, DeadKernelError):
            if attempt == 2:
                raise
            if parameters.get("output_dir"):
                shutil.rmtree(parameters["output_dir"], ignore_errors=True)
    return nbformat.read(out, as_version=4)


def _execute_fails(name, **parameters):
    import papermill

    EXECUTED.mkdir(exist_ok=True)
    with pytest.raises(papermill.PapermillExecutionError) as info:
        papermill.execute_notebook(str(NOTEBOOKS / f"{name}.ipynb"), str(EXECUTED / f"test-{name}-fails.ipynb"),
                                   parameters=parameters, cwd=str(REPO), kernel_name="python3",
                                   progress_bar=False, execution_timeout=300)
    nb = nbformat.read(EXECUTED / f"test-{name}-fails.ipynb", as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    first_after_parameters = [c for c in code if not {"parameters", "injected-parameters"} & set(c.metadata.get("tags", []))][0]
    failed = [c for c in code if any(o.get("output_type") == "error" for o in c.get("outputs", []))]
    assert failed and failed[0] is first_after_parameters, "the error must come from the first cell"
    return info.value


def _png(path, min_width=400, min_height=250):
    data = Path(path).read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert width >= min_width and height >= min_height, f"{path}: {width}x{height}"
    assert len(data) > 5_000, f"{path} is suspiciously small"


def _inline_images(nb):
    return sum("image/png" in o.get("data", {}) for c in nb.cells if c.cell_type == "code" for o in c.outputs)


@pytest.fixture(scope="module")
def smoke_runs(tmp_path_factory, data_dir):
    """P2 runs of all three algorithms for two seeds and one CoLA run, on smoke settings."""
    from siftkit.run.training import train

    root = tmp_path_factory.mktemp("smoke_runs")
    base = RunConfig.from_yaml(REPO / SMOKE, data_dir=str(data_dir), max_train_samples=8, max_eval_samples=8,
                               save_model=True)
    for algo in ("plain", "smart", "sift"):
        for seed in (1, 2):
            train(base.replace(task="twitter_to_uci", algo=algo, seed=seed,
                               output_dir=str(root / "p2" / f"{algo}-seed{seed}")), progress=False)
    train(base.replace(task="cola", algo="sift", seed=1, output_dir=str(root / "cola" / "sift-seed1")), progress=False)
    return root


@notebooks_mark
def test_00_tour(tmp_path):
    # adv_rule: the panel starts from a rule without a ball (the projected rule is the default)
    nb = _execute("00_tour", tmp_path, params_file=SMOKE, adv_rule="mtdnn", output_dir=str(tmp_path / "tour"))
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    # where the epsilon slider stops acting is measured and said, per algorithm
    assert "SMART: the ball binds up to ε = " in text and "SiFT: the ball binds up to ε = " in text
    panel = [c.source for c in nb.cells if "widgets.interactive(" in c.source]
    assert panel and all(f'"{rule}"' in panel[0] for rule in ("projected", "mtdnn", "deberta", "seed_code"))
    figures = tmp_path / "tour" / "figures"
    for name in ("sentence_token_norms", "sentence_perturbation", "panel_default"):
        _png(figures / f"{name}.png")
    assert _inline_images(nb) >= 3, "figures are shown inline as well as saved"
    # the widget panel was built (and did not block) without a frontend
    assert any("application/vnd.jupyter.widget-view+json" in o.get("data", {})
               for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    # the teacher's version: every exercise's solution passes its check
    assert "4 of 4 exercise(s) pass" in text
    # which norm bounds delta (here: none, the mtdnn rule) and what the table reports, from the numbers
    assert "SMART: rule 'mtdnn' has no ε-ball; the median L2 size of δ_t in raw units" in text


@notebooks_mark
def test_00_students_version_runs_and_every_check_fails(tmp_path):
    """The students' version (nbgrader's ClearSolutions, the command COURSE.md gives) runs to the
    end under papermill, and each exercise's check reports that it is not written yet."""
    pytest.importorskip("nbgrader")
    import subprocess
    import sys

    from helpers import STUDENT_COMMAND

    students = tmp_path / "students"
    exe = str(Path(sys.executable).parent / "jupyter")
    proc = subprocess.run([exe, *STUDENT_COMMAND[1:], "--output-dir", str(students),
                           str(NOTEBOOKS / "00_tour.ipynb")], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    import papermill

    out = EXECUTED / "test-00_tour-students.ipynb"
    papermill.execute_notebook(str(students / "00_tour.ipynb"), str(out), cwd=str(REPO), kernel_name="python3",
                               progress_bar=False, execution_timeout=300,
                               parameters={"params_file": SMOKE, "output_dir": str(tmp_path / "tour")})
    nb = nbformat.read(out, as_version=4)
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    text += "".join(str(o.get("data", {}).get("text/plain", "")) for c in nb.cells if c.cell_type == "code"
                    for o in c.outputs)
    assert text.count("not written yet") >= 4 and "0 of 4 exercise(s) pass" in text


@notebooks_mark
def test_03_cola_and_bad_value(tmp_path, data_dir):
    out = tmp_path / "cola"
    nb = _execute("03_cola", tmp_path, algo="smart", params_file=SMOKE, data_dir=str(data_dir), output_dir=str(out))
    record = json.loads((out / "results.json").read_text())
    assert record["config"]["task"] == "cola" and record["config"]["algo"] == "smart"
    assert record["config"]["model_name"] == "random:bert"  # from params/smoke.yaml
    assert set(record["metrics"]) >= {"in_domain_dev_mcc", "out_of_domain_dev_mcc"}
    assert all(-1 <= record["metrics"][k] <= 1 for k in ("in_domain_dev_mcc", "out_of_domain_dev_mcc"))
    assert record["history"] and all(r["adv_loss"] >= 0 for r in record["history"])
    assert (out / "history.csv").is_file() and (out / "model").is_dir()
    for name in ("learning_curves", "metrics"):
        _png(out / "figures" / f"{name}.png")
    assert _inline_images(nb) >= 2
    error = _execute_fails("03_cola", algo="smrt", params_file=SMOKE, output_dir=str(tmp_path / "bad"))
    assert error.ename == "ValueError"
    assert f"algo must be one of {ALGO_CHOICES}; got 'smrt'" in error.evalue


@notebooks_mark
def test_02_twitter_to_uci_and_existing_output(tmp_path, data_dir):
    out = tmp_path / "p2"
    nb = _execute("02_twitter_to_uci", tmp_path, algo="sift", params_file=SMOKE, data_dir=str(data_dir),
                  output_dir=str(out))
    record = json.loads((out / "results.json").read_text())
    assert (record["config"]["task"], record["config"]["algo"]) == ("twitter_to_uci", "sift")
    assert set(record["metrics"]) >= {"twitter_val_accuracy", "uci_zero_shot_accuracy", "uci_test_accuracy"}
    assert [s["name"] for s in record["stages"]] == ["twitter", "uci"]
    assert {r["stage"] for r in record["history"]} == {"twitter", "uci"}
    assert all(r["relative_perturbation"] > 0 for r in record["history"])
    for name in ("learning_curves", "metrics"):
        _png(out / "figures" / f"{name}.png")
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    html = "".join(str(o.get("data", {}).get("text/html", "")) for c in nb.cells if c.cell_type == "code"
                   for o in c.outputs)
    # the metrics as the kit's readable table, and the curves and accuracies read from this run's numbers
    assert "sym-KL probe" in html and f"{record['metrics']['uci_test_accuracy']:.3f}" in html
    from siftkit.explore.reading import read_curves, read_zero_shot

    assert "\n".join(read_curves(record)) in text and "\n\n".join(read_zero_shot(record)) in text
    assert "R, the regularizer's divergence (unweighted), goes from" in text
    assert f"UCI zero-shot (16 texts), straight after stage 1: accuracy " \
           f"{record['metrics']['uci_zero_shot_accuracy']:.3f}" in text
    # the teacher's version: both exercises' solutions pass their checks
    assert "2 of 2 exercise(s) pass" in text
    # the same output_dir again: the first cell stops, saying how to go on
    error = _execute_fails("02_twitter_to_uci", algo="sift", params_file=SMOKE, output_dir=str(out))
    assert error.ename == "OutputDirError" and "-p overwrite True" in error.evalue


@notebooks_mark
def test_02_training_progress_reaches_the_terminal(tmp_path, data_dir):
    # papermill keeps the tqdm bar inside the output notebook; the terminal that ran the
    # command must still see training move (siftkit's lines on the kernel's own stderr).
    import subprocess
    import sys

    EXECUTED.mkdir(exist_ok=True)
    cmd = [sys.executable, "-m", "papermill", "notebooks/02_twitter_to_uci.ipynb",
           str(EXECUTED / "test-02-terminal.ipynb"), "--no-progress-bar", "-k", "python3",
           "-p", "algo", "sift", "-p", "params_file", SMOKE, "-p", "data_dir", str(data_dir),
           "-p", "output_dir", str(tmp_path / "p2")]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = [line for line in proc.stderr.splitlines() if line.startswith("siftkit: ")]
    assert lines and lines[0].startswith("siftkit: sift · twitter step 1/5 (20%) · loss ")
    assert any(line.startswith("siftkit: sift · uci step 5/5 (100%)") for line in lines)
    # In the notebook: one line per stage, updated in place, not a wall of stderr lines.
    nb = nbformat.read(EXECUTED / "test-02-terminal.ipynb", as_version=4)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not any("siftkit: " in o.get("text", "") for o in outputs), "terminal lines copied into the cell"
    shown = [o["data"]["text/plain"] for o in outputs
             if o.get("output_type") == "display_data" and " step " in o.get("data", {}).get("text/plain", "")]
    assert [line.split(" step ")[0] for line in shown] == ["sift · twitter", "sift · uci"]
    assert shown[-1].startswith("sift · uci step 5/5 (100%) · loss ") and "<progress" in str(outputs)


@notebooks_mark
def test_01_embedding_statistics(tmp_path, smoke_runs, data_dir):
    out = tmp_path / "stats"
    nb = _execute("01_embedding_statistics", tmp_path, params_file=SMOKE, data_dir=str(data_dir),
                  output_dir=str(out), runs_glob=str(smoke_runs / "p2" / "*" / "results.json"))
    import pandas as pd

    summary = pd.read_csv(out / "domain_summary.csv")
    assert set(summary["domain"]) == {"twitter", "uci", "cola"}
    assert set(summary["at"]) == {"word_embeddings", "pre_layernorm", "embedding_output"}
    assert (summary["texts"] == 16).all()  # texts_per_domain capped by smoke's max_eval_samples
    sizes = pd.read_csv(out / "perturbation_sizes.csv")
    assert set(sizes["algo"]) == {"smart", "sift"} and (sizes["relative"] > 0).all()
    shift = pd.read_csv(out / "token_norm_shift.csv")
    assert set(shift["algo"]) == {"plain", "smart", "sift"} and set(shift["seed"]) == {1, 2}
    assert (shift["relative_shift"] >= 0).all() and (shift["relative_shift"] > 0).any()
    for name in ("embedding_statistics", "norm_gap_twitter_vs_cola", "perturbation_sizes", "token_norm_shift",
                 "token_norm_change"):
        _png(out / "figures" / f"{name}.png")
    assert _inline_images(nb) >= 5


@notebooks_mark
def test_01_on_a_shift_spec(tmp_path):
    """With shift_spec the domains are the spec's stage and evaluation set, by their names; the
    token-norm shift reads a 3-class spec run; nothing printed assumes Twitter, UCI or CoLA."""
    import pandas as pd
    import yaml
    from helpers import SHIFT_TINY, three_class_spec

    from siftkit.run.training import train

    spec = three_class_spec(tmp_path / "data")
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(spec))
    train(RunConfig(task="shift", shift=spec, algo="smart", seed=1, save_model=True,
                    output_dir=str(tmp_path / "runs" / "smart-seed1"), **SHIFT_TINY), progress=False)
    out = tmp_path / "stats"
    nb = _execute("01_embedding_statistics", tmp_path, params_file=SMOKE, shift_spec=str(spec_file),
                  output_dir=str(out), runs_glob=str(tmp_path / "runs" / "*" / "results.json"))
    summary = pd.read_csv(out / "domain_summary.csv")
    assert list(dict.fromkeys(summary["domain"])) == ["reviews", "forum"]
    assert summary.set_index(["at", "domain"])["texts"].xs("word_embeddings").to_dict() == {"reviews": 16, "forum": 12}
    assert sorted(p.name for p in out.glob("norm_gap_*.csv")) == ["norm_gap_forum_vs_reviews.csv"]
    sizes = pd.read_csv(out / "perturbation_sizes.csv")
    assert set(sizes["domain"]) == {"reviews", "forum"}
    shift = pd.read_csv(out / "token_norm_shift.csv")
    assert set(shift["domain"]) == {"reviews", "forum"} and set(shift["algo"]) == {"smart"}
    assert (shift["relative_shift"] > 0).any()
    for name in ("embedding_statistics", "norm_gap_forum_vs_reviews", "perturbation_sizes", "token_norm_shift"):
        _png(out / "figures" / f"{name}.png")
    outputs = " ".join(o.get("text", "") + str(o.get("data", {}).get("text/plain", ""))
                       for c in nb.cells if c.cell_type == "code" for o in c.outputs).lower()
    assert "those of shift spec 'reviews_to_forum'" in outputs
    assert "trained on" in outputs and not {"twitter", "cola"} & set(re.findall(r"[a-z]+", outputs))


@notebooks_mark
def test_05_your_shift_end_to_end_and_existing_output(tmp_path, data_dir):
    """P3 (the default spec) on smoke settings: the spec's sets, the domains' statistics, plain,
    SMART and SiFT trained into their own folders, and one table row per algorithm × target."""
    import pandas as pd

    out = tmp_path / "p3"
    nb = _execute("05_your_shift", tmp_path, params_file=SMOKE, data_dir=str(data_dir), output_dir=str(out))
    sets = pd.read_csv(out / "sets.csv").set_index("set")
    assert list(sets.index) == ["amazon", "amazon_val", "imdb", "yelp"]
    assert list(sets["rows"]) == [900, 100, 1000, 1000] and list(sets["used"]) == [20, 16, 16, 16]
    assert (sets[["negative", "positive"]].sum(axis=1) == sets["used"]).all()
    for algo in ("plain", "smart", "sift"):
        record = json.loads((out / f"{algo}-seed42" / "results.json").read_text())
        assert (record["config"]["task"], record["config"]["algo"]) == ("shift", algo)
        assert record["meta"]["shift"]["name"] == "uci_cross_source"
        assert (out / f"{algo}-seed42" / "model").is_dir()  # save_model: on in this notebook
    table = pd.read_csv(out / "per_target.csv")
    assert sorted(zip(table["algo"], table["target"])) == sorted(
        (a, t) for a in ("plain", "smart", "sift") for t in ("imdb", "yelp"))
    assert (table["texts"] == 16).all() and table["accuracy"].between(0, 1).all()
    assert table["majority"].tolist() == [sets.loc[t, "majority"] for t in table["target"]]
    summary = pd.read_csv(out / "domain_summary.csv")
    assert list(dict.fromkeys(summary["domain"])) == ["amazon", "imdb", "yelp"]
    for name in ("embedding_statistics", "norm_gap_imdb_vs_amazon", "per_target"):
        _png(out / "figures" / f"{name}.png")
    assert _inline_images(nb) >= 3
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    # the reading is generated from the table's numbers
    imdb = table[table["target"] == "imdb"].set_index("algo")["accuracy"]
    assert (f"imdb (16 texts; one run per algorithm): accuracy plain {imdb['plain']:.3f}, "
            f"SMART {imdb['smart']:.3f}, SiFT {imdb['sift']:.3f}.") in text
    assert f"SiFT − plain = {imdb['sift'] - imdb['plain']:+.3f}, " in text
    assert "3 of 3 exercise(s) pass" in text  # the teacher's solutions pass their checks
    # the same output_dir again: the first cell stops, saying how to go on
    error = _execute_fails("05_your_shift", params_file=SMOKE, output_dir=str(out))
    assert error.ename == "OutputDirError" and "-p overwrite True" in error.evalue


def test_04_default_study_glob_finds_the_committed_study():
    default = papermill_params("04_compare")["study_glob"]["default"].strip("\"'")
    found = glob.glob(str(NOTEBOOKS.parent / default), recursive=True)
    assert len(found) >= 100 and all("regime" in f for f in found)


@notebooks_mark
def test_04_compare_and_unknown_name(tmp_path, smoke_runs):
    from helpers_regime import regime_study

    out = tmp_path / "compare"
    synthetic = regime_study(tmp_path / "study", seeds=(1, 2))  # a stand-in for the committed study
    nb = _execute("04_compare", tmp_path, results_glob=str(smoke_runs / "**" / "results.json"), output_dir=str(out),
                  study_glob=str(synthetic / "**" / "results.json"), include_test_models=True, benchmark_glob="")
    import pandas as pd

    runs = pd.read_csv(out / "runs.csv")
    assert len(runs) == 7
    table = pd.read_csv(out / "results_table.csv")
    uci = table[table["metric"] == "uci_test_accuracy"].set_index("algo")
    assert set(uci.index) == {"plain", "smart", "sift"} and (uci["n"] == 2).all() and uci["std"].notna().all()
    assert uci.loc["sift", "paper_bert"] == 0.80
    paper = pd.read_csv(out / "paper_table.csv")
    assert {"uci_mean", "uci_std", "uci_paper_bert", "cola_mean", "cola_paper_deberta"} <= set(paper.columns)
    assert paper.loc[paper["algo"] == "sift", "cola_n"].iloc[0] == 1
    _png(out / "figures" / "compare.png")
    _png(out / "figures" / "wall_time.png")
    # the size figures of the P2 groups (SMART and SiFT have measured sizes); CoLA has one variant
    # only. The study's runs are a group of their own (code aaaaaaaa), never in the runs table.
    sizes = sorted(p.name for p in (out / "figures").glob("*_size_*.png"))
    assert sizes and all(name.startswith("twitter_to_uci_") for name in sizes)
    assert "twitter_to_uci_nvidia_h200_aaaaaaaa_size_uci_test_accuracy.png" in sizes
    assert any(name.endswith("_size_uci_test_accuracy.png") and "aaaaaaaa" not in name for name in sizes)
    for name in sizes:
        _png(out / "figures" / name)
    # the verdicts come from the study alone: the smoke runs have no mtdnn or size-curve runs
    regime, matched = pd.read_csv(out / "regime_verdicts.csv"), pd.read_csv(out / "matched_size.csv")
    assert "what it tests" in regime.columns and set(regime["code"]) == {"aaaaaaaa"}
    assert "sift-mtdnn − smart-mtdnn_no_bregman" in set(regime["difference"])
    assert {"sift_size", "smart_size", "ratio"} <= set(matched.columns) and set(matched["code"]) == {"aaaaaaaa"}
    assert (matched["sift"] == "pooled").sum() == 1 and (matched["n"] == 2).all()
    assert _inline_images(nb) >= 2 + len(sizes)
    error = _execute_fails("04_compare", result_glob="x", output_dir=str(tmp_path / "bad"))
    assert "unknown parameter(s): result_glob (did you mean results_glob?)" in error.evalue
    # a copied run folder would count seed 1 twice: the first cell refuses it, naming both files
    import shutil

    copied = tmp_path / "copied"
    shutil.copytree(smoke_runs / "p2", copied / "p2")
    shutil.copytree(copied / "p2" / "sift-seed1", copied / "p2" / "sift-seed1 copy")
    error = _execute_fails("04_compare", results_glob=str(copied / "**" / "results.json"), output_dir=str(tmp_path / "dup"),
                           include_test_models=True)
    assert "two runs of variant 'sift' with seed 1 in one comparison" in error.evalue
    assert "sift-seed1 copy" in error.evalue


@notebooks_mark
def test_04_equal_budget_study_through_its_glob(tmp_path, smoke_runs):
    """A synthetic equal-budget study fed through `equal_budget_glob`: the equal-budget table, the
    controls, the curve at the tuned rate and the verdicts come from it (and the reading guide
    is printed from their numbers); a missing spec stops the first cell."""
    import pandas as pd
    from helpers_budget import SPEC, equal_budget_study

    eb = equal_budget_study(tmp_path / "eb")
    out = tmp_path / "compare"
    nb = _execute("04_compare", tmp_path, results_glob=str(smoke_runs / "**" / "results.json"), output_dir=str(out),
                  study_glob="", equal_budget_glob=str(eb / "**" / "results.json"), study_spec=str(SPEC),
                  benchmark_glob=str(eb / "**" / "results.json"), benchmark_spec="")
    table = pd.read_csv(out / "equal_budget.csv")
    assert set(table["code"]) == {"cccccccc"}
    # the smoke runs (a random test model) are left out of the comparison unless asked, and it says so
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert "left out 7 run(s) on random test models (random:bert)" in text
    assert not (out / "runs.csv").exists()
    # L2-SP's weight grid ran at tuned plain's rate: a control, not an arm of the comparison
    assert set(table["arm"]) == {"plain-eb", "sift-eb_size0.3", "smart-eb_size0.3"}
    assert table.set_index("arm").loc["plain-eb", "chosen"] == "uci_learning_rate0.0001"
    controls = pd.read_csv(out / "controls.csv")
    reinit = controls[(controls["control"] == "sift-ctl_size0.3_reinit_head") & (controls["against_is"] == "uncontrolled")]
    assert list(reinit["against"]) == ["sift-tuned_curve_eps0.3"] and (reinit["n"] == 5).all()
    assert "plain-ctl_l2sp__l2sp_weight0.01" in set(controls["control"])
    tuned = pd.read_csv(out / "tuned_curve.csv")
    assert tuned.iloc[0]["role"] == "band" and tuned.iloc[0]["variant"] == "plain-eb__uci_learning_rate0.0001"
    verdicts = pd.read_csv(out / "verdicts.csv")
    assert set(verdicts["verdict"]) == {1, 2, 3} and set(verdicts["code"]) == {"cccccccc"}
    starts = pd.read_csv(out / "start_losses.csv")
    assert list(starts["role"][:2]) == ["old gap: reference", "old gap: arm"]
    guide = (out / "reading_guide.txt").read_text()
    first = verdicts[verdicts["verdict"] == 1].iloc[0]
    assert f"Against tuned plain: {first['row']}: {first['mean']:+.3f}" in guide
    assert "Explaining the old gap: old gap: sift-eb_size0.3__uci_learning_rate2e-05" in guide
    assert "(3, code cccccccc) Tuning the rate removes +0.190 of the old gap of +0.200 (95%" in guide
    _png(out / "figures" / "twitter_to_uci_cpu_cccccccc_tuned_curve_uci_test_accuracy.png")
    # the leaderboard over any folder of runs: without a spec, every grid arm against tuned plain
    board = (out / "leaderboard.md").read_text()
    assert "| `plain-eb` | tuned plain (0) |" in board and "`sift-eb_size0.3`" in board
    assert "What it says." in text or "What it says." in "".join(
        str(o.get("data", {}).get("text/markdown", "")) for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    _png(out / "figures" / "leaderboard_p2.png")
    assert _inline_images(nb) >= 4  # compare, wall time, the curve at the tuned rate, the leaderboard
    error = _execute_fails("04_compare", study_spec="results/no_such_study.yaml", output_dir=str(tmp_path / "bad"))
    assert "study_spec 'results/no_such_study.yaml': no such file" in error.evalue


def test_test_model_runs_are_left_out_unless_asked():
    from types import SimpleNamespace

    from siftkit.explore.notebook import without_test_models

    runs = [SimpleNamespace(model="random:bert"), SimpleNamespace(model="sentence-transformers/all-MiniLM-L6-v2"),
            SimpleNamespace(model="random:deberta-v2")]
    kept, out = without_test_models(runs)
    assert [r.model for r in kept] == ["sentence-transformers/all-MiniLM-L6-v2"] and len(out) == 2
    assert without_test_models(runs, include=True) == (runs, [])


@pytest.mark.notebooks
def test_notebook_02_draws_the_alpha_curve_of_a_wise_ft_run(tmp_path, data_dir):
    """A WiSE-FT run from notebook 02 (docs/methods/ood.md): its alpha curve recorded and drawn."""
    out = tmp_path / "p2"
    nb = _execute("02_twitter_to_uci", tmp_path, algo="sift", params_file="params/smoke.yaml", data_dir=str(data_dir),
                  output_dir=str(out), wise_ft=True, uci_val_size=16, wise_ft_alphas="0,0.5,1", eval_smoothness=False)
    record = json.loads((out / "results.json").read_text())
    assert [row["alpha"] for row in record["wise_ft"]["curve"]] == [0.0, 0.5, 1.0]
    _png(out / "figures" / "wise_ft_curve.png")
    cell = next(c for c in nb.cells if c.cell_type == "code" and "wise_ft_curve" in c.source)
    assert any(o.get("output_type") == "display_data" for o in cell.outputs)
