"""Command line: `python -m siftkit train|download|sweep|summarize ...`.

`train` takes every `RunConfig` field as `--<field> <value>` (or `--<field>=<value>`) on top
of `--params <yaml>`. A value is read as papermill reads a `-p` value: a number field takes a
decimal number (`--seed 010` is 10, `--adv_epsilon 1e-4`), anything else stays text for
`RunConfig` to judge (`--seed 1:30` is an error naming `seed`, not 90 as in YAML 1.1);
`--model_name null` is None; `--extra` is a YAML mapping. A bad value is reported by field name.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from typing import Sequence, get_type_hints

from siftkit.config import RunConfig

BOOL_FLAGS = {"resume", "overwrite", "cpu", "reinit_head", "freeze_encoder"}  # may be given bare: `--resume`


def parse_field_value(name: str, text: str):
    """A command-line value for RunConfig field `name`, read as papermill reads `-p` values.

    Numbers (for int and float fields) are Python's: int, then float, else the text itself,
    which RunConfig rejects by field name. Other fields get the text (RunConfig turns
    'true'/'null' into bool/None where the field's type allows it); `extra` is a YAML mapping.
    """
    from siftkit.config import load_yaml

    if name == "extra":
        try:
            return load_yaml(text)
        except Exception:  # noqa: BLE001 - any YAML error: RunConfig reports the raw text
            return text
    if _FIELD_KINDS.get(name) in (int, float):
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


def _config_parser(prog: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description="Fine-tune with plain, SMART or SiFT on P1 or P2.")
    p.add_argument("--params", help="YAML file of RunConfig overrides (params/*.yaml)")
    for name in RunConfig.field_names():
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
                 if k in RunConfig.field_names() and v is not None and k not in skip}
    return RunConfig.from_yaml(args.params, **overrides)


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


def cmd_train(argv: Sequence[str]) -> int:
    from siftkit.training import train

    args = _config_parser("siftkit train").parse_args(join_negative_values(argv))
    cfg = config_from_args(args)
    record = train(cfg)
    from accelerate import PartialState

    if not PartialState().is_main_process:  # one summary per run, not one per process
        return 0
    print(json.dumps({"output_dir": cfg.output_dir, "metrics": record["metrics"],
                      "wall_time_s": record["meta"]["wall_time_s"]}, indent=2))
    return 0


def cmd_download(argv: Sequence[str]) -> int:
    from siftkit.download import main as download_main

    return download_main(list(argv))


def cmd_sweep(argv: Sequence[str]) -> int:
    from siftkit.sweep import main as sweep_main

    return sweep_main(list(argv))


def cmd_summarize(argv: Sequence[str]) -> int:
    from siftkit.summarize import main as summarize_main

    return summarize_main(list(argv))


COMMANDS = {"train": cmd_train, "download": cmd_download, "sweep": cmd_sweep, "summarize": cmd_summarize}


def _format_warning(message, category, filename, lineno, line=None, _default=warnings.formatwarning) -> str:
    """siftkit's own warnings (edited data files, dropped steps) as one line on the terminal,
    not Python's file:line header with a line of source code; others as Python shows them."""
    if category.__module__.startswith("siftkit"):
        return f"siftkit: warning: {message}\n"
    return _default(message, category, filename, lineno, line)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    warnings.formatwarning = _format_warning
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        print("usage: python -m siftkit {train,download,sweep,summarize} [options]\n"
              "  train      run one protocol (see `python -m siftkit train --help`)\n"
              "  download   fetch the datasets and check their sha256\n"
              "  sweep      run algorithms x seeds, skipping finished runs\n"
              "  summarize  write results/SUMMARY.md from results.json files", file=sys.stderr)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    try:
        return COMMANDS[argv[0]](argv[1:])
    except ValueError as exc:  # validation errors: one clear line, no traceback
        print(f"siftkit {argv[0]}: error: {exc}", file=sys.stderr)
        return 2
