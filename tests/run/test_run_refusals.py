"""More bad input, tried: silent wrong results, lost data and raw tracebacks that used to get through.

Like tests/test_robustness.py, each test feeds one bad input to the Python API, the CLI
(`python -m siftkit train|sweep|download`) or a notebook helper and asserts the exact message
the user sees; with SIFTKIT_ROBUSTNESS_LOG set, the (input, message) pairs go to that log,
from which docs/robustness.md is made.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import copy_data_lines, make_batch, robustness_log, tiny_model, tokenizer

import siftkit.run.evaluation as evaluation
import siftkit.run.training as training
from siftkit.cli.main import main as cli_main
from siftkit.run.config import ALGOS, RunConfig
from siftkit.data.loaders import load
from siftkit.data.registry import DataError
from siftkit.run.models import ModelLoadError, build_random_model, load_model, load_tokenizer
from siftkit.run.records import OutputDirError

REPO = Path(__file__).resolve().parents[2]
ALGO_CHOICES = ", ".join(map(repr, ALGOS))  # the registered methods, as RunConfig lists them
SMOKE = REPO / "params" / "smoke.yaml"
TINY = dict(model_name="random:bert", max_train_samples=4, max_eval_samples=4, per_device_train_batch_size=4,
            per_device_eval_batch_size=4, uci_num_train_epochs=1, logging_steps=1, max_length=32, cpu=True)
# A few lines of each data file, enough for every loader.
PIECES = {"cola/in_domain_train.tsv": 40, "cola/in_domain_dev.tsv": 20, "cola/out_of_domain_dev.tsv": 20,
          "twitter_hate/train.csv": 120, "uci_sentiment/amazon_cells_labelled.txt": 30,
          "uci_sentiment/imdb_labelled.txt": 30, "uci_sentiment/yelp_labelled.txt": 30}


@pytest.fixture
def data(tmp_path, data_dir):
    """A private copy of a few lines of every data file, to break."""
    root = tmp_path / "data"
    copy_data_lines(data_dir, root, PIECES)
    return root


def _train(output_dir, **changes):
    return training.train(RunConfig(**{**TINY, "output_dir": str(output_dir), **changes}), progress=False)


def _config_error(**changes) -> str:
    with pytest.raises(ValueError) as err:
        RunConfig(**changes)
    return str(err.value)


def _cli(capsys, *argv: str, command: str = "train") -> tuple[int, str]:
    """`python -m siftkit <command> ...` in process: (exit code, stderr)."""
    try:
        code = cli_main([command, *argv])
    except SystemExit as exc:  # argparse's own errors
        code = exc.code
    return code, capsys.readouterr().err


# ----------------------------------------------------------------------------- silent wrong results


@pytest.mark.parametrize("value, shown", [("inf", "inf"), ("nan", "nan"), ("-1", "-1.0")])
def test_adam_epsilon_is_checked(capsys, tmp_path, value, shown):
    """inf froze the weights (exit 0, `null` in results.json); nan and -1 failed late, unnamed."""
    message = f"adam_epsilon must be a finite number > 0, got {shown}"
    assert _config_error(adam_epsilon=float(value)) == message
    code, err = _cli(capsys, "--params", str(SMOKE), "--output_dir", str(tmp_path / "out"), "--adam_epsilon", value)
    assert (code, err) == (2, f"siftkit train: error: {message}\n")
    assert not (tmp_path / "out").exists()
    robustness_log(f"CLI `--adam_epsilon {value}`", err.strip())


def _papermill_value(text: str):
    """What papermill's `-p name text` passes to the notebook."""
    _resolve_type = pytest.importorskip("papermill.cli")._resolve_type

    return _resolve_type(text)


