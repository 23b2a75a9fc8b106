"""Bad input that used to get through (issue 21): silent wrong results, lost data, a folder
escape and unclear errors, each fed to the Python API, the CLI or a notebook helper with the
exact message asserted. With SIFTKIT_ROBUSTNESS_LOG set, the (input, message) pairs go to the
log from which docs/robustness.md is made (as in tests/test_bad_input.py).
"""

from __future__ import annotations

import errno
import json
import shutil
from pathlib import Path

import pytest
import torch
from helpers import copy_data_lines, make_batch, robustness_log, tiny_model
from test_regime import record as study_record
from test_regime import write as study_write

import siftkit.run.training as training
from siftkit.run import diskspace, outdir
from siftkit.run.checkpoint import CheckpointError, latest_checkpoint
from siftkit.cli.main import main as cli_main
from siftkit.run.config import ALGOS, RunConfig
from siftkit.data.loaders import load
from siftkit.data.registry import DataError
from siftkit.data.registry import sha256_file
from siftkit.run.records import OutputDirError

REPO = Path(__file__).resolve().parents[2]
ALGO_CHOICES = ", ".join(map(repr, ALGOS))  # the registered methods, as RunConfig lists them
SMOKE = REPO / "params" / "smoke.yaml"
# 4 Twitter and 4 UCI examples, batch 4: one step per stage.
TINY = dict(model_name="random:bert", max_train_samples=4, max_eval_samples=4, per_device_train_batch_size=4,
            per_device_eval_batch_size=4, uci_num_train_epochs=1, logging_steps=1, max_length=32, cpu=True)
PIECES = {"twitter_hate/train.csv": 120, "uci_sentiment/amazon_cells_labelled.txt": 30,
          "uci_sentiment/imdb_labelled.txt": 30, "uci_sentiment/yelp_labelled.txt": 30}


@pytest.fixture
def data(tmp_path, data_dir):
    """A private copy of a few lines of every P2 data file, to break."""
    root = tmp_path / "data"
    copy_data_lines(data_dir, root, PIECES)
    return root


def _train(output_dir, **changes):
    return training.train(RunConfig(**{**TINY, "output_dir": str(output_dir), **changes}), progress=False)


def _error(call, *args, kind=ValueError, **kwargs) -> str:
    with pytest.raises(kind) as err:
        call(*args, **kwargs)
    return str(err.value)


def _cli(capsys, *argv: str, command: str = "train") -> tuple[int, str]:
    try:
        code = cli_main([command, *argv])
    except SystemExit as exc:
        code = exc.code
    return code, capsys.readouterr().err.strip()


# ----------------------------------------------------------------------------- wrong results, lost data


def test_overwrite_removes_the_earlier_runs_model(tmp_path):
    out = tmp_path / "R"
    _train(out, algo="sift", save_model=True)
    assert (out / "model" / "config.json").is_file()
    _train(out, algo="plain", overwrite=True)
    assert json.loads((out / "results.json").read_text())["config"]["algo"] == "plain"
    assert not (out / "model").exists()  # was: the SiFT model, read as plain's weights
    robustness_log("`--algo sift --save_model true`, then `--algo plain --overwrite true` into the same output_dir",
                   "accepted: the earlier run's model/ is removed (or replaced, with --save_model true) with its "
                   "results.json")


def test_save_model_into_a_file_is_refused_before_training(tmp_path, monkeypatch):
    out = tmp_path / "R"
    out.mkdir()
    (out / "model").write_text("notes")
    monkeypatch.setattr(training, "build_stages", lambda cfg: pytest.fail("trained before checking"))
    msg = _error(_train, out, save_model=True, kind=OutputDirError)
    assert msg == (f"'{out / 'model'}' is a file, but save_model=True writes the fine-tuned model to a folder of "
                   f"that name; move the file away, or choose another output_dir")
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
    tsv.write_text("".join(line[:-2] + ("0" if line[-2] == "1" else "1") + "\n"
                           for line in tsv.read_text().splitlines(keepends=True)))
    msg = _error(_train, out, data_dir=str(flipped), save_steps=1, resume=True, kind=CheckpointError)
    assert msg.startswith(f"checkpoint {ckpt} was written by a run on other data: uci_sentiment/yelp_labelled.txt "
                          f"now has sha256 ")
    assert f"in {flipped}, the run started with " in msg and msg.endswith(
        f"in {data}; resume with the data the run started with, or start over with overwrite=True")
    robustness_log("`--resume` with a `--data_dir` whose yelp labels are flipped", msg,
                   **{"runs/exp": out, "data_dir": flipped, "first_data_dir": data})
    record = _train(out, data_dir=str(data), save_steps=1, resume=True)  # the same data: resumes
    assert set(record["meta"]["data_files"]) == set(PIECES)
    assert record["meta"]["data_rows"] == {"twitter_hate/train": 119, "uci_sentiment/pool": 90}


