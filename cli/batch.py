"""``printpipe batch ROOT -o OUTDIR``: every study under ROOT, in parallel, resumable.

Takes the same pipeline options as ``printpipe run`` plus batch options, and ``--config FILE``: a
TOML file whose keys are the options' ``dest`` names (``smooth_iterations = 20``, ``hu = "300:3000"``,
``jobs = 2``), applied as defaults so that options on the command line still win.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
from pathlib import Path

# keys a --config file may not set: the positional input, the output folder, the file itself
_NOT_CONFIGURABLE = {"root", "output", "config", "help", "func", "debug"}


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "batch",
        help="run every study under a folder (process pool or Dask), resumable, with a summary CSV",
        description="Run the pipeline on every study under ROOT (one case per study: its chosen CT "
                    "series; or every eligible series with --all-series). Each case writes "
                    "OUTDIR/<case_id>/ as `printpipe run` would; OUTDIR/batch.csv and batch.json "
                    "summarise the run. Case IDs are hashes of the study and series UIDs (or come from "
                    "--case-ids). Exit code 1 when any case failed, 130 when interrupted.",
    )
    p.add_argument("root", help="folder holding the studies (searched recursively)")
    p.add_argument("-o", "--output", required=True, metavar="OUTDIR", help="batch output folder")
    g = p.add_argument_group("batch")
    g.add_argument("--config", metavar="FILE",
                   help="TOML file of option values (keys are option names with '_' for '-'); "
                        "options given on the command line win")
    g.add_argument("--jobs", "-j", type=_positive_int, default=None, metavar="N",
                   help="cases at the same time on this machine (default: every CPU; fewer when "
                        "the memory estimate of the cases does not fit)")
    g.add_argument("--scheduler", metavar="ADDRESS", default=None,
                   help="run the cases on a running Dask scheduler (tcp://host:8786); needs "
                        "printpipe[dask]")
    g.add_argument("--dask-local", type=_positive_int, default=None, metavar="N",
                   help="start a local Dask cluster of N single-threaded worker processes")
    g.add_argument("--memory-budget", type=_positive_float, default=None, metavar="GB",
                   help="memory the running cases may use together (default: 80%% of the "
                        "available memory)")
    g.add_argument("--all-series", action="store_true", default=False,
                   help="one case per eligible CT series instead of one per study")
    g.add_argument("--case-ids", metavar="FILE.csv", default=None,
                   help="CSV mapping 'study_uid,series_uid,case_id' or 'folder,case_id'")
    g.add_argument("--resume", action="store_true", default=False,
                   help="skip cases whose finished output has the same input and parameter hashes")
    g.add_argument("--dry-run", action="store_true", default=False,
                   help="list the cases that would run and why each series was chosen; run nothing")
    g.add_argument("--quiet", action="store_true", default=False, help="no progress bar on stderr")
    g.add_argument("--log-json", action="store_true", default=False,
                   help="progress as JSON lines on stderr (event, case_id, status, seconds, error)")
    try:
        from printpipe.cli.options import add_pipeline_options
    except ImportError:  # pragma: no cover - only while the pipeline options are being built
        add_pipeline_options = None
    if add_pipeline_options is not None:
        add_pipeline_options(p)
    p.set_defaults(func=run)
    install_config_file(p)
    return p


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {value}")
    return value


# -- --config FILE --------------------------------------------------------------------------------

def install_config_file(parser: argparse.ArgumentParser, option: str = "--config") -> None:
    """Make ``option FILE`` (TOML) supply defaults for ``parser``'s options.

    The file is read before the command line is parsed and its values become the parser's
    defaults for that parse, so an option given on the command line always wins. Keys are the
    options' ``dest`` names (``-`` is accepted for ``_``). Unknown keys, tables, and values of the
    wrong kind are usage errors (exit code 2) naming the key.
    """
    original = parser.parse_known_args

    def parse_known_args(args=None, namespace=None):
        pre = argparse.ArgumentParser(add_help=False)  # abbreviations as the real parser
        pre.add_argument(option, dest="_config_file")
        known, _ = pre.parse_known_args(sys.argv[1:] if args is None else list(args))
        if not known._config_file:
            return original(args, namespace)
        defaults = config_file_defaults(parser, known._config_file)
        saved = {k: parser.get_default(k) for k in defaults}
        parser.set_defaults(**defaults)
        try:
            return original(args, namespace)
        finally:
            parser.set_defaults(**saved)

    parser.parse_known_args = parse_known_args  # type: ignore[method-assign]


def config_file_defaults(parser: argparse.ArgumentParser, path: str | Path) -> dict:
    """Read a TOML option file and check it against ``parser``; return ``{dest: value}``.

    Calls ``parser.error`` (exit code 2) for an unreadable file, invalid TOML, unknown keys, or a
    value its option does not accept.
    """
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]

    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        parser.error(f"--config {path}: cannot read it ({exc.strerror})")
    except tomllib.TOMLDecodeError as exc:
        parser.error(f"--config {path}: not valid TOML ({exc})")
    actions = {a.dest: a for a in parser._actions
               if a.dest not in _NOT_CONFIGURABLE and a.dest != argparse.SUPPRESS and a.option_strings}
    data = {str(k).replace("-", "_"): v for k, v in data.items()}
    unknown = sorted(k for k in data if k not in actions)
    if unknown:
        examples = ", ".join(sorted(actions)[:6])
        parser.error(f"--config {path}: unknown key(s) {', '.join(unknown)}; keys are the option names "
                     f"with '_' for '-' (for example {examples}); see --help")
    out = {}
    for key, value in data.items():
        action = actions[key]
        try:
            out[key] = _convert(action, value)
        except (argparse.ArgumentTypeError, TypeError, ValueError) as exc:
            parser.error(f"--config {path}: {key} = {value!r} is not accepted by "
                         f"{max(action.option_strings, key=len)}: {exc}")
    return out


def _convert(action: argparse.Action, value):
    if isinstance(value, dict):
        raise TypeError("tables are not supported; write the option's value directly")
    if action.nargs == 0:  # store_true / store_false / store_const
        if not isinstance(value, bool):
            raise TypeError("expected true or false")
        if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
            return value  # the key is the dest, so the value is the dest's value
        return action.const if value else action.default
    convert = action.type or (lambda v: v)

    def one(v):
        if isinstance(v, bool) and action.type not in (None, bool):
            raise TypeError("expected a value, not true/false")
        result = convert(v if isinstance(v, str) else str(v)) if action.type else v
        if action.choices is not None and result not in action.choices:
            raise ValueError(f"choose from {', '.join(map(str, action.choices))}")
        return result

    if isinstance(value, list):
        if action.nargs in (None, "?"):
            raise TypeError("expected a single value, not a list")
        return [one(v) for v in value]
    if action.nargs in ("+", "*") or isinstance(action.nargs, int):
        return [one(v) for v in (value.split() if isinstance(value, str) else [value])]
    return one(value)


# -- the command ----------------------------------------------------------------------------------

def run(args: argparse.Namespace) -> int:
    from printpipe.batch import BatchConfig, find_cases, load_case_ids, plan, run_many, estimate_case_memory
    from printpipe.progress import CaseBar

    config = _pipeline_config(args)
    budget = None if args.memory_budget is None else int(args.memory_budget * 1e9)
    batch = BatchConfig(jobs=args.jobs, scheduler=args.scheduler, dask_local=args.dask_local,
                        all_series=args.all_series, resume=args.resume, dry_run=args.dry_run,
                        memory_budget_bytes=budget, case_ids=args.case_ids)
    id_map = load_case_ids(args.case_ids) if args.case_ids else None
    cases = find_cases(args.root, all_series=args.all_series, id_map=id_map,
                       series=getattr(args, "series", None))

    if args.dry_run:
        show_folders = bool(getattr(args, "show_phi", False))
        print(f"dry run: {len(cases)} case(s) under {args.root} -> {args.output}")
        print(f"{'case_id':<14}{'action':<8}{'slices x rows x cols':>21}{'est. GB':>9}  reason")
        for case, action, why in plan(cases, args.output, config, batch):
            shape = " x ".join(map(str, case.shape)) if case.shape else "?"
            gb = estimate_case_memory(case, batch.memory_factor) / 1e9
            print(f"{case.case_id:<14}{action:<8}{shape:>21}{gb:>9.1f}  {case.reason}"
                  + (f" [{why}]" if batch.resume else ""))
            if show_folders:
                print(f"{'':<14}folder: {case.folder}")
        return 0

    bar = CaseBar(sys.stderr, quiet=args.quiet, json_lines=args.log_json)
    with _sigterm_as_interrupt():
        result = run_many(cases, args.output, config, batch, progress=bar)
    _print_summary(result)
    return result.exit_code


def _pipeline_config(args):
    try:
        from printpipe.cli.options import pipeline_config_from_args
    except ImportError:  # pragma: no cover
        from printpipe.pipeline import PipelineConfig

        return PipelineConfig()
    return pipeline_config_from_args(args)


@contextlib.contextmanager
def _sigterm_as_interrupt():
    """SIGTERM (a scheduler killing the job) cleans up like Ctrl-C."""

    def handler(signum, frame):
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _print_summary(result) -> None:
    recs = result.records
    from printpipe.i18n import _

    print(_("batch: {cases} case(s): {ok} ok ({resumed} resumed), {failed} failed in {seconds} s on "
            "{executor}").format(cases=len(recs), ok=result.n_ok, resumed=result.n_resumed,
                                 failed=result.n_failed, seconds=f"{result.seconds:.1f}",
                                 executor=result.executor))
    print(f"{'case_id':<14}{'status':<8}{'seconds':>9}{'parts':>7}{'triangles':>11}{'volume cm3':>12}  error")
    for r in recs:
        err = (r.error or "").replace("\n", " ")
        if len(err) > 160:
            err = err[:157] + "..."
        status = r.status + ("*" if r.resumed else "")
        print(f"{r.case_id:<14}{status:<8}{r.seconds:>9.1f}{r.parts:>7}{r.triangles:>11,}"
              f"{r.volume_mm3 / 1000:>12.1f}  {err}")
    if result.n_resumed:
        print(_("* kept from an earlier run (--resume)"))
    for path in result.summary_files:
        print(_("wrote {path}").format(path=path))