@pytest.mark.parametrize("field, text, expected", [
    ("seed", "010", 10),
    ("max_train_samples", "0100", 100),
    ("max_train_samples", "1e3", 1000),
    ("learning_rate", "1e-3", 1e-3),
    ("seed", "1:30", "seed must be of type int, got '1:30'"),
    ("max_train_samples", "1.5", "max_train_samples must be of type int, got 1.5"),
], ids=["seed-010", "samples-0100", "samples-1e3", "lr-1e-3", "seed-1:30", "samples-1.5"])
def test_cli_reads_numbers_as_papermill_does(capsys, tmp_path, field, text, expected):
    """YAML 1.1 read `--seed 010` as 8 and `1:30` as 90; papermill's `-p seed 010` is 10.
    The CLI, a params file and papermill now give the same value (or the same error)."""
    from siftkit.cli.args import config_from_args, config_parser as _config_parser

    def outcome(build):
        try:
            return getattr(build(), field)
        except ValueError as exc:
            return str(exc)

    cli = outcome(lambda: config_from_args(_config_parser("t").parse_args([f"--{field}", text])))
    papermill = outcome(lambda: RunConfig(**{field: _papermill_value(text)}))
    params = tmp_path / "p.yaml"
    params.write_text(f"{field}: {text}\n")
    yaml_file = outcome(lambda: RunConfig.from_yaml(params))
    assert cli == papermill == yaml_file == expected
    if isinstance(expected, str):
        code, err = _cli(capsys, "--params", str(SMOKE), "--output_dir", str(tmp_path / "o"), f"--{field}", text)
        assert (code, err) == (2, f"siftkit train: error: {expected}\n")
        robustness_log(f"CLI `--{field} {text}` (the same message from a params file and papermill `-p`)",
                       err.strip())
    else:
        robustness_log(f"CLI `--{field} {text}`, params file `{field}: {text}`, papermill `-p {field} {text}`",
                       f"(accepted: all three read {expected!r})")


def test_home_folder_is_expanded_in_params_file_and_cli(tmp_path, monkeypatch):
    """`output_dir: ~/runs/x` wrote to a folder literally named `./~/runs/x`."""
    from siftkit.cli.args import config_from_args, config_parser as _config_parser

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    home = Path(os.path.expanduser("~"))
    params = tmp_path / "p.yaml"
    params.write_text("output_dir: ~/runs/x\ndata_dir: ~/data\nmodel_name: ~/models/m\n")
    cfg = RunConfig.from_yaml(params)
    assert (cfg.output_dir, cfg.data_dir, cfg.model_name) == (str(home / "runs/x"), str(home / "data"),
                                                             str(home / "models/m"))
    args = _config_parser("t").parse_args(["--output_dir", "~/runs/y"])
    assert config_from_args(args).output_dir == str(home / "runs/y")
    robustness_log("params file `output_dir: ~/runs/x` (also data_dir, model_name; CLI too)",
                   "(accepted: ~ is the home folder, as in the notebooks)")


def test_second_concurrent_run_is_refused_at_once(tmp_path):
    """Two runs in one output_dir mixed their checkpoints; one lost its results."""
    from siftkit.run.outdir import OutputDirLock

    out = tmp_path / "run"
    out.mkdir()
    holder = OutputDirLock.acquire(out)  # what the first run holds while it trains
    try:
        with pytest.raises(OutputDirError) as err:
            _train(out)
    finally:
        holder.release()
    msg = str(err.value)
    assert msg == (f"output_dir {str(out)!r} is in use by another run (pid {os.getpid()} on "
                   f"{socket.gethostname()}); two runs in one folder would mix their checkpoints and results: "
                   f"wait for it to end or choose another output_dir")
    assert sorted(p.name for p in out.iterdir()) == []  # nothing written, the lock file gone with the lock
    robustness_log("a second run into an output_dir while the first still trains", msg,
                   **{"runs/exp": out, "12345": os.getpid(), "host": socket.gethostname()})


def test_lock_of_a_killed_run_does_not_block(tmp_path):
    """The lock is the OS's (flock): a run killed with SIGKILL leaves its lock file, not its lock."""
    from siftkit.run.outdir import LOCK_FILE, OutputDirLock

    out = tmp_path / "run"
    out.mkdir()
    code = ("import os, signal, sys; from siftkit.run.outdir import OutputDirLock; "
            "OutputDirLock.acquire(sys.argv[1]); os.kill(os.getpid(), signal.SIGKILL)")
    done = subprocess.run([sys.executable, "-c", code, str(out)], cwd=REPO, timeout=120)
    assert done.returncode == -signal.SIGKILL
    assert (out / LOCK_FILE).read_text().startswith("pid ")  # left behind by the killed process
    lock = OutputDirLock.acquire(out)  # at once, no wait
    lock.release()
    assert not (out / LOCK_FILE).exists()
    robustness_log("the lock file of a run killed with SIGKILL",
                   "(ignored: the lock is the operating system's and ended with the process; the next run starts)")


