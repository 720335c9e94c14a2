"""The ``ldm-explore`` command: the explorer (no sub-command) and the batch CLI, one module per command group.

Every user error ends as one line on stderr and exit code 2, never a traceback. This is the one place that
imports both the explorer's app (``ldm_explore.tui``) and the batch engine.
"""

from __future__ import annotations

import argparse
import sys

from ..errors import USER_ERRORS
from . import experiment, explore, generate, models, prompts, toyworld

GROUPS = (prompts, generate, experiment, models, explore, toyworld)


class OneLineParser(argparse.ArgumentParser):
    """argparse's own errors (a bad value, an unknown option, a missing argument) as one line and exit code 2, like
    every other user error, instead of the usage block before it; ``--help`` still prints the usage. Sub-commands'
    parsers are of this class too (``add_subparsers`` makes them of its parser's class)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> tuple[argparse.ArgumentParser, dict]:
    """The parser, and the handler of each command."""
    ap = OneLineParser(
        prog="ldm-explore",
        description="What does a latent diffusion model know about a scene while it is still noise?",
    )
    explore.add_root_args(ap)
    sub = ap.add_subparsers(dest="command", metavar="COMMAND")
    handlers = {}
    for group in GROUPS:
        handlers.update(group.add_parsers(sub))
    return ap, handlers


def main(argv: list[str] | None = None) -> int:
    ap, handlers = build_parser()
    args = ap.parse_args(argv)
    try:
        if args.command is None:
            return explore.run_explorer(args)
        return handlers[args.command](args)
    except USER_ERRORS as e:
        print(f"ldm-explore: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("ldm-explore: interrupted", file=sys.stderr)
        return 130
