"""Bad input on the command line (`python -m siftkit train|sweep`): options, plans, params files,
model folders and files. Each input used to fail with argparse's or torch's words, a traceback,
or not at all; each is now one line naming the option, file or value and the way out, exit code
2 and no traceback (docs/robustness.md rows).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import DATA_PIECES, copy_data_lines, robustness_log

from siftkit.cli.args import config_from_args, config_parser
from siftkit.cli.main import main as cli_main
from siftkit.run.config import ALGOS

REPO = Path(__file__).resolve().parents[2]
SMOKE = REPO / "params" / "smoke.yaml"
ALGO_CHOICES = ", ".join(map(repr, ALGOS))  # the registered methods, as RunConfig lists them
_log = robustness_log  # records what the user saw for docs/robustness.md


@pytest.fixture
def data(tmp_path, data_dir):
    """A private copy of a few lines of every data file, to break."""
    root = tmp_path / "data"
    copy_data_lines(data_dir, root, DATA_PIECES)
    return root


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


def _subprocess_cli(tmp_path, *argv, **env):
    return subprocess.run(
        [sys.executable, "-m", "siftkit", "train", "--params", str(SMOKE), *argv],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=dict(os.environ, OMP_NUM_THREADS="1", **env),
        timeout=300,
    )


def _cli_error(capsys, *argv) -> str:
    """The error line (progress bars that transformers draws on stderr while loading are not ours)."""
    capsys.readouterr()
    assert cli_main(list(map(str, argv))) == 2
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and "usage:" not in err, err
    lines = [line for line in err.splitlines() if "Loading weights" not in line]
    assert len(lines) == 1, err
    return lines[0]


# ----------------------------------------------------------------------------- plans and CLI


def test_a_negative_shard_is_named(tmp_path, capsys):
    err = _cli_error(
        capsys,
        "sweep",
        "--params",
        SMOKE,
        "--algos",
        "plain",
        "--seeds",
        "1-3",
        "--output-dir",
        tmp_path / "o",
        "--shard",
        "-1/2",
        "--dry-run",
    )
    assert err == (
        "siftkit sweep: error: --shard -1/2: need 0 <= i < N (shards are counted from 0: i is one of 0-1 "
        "here), got i=-1"
    )
    robustness_log("`sweep ... --shard -1/2`", err)


def test_a_tag_too_long_for_a_folder_name_is_refused_at_planning(tmp_path, capsys):
    err = _cli_error(
        capsys,
        "sweep",
        "--params",
        SMOKE,
        "--algos",
        "plain",
        "--seeds",
        "1",
        "--output-dir",
        tmp_path / "o",
        "--tag",
        "x" * 300,
        "--dry-run",
    )
    assert err == (
        "siftkit sweep: error: run folder name 'plain-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx'... is 306 bytes "
        "long, more than the 255 a folder name may have here; shorten the --tag (or the grid values)"
    )
    robustness_log("`sweep --tag <300 characters> --dry-run`", err)


def test_a_params_file_edited_between_list_and_index_is_refused(tmp_path, capsys, monkeypatch):
    from siftkit.cli import launch

    params = tmp_path / "p.yaml"
    params.write_text(SMOKE.read_text())
    plan = tmp_path / "p.plan"
    plan.write_text(f"--params {params} --algos plain --seeds 1,2\n")
    out = tmp_path / "o"
    capsys.readouterr()
    assert cli_main(["sweep", "--plan", str(plan), "--output-dir", str(out), "--list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert all(line.split("\t")[3].startswith(f"# depends: {params}@") for line in lines)
    assert (out / "sweep-list.tsv").is_file()
    calls = []
    monkeypatch.setattr(launch.subprocess, "call", lambda cmd, **kw: calls.append(cmd) or 0)
    assert cli_main(["sweep", "--plan", str(plan), "--output-dir", str(out), "--index", "0"]) == 0  # unchanged
    assert len(calls) == 1
    params.write_text(params.read_text() + "warmup_ratio: 0.5\n")
    err = _cli_error(capsys, "sweep", "--plan", plan, "--output-dir", out, "--index", "1")
    assert err.startswith("siftkit sweep: error: --index 1: the entry is not what --list listed at ")
    assert f"({out / 'sweep-list.tsv'}): {params} now has sha256 " in err
    assert err.endswith("; list the plan again (--list) and resubmit the array, or restore what changed")
    assert len(calls) == 1
    robustness_log(
        "params file edited between `sweep --plan P --list` and `--index 1`", err, **{"out": out, "p.yaml": params}
    )


@pytest.mark.parametrize(
    "word,char", [("\u2013-seed", "'\u2013' (U+2013 EN DASH)"), ("\u2014seed", "'\u2014' (U+2014 EM DASH)")]
)
def test_a_dash_that_is_not_a_hyphen_is_named(tmp_path, capsys, word, char):
    err = _cli_error(capsys, "train", "--params", SMOKE, word, "3", "--output_dir", tmp_path / "o")
    assert err == (
        f"siftkit train: error: unrecognized option {word!r}: it holds {char}, a dash that is not '-' "
        f"(pasted from a document?); type it with plain hyphens, e.g. --seed"
    )
    robustness_log(f"CLI `{word} 3`", err)


def test_a_lookalike_letter_in_a_flag_is_named(tmp_path, capsys):
    err = _cli_error(capsys, "train", "--params", SMOKE, "--le\u0430rning_rate", "1e-3", "--output_dir", tmp_path)
    assert err == (
        "siftkit train: error: unrecognized option '--le\u0430rning_rate': it holds '\u0430' (U+0430 "
        "CYRILLIC SMALL LETTER A), a letter that only looks like an ASCII one; type the option again, "
        "e.g. --learning_rate"
    )
    robustness_log("CLI `--le\u0430rning_rate 1e-3` (a Cyrillic \u0430)", err)
    err = _cli_error(
        capsys, "sweep", "--params", SMOKE, "--algos", "plain", "--output-dir", tmp_path / "o", "\u2014cpu", "--dry-run"
    )
    assert err.startswith("siftkit sweep: error: unrecognized option '\u2014cpu': it holds '\u2014' (U+2014 EM DASH)")


def test_a_huge_batch_size_is_named(tmp_path, capsys):
    err = _cli_error(
        capsys, "train", "--params", SMOKE, "--per_device_train_batch_size", "1e20", "--output_dir", tmp_path / "o"
    )
    assert err == (
        "siftkit train: error: per_device_train_batch_size must be <= 2147483647 (2**31 - 1; torch and "
        "Python's slicing take no more), got 100000000000000000000 (1e+20)"
    )
    assert not (tmp_path / "o").exists()
    robustness_log("CLI `--per_device_train_batch_size 1e20`", err)


def test_params_given_twice_are_merged_in_order(tmp_path):
    first, second = tmp_path / "smoke.yaml", tmp_path / "rate.yaml"
    first.write_text("max_train_samples: 8\nlearning_rate: 0.001\n")
    second.write_text("learning_rate: 0.002\nseed: 4\n")
    cfg = config_from_args(config_parser("t").parse_args(["--params", str(first), "--params", str(second)]))
    assert (cfg.max_train_samples, cfg.learning_rate, cfg.seed) == (8, 0.002, 4)
    # The sweep passes both on to each run, in the same order.
    from siftkit.cli.sweep import plan

    (run,) = plan([str(first), str(second)], ["plain"], [1], tmp_path / "o", None, {})
    i = run.args.index("--params")
    assert run.args[i : i + 4] == ["--params", str(first), "--params", str(second)]
    assert run.config.max_train_samples == 8 and run.config.learning_rate == 0.002
    robustness_log(
        "CLI `--params smoke.yaml --params rate.yaml`",
        "accepted: merged in the order given (a later "
        "file's value replaces an earlier one's), in train and in each run of a sweep",
    )


def test_a_folder_given_as_params_or_plan_is_named(tmp_path, capsys):
    err = _cli_error(capsys, "train", "--params", tmp_path, "--output_dir", tmp_path / "o")
    assert err == f"siftkit train: error: params file {tmp_path} is a folder, not a file; name the YAML file in it"
    robustness_log("`--params FOLDER`", err.replace(str(tmp_path), "params"))
    err = _cli_error(capsys, "sweep", "--plan", tmp_path, "--output-dir", tmp_path / "o", "--dry-run")
    assert err == f"siftkit sweep: error: plan file {tmp_path} is a folder, not a file; name the plan file in it"
    robustness_log("`sweep --plan FOLDER`", err.replace(str(tmp_path), "plans"))


# ----------------------------------------------------------------------------- model folders


def _saved(folder: Path, model, tokenizer=True) -> Path:
    from helpers import tokenizer as default_tokenizer

    model.save_pretrained(str(folder))
    if tokenizer:
        default_tokenizer().save_pretrained(str(folder))
    return folder


@pytest.mark.slow
def test_a_gpt2_folder_is_one_line_before_training(tmp_path, capsys):
    import transformers as tf
    from helpers import tokenizer

    folder = _saved(
        tmp_path / "gpt2",
        tf.GPT2ForSequenceClassification(tf.GPT2Config(n_embd=32, n_layer=1, n_head=2, vocab_size=len(tokenizer()))),
    )
    err = _cli_error(capsys, "train", "--params", SMOKE, "--model_name", folder, "--output_dir", tmp_path / "o")
    assert err == (
        f"siftkit train: error: model_name={str(folder)!r} is a GPT2ForSequenceClassification (model type "
        f"'gpt2'), which has no encoder embedding block (model.base_model.embeddings) to perturb or probe; "
        f"siftkit fine-tunes encoder text classifiers such as BERT, RoBERTa, DeBERTa, DistilBERT, ELECTRA "
        f"and ALBERT"
    )
    robustness_log("--model_name a GPT-2 folder", err.replace(str(folder), "gpt2"))


@pytest.mark.slow
def test_an_image_model_folder_is_named_as_such(tmp_path, capsys):
    import transformers as tf

    folder = _saved(
        tmp_path / "vit",
        tf.ViTForImageClassification(
            tf.ViTConfig(
                hidden_size=32,
                num_hidden_layers=1,
                num_attention_heads=2,
                intermediate_size=32,
                image_size=32,
                patch_size=16,
            )
        ),
        tokenizer=False,
    )
    err = _cli_error(capsys, "train", "--params", SMOKE, "--model_name", folder, "--output_dir", tmp_path / "o")
    assert err == (
        f"siftkit train: error: model folder {str(folder)!r} holds a 'vit' model "
        f"(ViTForImageClassification), which has no text-classification head in transformers: not a text "
        f"model; siftkit fine-tunes encoder text classifiers such as BERT, RoBERTa, DeBERTa, DistilBERT, "
        f"ELECTRA and ALBERT"
    )
    robustness_log("--model_name an image model's folder (ViT)", err.replace(str(folder), "vit"))


@pytest.mark.slow
def test_truncated_safetensors_name_the_file(tmp_path, capsys):
    from helpers import tiny_model

    folder = _saved(tmp_path / "bert", tiny_model())
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    err = _cli_error(capsys, "train", "--params", SMOKE, "--model_name", folder, "--output_dir", tmp_path / "o")
    size = weights.stat().st_size
    assert err.startswith(
        f"siftkit train: error: model_name={str(folder)!r}: the weights file {weights} ({size} "
        f"bytes) cannot be read (SafetensorError: "
    )
    assert err.endswith(
        "it is damaged or incomplete (an interrupted copy, download or save?); copy it again, or "
        "save the model again with model.save_pretrained(folder)"
    )
    robustness_log(
        "--model_name a folder whose model.safetensors is cut in half",
        err.replace(str(folder), "bert").replace(str(size), "N"),
    )


# ----------------------------------------------------------------------------- files


def test_symbolic_link_loops_are_named(tmp_path, capsys):
    loop = tmp_path / "loop"
    os.symlink(loop, loop)
    note = f" ({loop} is a symbolic link that leads back to itself: {loop} -> {loop}; remove or fix the link)"
    err = _cli_error(capsys, "sweep", "--params", SMOKE, "--algos", "plain", "--output-dir", loop, "--dry-run")
    assert err == f"siftkit sweep: error: --output-dir {str(loop)!r} cannot be used{note}"
    robustness_log("`sweep --output-dir LOOP` (a symbolic link to itself)", err.replace(str(tmp_path), "tmp"))
    err = _cli_error(capsys, "train", "--params", SMOKE, "--output_dir", loop / "run")
    assert err == (
        f"siftkit train: error: output_dir {str(loop / 'run')!r} is not writable: Too many levels of "
        f"symbolic links{note}"
    )
    robustness_log("`train --output_dir LOOP/run`", err.replace(str(tmp_path), "tmp"))
    err = _cli_error(capsys, "train", "--params", loop, "--output_dir", tmp_path / "o")
    assert err == f"siftkit train: error: params file not found: {loop}{note}"
    err = _cli_error(capsys, "summarize", loop)
    assert err == f"siftkit summarize: error: no results file or folder at {loop}{note}"
    robustness_log("`summarize LOOP`", err.replace(str(tmp_path), "tmp"))


# ----------------------------------------------------------------------------- train: one line, exit code 2


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--seed", "abc"], "seed must be of type int, got 'abc'"),
        (["--learning_rate", "fast"], "learning_rate must be of type float, got 'fast'"),
        (["--resume", "maybe"], "resume must be of type bool, got 'maybe'"),
        (["--max_train_samples", "1.5"], "max_train_samples must be of type int, got 1.5"),
        (["--algo", "sift", "--adv_epsilon", "-1e-3"], "adv_epsilon must be a finite number > 0, got -0.001"),
        (["--algo", "smart", "--adv_step_size", "-inf"], "adv_step_size must be a finite number > 0, got -inf"),
        (
            ["--algo", "smart", "--adv_steps", "-1"],
            "adv_steps must be >= 0 for algo='smart' (0: random noise, no ascent), got -1",
        ),
        (["--divergence", "hellinger"], "divergence must be one of 'sym_kl', 'kl', 'js', 'mse'; got 'hellinger'"),
        (["--extra", "3"], "extra must be a mapping, got int"),
    ],
    ids=[
        "seed-abc",
        "lr-fast",
        "resume-maybe",
        "max_train_samples-1.5",
        "eps-neg-sci",
        "step-minus-inf",
        "K-neg",
        "divergence",
        "extra-int",
    ],
)
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


@pytest.mark.subprocess
def test_cli_subprocess_unknown_algo_no_traceback(tmp_path):
    done = _subprocess_cli(tmp_path, "--algo", "foo", "--output_dir", str(tmp_path / "out"))
    assert done.returncode == 2
    assert done.stderr == f"siftkit train: error: algo must be one of {ALGO_CHOICES}; got 'foo'\n"
    assert done.stdout == ""
    _log("CLI `--algo foo` (a real `python -m siftkit train` process)", done.stderr.strip())


# ----------------------------------------------------------------------------- sweep: options and plan files


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
    code = cli_main(
        [
            "sweep",
            "--params",
            str(SMOKE),
            "--algos",
            "sift,sift",
            "--seeds",
            "1",
            "--output-dir",
            str(tmp_path / "sw"),
            "--learning_rate=1e-3",
            "--cpu",
            "--dry-run",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert out.splitlines() == [
        "sweep: 1 runs, 0 already done, 1 to run",
        f"todo  {tmp_path / 'sw' / 'twitter_to_uci' / 'sift' / 'seed1'}",
    ]
    robustness_log(
        "`sweep --algos sift,sift --learning_rate=1e-3 --cpu`",
        "(accepted: one run per algo and seed; options as `train` takes them)",
    )


def test_a_sweep_tag_cannot_leave_the_output_root(tmp_path, capsys):
    from siftkit.cli.sweep import check_inside, check_path_name

    code, err = _cli_line(
        capsys,
        "--params",
        str(SMOKE),
        "--algos",
        "plain",
        "--seeds",
        "1",
        "--tag",
        "x/../../../outside",
        "--output-dir",
        str(tmp_path / "root"),
        "--dry-run",
        command="sweep",
    )
    assert code == 2 and err == (
        "siftkit sweep: error: --tag 'x/../../../outside' cannot name a folder: it holds "
        "'/'; use letters, digits, '.', '_' and '-' (e.g. 'x_.._.._.._outside')"
    )
    robustness_log("`sweep --tag x/../../../outside --output-dir runs/esc/root --dry-run`", err)
    for bad in ("..", "", " x", "a\\b"):
        with pytest.raises(ValueError, match="--tag"):
            check_path_name("--tag", bad)
    with pytest.raises(ValueError, match="outside the output root"):
        check_inside(tmp_path / "root", tmp_path / "root" / ".." / "elsewhere")


@pytest.mark.parametrize(
    "content, message",
    [
        (b'--algos plain --tag "x\n', "p.plan line 1: No closing quotation ('--algos plain --tag \"x')"),
        (
            b"# study\n--algos plain --tag caf\xe9\n",
            "p.plan line 2: not UTF-8 text (byte b'\\xe9' at offset 31: invalid continuation byte); save the plan file as "
            "UTF-8",
        ),
    ],
    ids=["open-quote", "latin1"],
)
def test_plan_file_errors_name_the_line(tmp_path, monkeypatch, capsys, content, message):
    monkeypatch.chdir(tmp_path)
    Path("p.plan").write_bytes(content)
    code, err = _cli_line(capsys, "--plan", "p.plan", "--output-dir", "out", "--dry-run", command="sweep")
    assert (code, err) == (2, f"siftkit sweep: error: {message}")
    robustness_log(f"plan file: {content.decode('latin-1')!r}", err)


@pytest.mark.parametrize(
    "argv, message",
    [
        (
            ["--algos", "plain", "--algos", "sift"],
            "--algos given twice ('plain', then 'sift'); give it once, as one comma list, e.g. --algos plain,sift",
        ),
        (
            ["--stop-after", "-5"],
            "--stop-after must be a number of seconds > 0, got -5; leave it out to run every planned run",
        ),
        (
            ["--seeds", "0-4294967296"],
            "--seeds '0-4294967296': seed 4294967296 is more than 4294967295 (2**32 - 1, the largest seed numpy takes)",
        ),
    ],
    ids=["algos-twice", "stop-after-neg", "seeds-huge"],
)
def test_sweep_options_refused_by_name(tmp_path, capsys, argv, message):
    code, err = _cli_line(capsys, "--params", str(SMOKE), *argv, "--output-dir", str(tmp_path / "o"), command="sweep")
    assert (code, err) == (2, f"siftkit sweep: error: {message}")
    assert not (tmp_path / "o").exists()
    robustness_log(f"`sweep {' '.join(argv)}`", err)


_NOT_PLAIN = "is not used by algo='plain' (plain fine-tuning has no adversarial regularizer)"


@pytest.mark.parametrize(
    "argv, message",
    [
        (
            ["--algos", "plain", "--weight_decay", "1e300"],
            "learning_rate x weight_decay = 1e+297 does not fit a float32 (AdamW scales the weights by 1 - learning_rate x "
            "weight_decay); got learning_rate=0.001, weight_decay=1e+300",
        ),
        (
            ["--algos", "plain", "--uci_learning_rate", "1e300"],
            "uci_learning_rate must be < 3.4e+37 (AdamW's first step is 10 x the rate and must fit a float32), got 1e+300",
        ),
        (
            ["--algos", "plain", "--learning_rate", "1e38"],
            "learning_rate must be < 3.4e+37 (AdamW's first step is 10 x the rate and must fit a float32), got 1e+38",
        ),
        (
            ["--algos", "plain", "--max_nonfinite_fraction", "nan"],
            "max_nonfinite_fraction must be in [0, 1] (the share of a stage's steps that may be non-finite before the run "
            "fails), got nan",
        ),
        (
            ["--algos", "plain", "--perturb_at", "word_embeddings"],
            f"perturb_at='word_embeddings' {_NOT_PLAIN}; leave it at its default 'embedding_output', or choose "
            f"algo='smart' or 'sift'",
        ),
        (
            ["--algos", "plain", "--adv_steps", "0"],
            f"adv_steps=0 {_NOT_PLAIN}; leave it at its default 1, or choose algo='smart' or 'sift'",
        ),
        (
            ["--algos", "plain", "--extra", "{x: !!binary aGk=}"],
            "extra must hold only JSON values (text, numbers, true/false, null, lists, mappings); extra['x'] is b'hi' (a "
            "bytes); give it as text or a number",
        ),
        (
            ["--algos", "plain", "--extra", "{tag: [a, b]}"],
            "extra's tag must be text (it names the run's variant), got ['a', 'b']",
        ),
        (["--algos", "plain", "--tag", ""], "--tag must be a non-empty name, got ''"),
        (
            ["--algos", "plain", "--tag", " x"],
            "--tag ' x' cannot name a folder: it has spaces around it; use letters, "
            "digits, '.', '_' and '-' (e.g. 'x')",
        ),
        (
            ["--algos", "plain", "--tag", "a\\b"],
            "--tag 'a\\\\b' cannot name a folder: it holds '\\\\'; use letters, digits, '.', '_' and '-' (e.g. 'a_b')",
        ),
        (
            ["--algos", "plain", "--seeds", "1-1000000"],
            "--seeds '1-1000000' names 1000000 seeds; a sweep takes at most 1000",
        ),
        (
            ["--algos", "plain", "--stop-after", "nan"],
            "--stop-after must be a number of seconds > 0, got nan; leave it out to run every planned run",
        ),
    ],
    ids=[
        "weight-decay",
        "uci-lr",
        "lr1e38",
        "nonfinite-nan",
        "plain-perturb-at",
        "plain-K0",
        "extra-bytes",
        "extra-tag-list",
        "tag-empty",
        "tag-space",
        "tag-backslash",
        "seeds-million",
        "stop-after-nan",
    ],
)
def test_more_sweep_inputs_refused_by_name(tmp_path, capsys, argv, message):
    code, err = _cli_line(
        capsys, "--params", str(SMOKE), *argv, "--output-dir", str(tmp_path / "o"), "--dry-run", command="sweep"
    )
    assert (code, err) == (2, f"siftkit sweep: error: {message}")
    robustness_log(f"`sweep {' '.join(argv)} --dry-run`", err)


def test_sweep_output_dir_empty(capsys):
    code, err = _cli_line(capsys, "--algos", "plain", "--output-dir", "", "--dry-run", command="sweep")
    assert (code, err) == (
        2,
        "siftkit sweep: error: --output-dir is empty (''); name the sweep's folder, e.g. results/cpu",
    )
    robustness_log('`sweep --output-dir ""` (an unset shell variable)', err)


@pytest.mark.parametrize(
    "line, message",
    [
        (
            "--algos plain --tag ../x",
            "--tag '../x' cannot name a folder: it holds '/'; use letters, digits, '.', '_' and '-' (e.g. 'x')",
        ),
        (
            "--algos plain --adv_epsilon 0.3",
            f"adv_epsilon=0.3 {_NOT_PLAIN}; leave it unset, or choose algo='smart' or 'sift'",
        ),
    ],
    ids=["tag-up", "plain-eps"],
)
def test_plan_lines_refused_by_name(tmp_path, monkeypatch, capsys, line, message):
    monkeypatch.chdir(tmp_path)
    Path("p.plan").write_text(f"--params {SMOKE} {line}\n")
    code, err = _cli_line(capsys, "--plan", "p.plan", "--output-dir", "out", "--dry-run", command="sweep")
    assert (code, err) == (2, f"siftkit sweep: error: p.plan line 1: {message}")
    robustness_log(f"plan file line `{line}`", err.replace(str(SMOKE), "params/smoke.yaml"))
