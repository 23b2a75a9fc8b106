"""The one reader of `--<field> <value>` words, shared by `train` and `sweep`: every
`RunConfig` field as an option, values read as papermill reads `-p` values."""

from __future__ import annotations

import argparse
from typing import Sequence, get_type_hints

from siftkit.run.config import RunConfig

BOOL_FLAGS = {"resume", "overwrite", "cpu", "reinit_head", "freeze_encoder", "wise_ft"}  # may be given bare: `--resume`


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


def config_parser(prog: str, *, allow_abbrev: bool = True, exit_on_error: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description="Fine-tune with plain, SMART or SiFT on P1 or P2.",
                                allow_abbrev=allow_abbrev, exit_on_error=exit_on_error)
    p.add_argument("--params", action="append", default=None,
                   help="YAML file of RunConfig overrides (params/*.yaml); several are merged in order")
    for name in RunConfig.input_names():  # the fields, then the methods' own knobs (siftkit.methods)
        if name == "extra":
            p.add_argument("--extra", default=None, metavar="MAPPING",
                           help="free-form notes recorded with the config, e.g. '{tag: ablation}'")
            continue
        if name in BOOL_FLAGS:
            p.add_argument(f"--{name}", nargs="?", const="true", default=None, metavar="BOOL")
        else:
            p.add_argument(f"--{name}", default=None, metavar="VALUE")
    return p


def config_from_args(args: argparse.Namespace, skip: Sequence[str] = ()) -> RunConfig:
    overrides = {k: parse_field_value(k, v) for k, v in vars(args).items()
                 if k in RunConfig.input_names() and v is not None and k not in skip}
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
        why = ("a dash that is not '-' (pasted from a document?); type it with plain hyphens" if dashes
               else "a letter that only looks like an ASCII one; type the option again")
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
        if (arg.startswith("--") and "=" not in arg and i + 1 < len(argv)
                and argv[i + 1].startswith("-") and _is_number(argv[i + 1])):
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


def field_overrides(argv: Sequence[str], *, reserved: Sequence[str] = ("algo", "seed", "output_dir"),
                    prog: str = "siftkit sweep") -> dict[str, str]:
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
