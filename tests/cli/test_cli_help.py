"""Help from the fields: `train --help`, `sweep --help` and docs/config.md show every RunConfig field
and method knob with the help, default and choices of its `knob` metadata; a boolean is given bare
or with a value, as its type says; the descriptions name every protocol."""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest

from siftkit import methods
from siftkit.cli import args as cli_args
from siftkit.cli.args import (
    config_from_args,
    config_parser,
    default_text,
    field_overrides,
    is_bool,
)
from siftkit.cli.main import main
from siftkit.methods.knobs import knob_docs
from siftkit.run.config import FIELD_SECTIONS, PROTOCOLS, RunConfig

REPO = Path(__file__).resolve().parents[2]
FIELDS = knob_docs(RunConfig)
BOOLS = [d.name for d in FIELDS if d.type == "bool"]


def _flat(text: str) -> str:
    return " ".join(text.split())


def _squash(text: str) -> str:
    return "".join(text.split())


@pytest.fixture(scope="module")
def train_help():
    return config_parser("siftkit train").format_help()


def _option_help(help_text: str, name: str) -> str:
    """The help paragraph of --name in `train --help` (whitespace joined)."""
    match = re.search(rf"^  --{name}\b.*?(?=^  -|^\S|\Z)", help_text, re.MULTILINE | re.DOTALL)
    assert match, f"--{name} is not in train --help"
    return _flat(match.group(0))


@pytest.mark.parametrize("doc", FIELDS, ids=lambda d: d.name)
def test_every_field_is_in_train_help_with_its_help_default_and_choices(train_help, doc):
    text = _option_help(train_help, doc.name)
    assert _squash(doc.help) in _squash(text)
    assert f"(default: {default_text(doc.default)})" in text
    for choice in doc.choices or ():
        assert choice in text.split(" ", 2)[1], f"--{doc.name} does not show the choice {choice!r}"


@pytest.mark.parametrize("name", sorted(methods.knob_owners()))
def test_every_method_knob_is_in_train_help_with_its_help_and_owners(train_help, name):
    text = _option_help(train_help, name)
    for algo in methods.knob_owners()[name]:
        doc = next(d for d in knob_docs(methods.settings_class(algo)) if d.name == name)
        assert _squash(doc.help) in _squash(text) and algo in text  # argparse may wrap at a hyphen
        assert default_text(doc.default) in text.split("(default:")[-1]


def test_help_coverage_is_complete():
    """Every option of train and sweep says what it does (before this: 2 of 92 and 21 of 29)."""
    from siftkit.cli.sweep import _main_parser

    for parser in (config_parser("siftkit train"), _main_parser()):
        silent = [a.option_strings[0] for a in parser._actions if a.option_strings and not a.help]
        assert not silent, f"{parser.prog}: options without help: {silent}"


def test_the_field_groups_follow_the_class_headings():
    source = (REPO / "siftkit" / "run" / "config.py").read_text()
    headings = re.findall(r"^    # --- (.+?) -+\n    (\w+):", source, re.MULTILINE)
    assert [(title, first) for title, first in headings] == list(FIELD_SECTIONS)
    assert FIELD_SECTIONS[0][1] == fields(RunConfig)[0].name


def test_train_description_names_every_protocol_and_the_committed_shift_specs(train_help):
    for task, what in PROTOCOLS.items():
        assert re.search(rf"^  {task} +{re.escape(what)}$", train_help, re.MULTILINE)
    assert [f"P{i}" for i in (1, 2, 3)] == [what[:2] for what in PROTOCOLS.values()]
    specs = sorted(
        f"params/{p.name}"
        for p in (REPO / "params").glob("*.yaml")
        if re.search(r"^task: shift", p.read_text(), re.MULTILINE)
    )
    assert specs and list(cli_args.committed_shift_specs()) == specs
    for spec in specs:
        assert f"--params {spec}" in train_help
    for algo in methods.names():
        assert algo in train_help.split("methods (--algo):")[1].split("\n\n")[0]


def test_the_command_list_names_every_protocol(capsys):
    assert main(["--help"]) == 0
    listed = capsys.readouterr().err
    for number, task in enumerate(PROTOCOLS, start=1):
        assert f"P{number} {task}" in listed


