"""Run one parsed non-submit subcommand in this process; what a job executes (``f2d2.cli.launch``)."""

from __future__ import annotations

import argparse
import importlib
import sys

from f2d2.cli.parser import build_parser


def run_parsed(args: argparse.Namespace) -> int:
    """Call ``f2d2.cli.commands.cmd_<command>(args)``; a user error prints one line and returns 2.

    The commands module (torch and the model code) is imported here, on first use, so that the
    parser and the launcher stay free of torch.
    """
    commands = importlib.import_module("f2d2.cli.commands")
    try:
        getattr(commands, f"cmd_{args.command.replace('-', '_')}")(args)
    except commands.USER_ERRORS as e:
        print(f"f2d2 {args.command}: error: {e}", file=sys.stderr)
        return 2
    return 0


def run_command(argv: list[str]) -> int:
    """Parse and run ``f2d2 <argv>`` (not ``submit``); returns the exit code."""
    return run_parsed(build_parser().parse_args(list(argv)))
