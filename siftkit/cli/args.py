"""The one reader of `--<field> <value>` words, shared by `train` and `sweep`: every
`RunConfig` field as an option, values read as papermill reads `-p` values.

Each option's help, default and choices come from its field (`siftkit.methods.knobs.knob`
metadata); a boolean field or knob may be given bare (``--overwrite``) or with a value
(``--overwrite false``), as its type says.
"""

from __future__ import annotations

import argparse
import functools
import re
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any, get_type_hints

from siftkit import methods
from siftkit.methods.knobs import KnobDoc, base_type, knob_docs
from siftkit.run.config import FIELD_SECTIONS, PROTOCOLS, RunConfig

_CHECKOUT_PARAMS = Path(__file__).resolve().parents[2] / "params"


def parse_field_value(name: str, text: str):
    """A command-line value for RunConfig field `name`, read as papermill reads `-p` values.

    Numbers (for int and float fields) are Python's: int, then float, else the text itself,
    which RunConfig rejects by field name. Other fields get the text (RunConfig turns
    'true'/'null' into bool/None where the field's type allows it); `extra` is a YAML mapping.
    """
    from siftkit.data.yaml_files import load_yaml

    if name == "extra":
        try:
            return load_yaml(text)
        except Exception:  # noqa: BLE001 - any YAML error: RunConfig reports the raw text
            return text
    if _FIELD_KINDS.get(name, _knob_kind(name)) in (int, float):
        for kind in (int, float):
            try:
                return kind(text)
            except ValueError:
                pass
    return text


def _field_kinds() -> dict:
    kinds = {}
    for name, hint in get_type_hints(RunConfig).items():
        args = [a for a in getattr(hint, "__args__", ()) if a is not type(None)]
        kinds[name] = args[0] if args else hint
    return kinds


_FIELD_KINDS = _field_kinds()


def _knob_kind(name: str):
    """A method knob's type (`RunConfig.input_type`), None for an unknown name."""
    try:
        return RunConfig.input_type(name)
    except KeyError:
        return None


def is_bool(name: str) -> bool:
    """Whether the field or method knob `name` is a boolean (given bare, ``--name``, it means true)."""
    return _input_types().get(name) is bool


@functools.cache
def _input_types() -> dict[str, Any]:
    """Each field's and method knob's type, None aside (read once: a plan file builds a parser per line)."""
    hints = dict(get_type_hints(RunConfig))
    for algo in methods.names():
        settings = methods.settings_class(algo)
        for name, hint in get_type_hints(settings).items() if settings is not None else ():
            hints.setdefault(name, hint)
    return {name: base_type(hint) for name, hint in hints.items()}


def default_text(value: Any) -> str:
    """A default as one types it: ``true``, ``2e-05``, ``0,0.5,1``, ``None``."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return ",".join(map(default_text, value)) if value else "[]"
    if isinstance(value, dict) and not value:
        return "{}"
    return str(value)


@functools.cache
def field_docs() -> tuple[tuple[str, KnobDoc], ...]:
    """(section title, doc) of every RunConfig field, in field order."""
    starts = {first: title for title, first in FIELD_SECTIONS}
    out, title = [], ""
    for doc in knob_docs(RunConfig):
        title = starts.get(doc.name, title)
        out.append((title, doc))
    return tuple(out)


@functools.cache
def method_knob_docs() -> dict[str, list[tuple[str, KnobDoc]]]:
    """Each method knob's name -> (method, doc) for every method that has a knob of that name."""
    out: dict[str, list[tuple[str, KnobDoc]]] = {}
    for name, owners in methods.knob_owners().items():
        for algo in owners:
            doc = next(d for d in knob_docs(methods.settings_class(algo)) if d.name == name)
            out.setdefault(name, []).append((algo, doc))
    return out


def _metavar(name: str, doc: KnobDoc) -> str:
    if doc.choices:
        return "{" + ",".join(doc.choices) + "}" + ("[,...]" if doc.type.startswith("list") else "")
    if is_bool(name):
        return "BOOL"
    return {"int": "INT", "float": "FLOAT"}.get(doc.type.split(" |")[0], "VALUE")