def test_edited_data_files_are_said_once_and_recorded(tmp_path, data):
    imdb = data / "uci_sentiment" / "imdb_labelled.txt"
    imdb.write_bytes(b"".join(imdb.read_bytes().splitlines(keepends=True)[:15]))
    with pytest.warns(training.DataWarning) as said:
        record = _train(tmp_path / "R", data_dir=str(data))
    texts = [str(w.message) for w in said if "imdb" in str(w.message)]
    assert len(texts) == 1 and texts[0].startswith(f"{imdb} differs from the published file (")
    assert "published: 85285 bytes, aef2e49e3da2...); the run uses it as it is" in texts[0]
    assert record["meta"]["data_files"]["uci_sentiment/imdb_labelled.txt"] == sha256_file(imdb)
    assert record["meta"]["data_rows"]["uci_sentiment/pool"] == 75
    robustness_log("a data folder whose imdb_labelled.txt holds half its lines", texts[0].split(" (")[0] +
                   " (… bytes, sha256 …; published: 85285 bytes, aef2e49e3da2...); the run uses it as it is, and "
                   "results.json records its sha256 (meta.data_files) and the rows read (meta.data_rows)",
                   data_dir=data)


def _study(tmp_path, *changes: dict) -> Path:
    root = tmp_path / "sw"
    for seed, change in enumerate(changes, start=1):
        rec = study_record("plain", seed)
        rec["config"].update(change)
        study_write(root, rec)
    return root


def _summarize_error(*args: str) -> str:
    from siftkit.study.summarize import main

    with pytest.raises(ValueError) as err:
        main([*map(str, args), "--no-figures"])
    return str(err.value)


def test_summarize_refuses_one_variant_with_two_settings(tmp_path):
    root = _study(tmp_path, {}, {"learning_rate": 0.05, "max_length": 8})
    msg = _summarize_error(root, "--out", tmp_path / "S.md")
    a, b = (root / "twitter_to_uci" / "plain" / f"seed{k}" / "results.json" for k in (1, 2))
    assert msg == (f"runs of variant 'plain' (task twitter_to_uci, device NVIDIA H200, code {'a' * 40}) differ in "
                   f"learning_rate, max_length: {a} (learning_rate=2e-05, max_length=128) and {b} (learning_rate=0.05, "
                   f"max_length=8); runs of one variant may differ only in the seed (and where their files go): give "
                   f"each setting its own tag (sweep --tag, or extra: {{tag: ...}}), or move one out of the summarized "
                   f"folders")
    robustness_log("two untagged plain runs, one at learning_rate 0.05 and max_length 8", msg, sw=root)


def test_settings_that_cannot_change_a_result_may_differ(tmp_path):
    from siftkit.study.summarize import summarize

    root = _study(tmp_path, {"output_dir": "a", "logging_steps": 5, "extra": {"note": "x"}, "data_dir": "/d1"},
                  {"output_dir": "b", "cpu": True, "save_steps": 3, "data_dir": "/d2"})
    text, study = summarize([root])
    (stats,) = study.groups[("twitter_to_uci", "NVIDIA H200", "a" * 40, "all-MiniLM-L6-v2")].stats
    assert stats.variant == "plain" and len(stats.seeds) == 2


@pytest.mark.parametrize("value", ["NaN", "Infinity"])
def test_a_non_finite_main_metric_is_refused_like_null(tmp_path, value):
    root = _study(tmp_path, {}, {})
    path = root / "twitter_to_uci" / "plain" / "seed2" / "results.json"
    path.write_text(path.read_text().replace('"uci_test_accuracy": 0.', f'"uci_test_accuracy": {value}, "x": 0.', 1))
    msg = _summarize_error(root, "--out", tmp_path / "S.md")
    shown = "nan" if value == "NaN" else "inf"
    assert msg == (f"{path}: metric 'uci_test_accuracy' is {shown}; the run has no result to compare (rerun it, or "
                   f"move the file out of the summarized folders)")
    robustness_log(f'the protocol\'s metric edited to {value} (`"uci_test_accuracy": {value}`)', msg, sw=root)