@pytest.mark.parametrize("field, message", [
    ("output_dir", "output_dir is empty (''); name the run's folder (e.g. runs/exp); '.' if the current folder "
                   "is really meant"),
    ("data_dir", "data_dir is empty (''); name the data folder, or leave data_dir unset (None) for the default"),
    ("model_name", "model_name is empty (''); give a Hub name or a model folder, or leave model_name unset (None) "
                   "for the offline default all-MiniLM-L6-v2"),
], ids=["output_dir", "data_dir", "model_name"])
def test_empty_path_is_refused(capsys, tmp_path, field, message):
    """`--output_dir "$RUN_DIR"` with RUN_DIR unset wrote the run into the current folder."""
    assert _config_error(**{field: ""}) == message
    code, err = _cli(capsys, "--params", str(SMOKE), f"--{field}", "", *(
        [] if field == "output_dir" else ["--output_dir", str(tmp_path / "o")]))
    assert (code, err) == (2, f"siftkit train: error: {message}\n")
    robustness_log(f"CLI `--{field} \"\"` (an unset shell variable)", err.strip())


def test_notebook_empty_output_dir_is_refused():
    """papermill `-p output_dir ""` made the notebook write into the project root."""
    from siftkit.explore.notebook import config_from_parameters

    with pytest.raises(ValueError) as err:
        config_from_parameters({"output_dir": "", "params_file": str(SMOKE)})
    assert str(err.value).startswith("output_dir is empty ('');")
    robustness_log('papermill `-p output_dir ""`', f"ValueError: {err.value}")


def test_algo_changed_after_the_config_was_built(tmp_path):
    """`cfg.algo = "sift"` on a plain config trained plain and recorded sift."""
    cfg = RunConfig(**TINY, output_dir=str(tmp_path / "run"))
    cfg.algo = "sift"
    with pytest.raises(ValueError) as err:
        training.train(cfg, progress=False)
    msg = str(err.value)
    assert msg == ("algo was changed from 'plain' to 'sift' after the RunConfig was built, so its adversarial "
                   "settings are still those of 'plain'; build the config with algo='sift', or use "
                   "cfg.replace(algo='sift')")
    robustness_log("`cfg.algo = 'sift'` after `cfg = RunConfig()`, then `train(cfg)`", msg)
    cfg.algo = "SIFT"
    with pytest.raises(ValueError, match=rf"^algo must be one of {re.escape(ALGO_CHOICES)}; got 'SIFT'$"):
        training.train(cfg, progress=False)
    cfg = RunConfig(**TINY, output_dir=str(tmp_path / "run"))
    cfg.seed = -3
    with pytest.raises(ValueError, match=r"^seed must be >= 0, got -3$"):
        training.train(cfg, progress=False)
    assert not (tmp_path / "run").exists()


def test_model_folder_without_tokenizer_files(tmp_path):
    """Weights and config but no tokenizer: a 5-token vocabulary, every word [UNK], no warning."""
    folder = tmp_path / "model"
    tok = tokenizer()
    build_random_model("bert", vocab_size=len(tok), pad_token_id=tok.pad_token_id).save_pretrained(folder)
    with pytest.raises(ModelLoadError) as err:
        load_model(str(folder))
    msg = str(err.value)
    assert msg == (f"model_name={str(folder)!r}: its tokenizer has 5 tokens for a model whose embedding table has "
                   f"{len(tok)} rows, so nearly every word would become [UNK]; the folder's tokenizer files "
                   f"(tokenizer.json, vocab.txt, ...) are probably missing: save them there with "
                   f"tokenizer.save_pretrained(folder)")
    robustness_log("--model_name a folder with weights but no tokenizer files", msg, **{"my-model": folder})
    tok.save_pretrained(folder)
    model, loaded = load_model(str(folder))  # with its tokenizer the same folder loads
    assert len(loaded) == len(tok)


# ----------------------------------------------------------------------------- late or wrong-field errors