def test_sweep_help_explains_its_options_and_names_the_protocols(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["sweep", "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    flat = _flat(text)
    assert "a range 1-5, a list 1,3,7, or both 2-3,9" in flat  # --seeds' syntax
    assert "the methods to run, comma-separated" in flat and ", ".join(methods.names()) in flat  # --algos
    assert "DIR/<task>/<algo>[-<tag>]/seed<k>/" in flat  # --output-dir
    for task, what in PROTOCOLS.items():
        assert f"{task} {what}" in flat
    assert "python -m siftkit train --help" in flat  # where the fields are explained


# ---------------------------------------------------------------------------------------- booleans


def test_boolean_options_come_from_the_types():
    assert sorted(BOOLS) == sorted(
        ["overwrite", "resume", "save_model", "cpu", "eval_smoothness", "reinit_head", "freeze_encoder", "wise_ft"]
    )
    knob_bools = [n for n in methods.knob_owners() if is_bool(n)]
    assert "adv_sync_dropout" in knob_bools and "mask_padding" in knob_bools
    assert not is_bool("seed") and not is_bool("adv_K")


@pytest.mark.parametrize("name", BOOLS + ["adv_sync_dropout", "mask_padding"])
def test_every_boolean_is_given_bare_or_with_a_value(name):
    parser = config_parser("t")
    assert getattr(parser.parse_args([f"--{name}"]), name) == "true"
    assert getattr(parser.parse_args([f"--{name}", "false"]), name) == "false"
    assert getattr(parser.parse_args([f"--{name}=true"]), name) == "true"
    assert getattr(parser.parse_args([f"--{name}", "--seed", "3"]), name) == "true"  # bare before another option


def test_a_bare_boolean_reaches_the_config():
    cfg = config_from_args(config_parser("t").parse_args(["--save_model", "--overwrite", "--eval_smoothness", "false"]))
    assert (cfg.save_model, cfg.overwrite, cfg.eval_smoothness) == (True, True, False)
    knob = config_from_args(config_parser("t").parse_args(["--algo", "r3f", "--mask_padding"]))
    assert knob.algo_args["mask_padding"] is True
    assert field_overrides(["--save_model", "--cpu", "false"]) == {"save_model": "true", "cpu": "false"}


def test_a_bad_boolean_is_refused_by_name(capsys):
    assert main(["train", "--save_model", "maybe"]) == 2
    assert "save_model must be of type bool, got 'maybe'" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------- choices


@pytest.mark.parametrize("doc", [d for d in FIELDS if d.choices], ids=lambda d: d.name)
def test_a_value_outside_the_choices_is_refused_naming_them(doc):
    listed = ", ".join(map(repr, doc.choices))
    with pytest.raises(ValueError) as exc:
        RunConfig(**{doc.name: "nope"})
    message = str(exc.value)
    assert doc.name in message and "'nope'" in message
    assert listed in message, f"the refusal of {doc.name} must list the field's choices {listed}"


def test_the_command_line_refuses_a_choice_in_one_line(capsys):
    assert main(["train", "--adv_rule", "pgd"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == (
        "siftkit train: error: adv_rule must be one of 'projected', 'mtdnn', 'deberta', 'seed_code'; got 'pgd'"
    )


# -------------------------------------------------------------------------------------- docs/config.md


def test_docs_config_is_up_to_date():
    from siftkit.cli.config_docs import DOC_PATH, render

    assert DOC_PATH == REPO / "docs" / "config.md"
    assert DOC_PATH.read_text(encoding="utf-8") == render(), "run python -m siftkit.cli.config_docs"


def test_docs_config_lists_every_field_and_knob():
    text = (REPO / "docs" / "config.md").read_text(encoding="utf-8").split("## RunConfig fields")[1]
    for doc in FIELDS:
        row = next(line for line in text.splitlines() if line.startswith(f"| `{doc.name}` |"))
        assert f"`{default_text(doc.default)}`" in row and doc.help.replace("|", "\\|") in row
        for choice in doc.choices or ():
            assert f"`{choice}`" in row
    for algo in methods.names():
        settings = methods.settings_class(algo)
        for doc in knob_docs(settings) if settings else ():
            section = text.split(f"### {algo}\n")[1].split("###")[0]
            assert f"| `{doc.name}` |" in section


@pytest.mark.subprocess
def test_the_docs_command_checks_and_writes(tmp_path):
    page = tmp_path / "config.md"
    command = [sys.executable, "-m", "siftkit.cli.config_docs", "--path", str(page)]
    stale = subprocess.run(command + ["--check"], cwd=REPO, capture_output=True, text=True)
    assert stale.returncode == 1 and "out of date" in stale.stderr
    subprocess.run(command, cwd=REPO, check=True, capture_output=True)
    assert subprocess.run(command + ["--check"], cwd=REPO).returncode == 0
    assert page.read_text(encoding="utf-8") == (REPO / "docs" / "config.md").read_text(encoding="utf-8")