def test_an_infinite_secondary_metric_shows_a_dash(tmp_path):
    from siftkit.study.summarize import summarize

    root = _study(tmp_path, {}, {})
    path = root / "twitter_to_uci" / "plain" / "seed2" / "results.json"
    path.write_text(path.read_text().replace('"uci_zero_shot_accuracy": 0.45', '"uci_zero_shot_accuracy": Infinity', 1))
    text, data = summarize([root])  # was: AttributeError from statistics
    assert "inf" not in text.lower().replace("information", "")


@pytest.mark.parametrize("name", ["results.json", "history.csv"])
def test_summarize_out_never_replaces_a_run_record(tmp_path, name):
    root = _study(tmp_path, {}, {})
    target = root / "twitter_to_uci" / "plain" / "seed1" / name
    if name == "history.csv":
        target.write_text("step\n")
    before = target.read_bytes()
    msg = _summarize_error(root, "--out", target)
    assert msg == (f"--out '{target}' would replace a run record; give the Markdown file to write, e.g. "
                   f"{target.parent / 'SUMMARY.md'}")
    assert target.read_bytes() == before
    robustness_log(f"`summarize --out sw/r/seed1/{name}`", msg, sw=root)


def test_summarize_flags_runs_with_dropped_steps(tmp_path):
    from siftkit.study.summarize import summarize

    root = _study(tmp_path, {}, {})
    path = root / "twitter_to_uci" / "plain" / "seed2" / "results.json"
    rec = json.loads(path.read_text())
    rec["meta"]["nonfinite_steps"] = 3
    path.write_text(json.dumps(rec))
    text, _ = summarize([root])
    line = ("**Runs with non-finite (dropped) training steps**, whose numbers come from fewer updates: "
            "`plain` seed 2 (3 steps).")
    assert line in text
    robustness_log("summarize over a run with non-finite (dropped) steps", f"accepted, flagged under the table: {line}")


def test_a_diverged_run_fails(tmp_path, capsys):
    code, err = _cli(capsys, "--params", str(SMOKE), "--algo", "sift", "--learning_rate", "1e30", "--cpu",
                     "--max_train_samples", "8", "--output_dir", str(tmp_path / "R"))
    assert code == 2 and not (tmp_path / "R" / "results.json").exists()
    err = err.splitlines()[-1]
    assert err == ("siftkit train: error: stage 'twitter': 1 of 2 steps (50%) had a non-finite loss or gradient and "
                   "were dropped, more than max_nonfinite_fraction=0.1: the run diverged and its metrics would not "
                   "measure the training asked for; lower the learning rate (learning_rate=1e+30 in this stage) or "
                   "the regularizer's sizes, or raise max_nonfinite_fraction")
    robustness_log("CLI `--algo sift --learning_rate 1e30` (a diverged run)", err)


def test_a_few_dropped_steps_are_said(tmp_path):
    with pytest.warns(RuntimeWarning) as said:
        _train(tmp_path / "R", algo="sift", learning_rate=1e30, max_train_samples=8, max_nonfinite_fraction=1.0)
    texts = [str(w.message) for w in said if "non-finite" in str(w.message)]
    assert texts[0] == ("stage 'twitter': 1 of 2 steps (50%) had a non-finite loss or gradient and were dropped "
                        "(max_nonfinite_fraction=1 allows up to 100%); results.json counts them in "
                        "meta.nonfinite_steps")


def test_a_sweep_tag_cannot_leave_the_output_root(tmp_path, capsys):
    from siftkit.cli.sweep import check_inside, check_path_name

    code, err = _cli(capsys, "--params", str(SMOKE), "--algos", "plain", "--seeds", "1", "--tag",
                     "x/../../../outside", "--output-dir", str(tmp_path / "root"), "--dry-run", command="sweep")
    assert code == 2 and err == ("siftkit sweep: error: --tag 'x/../../../outside' cannot name a folder: it holds "
                                 "'/'; use letters, digits, '.', '_' and '-' (e.g. 'x_.._.._.._outside')")
    robustness_log("`sweep --tag x/../../../outside --output-dir runs/esc/root --dry-run`", err)
    for bad in ("..", "", " x", "a\\b"):
        with pytest.raises(ValueError, match="--tag"):
            check_path_name("--tag", bad)
    with pytest.raises(ValueError, match="outside the output root"):
        check_inside(tmp_path / "root", tmp_path / "root" / ".." / "elsewhere")


