"""`dares`: the command line. It only parses and dispatches: each command is a module of dares_core/commands (or of
another package, through the `dares.commands` entry point) with add_arguments(parser) and run(args). Errors are one
line, exit status 2."""

from __future__ import annotations

import argparse
import os
import sys

from . import __version__
from .errors import DaresError
from .files import claimed_outputs


def command_modules() -> list:
    """Every `dares` command, in the order --help lists them: dares_core's, then those of the `dares.commands`
    entry points (dares_ros: demo, bag, prepare-bag)."""
    from importlib.metadata import entry_points

    from .commands import bench, eval, export, infer, pose, prepare_scared, prepare_video, reconstruct, synth, train

    modules = [synth, prepare_scared, prepare_video, infer, eval, pose, reconstruct, train, export, bench]
    for ep in entry_points(group="dares.commands"):
        modules += ep.load()
    return modules


class Parser(argparse.ArgumentParser):
    """argparse with one line for a bad command line, as every other error: the problem and where help is."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="dares", description="DARES depth estimation for endoscopy.")
    parser.add_argument("--version", action="version", version=f"dares {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in command_modules():
        p = sub.add_parser(module.NAME, help=module.HELP, description=module.DESCRIPTION)
        module.add_arguments(p)
        p.set_defaults(func=module.run)
    return parser


class Terminated(Exception):
    """SIGTERM, raised where the program is so that unfinished outputs are cleaned up as on Ctrl-C."""


def _terminate(*_) -> None:
    raise Terminated


def main(argv: list[str] | None = None) -> int:
    import signal

    parser = build_parser()
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)  # commands that end cleanly on a signal (bag record) set their own
    try:
        with claimed_outputs():
            args.func(args)
    except DaresError as e:
        print(f"dares {args.command}: error: {e}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, Terminated) as e:
        print(f"dares {args.command}: interrupted; nothing partial was left", file=sys.stderr)
        return 143 if isinstance(e, Terminated) else 130
    except BrokenPipeError:  # output piped into `head` and the like: stop quietly, as a SIGPIPE'd tool does
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    return 0


if __name__ == "__main__":
    sys.exit(main())