def _knob_help(docs: list[tuple[str, KnobDoc]]) -> str:
    """One option's help for a knob that one or several methods have."""
    helps = list(dict.fromkeys(d.help for _, d in docs))
    text = helps[0] if len(helps) == 1 else "; ".join(f"{algo}: {d.help}" for algo, d in docs)
    defaults = list(dict.fromkeys(default_text(d.default) for _, d in docs))
    shown = defaults[0] if len(defaults) == 1 else ", ".join(f"{a} {default_text(d.default)}" for a, d in docs)
    return f"[algo {', '.join(a for a, _ in docs)}] {text} (default: {shown})"


def _escape(text: str) -> str:
    return text.replace("%", "%%")  # argparse formats help with %


@functools.cache
def committed_shift_specs() -> tuple[str, ...]:
    """The params files of this checkout that run task=shift (P3's specs); none where siftkit is installed."""
    if not _CHECKOUT_PARAMS.is_dir():
        return ()
    return tuple(
        f"params/{p.name}"
        for p in sorted(_CHECKOUT_PARAMS.glob("*.yaml"))
        if re.search(r"^task:\s*shift\s*(#.*)?$", p.read_text(encoding="utf-8"), re.MULTILINE)
    )


def protocols_text() -> str:
    """Every protocol (``--task``), one line each, P3's committed specs named."""
    lines = [f"  {task:<15} {what}" for task, what in PROTOCOLS.items()]
    specs = committed_shift_specs()
    if specs:
        lines.append("                  specs here: " + ", ".join(f"--params {s}" for s in specs))
    return "\n".join(lines)


def _wrap(text: str) -> str:
    return "\n".join(textwrap.wrap(text, 100))


def train_description() -> str:
    return "\n\n".join(
        [
            _wrap(
                "Fine-tune a text classifier: one method (--algo) on one protocol (--task), every setting a "
                "RunConfig field given as --<field> VALUE or --<field>=VALUE on top of --params files."
            ),
            "protocols (--task):\n" + protocols_text(),
            _wrap("methods (--algo): " + ", ".join(methods.names()) + " (docs/methods/<algo>.md)."),
            _wrap(
                "A boolean field may be given bare (--overwrite) or with a value (--overwrite false); a number "
                "field takes a decimal number; --model_name null is None. A bad value is refused by field name. "
                "docs/config.md lists every field and method knob (python -m siftkit.cli.config_docs writes it)."
            ),
        ]
    )


def config_parser(prog: str, *, allow_abbrev: bool = True, exit_on_error: bool = True) -> argparse.ArgumentParser:
    """`train`'s options: --params, then every RunConfig field (grouped as RunConfig groups them), then
    the methods' own knobs; each with its field's help, default and choices."""
    p = argparse.ArgumentParser(
        prog=prog,
        usage="%(prog)s [-h] [--params YAML] [--<field> VALUE ...]",
        description=train_description(),
        allow_abbrev=allow_abbrev,
        exit_on_error=exit_on_error,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--params",
        action="append",
        default=None,
        metavar="YAML",
        help="YAML file of RunConfig overrides (params/*.yaml); several are merged in order",
    )
    groups: dict[str, argparse._ArgumentGroup] = {}
    for title, doc in field_docs():
        group = groups.get(title) or groups.setdefault(title, p.add_argument_group(f"RunConfig: {title}"))
        _add(group, doc.name, f"{doc.help} (default: {default_text(doc.default)})", _metavar(doc.name, doc))
    knobs = p.add_argument_group("method knobs (algo_args, given by their own names; docs/methods/)")
    for name, docs in method_knob_docs().items():
        if name not in RunConfig.field_names():
            _add(knobs, name, _knob_help(docs), _metavar(name, docs[0][1]))
    return p


def _add(group, name: str, help: str, metavar: str) -> None:
    if is_bool(name):  # bare means true; a value is read as any other
        group.add_argument(f"--{name}", nargs="?", const="true", default=None, metavar=metavar, help=_escape(help))
    else:
        group.add_argument(f"--{name}", default=None, metavar=metavar, help=_escape(help))


