"""Plans and the command line, models and memory, and the mode of the files a run writes.

Each input used to fail with argparse's or torch's words, a traceback, or not at all; each is
now one line naming the option, file or value and the way out (docs/robustness.md rows).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from helpers import robustness_log
from siftkit.cli.args import config_from_args, config_parser
from siftkit.cli.main import main as cli_main
from siftkit.run.config import RunConfig

REPO = Path(__file__).resolve().parents[2]
SMOKE = REPO / "params" / "smoke.yaml"


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
    err = _cli_error(capsys, "sweep", "--params", SMOKE, "--algos", "plain", "--seeds", "1-3", "--output-dir",
                     tmp_path / "o", "--shard", "-1/2", "--dry-run")
    assert err == ("siftkit sweep: error: --shard -1/2: need 0 <= i < N (shards are counted from 0: i is one of 0-1 "
                   "here), got i=-1")
    robustness_log("`sweep ... --shard -1/2`", err)


def test_a_tag_too_long_for_a_folder_name_is_refused_at_planning(tmp_path, capsys):
    err = _cli_error(capsys, "sweep", "--params", SMOKE, "--algos", "plain", "--seeds", "1", "--output-dir",
                     tmp_path / "o", "--tag", "x" * 300, "--dry-run")
    assert err == ("siftkit sweep: error: run folder name 'plain-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx'... is 306 bytes "
                   "long, more than the 255 a folder name may have here; shorten the --tag (or the grid values)")
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
    robustness_log("params file edited between `sweep --plan P --list` and `--index 1`", err,
                   **{"out": out, "p.yaml": params})


@pytest.mark.parametrize("word,char", [("\u2013-seed", "'\u2013' (U+2013 EN DASH)"),
                                       ("\u2014seed", "'\u2014' (U+2014 EM DASH)")])
def test_a_dash_that_is_not_a_hyphen_is_named(tmp_path, capsys, word, char):
    err = _cli_error(capsys, "train", "--params", SMOKE, word, "3", "--output_dir", tmp_path / "o")
    assert err == (f"siftkit train: error: unrecognized option {word!r}: it holds {char}, a dash that is not '-' "
                   f"(pasted from a document?); type it with plain hyphens, e.g. --seed")
    robustness_log(f"CLI `{word} 3`", err)


def test_a_lookalike_letter_in_a_flag_is_named(tmp_path, capsys):
    err = _cli_error(capsys, "train", "--params", SMOKE, "--le\u0430rning_rate", "1e-3", "--output_dir", tmp_path)
    assert err == ("siftkit train: error: unrecognized option '--le\u0430rning_rate': it holds '\u0430' (U+0430 "
                   "CYRILLIC SMALL LETTER A), a letter that only looks like an ASCII one; type the option again, "
                   "e.g. --learning_rate")
    robustness_log("CLI `--le\u0430rning_rate 1e-3` (a Cyrillic \u0430)", err)
    err = _cli_error(capsys, "sweep", "--params", SMOKE, "--algos", "plain", "--output-dir", tmp_path / "o",
                     "\u2014cpu", "--dry-run")
    assert err.startswith("siftkit sweep: error: unrecognized option '\u2014cpu': it holds '\u2014' (U+2014 EM DASH)")


def test_a_huge_batch_size_is_named(tmp_path, capsys):
    err = _cli_error(capsys, "train", "--params", SMOKE, "--per_device_train_batch_size", "1e20", "--output_dir",
                     tmp_path / "o")
    assert err == ("siftkit train: error: per_device_train_batch_size must be <= 2147483647 (2**31 - 1; torch and "
                   "Python's slicing take no more), got 100000000000000000000 (1e+20)")
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
    assert run.args[i:i + 4] == ["--params", str(first), "--params", str(second)]
    assert run.config.max_train_samples == 8 and run.config.learning_rate == 0.002
    robustness_log("CLI `--params smoke.yaml --params rate.yaml`", "accepted: merged in the order given (a later "
                   "file's value replaces an earlier one's), in train and in each run of a sweep")


def test_a_folder_given_as_params_or_plan_is_named(tmp_path, capsys):
    err = _cli_error(capsys, "train", "--params", tmp_path, "--output_dir", tmp_path / "o")
    assert err == f"siftkit train: error: params file {tmp_path} is a folder, not a file; name the YAML file in it"
    robustness_log("`--params FOLDER`", err.replace(str(tmp_path), "params"))
    err = _cli_error(capsys, "sweep", "--plan", tmp_path, "--output-dir", tmp_path / "o", "--dry-run")
    assert err == f"siftkit sweep: error: plan file {tmp_path} is a folder, not a file; name the plan file in it"
    robustness_log("`sweep --plan FOLDER`", err.replace(str(tmp_path), "plans"))


# ----------------------------------------------------------------------------- models and memory


def _saved(folder: Path, model, tokenizer=True) -> Path:
    from helpers import tokenizer as default_tokenizer

    model.save_pretrained(str(folder))
    if tokenizer:
        default_tokenizer().save_pretrained(str(folder))
    return folder


def test_a_gpt2_folder_is_one_line_before_training(tmp_path, capsys):
    import transformers as tf

    from helpers import tokenizer

    folder = _saved(tmp_path / "gpt2", tf.GPT2ForSequenceClassification(
        tf.GPT2Config(n_embd=32, n_layer=1, n_head=2, vocab_size=len(tokenizer()))))
    err = _cli_error(capsys, "train", "--params", SMOKE, "--model_name", folder, "--output_dir", tmp_path / "o")
    assert err == (f"siftkit train: error: model_name={str(folder)!r} is a GPT2ForSequenceClassification (model type "
                   f"'gpt2'), which has no encoder embedding block (model.base_model.embeddings) to perturb or probe; "
                   f"siftkit fine-tunes encoder text classifiers such as BERT, RoBERTa, DeBERTa, DistilBERT, ELECTRA "
                   f"and ALBERT")
    robustness_log("--model_name a GPT-2 folder", err.replace(str(folder), "gpt2"))


def test_an_image_model_folder_is_named_as_such(tmp_path, capsys):
    import transformers as tf

    folder = _saved(tmp_path / "vit", tf.ViTForImageClassification(tf.ViTConfig(
        hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32, image_size=32,
        patch_size=16)), tokenizer=False)
    err = _cli_error(capsys, "train", "--params", SMOKE, "--model_name", folder, "--output_dir", tmp_path / "o")
    assert err == (f"siftkit train: error: model folder {str(folder)!r} holds a 'vit' model "
                   f"(ViTForImageClassification), which has no text-classification head in transformers: not a text "
                   f"model; siftkit fine-tunes encoder text classifiers such as BERT, RoBERTa, DeBERTa, DistilBERT, "
                   f"ELECTRA and ALBERT")
    robustness_log("--model_name an image model's folder (ViT)", err.replace(str(folder), "vit"))


def test_truncated_safetensors_name_the_file(tmp_path, capsys):
    from helpers import tiny_model

    folder = _saved(tmp_path / "bert", tiny_model())
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    err = _cli_error(capsys, "train", "--params", SMOKE, "--model_name", folder, "--output_dir", tmp_path / "o")
    size = weights.stat().st_size
    assert err.startswith(f"siftkit train: error: model_name={str(folder)!r}: the weights file {weights} ({size} "
                          f"bytes) cannot be read (SafetensorError: ")
    assert err.endswith("it is damaged or incomplete (an interrupted copy, download or save?); copy it again, or "
                        "save the model again with model.save_pretrained(folder)")
    robustness_log("--model_name a folder whose model.safetensors is cut in half",
                   err.replace(str(folder), "bert").replace(str(size), "N"))


def test_running_out_of_memory_names_the_sizes(tmp_path, monkeypatch):
    import siftkit.run.training as training
    from siftkit.run.memory import RunOutOfMemoryError

    def oom(run, ckpt_state):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't allocate memory: "
                           "you tried to allocate 25769803776 bytes. Error code 12 (Cannot allocate memory)")

    monkeypatch.setattr(training, "_run_stages", oom)
    cfg = RunConfig.from_yaml(SMOKE, output_dir=str(tmp_path / "o"))
    with pytest.raises(RunOutOfMemoryError) as info:
        training.train(cfg, progress=False)
    message = str(info.value)
    assert message.startswith("out of memory on cpu ([enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator")
    assert message.endswith(f"with per_device_train_batch_size={cfg.per_device_train_batch_size}, "
                            f"per_device_eval_batch_size={cfg.per_device_eval_batch_size} and max_length="
                            f"{cfg.max_length}: lower per_device_train_batch_size (per_device_eval_batch_size if it "
                            f"ran out while evaluating) or max_length, or use a smaller model; a run that has "
                            f"checkpoints continues with resume=True")
    robustness_log("running out of CPU memory (torch's DefaultCPUAllocator error)", message)


# ----------------------------------------------------------------------------- files


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
        robustness_log("results.json, history.csv and SUMMARY.md under umask 002 (a group's cluster folder)",
                       "accepted: written with mode 0664 (0666 less the umask), as any new file, no longer 0600")


def test_symbolic_link_loops_are_named(tmp_path, capsys):
    loop = tmp_path / "loop"
    os.symlink(loop, loop)
    note = f" ({loop} is a symbolic link that leads back to itself: {loop} -> {loop}; remove or fix the link)"
    err = _cli_error(capsys, "sweep", "--params", SMOKE, "--algos", "plain", "--output-dir", loop, "--dry-run")
    assert err == f"siftkit sweep: error: --output-dir {str(loop)!r} cannot be used{note}"
    robustness_log("`sweep --output-dir LOOP` (a symbolic link to itself)", err.replace(str(tmp_path), "tmp"))
    err = _cli_error(capsys, "train", "--params", SMOKE, "--output_dir", loop / "run")
    assert err == (f"siftkit train: error: output_dir {str(loop / 'run')!r} is not writable: Too many levels of "
                   f"symbolic links{note}")
    robustness_log("`train --output_dir LOOP/run`", err.replace(str(tmp_path), "tmp"))
    err = _cli_error(capsys, "train", "--params", loop, "--output_dir", tmp_path / "o")
    assert err == f"siftkit train: error: params file not found: {loop}{note}"
    err = _cli_error(capsys, "summarize", loop)
    assert err == f"siftkit summarize: error: no results file or folder at {loop}{note}"
    robustness_log("`summarize LOOP`", err.replace(str(tmp_path), "tmp"))
