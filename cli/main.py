"""The ``printpipe`` command: argument parsing and the error boundary, nothing else.

Each subcommand lives in its own module with ``add_parser(subparsers)`` and ``run(args) -> int``.
Exit codes: 0 success, 1 the case (or any case of a batch) failed, 2 usage error, 130 interrupted.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import traceback

from printpipe._version import __version__
from printpipe.errors import PrintpipeError

# subcommand name -> module in printpipe.cli (the order is the order of `printpipe --help`)
SUBCOMMANDS = ("run", "inspect", "slice", "batch", "printers", "presets")


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show the full traceback on errors and debug logging")
    parser = argparse.ArgumentParser(
        prog="printpipe",
        description="CT DICOM series -> watertight bone model (STL/3MF) -> G-code for desktop printers.",
        parents=[common],
    )
    parser.add_argument("--version", action="version", version=f"printpipe {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in SUBCOMMANDS:
        try:
            module = importlib.import_module(f"printpipe.cli.{name}")
        except ImportError as exc:  # a subcommand whose stage is missing must not break the others
            logging.getLogger(__name__).debug("subcommand %s unavailable: %s", name, exc)
            continue
        module.add_parser(sub)
        subparser = sub.choices.get(name)
        if subparser is not None and "--debug" not in subparser._option_string_actions:
            subparser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                                   help="show the full traceback on errors and debug logging")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: --help/--version exit 0, usage errors exit 2
        return int(exc.code or 0)
    debug = bool(getattr(args, "debug", False))
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        return int(args.func(args) or 0)
    except PrintpipeError as exc:
        if debug:
            traceback.print_exc()
        print(f"printpipe: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("printpipe: interrupted; nothing half-written was left behind", file=sys.stderr)
        return 130
    except SystemExit as exc:  # usage errors raised by a subcommand through parser.error
        return int(exc.code or 0)
    except Exception as exc:  # an internal error: one line, the traceback with --debug
        if debug:
            traceback.print_exc()
        print(f"printpipe: internal error: {type(exc).__name__}: {exc} "
              "(run again with --debug for the traceback, and please report it)", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