def test_seed_out_of_numpy_range():
    """Failed only in the training cell under papermill (numpy's seed takes < 2**32)."""
    msg = _config_error(seed=99999999999)
    assert msg == "seed must be <= 4294967295 (2**32 - 1, the largest seed numpy takes), got 99999999999"
    robustness_log("seed=99999999999", msg)


def test_split_sizes_name_the_field_that_was_set(data_dir):
    from siftkit.run.protocols import uci_split

    msg = _config_error(twitter_subset=1)
    assert msg == ("twitter_subset=1 with twitter_val_fraction=0.1 leaves 1 tweet(s) for training and 0 for "
                   "validation; each needs at least one")
    robustness_log("twitter_subset=1", msg)
    with pytest.raises(ValueError) as err:
        uci_split(RunConfig(data_dir=str(data_dir), uci_train_fraction=0.9999))
    msg = str(err.value)
    assert msg == ("uci_train_fraction=0.9999 (3000 sentences) leaves 0 of the 3000 UCI sentences for the test set "
                   "and 3000 for training; each needs at least one, so the training size must be between 1 and 2999")
    robustness_log("uci_train_fraction=0.9999", msg)


def test_twitter_subset_larger_than_the_data(data, tmp_path):
    """RunConfig cannot know how many tweets the data give; the protocol names the settings."""
    from siftkit.run.protocols import twitter_subset

    n_pos = sum(load("twitter_hate", data)["train"]["label"])
    assert 2 <= n_pos <= 50  # 0.99 of them rounds to all of them
    with pytest.raises(ValueError) as err:
        twitter_subset(RunConfig(data_dir=str(data), twitter_negatives=0, twitter_val_fraction=0.99))
    assert str(err.value) == (f"the Twitter subset has {n_pos} tweets ({n_pos} positives + twitter_negatives=0, at "
                              f"most twitter_subset=2000); twitter_val_fraction=0.99 of them leaves 0 for "
                              f"training and {n_pos} for validation; each needs at least one")
    robustness_log("twitter_negatives=0, twitter_val_fraction=0.99 (fewer tweets than twitter_subset)",
                   str(err.value))


def test_download_into_a_file(capsys, tmp_path):
    from siftkit.data.download import main as download_main

    target = tmp_path / "notes.txt"
    target.write_text("keep me")
    assert download_main(["--data-dir", str(target)]) == 1
    err = capsys.readouterr().err
    assert err == (f"error: cannot use {target} as the data folder: it is a file, not a folder; pass --data-dir "
                   f"a folder (it is created if missing)\n")
    assert target.read_text() == "keep me"
    robustness_log("`download --data-dir notes.txt` (a file)", err.strip(), **{"notes.txt": target})
    assert download_main(["--data-dir", str(target / "sub")]) == 1
    assert capsys.readouterr().err == (f"error: cannot use {target / 'sub'} as the data folder: Not a directory; "
                                       f"pass --data-dir a folder (it is created if missing)\n")


def _trainer_args(tmp_path):
    from transformers import TrainingArguments

    return TrainingArguments(output_dir=str(tmp_path / "hf"), use_cpu=True, report_to="none", save_strategy="no",
                             per_device_train_batch_size=4, disable_tqdm=True)


def test_adversarial_trainer_with_a_bare_encoder(tmp_path):
    from transformers import BertModel

    from siftkit import AdversarialTrainer

    bare = BertModel(tiny_model("bert").config)
    with pytest.raises(ValueError) as err:
        AdversarialTrainer(model=bare, args=_trainer_args(tmp_path), algo="sift")
    msg = str(err.value)
    assert msg == ("AdversarialTrainer needs a classifier that returns logits (a *ForSequenceClassification, e.g. "
                   "from AutoModelForSequenceClassification); BertModel is a bare encoder without a "
                   "classification head")
    robustness_log("AdversarialTrainer(model=BertModel(...)) (no classification head)", msg)


