"""``printpipe serve``: the local web page for the printer room (upload a CT, get G-code)."""

from __future__ import annotations

import argparse
import math


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--port takes a number from 1 to 65535; got {text!r}") from None
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"--port takes a number from 1 to 65535; got {text!r}")
    return value


def _megabytes(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--max-upload-mb takes a size in MB; got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"--max-upload-mb must be a positive size in MB; got {text!r}")
    return value


def add_parser(subparsers) -> argparse.ArgumentParser:
    from printpipe.web.uploads import DEFAULT_MAX_UPLOAD_MB

    p = subparsers.add_parser(
        "serve",
        help="local web page: upload a CT, pick printer and parts, follow progress, download G-code",
        description="Start the local web app (Chinese and English). Jobs run one at a time in a separate "
                    "worker process and are kept in DATA (SQLite), so a restart shows finished jobs "
                    "again. It answers only on this computer unless --allow-remote is given, and then "
                    "only to browsers that carry the access token printed at start-up.",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this computer only)")
    p.add_argument("--port", type=_port, default=8765, help="port (default 8765)")
    p.add_argument("--data", default=None, metavar="DIR",
                   help="folder for the job database and job files (default ~/.printpipe/serve)")
    p.add_argument("--allow-remote", action="store_true",
                   help="allow a non-local --host; an access token is printed and required")
    p.add_argument("--max-upload-mb", type=_megabytes, default=DEFAULT_MAX_UPLOAD_MB, metavar="MB",
                   help=f"largest upload accepted (default {DEFAULT_MAX_UPLOAD_MB} MB)")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from printpipe.web.app import serve

    try:
        serve(args.host, args.port, args.data, allow_remote=args.allow_remote, max_upload_mb=args.max_upload_mb,
              echo=lambda line: print(line, flush=True))
    except KeyboardInterrupt:
        return 0
    return 0