def config_from_args(args: argparse.Namespace, skip: Sequence[str] = ()) -> RunConfig:
    overrides = {
        k: parse_field_value(k, v)
        for k, v in vars(args).items()
        if k in RunConfig.input_names() and v is not None and k not in skip
    }
    return RunConfig.from_yaml(args.params, **overrides)


# Characters a word processor or web page puts where a command had hyphens.
_DASHES = "\u2010\u2011\u2012\u2013\u2014\u2015\u2212\ufe58\ufe63\uff0d"


def check_option_spelling(argv: Sequence[str], options: Sequence[str]) -> None:
    """Name the character that makes an option unknown when it is not what it looks like: an en or
    em dash for '-' (pasted from a document), or a letter from another alphabet ('а', U+0430, in
    '--leаrning_rate'). argparse would only say "unrecognized arguments"."""
    import difflib
    import unicodedata

    known = {o.lstrip("-") for o in options}
    for word in argv:
        if not word or not (word[0] in _DASHES or word.startswith("-")):
            continue
        flag = word.split("=", 1)[0]
        odd = [ch for ch in dict.fromkeys(flag) if ord(ch) > 127]
        if not odd:
            continue
        name = flag.lstrip("-" + _DASHES)
        plain = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
        close = difflib.get_close_matches(plain or name, sorted(known), n=1, cutoff=0.8)
        chars = ", ".join(f"{ch!r} (U+{ord(ch):04X} {unicodedata.name(ch, 'unnamed character')})" for ch in odd)
        dashes = [ch for ch in odd if ch in _DASHES]
        why = (
            "a dash that is not '-' (pasted from a document?); type it with plain hyphens"
            if dashes
            else "a letter that only looks like an ASCII one; type the option again"
        )
        hint = f", e.g. --{close[0]}" if close else ""
        raise ValueError(f"unrecognized option {flag!r}: it holds {chars}, {why}{hint}")


def join_negative_values(argv: Sequence[str]) -> list[str]:
    """`--field -1e-3` -> `--field=-1e-3`.

    argparse takes only `-1` and `-0.5` for negative numbers; `-1e-3` or `-inf` look like an
    option to it and fail with "expected one argument". Glued with '=', they reach RunConfig,
    which reports a bad value by field name.
    """
    out: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if (
            arg.startswith("--")
            and "=" not in arg
            and i + 1 < len(argv)
            and argv[i + 1].startswith("-")
            and _is_number(argv[i + 1])
        ):
            out.append(f"{arg}={argv[i + 1]}")
            i += 2
        else:
            out.append(arg)
            i += 1
    return out


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def field_overrides(
    argv: Sequence[str], *, reserved: Sequence[str] = ("algo", "seed", "output_dir"), prog: str = "siftkit sweep"
) -> dict[str, str]:
    """The RunConfig fields in `train`'s words (`--field value`, `--field=value`, a negative
    number, a bare boolean), read by `train`'s own parser; the values stay text, for each planned
    run's RunConfig to judge. `reserved` fields are set by the caller itself."""
    parser = config_parser(prog, allow_abbrev=False, exit_on_error=False)
    try:
        given, unknown = parser.parse_known_args(join_negative_values(argv))
    except argparse.ArgumentError as exc:
        raise ValueError(f"{exc.argument_name} needs a value: {exc.argument_name} <value>") from None
    if unknown or given.params is not None:
        check_option_spelling(unknown, [o for a in parser._actions for o in a.option_strings])
        bad = unknown[0] if unknown else "--params"
        raise ValueError(f"unknown sweep option or field {bad!r}; fields are set as --<field> <value>")
    overrides = {k: v for k, v in vars(given).items() if v is not None and k != "params"}
    for name in reserved:
        if name in overrides:
            raise ValueError(f"--{name} is set by the sweep itself (use --algos, --seeds, --output-dir)")
    return overrides