def test_adversarial_trainer_with_float_labels(tmp_path):
    from siftkit import AdversarialTrainer

    model = tiny_model("bert", train=True)
    trainer = AdversarialTrainer(model=model, args=_trainer_args(tmp_path), algo="sift")
    batch = make_batch()
    batch["labels"] = torch.tensor([0.0, 1.0, 1.0])
    with pytest.raises(ValueError) as err:
        trainer.compute_loss(model, batch)
    msg = str(err.value)
    assert msg == ("AdversarialTrainer trains single-label classifiers: labels must be integer class ids, got "
                   "torch.float32; cast the dataset's label column to int64 "
                   "(dataset.cast_column('label', datasets.Value('int64')))")
    robustness_log("AdversarialTrainer batch with float labels", msg)


def test_load_model_empty_name_or_folder(tmp_path):
    with pytest.raises(ModelLoadError) as err:
        load_model("")
    assert str(err.value) == ("model_name is empty (''); give a Hub name or a model folder, or leave model_name "
                              "unset (None) for the offline default all-MiniLM-L6-v2")
    robustness_log('load_model("")', str(err.value))
    folder = tmp_path / "model"
    folder.mkdir()
    with pytest.raises(ModelLoadError) as err:
        load_model(str(folder))
    msg = str(err.value)
    assert msg == (f"model folder {str(folder)!r} is empty: not a saved model; save one there with "
                   f"model.save_pretrained(folder) and tokenizer.save_pretrained(folder)")
    robustness_log("load_model(an empty folder)", msg, **{"my-model": folder})
    (folder / "notes.txt").write_text("x")
    with pytest.raises(ModelLoadError, match=r"has no config\.json \(it holds notes\.txt\): not a saved model"):
        load_tokenizer(str(folder))


def test_sweep_plans_each_run_once_and_takes_train_style_options(capsys, tmp_path):
    """`--algos sift,sift` ran one run twice (the second FAILED); `--learning_rate=1e-3` and a
    bare `--cpu` were refused although `train` takes them."""
    from siftkit.cli.args import field_overrides as _field_overrides
    from siftkit.cli.sweep import parse_algos, plan

    assert parse_algos("sift,plain,sift") == ["sift", "plain"]
    overrides = _field_overrides(["--learning_rate=1e-3", "--cpu", "--adv_epsilon", "-1e-3", "--max_length", "64"])
    assert overrides == {"learning_rate": "1e-3", "cpu": "true", "adv_epsilon": "-1e-3", "max_length": "64"}
    with pytest.raises(ValueError, match="adv_epsilon must be a finite number > 0, got -0.001"):
        plan(str(SMOKE), ["sift"], [1], tmp_path, None, overrides)  # checked when planned, as sift
    code = cli_main(["sweep", "--params", str(SMOKE), "--algos", "sift,sift", "--seeds", "1", "--output-dir",
                     str(tmp_path / "sw"), "--learning_rate=1e-3", "--cpu", "--dry-run"])
    out = capsys.readouterr().out
    assert code == 0
    assert out.splitlines() == ["sweep: 1 runs, 0 already done, 1 to run",
                                f"todo  {tmp_path / 'sw' / 'twitter_to_uci' / 'sift' / 'seed1'}"]
    robustness_log("`sweep --algos sift,sift --learning_rate=1e-3 --cpu`",
                   "(accepted: one run per algo and seed; options as `train` takes them)")


