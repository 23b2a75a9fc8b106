"""docs/config.md, written from the fields themselves: every RunConfig field and every method knob
with its type, default, choices and help (`siftkit.methods.knobs.knob` metadata).

    python -m siftkit.cli.config_docs           # rewrite docs/config.md
    python -m siftkit.cli.config_docs --check   # exit 1 if docs/config.md is out of date
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from siftkit import methods
from siftkit.cli.args import committed_shift_specs, default_text, field_docs, is_bool
from siftkit.methods.knobs import KnobDoc, knob_docs
from siftkit.run.config import PROTOCOLS

DOC_PATH = Path(__file__).resolve().parents[2] / "docs" / "config.md"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _code(value: str) -> str:
    return f"`{_cell(value)}`" if value else ""  # GitHub's tables need \| even inside code


def _row(doc: KnobDoc, *, source: bool = False) -> str:
    choices = ", ".join(_code(str(c)) for c in doc.choices) if doc.choices else ""
    cells = [_code(doc.name), _code(doc.type), _code(default_text(doc.default)), choices, _cell(doc.help)]
    if source:
        cells.append(_cell(doc.source))
    return "| " + " | ".join(cells) + " |"


def render() -> str:
    """The text of docs/config.md."""
    out = [
        "# Configuration: every field and method knob",
        "",
        (
            "<!-- Written by `python -m siftkit.cli.config_docs` from the fields' own help, defaults and choices "
            "(siftkit/run/config.py, siftkit/methods/*/settings.py); edit those, then rerun it. -->"
        ),
        "",
        (
            "A run is one `RunConfig`. Each field has one name everywhere: a YAML key in `params/*.yaml`, an option "
            "`--<field> VALUE` of `python -m siftkit train` and `sweep`, a notebook parameter. A boolean may be given "
            "bare on the command line (`--overwrite`) or with a value (`--overwrite false`). A value outside a field's "
            "choices, or of the wrong type, is refused with an error naming the field."
        ),
        "",
        "## Protocols (`task`)",
        "",
        "| task | protocol |",
        "|---|---|",
        *[f"| `{task}` | {_cell(what)} |" for task, what in PROTOCOLS.items()],
        "",
    ]
    specs = committed_shift_specs()
    if specs:
        out += [
            "P3's specs in this repository: "
            + ", ".join(f"`{s}`" for s in specs)
            + " (run one with `--params <file>`).",
            "",
        ]
    out += ["## RunConfig fields"]
    title = None
    for section, doc in field_docs():
        if section != title:
            title = section
            out += ["", f"### {section}", "", "| field | type | default | choices | help |", "|---|---|---|---|---|"]
        out.append(_row(doc))
    bools = [d.name for _, d in field_docs() if is_bool(d.name)]
    out += [
        "",
        "Boolean fields (given bare on the command line, true): " + ", ".join(f"`{b}`" for b in bools) + ".",
        "",
        "## Method knobs",
        "",
        (
            "A method's own knobs live in `algo_args` and are given by their own names (`--adv_K 3`, `adv_K: 3`); "
            "unset ones take the published defaults below. Each method's page is `docs/methods/<algo>.md`; plain, "
            "SMART and SiFT use the shared fields above instead."
        ),
        "",
    ]
    for algo in methods.names():
        settings = methods.settings_class(algo)
        if settings is None:
            continue
        out += [
            "",
            f"### {algo}",
            "",
            "| knob | type | default | choices | help | default from |",
            "|---|---|---|---|---|---|",
        ]
        out += [_row(doc, source=True) for doc in knob_docs(settings)]
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m siftkit.cli.config_docs", description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="exit 1 if the page is out of date; write nothing")
    p.add_argument("--path", type=Path, default=DOC_PATH, help=f"the page (default: {DOC_PATH})")
    args = p.parse_args(argv)
    text = render()
    if args.check:
        current = args.path.read_text(encoding="utf-8") if args.path.is_file() else None
        if current != text:
            print(f"{args.path} is out of date; run python -m siftkit.cli.config_docs", file=sys.stderr)
            return 1
        return 0
    args.path.write_text(text, encoding="utf-8")
    print(f"wrote {args.path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
