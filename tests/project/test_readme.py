"""The README and the docs pages stay true: every relative link and anchor resolves, every
`python -m siftkit ...` command parses with the flags it names, every papermill command names a
notebook and parameters that exist, every `params/*.yaml` named is there, the quick start is
what CI runs, and the README's results block is what the committed records give."""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path

import pytest
import tomllib
from markdown_it import MarkdownIt

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
PAGES = sorted({README, REPO / "COURSE.md", REPO / "results" / "README.md", *(REPO / "docs").rglob("*.md")})
SIFTKIT = ("python", "-m", "siftkit")


def _tokens(path: Path):
    return MarkdownIt("commonmark").enable("table").parse(path.read_text(encoding="utf-8"))


def _inline_text(token) -> str:
    """A heading's text as rendered (code spans without their backticks, links as their text)."""
    return "".join(c.content for c in token.children or () if c.type in ("text", "code_inline", "html_inline"))


def github_slug(text: str) -> str:
    """A heading's anchor as GitHub (and `scripts/course_site.py`'s MkDocs, for these pages) makes it."""
    return re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    tokens, seen, out = _tokens(path), {}, set()
    for i, t in enumerate(tokens):
        if t.type == "heading_open":
            slug = github_slug(_inline_text(tokens[i + 1]))
            n = seen.get(slug, 0)
            seen[slug] = n + 1
            out.add(slug if n == 0 else f"{slug}-{n}")
    return out


def links(path: Path) -> list[str]:
    out = []
    for t in _tokens(path):
        for c in t.children or ():
            if c.type == "link_open":
                out.append(c.attrs["href"])
            elif c.type == "image":
                out.append(c.attrs["src"])
    return out


def _relative(href: str) -> bool:
    return not re.match(r"[a-z][a-z0-9+.-]*:", href)  # http:, https:, mailto:


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_and_anchor_resolves(page):
    bad = []
    for href in filter(_relative, links(page)):
        target, _, anchor = href.partition("#")
        path = (page.parent / target).resolve() if target else page
        if not path.exists():
            bad.append(f"{href}: no file {path.relative_to(REPO) if path.is_relative_to(REPO) else path}")
        elif anchor and path.suffix == ".md" and anchor not in anchors(path):
            bad.append(f"{href}: no heading with anchor #{anchor} in {path.relative_to(REPO)}")
    assert not bad, f"{page.relative_to(REPO)}:\n" + "\n".join(bad)


