"""``f2d2`` entry point: parse, then run a subcommand here or submit it as a job (``f2d2 submit``)."""

from __future__ import annotations

import argparse
import os
import sys

from f2d2.cli.dispatch import run_parsed
from f2d2.cli.launch import LaunchError, submit
from f2d2.cli.parser import COMMANDS, build_parser
from f2d2.config.resources import CLUSTERS, Resources


def cmd_submit(args: argparse.Namespace) -> None:
    if not args.job:
        raise ValueError(
            f"give the f2d2 command to run after '--', e.g. -- data --config c.yaml ... (one of {', '.join(COMMANDS)})"
        )
    if args.cluster not in CLUSTERS:
        source = " (the default, from $F2D2_CLUSTER)" if os.environ.get("F2D2_CLUSTER") == args.cluster else ""
        raise ValueError(f"--cluster {args.cluster!r}{source} is not one of {', '.join(CLUSTERS)}")
    resources = Resources(
        partition=args.partition,
        gpus=args.gpus,
        cpus=args.cpus,
        mem_gb=args.mem_gb,
        time_min=args.time_min,
        tasks_per_node=args.tasks_per_node,
        signal_delay_s=args.signal_delay_s,
    )
    submit(
        args.job,
        cluster=args.cluster,
        log_dir=args.log_dir,
        resources=resources,
        job_name=args.job_name or f"f2d2-{args.job[0]}",
    )


def main(argv: list[str] | None = None) -> int:
    """Run ``f2d2 <argv>``; returns the exit code (0 ok, 1 a submitted job failed, 2 a usage or input error)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    job = None
    if argv[:1] == ["submit"] and "--" in argv:  # everything after the first '--' is the command to run
        cut = argv.index("--")
        argv, job = argv[:cut], argv[cut + 1 :]
    args = build_parser().parse_args(argv)
    if args.command != "submit":
        return run_parsed(args)
    if job is not None:
        if args.job:
            print(f"f2d2 submit: error: unexpected arguments before '--': {' '.join(args.job)}", file=sys.stderr)
            return 2
        args.job = job
    try:
        cmd_submit(args)
    except LaunchError as e:  # the job ran and failed
        print(f"f2d2 submit: error: {e}", file=sys.stderr)
        return 1
    except ValueError as e:
        print(f"f2d2 submit: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