def test_params_file_with_a_duplicate_key(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("seed: 1\nalgo: sift\nseed: 2\n")
    with pytest.raises(ValueError) as err:
        RunConfig.from_yaml(path)
    msg = str(err.value)
    assert msg == (f"params file {path} is not valid YAML: duplicate key 'seed' (first given at line 1) at line 3, "
                   f"column 1")
    robustness_log("params file: 'seed: 1\\nalgo: sift\\nseed: 2\\n' (a key twice)", msg, **{"p.yaml": path})


def test_data_dir_one_level_too_deep(data, tmp_path):
    """`--data_dir data/cola` was told to download the data it already had."""
    with pytest.raises(DataError) as err:
        _train(tmp_path / "out", task="cola", data_dir=str(data / "cola"))
    msg = str(err.value)
    assert msg == (f"data folder {data / 'cola'} holds in_domain_train.tsv itself: it looks like the cola dataset "
                   f"folder, one level too deep; set data_dir (or $SIFTKIT_DATA_DIR) to the folder above it, {data}")
    robustness_log("data_dir one level too deep (`data_dir/cola`)", msg, data_dir=data)
    with pytest.raises(DataError, match=r"looks like the uci_sentiment dataset folder"):
        load("cola", data / "uci_sentiment")


@pytest.mark.parametrize("name, rel", [("cola", "cola/in_domain_train.tsv"), ("twitter_hate", "twitter_hate/train.csv"),
                                       ("uci_sentiment", "uci_sentiment/imdb_labelled.txt")])
def test_windows_line_endings_one_rule_for_all(data, name, rel):
    """CoLA and Twitter kept a '\\r' in their texts while UCI refused the file: now all three
    read CRLF as a line ending, and the data are those of the original file."""
    if name == "twitter_hate":  # a quoted tweet that spans two lines: its line break is one too
        (data / rel).write_bytes((data / rel).read_bytes() + b'99999,0,"two\nlines"\n')
    before = load(name, data)
    (data / rel).write_bytes((data / rel).read_bytes().replace(b"\n", b"\r\n"))
    after = load(name, data)
    for split in before:
        assert after[split].to_dict() == before[split].to_dict()
        assert not any("\r" in text for text in after[split]["text"])
    robustness_log(f"Windows (CRLF) line endings in {rel.split('/')[0]}",
                   "(accepted: read as line endings; the same texts and labels as the original file)")


def test_long_line_is_cut_before_tokenizing():
    """One 10 MB line took 2.4 GB: the tokenizer saw all of it before truncating."""
    from datasets import Dataset

    tok = tokenizer()
    seen: list[int] = []

    def recording(texts, **kwargs):
        seen.extend(len(t) for t in texts)
        return tok(texts, **kwargs)

    long_text = "word " * 200_000  # 1 MB
    ds = Dataset.from_dict({"text": [long_text, "short text"], "label": [1, 0]})
    ids = evaluation.tokenize(ds, recording, 32)[0]["input_ids"]
    assert max(seen) == 32 * evaluation.CHARS_PER_TOKEN < len(long_text)
    assert ids == tok(long_text[:100_000], truncation=True, max_length=32)["input_ids"]  # the same tokens
    seen.clear()
    # the evaluation's (cached) tokenization cuts the same way
    assert evaluation.encoded(ds, recording, 32).features["input_ids"][0] == ids
    assert max(seen) == 32 * evaluation.CHARS_PER_TOKEN
    robustness_log("one text line of 10 MB",
                   "(accepted: cut to max_length × 256 characters before tokenizing, so memory stays small; "
                   "the max_length tokens kept are the same)")


def test_failed_run_leaves_no_empty_folder(tmp_path):
    out = tmp_path / "runs" / "new" / "exp"
    with pytest.raises(DataError):
        _train(out, data_dir=str(tmp_path / "nowhere"))
    assert not (tmp_path / "runs").exists()
    robustness_log("a run that fails (here: no data folder) into a new output_dir",
                   "(the error itself; the folders the run created are removed again when empty)")


def test_notebook_figures_folder_is_made_by_the_first_figure(tmp_path):
    from siftkit.explore.notebook import figures_dir

    folder = figures_dir(tmp_path / "run")
    assert folder == tmp_path / "run" / "figures" and not (tmp_path / "run").exists()
    from siftkit.explore import plotting
    import matplotlib.pyplot as plt

    fig = plt.figure()
    plotting.save_figure(fig, folder / "x.png")
    plt.close(fig)
    assert (folder / "x.png").is_file()
    robustness_log("a notebook whose run fails after the first cell",
                   "(no empty folder: the first cell only checks output_dir, and figures/ is made by the first "
                   "saved figure)")


@pytest.mark.parametrize("before, after", [("r3f", "sift"), ("sift", "freelb"), ("freelb", "SIFT")])
def test_a_method_changed_after_the_config_was_built_is_refused_by_name(tmp_path, before, after):
    """A family method's config whose algo was reassigned: RunConfig's message for a name that is no
    method, the changed-algo message otherwise (not a KeyError from a defaults table)."""
    cfg = RunConfig(**TINY, algo=before, output_dir=str(tmp_path / "run"))
    cfg.algo = after
    expected = ("algo must be one of" if after not in ALGOS else f"algo was changed from {before!r} to {after!r}")
    with pytest.raises(ValueError, match=re.escape(expected)):
        training.train(cfg, progress=False)