# ----------------------------------------------------------------------------- unclear errors made clear


@pytest.mark.parametrize("argv, message", [
    (["--learning_rate", "1e300"], "learning_rate must be < 3.4e+37 (AdamW's first step is 10 x the rate and must "
                                   "fit a float32), got 1e+300"),
    (["--extra", "{date: 2024-05-01}"], "extra must hold only JSON values (text, numbers, true/false, null, lists, "
                                        "mappings); extra['date'] is datetime.date(2024, 5, 1) (a date); quote it to "
                                        "keep it as text, e.g. '2024-05-01'"),
    (["--algo", "sift", "--bregman_weight", "5", "--bregman_beta", "0.5"],
     "bregman_weight=5.0 is not used by algo='sift' (only SMART has a Bregman term); leave it unset, or choose "
     "algo='smart'"),
    (["--algo", "sift", "--bregman_beta", "0.5"],
     "bregman_beta=0.5 is not used by algo='sift' (only SMART has a Bregman term); leave it unset, or choose "
     "algo='smart'"),
    (["--algo", "plain", "--adv_epsilon", "0.3"],
     "adv_epsilon=0.3 is not used by algo='plain' (plain fine-tuning has no adversarial regularizer); leave it "
     "unset, or choose algo='smart' or 'sift'"),
    (["--algo", "plain", "--adv_rule", "deberta"],
     "adv_rule='deberta' is not used by algo='plain' (plain fine-tuning has no adversarial regularizer); leave it "
     "at its default 'projected', or choose algo='smart' or 'sift'"),
], ids=["lr1e300", "extra-date", "sift-bregman", "sift-beta", "plain-eps", "plain-rule"])
def test_settings_refused_by_name(capsys, tmp_path, argv, message):
    code, err = _cli(capsys, "--params", str(SMOKE), *argv, "--output_dir", str(tmp_path / "R"))
    assert (code, err) == (2, f"siftkit train: error: {message}")
    robustness_log(f"CLI `{' '.join(argv)}`", err)


def test_adversarial_trainer_refuses_an_unused_knob_and_a_label_beyond_the_classes(tmp_path):
    from transformers import TrainingArguments

    from siftkit import AdversarialTrainer

    args = TrainingArguments(output_dir=str(tmp_path / "hf"), use_cpu=True, report_to="none", save_strategy="no",
                             disable_tqdm=True)
    model = tiny_model("bert", train=True)
    msg = _error(AdversarialTrainer, model=model, args=args, algo="sift", bregman_weight=5.0)
    assert msg.startswith("bregman_weight=5.0 is not used by algo='sift'")
    trainer = AdversarialTrainer(model=model, args=args, algo="sift")
    msg = _error(trainer.compute_loss, model, make_batch(labels=[0, 2, 1]))
    assert msg == ("AdversarialTrainer got label 2 for a model with num_labels=2 (class ids 0 to 1); build the model "
                   "with num_labels covering every label (from_pretrained(..., num_labels=...)) or fix the "
                   "dataset's labels")
    robustness_log("AdversarialTrainer batch with label 2 on a 2-class model", msg)


def test_committed_records_still_rebuild_a_runconfig():
    files = sorted(REPO.glob("results/**/results.json"))
    assert files
    for path in files:
        cfg = json.loads(path.read_text())["config"]
        RunConfig.from_dict({k: v for k, v in cfg.items() if k in RunConfig.field_names()})


@pytest.mark.parametrize("text, message", [
    ("le\u0430rning_rate: 1e-3\n", "unknown field(s) in p.yaml: le\u0430rning_rate (line 1: 'le\u0430rning_rate' holds "
                                   "'\u0430' (U+0430 CYRILLIC SMALL LETTER A), not ASCII; did you mean learning_rate?)"),
    ("seed: 3\nlearning_rate:\u00a01e-3\n",
     "params file p.yaml is not valid YAML: could not find expected ':' at line 3, column 1 (while scanning a simple "
     "key at line 2, column 1); line 2, column 15 holds '\\xa0' (U+00A0 NO-BREAK SPACE), which YAML does not read as "
     "a space: type a plain space there"),
], ids=["cyrillic-a", "no-break-space"])
def test_params_file_lookalike_characters_are_named(tmp_path, monkeypatch, text, message):
    monkeypatch.chdir(tmp_path)
    Path("p.yaml").write_text(text, encoding="utf-8")
    assert _error(RunConfig.from_yaml, "p.yaml") == message
    robustness_log(f"params file: {text!r}", message)


