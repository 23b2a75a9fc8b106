"""Command line: `python -m siftkit train|download|sweep|summarize ...`.

`train` takes every `RunConfig` field as `--<field> <value>` (or `--<field>=<value>`) on top
of `--params <yaml>`. A value is read as papermill reads a `-p` value: a number field takes a
decimal number (`--seed 010` is 10, `--adv_epsilon 1e-4`), anything else stays text for
`RunConfig` to judge (`--seed 1:30` is an error naming `seed`, not 90 as in YAML 1.1);
`--model_name null` is None; `--extra` is a YAML mapping. A bad value is reported by field name.
"""

from __future__ import annotations

import json
import sys
import warnings
from collections.abc import Sequence

from siftkit.cli.args import check_option_spelling, config_from_args, config_parser, join_negative_values
from siftkit.run.config import PROTOCOLS


def cmd_train(argv: Sequence[str]) -> int:
    from siftkit.run.training import train

    parser = config_parser("siftkit train")
    check_option_spelling(argv, [o for a in parser._actions for o in a.option_strings])
    args = parser.parse_args(join_negative_values(argv))
    cfg = config_from_args(args)
    record = train(cfg)
    from accelerate import PartialState

    if not PartialState().is_main_process:  # one summary per run, not one per process
        return 0
    print(
        json.dumps(
            {"output_dir": cfg.output_dir, "metrics": record["metrics"], "wall_time_s": record["meta"]["wall_time_s"]},
            indent=2,
        )
    )
    return 0


def cmd_download(argv: Sequence[str]) -> int:
    from siftkit.data.download import main as download_main

    return download_main(list(argv))


def cmd_sweep(argv: Sequence[str]) -> int:
    from siftkit.cli.sweep import main as sweep_main

    return sweep_main(list(argv))


def cmd_summarize(argv: Sequence[str]) -> int:
    from siftkit.study.summarize import main as summarize_main

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
        protocols = ", ".join(f"{what.split(':')[0]} {task}" for task, what in PROTOCOLS.items())
        print(
            "usage: python -m siftkit {train,download,sweep,summarize} [options]\n"
            f"  train      run one protocol: {protocols} (see `python -m siftkit train --help`)\n"
            "  download   fetch the datasets and check their sha256\n"
            "  sweep      run algorithms x seeds, skipping finished runs\n"
            "  summarize  write results/SUMMARY.md from results.json files",
            file=sys.stderr,
        )
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    try:
        return COMMANDS[argv[0]](argv[1:])
    except ValueError as exc:  # validation errors: one clear line, no traceback
        print(f"siftkit {argv[0]}: error: {exc}", file=sys.stderr)
        return 2
