"""The command line: a torch-free parser (``parser``), the entry point (``main``), the job launcher
(``launch``, submitit), the call of one parsed subcommand (``dispatch``) and the subcommands'
implementations (``commands``, which load torch)."""

from f2d2.cli.main import main

__all__ = ["main"]