@pytest.mark.parametrize("content, message", [
    (b'--algos plain --tag "x\n', "p.plan line 1: No closing quotation ('--algos plain --tag \"x')"),
    (b"# study\n--algos plain --tag caf\xe9\n",
     "p.plan line 2: not UTF-8 text (byte b'\\xe9' at offset 31: invalid continuation byte); save the plan file as "
     "UTF-8"),
], ids=["open-quote", "latin1"])
def test_plan_file_errors_name_the_line(tmp_path, monkeypatch, capsys, content, message):
    monkeypatch.chdir(tmp_path)
    Path("p.plan").write_bytes(content)
    code, err = _cli(capsys, "--plan", "p.plan", "--output-dir", "out", "--dry-run", command="sweep")
    assert (code, err) == (2, f"siftkit sweep: error: {message}")
    robustness_log(f"plan file: {content.decode('latin-1')!r}", err)


@pytest.mark.parametrize("argv, message", [
    (["--algos", "plain", "--algos", "sift"], "--algos given twice ('plain', then 'sift'); give it once, as one comma "
                                              "list, e.g. --algos plain,sift"),
    (["--stop-after", "-5"], "--stop-after must be a number of seconds > 0, got -5; leave it out to run every planned "
                             "run"),
    (["--seeds", "0-4294967296"], "--seeds '0-4294967296': seed 4294967296 is more than 4294967295 (2**32 - 1, the "
                                  "largest seed numpy takes)"),
], ids=["algos-twice", "stop-after-neg", "seeds-huge"])
def test_sweep_options_refused_by_name(tmp_path, capsys, argv, message):
    code, err = _cli(capsys, "--params", str(SMOKE), *argv, "--output-dir", str(tmp_path / "o"), command="sweep")
    assert (code, err) == (2, f"siftkit sweep: error: {message}")
    assert not (tmp_path / "o").exists()
    robustness_log(f"`sweep {' '.join(argv)}`", err)


def test_summarize_on_a_folder_named_results_json(tmp_path):
    root = _study(tmp_path, {})
    (root / "results.json").mkdir()
    from siftkit.study.summarize import summarize

    text, study = summarize([root])  # was: "no results file at sw/results.json/results.json"
    assert sum(len(r.stats) for r in study.groups.values()) == 1
    empty = tmp_path / "results.json"
    empty.mkdir()
    msg = _summarize_error(empty)
    assert msg == f"no results.json files found in {empty}"
    robustness_log("summarize on an empty folder named results.json", msg, **{"sw/results.json": empty})


def test_empty_data_dir_variable_is_refused_like_an_empty_data_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("SIFTKIT_DATA_DIR", "")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    msg = _error(load, "twitter_hate", kind=DataError)
    assert msg == ("$SIFTKIT_DATA_DIR is set but empty (''); name the data folder in it, or unset it "
                   "(`unset SIFTKIT_DATA_DIR`) for the default")
    assert not (tmp_path / "cache").exists()  # was: an empty cache folder left behind
    robustness_log("`SIFTKIT_DATA_DIR=` (set, empty)", msg)
    msg = _error(load, "cola", " data", kind=DataError)
    assert msg.startswith("data folder ' data' (from the data_dir argument) does not exist")
    robustness_log("data_dir ' data' (a leading space)", msg)


def test_notebook_advice_only_where_it_helps(tmp_path):
    from siftkit.explore.notebook import prepare_output_dir

    (tmp_path / "notes.txt").write_text("x")
    cfg = RunConfig(output_dir=str(tmp_path / "notes.txt" / "run"))
    msg = _error(prepare_output_dir, cfg, kind=OutputDirError)
    assert msg == f"output_dir '{tmp_path / 'notes.txt' / 'run'}' is not writable: Not a directory"
    robustness_log("notebook `-p output_dir notes.txt/run` (below a file)", msg, **{"notes.txt/run": tmp_path / "notes.txt" / "run"})


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
        f"there, then run again; the last complete checkpoint {ckpt} is kept, and resume=True continues from it")
    robustness_log("disk full while a checkpoint is written", msg.replace(msg.split(" at ")[0], "no space left on "
                   "device MOUNT"), **{"runs/exp": out})


