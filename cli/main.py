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
from printpipe.i18n import LANGS, N_, _, current_lang, set_lang, translate_error

# subcommand name -> module in printpipe.cli (the order is the order of `printpipe --help`)
SUBCOMMANDS = ("run", "inspect", "slice", "batch", "printers", "presets", "serve")


# argparse's own messages (usage line, "invalid choice", "required"), which Python ships untranslated;
# argparse looks its module-level ``_`` up at call time, so pointing it at printpipe's catalog (in
# the CLI only, never on importing the library) translates them for the language of this call
_ARGPARSE_MESSAGES = (
    N_("usage: "), N_("positional arguments"), N_("options"), N_("show this help message and exit"),
    N_("show program's version number and exit"), N_("the following arguments are required: %s"),
    N_("unrecognized arguments: %s"), N_("%(prog)s: error: %(message)s\n"),
    N_("argument %(argument_name)s: %(message)s"), N_("invalid choice: %(value)r (choose from %(choices)s)"),
    N_("expected one argument"), N_("invalid %(type)s value: %(value)r"), N_("not allowed with argument %s"),
    N_("ambiguous option: %(option)s could match %(matches)s"), N_("one of the arguments %s is required"),
)


def _add_lang(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--lang", choices=LANGS, default=argparse.SUPPRESS,
                        help=_("language of messages and of the report: zh (Simplified Chinese) or en; "
                               "default from the locale (LANG, LC_ALL, LC_MESSAGES)"))


def _lang_from_argv(argv: list[str]) -> str | None:
    """The value of ``--lang`` in ``argv`` (before argparse runs, so that its messages are translated)."""
    for i, arg in enumerate(argv):
        if arg == "--":
            break
        if arg == "--lang" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--lang="):
            return arg.split("=", 1)[1]
    return None


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help=_("show the full traceback on errors and debug logging"))
    _add_lang(common)
    parser = argparse.ArgumentParser(
        prog="printpipe",
        description=_("CT DICOM series -> watertight bone model (STL/3MF) -> G-code for desktop printers."),
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
                                   help=_("show the full traceback on errors and debug logging"))
        if subparser is not None and "--lang" not in subparser._option_string_actions:
            _add_lang(subparser)
    if current_lang() != "en":
        _translate_help(parser)
    return parser


def _translate_help(parser: argparse.ArgumentParser) -> None:
    """Translate the help texts, descriptions and group titles of ``parser`` and its subcommands.

    The subcommand modules write them in English, unmarked; ``make i18n`` collects them from the
    source (``CLI_HELP`` in ``printpipe/_error_templates.py``), so they are translated here, once
    the parser is built, and no option module has to know about languages.
    """
    if parser.description:
        parser.description = _(parser.description)
    for group in parser._action_groups:
        if group.title:
            group.title = _(group.title)
        if group.description:
            group.description = _(group.description)
    for action in parser._actions:
        if action.help and action.help is not argparse.SUPPRESS:
            action.help = _(action.help)
        if isinstance(action, argparse._SubParsersAction):
            for pseudo in action._choices_actions:  # the subcommand list in the parent's help
                if pseudo.help:
                    pseudo.help = _(pseudo.help)
            for sub in dict.fromkeys(action.choices.values()):
                _translate_help(sub)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        set_lang(_lang_from_argv(argv))  # None: from the locale
    except ValueError:
        set_lang(None)  # an unknown --lang: argparse's choices say so below
    argparse._ = _  # see _ARGPARSE_MESSAGES
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
        print(f"printpipe: {_error_line(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("printpipe: " + _("interrupted; nothing half-written was left behind"), file=sys.stderr)
        return 130
    except SystemExit as exc:  # usage errors raised by a subcommand through parser.error
        return int(exc.code or 0)
    except Exception as exc:  # an internal error: one line, the traceback with --debug
        if debug:
            traceback.print_exc()
        print("printpipe: " + _("internal error: {error} (run again with --debug for the traceback, and "
                                "please report it)").format(error=f"{type(exc).__name__}: {exc}"),
              file=sys.stderr)
        return 1


def _error_line(exc: PrintpipeError) -> str:
    """``TypeName: message`` in English; in Chinese the kind and the message translated
    (see :func:`printpipe.i18n.translate_error`), the class name kept for searching logs."""
    if current_lang() == "en":
        return f"{type(exc).__name__}: {exc}"
    return f"{translate_error(exc)} [{type(exc).__name__}]"


def console() -> None:
    """The ``printpipe`` command's entry point: :func:`main`, then a quick exit.

    A finished case leaves nothing to clean up (every output is renamed into place, the report
    worker and the helper threads are gone), yet the interpreter's normal exit tears down every
    module, the numba and VTK libraries and the freed arrays one by one: 0.3-0.4 s of a 10 s case
    (measured on ref003). So once nothing else runs, the streams and log handlers are flushed and
    the process ends at once with ``os._exit``. Anything still running (a thread or child process
    left by some command) gets the normal exit instead, which waits for it as before.
    """
    code = main()
    _exit_now(code)


def _exit_now(code: int) -> None:
    """Exit with ``code``: at once after flushing when no thread the interpreter would wait for
    (the kernels' idle pool is stopped first) and no child process remains; through ``sys.exit``
    otherwise."""
    import multiprocessing
    import os
    import threading

    kernels = sys.modules.get("printpipe.kernels.mc")
    if kernels is not None:
        kernels.shutdown_pool()
    waited = [t for t in threading.enumerate() if t is not threading.main_thread() and not t.daemon]
    if waited or multiprocessing.active_children():
        sys.exit(code)
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed or broken pipe: the normal exit reports it
            sys.exit(code)
    os._exit(code)


if __name__ == "__main__":  # pragma: no cover
    console()