def test_the_link_checker_sees_a_broken_link_and_a_broken_anchor(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("# Title\n\n## A `code` heading: yes\n\n[a](#a-code-heading-yes) [b](#nope) [c](missing.md)\n")
    assert anchors(page) == {"title", "a-code-heading-yes"}
    assert links(page) == ["#a-code-heading-yes", "#nope", "missing.md"]


# ----------------------------------------------------------------------------- commands


def _commands(path: Path) -> list[list[str]]:
    """Each shell command of the page's code blocks (continuations joined, comments dropped)
    and of its inline code spans, as words, leading VAR=value assignments removed."""
    texts = []
    for t in _tokens(path):
        if t.type == "fence" and t.info.strip() in ("", "bash", "sh", "shell", "console"):
            texts += t.content.replace("\\\n", " ").splitlines()
        for c in t.children or ():
            if c.type == "code_inline" and c.content.startswith(("python ", "papermill ", "siftkit ")):
                texts.append(c.content)
    out = []
    for text in texts:
        try:
            words = shlex.split(text, comments=True)
        except ValueError:
            continue  # not a command (a YAML or CSV line of an example block)
        while words and re.fullmatch(r"[A-Z_]+=\S*", words[0]):
            words = words[1:]
        if words:
            out.append(words)
    return out


def _siftkit_commands() -> list[list[str]]:
    out = []
    for words in _commands(README):
        if tuple(words[:3]) == SIFTKIT:
            out.append(words[3:])
        elif words[0] == "siftkit":
            out.append(words[1:])
    return out


def _help(sub: str, capsys) -> str:
    from siftkit.cli.main import main

    with pytest.raises(SystemExit) as exit_:
        main([sub, "--help"])
    assert exit_.value.code in (0, None)
    return capsys.readouterr().out


def test_readme_has_siftkit_commands_of_every_kind():
    subs = {words[0] for words in _siftkit_commands()}
    assert {"train", "sweep", "summarize", "download"} <= subs, subs


@pytest.mark.parametrize("words", _siftkit_commands(), ids=shlex.join)
def test_every_siftkit_command_of_the_readme_parses(words, capsys, tmp_path):
    from siftkit.cli.main import COMMANDS

    if words in (["--help"], ["-h"]):
        return  # the subcommand list (tests/project/test_layers.py runs it)
    sub, args = words[0], words[1:]
    assert sub in COMMANDS, f"`siftkit {sub}` is no subcommand ({', '.join(COMMANDS)})"
    text = _help(sub, capsys)
    flags = [w.split("=", 1)[0] for w in args if w.startswith("--")]
    unknown = [f for f in flags if not re.search(rf"(?<![\w-]){re.escape(f)}(?![\w-])", text)]
    assert not unknown, f"`siftkit {sub} --help` does not list {unknown}"
    for w in args:
        if re.fullmatch(r"params/[\w.-]+\.ya?ml|results/?|[\w/]+\.plan", w):
            assert (REPO / w).exists(), f"{shlex.join(words)}: {w} does not exist"
    if (
        sub == "train" and "--help" not in args
    ):  # the values too: the RunConfig the command would train, built and checked
        from siftkit.cli.args import config_from_args, config_parser

        cwd = os.getcwd()
        os.chdir(REPO)
        try:
            config_from_args(config_parser("siftkit train").parse_args(args))
        finally:
            os.chdir(cwd)
    if sub == "sweep":  # planned without running, into a folder of its own
        from siftkit.cli.sweep import main as sweep_main

        i = next(i for i, w in enumerate(args) if w in ("--output-dir", "--output_dir"))
        planned = [*args[: i + 1], str(tmp_path / "sweep"), *args[i + 2 :], "--dry-run"]
        cwd = os.getcwd()
        os.chdir(REPO)
        try:
            assert sweep_main(planned) == 0
        finally:
            os.chdir(cwd)
        assert "sweep:" in capsys.readouterr().out


def _notebook_parameters(path: Path) -> set[str]:
    import papermill

    return set(papermill.inspect_notebook(str(path)))


def _papermill_commands(path: Path) -> list[list[str]]:
    return [w for w in _commands(path) if w[0] == "papermill"]


@pytest.fixture(scope="module")
def papermill_help() -> str:
    from click.testing import CliRunner
    from papermill.cli import papermill

    return CliRunner().invoke(papermill, ["--help"]).output


@pytest.mark.parametrize("words", [w for p in PAGES for w in _papermill_commands(p)], ids=shlex.join)
def test_every_papermill_command_names_a_notebook_and_its_parameters(words, papermill_help):
    flags = [w.split("=", 1)[0] for w in words if w.startswith("--")]
    assert all(re.search(rf"(?<![\w-]){re.escape(f)}(?![\w-])", papermill_help) for f in flags), flags
    notebook = next((w for w in words[1:] if w.endswith(".ipynb")), None)
    if notebook is None:
        return  # a flag named in the text (`papermill --log-output`), checked above
    path = REPO / notebook
    assert path.is_file(), f"{shlex.join(words)}: no notebook {notebook}"
    names = _notebook_parameters(path)
    given = [words[i + 1] for i, w in enumerate(words[:-1]) if w in ("-p", "--parameters")]
    assert set(given) <= names, f"{notebook} has no parameter(s) {sorted(set(given) - names)}"
    for i, w in enumerate(words[:-2]):
        if w in ("-p", "--parameters") and words[i + 2].startswith("params/"):
            assert (REPO / words[i + 2]).is_file(), f"{shlex.join(words)}: no {words[i + 2]}"


def test_readme_has_a_papermill_command():
    assert _papermill_commands(README)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_params_file_named_exists(page):
    named = set(re.findall(r"(?<![\w/])params/[\w.-]+\.ya?ml", page.read_text(encoding="utf-8")))
    assert all((REPO / n).is_file() for n in named), sorted(n for n in named if not (REPO / n).is_file())


def test_the_quick_start_is_what_ci_runs():
    """README's install and test commands are .ci/run's, and the extra they install exists."""
    ci = [
        shlex.split(line)
        for line in (REPO / ".ci" / "run").read_text().splitlines()
        if line.startswith("python -m pip install") or line.startswith("python -m pytest")
    ]
    readme = _commands(README)
    for command in ci:
        if command[:4] == ["python", "-m", "pip", "install"] and "--upgrade" in command:
            continue
        assert command in readme, f"README's quick start lacks .ci/run's `{shlex.join(command)}`"
    install = next(c for c in readme if c[:4] == ["python", "-m", "pip", "install"])
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    for word in install:
        m = re.fullmatch(r"\.\[([\w,]+)\]", word)
        if m:
            assert set(m.group(1).split(",")) <= set(extras)


# ----------------------------------------------------------------------------- the results block


def test_the_readme_results_block_is_what_the_records_give():
    from siftkit.study.readme_block import committed_block, render_block

    block = render_block([REPO / "results"], link_root=REPO)
    assert "| `plain-eb` |" in block  # the equal-budget study's reference arm is in it
    assert committed_block(README.read_text(encoding="utf-8")) == block, (
        "README's results block is stale: python -m siftkit.study.readme_block results/ --readme README.md"
    )


def test_the_results_block_follows_the_records(tmp_path):
    """A changed record changes the block (the check above is not comparing a constant)."""
    import json
    import shutil

    from siftkit.study.readme_block import render_block, replace_block

    src = REPO / "results" / "equal_budget"
    dst = tmp_path / "results" / "equal_budget"
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("*.csv", "*.log", "logs"))
    shutil.copy(REPO / "results" / "equal_budget_study.yaml", tmp_path / "results")
    before = render_block([tmp_path / "results"])
    path = next(p for p in dst.rglob("results.json") if "plain-eb__uci_learning_rate0.0001" in str(p))
    record = json.loads(path.read_text())
    record["metrics"]["uci_test_accuracy"] -= 0.05
    path.write_text(json.dumps(record))
    after = render_block([tmp_path / "results"])
    assert before != after
    with pytest.raises(ValueError, match="no results block"):
        replace_block("no markers here", after)