def test_disk_full_at_the_lock_leaves_no_lock_file(tmp_path, monkeypatch):
    def full(fd, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(outdir.os, "write", full)
    msg = _error(outdir.OutputDirLock.acquire, tmp_path, kind=OutputDirError)
    assert msg.startswith("no space left on device /") and msg.endswith(
        f" at {tmp_path / '.siftkit.lock'} (writing the run's lock file); free some space there, then run again")
    assert not (tmp_path / ".siftkit.lock").exists()
    robustness_log("disk full when a run (or --resume) writes its lock file",
                   "no space left on device MOUNT at runs/exp/.siftkit.lock (writing the run's lock file); free some "
                   "space there, then run again")


def test_twitter_csv_with_two_label_columns(data):
    csv = data / "twitter_hate" / "train.csv"
    lines = csv.read_text().splitlines()
    csv.write_text("\n".join([lines[0] + ",label"] + [f"{line},1" for line in lines[1:]]) + "\n")
    msg = _error(load, "twitter_hate", data, kind=DataError)
    assert msg == f"{csv} line 1: CSV header ['id', 'label', 'tweet', 'label'] names column(s) label more than once"
    robustness_log("a Twitter CSV with two `label` columns", msg, data_dir=data)


# ----------------------------------------------------------------------------- more inputs of the same kinds

_NOT_PLAIN = "is not used by algo='plain' (plain fine-tuning has no adversarial regularizer)"


@pytest.mark.parametrize("argv, message", [
    (["--algos", "plain", "--weight_decay", "1e300"],
     "learning_rate x weight_decay = 1e+297 does not fit a float32 (AdamW scales the weights by 1 - learning_rate x "
     "weight_decay); got learning_rate=0.001, weight_decay=1e+300"),
    (["--algos", "plain", "--uci_learning_rate", "1e300"],
     "uci_learning_rate must be < 3.4e+37 (AdamW's first step is 10 x the rate and must fit a float32), got 1e+300"),
    (["--algos", "plain", "--learning_rate", "1e38"],
     "learning_rate must be < 3.4e+37 (AdamW's first step is 10 x the rate and must fit a float32), got 1e+38"),
    (["--algos", "plain", "--max_nonfinite_fraction", "nan"],
     "max_nonfinite_fraction must be in [0, 1] (the share of a stage's steps that may be non-finite before the run "
     "fails), got nan"),
    (["--algos", "plain", "--perturb_at", "word_embeddings"],
     f"perturb_at='word_embeddings' {_NOT_PLAIN}; leave it at its default 'embedding_output', or choose "
     f"algo='smart' or 'sift'"),
    (["--algos", "plain", "--adv_steps", "0"],
     f"adv_steps=0 {_NOT_PLAIN}; leave it at its default 1, or choose algo='smart' or 'sift'"),
    (["--algos", "plain", "--extra", "{x: !!binary aGk=}"],
     "extra must hold only JSON values (text, numbers, true/false, null, lists, mappings); extra['x'] is b'hi' (a "
     "bytes); give it as text or a number"),
    (["--algos", "plain", "--extra", "{tag: [a, b]}"],
     "extra's tag must be text (it names the run's variant), got ['a', 'b']"),
    (["--algos", "plain", "--tag", ""], "--tag must be a non-empty name, got ''"),
    (["--algos", "plain", "--tag", " x"], "--tag ' x' cannot name a folder: it has spaces around it; use letters, "
                                          "digits, '.', '_' and '-' (e.g. 'x')"),
    (["--algos", "plain", "--tag", "a\\b"], "--tag 'a\\\\b' cannot name a folder: it holds '\\\\'; use letters, "
                                            "digits, '.', '_' and '-' (e.g. 'a_b')"),
    (["--algos", "plain", "--seeds", "1-1000000"], "--seeds '1-1000000' names 1000000 seeds; a sweep takes at most "
                                                   "1000"),
    (["--algos", "plain", "--stop-after", "nan"], "--stop-after must be a number of seconds > 0, got nan; leave it "
                                                  "out to run every planned run"),
], ids=["weight-decay", "uci-lr", "lr1e38", "nonfinite-nan", "plain-perturb-at", "plain-K0", "extra-bytes",
        "extra-tag-list", "tag-empty", "tag-space", "tag-backslash", "seeds-million", "stop-after-nan"])
def test_more_sweep_inputs_refused_by_name(tmp_path, capsys, argv, message):
    code, err = _cli(capsys, "--params", str(SMOKE), *argv, "--output-dir", str(tmp_path / "o"), "--dry-run",
                     command="sweep")
    assert (code, err) == (2, f"siftkit sweep: error: {message}")
    robustness_log(f"`sweep {' '.join(argv)} --dry-run`", err)


def test_sweep_output_dir_empty(capsys):
    code, err = _cli(capsys, "--algos", "plain", "--output-dir", "", "--dry-run", command="sweep")
    assert (code, err) == (2, "siftkit sweep: error: --output-dir is empty (''); name the sweep's folder, e.g. "
                              "results/cpu")
    robustness_log("`sweep --output-dir \"\"` (an unset shell variable)", err)


@pytest.mark.parametrize("line, message", [
    ("--algos plain --tag ../x", "--tag '../x' cannot name a folder: it holds '/'; use letters, digits, '.', '_' "
                                 "and '-' (e.g. 'x')"),
    ("--algos plain --adv_epsilon 0.3", f"adv_epsilon=0.3 {_NOT_PLAIN}; leave it unset, or choose algo='smart' or "
                                        f"'sift'"),
], ids=["tag-up", "plain-eps"])
def test_plan_lines_refused_by_name(tmp_path, monkeypatch, capsys, line, message):
    monkeypatch.chdir(tmp_path)
    Path("p.plan").write_text(f"--params {SMOKE} {line}\n")
    code, err = _cli(capsys, "--plan", "p.plan", "--output-dir", "out", "--dry-run", command="sweep")
    assert (code, err) == (2, f"siftkit sweep: error: p.plan line 1: {message}")
    robustness_log(f"plan file line `{line}`", err.replace(str(SMOKE), "params/smoke.yaml"))


def test_a_lookalike_letter_in_a_choice_is_named(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("p.yaml").write_text("algo: s\u0456ft\n", encoding="utf-8")
    msg = _error(RunConfig.from_yaml, "p.yaml")
    assert msg == (f"algo must be one of {ALGO_CHOICES}; got 's\u0456ft' (it holds '\u0456' (U+0456 CYRILLIC "
                   "SMALL LETTER BYELORUSSIAN-UKRAINIAN I), not ASCII)")
    robustness_log("params file: 'algo: s\u0456ft' (a Ukrainian \u0456)", msg)


def test_summarize_out_onto_a_file_that_is_not_markdown(tmp_path):
    root = _study(tmp_path, {})
    target = root / "twitter_to_uci" / "plain" / "model" / "config.json"
    target.parent.mkdir()
    target.write_text("{}")
    msg = _summarize_error(root, "--out", target)
    assert msg == (f"--out '{target}' would replace a file that is not Markdown; give the Markdown file to write, "
                   f"e.g. {target.parent / 'SUMMARY.md'}")
    assert target.read_text() == "{}"
    robustness_log("`summarize --out sw/r/model/config.json` (an existing file, not Markdown)", msg, sw=root)


def test_blank_data_dir_variable(monkeypatch):
    monkeypatch.setenv("SIFTKIT_DATA_DIR", " ")
    msg = _error(load, "cola", kind=DataError)
    assert msg == ("$SIFTKIT_DATA_DIR is set but empty (' '); name the data folder in it, or unset it "
                   "(`unset SIFTKIT_DATA_DIR`) for the default")
    robustness_log("`SIFTKIT_DATA_DIR=' '` (only a space)", msg)


def test_twitter_csv_with_two_id_columns(data):
    csv = data / "twitter_hate" / "train.csv"
    lines = csv.read_text().splitlines()
    csv.write_text("\n".join(["id," + lines[0]] + [f"0,{line}" for line in lines[1:]]) + "\n")
    msg = _error(load, "twitter_hate", data, kind=DataError)
    assert msg == f"{csv} line 1: CSV header ['id', 'id', 'label', 'tweet'] names column(s) id more than once"
    robustness_log("a Twitter CSV with two `id` columns", msg, data_dir=data)


def test_adversarial_trainer_label_minus_one(tmp_path):
    from transformers import TrainingArguments

    from siftkit import AdversarialTrainer

    args = TrainingArguments(output_dir=str(tmp_path / "hf"), use_cpu=True, report_to="none", save_strategy="no",
                             disable_tqdm=True)
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
