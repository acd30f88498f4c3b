"""``printpipe inspect INPUT``: list the image stacks found and which one ``run`` would read."""

from __future__ import annotations

import argparse
import json
import sys

from printpipe import dicom
from printpipe.errors import PrintpipeError
from printpipe.i18n import _, current_lang, translate_error

__all__ = ["add_parser", "run"]


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the ``inspect`` subcommand."""
    p = subparsers.add_parser(
        "inspect", help="list the DICOM series in a folder or zip and which one run would choose",
        description="List the image stacks found in INPUT (folder searched recursively, or .zip): "
                    "modality, description, slices, size, spacing, thickness, tilt, gaps, transfer "
                    "syntax, and which one `printpipe run` would read and why. Reads headers only.")
    p.add_argument("input", metavar="INPUT", help="folder, .zip or DICOM file")
    p.add_argument("--json", action="store_true", help="print JSON for scripts instead of a table")
    p.add_argument("--show-phi", action="store_true",
                   help="also show patient name/ID/birth date, study date and file names "
                        "(hidden by default)")
    p.add_argument("--series", default=None, metavar="ID",
                   help="show which stack this --series value selects, as `run --series` would")
    p.set_defaults(func=run)
    return p


def _fmt(v, digits: int = 3) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}g}"
    return str(v)


def run(args: argparse.Namespace) -> int:
    """Print the table (or JSON) to stdout; return 0, or 1 when nothing readable was found."""
    disc = dicom.discover(args.input)
    chosen_key, reason, error, shown_error = None, "", None, None
    try:
        info, reason = dicom.choose(disc, getattr(args, "series", None))
        chosen_key = info.key
    except PrintpipeError as exc:
        error = str(exc)  # JSON keeps the English message for scripts
        shown_error = error if current_lang() == "en" else translate_error(exc)
    if args.json:
        out = disc.to_dict(show_phi=args.show_phi)
        out["chosen"] = chosen_key
        out["choice_reason"] = reason
        out["error"] = error
        print(json.dumps(out, indent=2))
        return 0 if chosen_key else 1
    headers = ["", "#", "id", "mod", "SeriesNo", "description", "slices", "rows x cols", "pixel mm",
               "spacing mm", "thick mm", "tilt deg", "gaps", "orient", "transfer syntax"]
    rows = []
    for s in disc.series:
        flags = []
        if s.localizer:
            flags.append("localizer")
        if s.multi_frame:
            flags.append("multi-frame")
        if not s.decodable:
            flags.append(f"no decoder: pip install {s.decoder_hint}")
        if s.size_conflict:
            flags.append("inconsistent sizes")
        if s.duplicates:
            flags.append(f"{s.duplicates} duplicate position(s)")
        gaps = f"{s.gaps} (max {s.max_gap_ratio:.1f}x)" if s.gaps else ("uneven" if s.uneven else "0")
        desc = s.description[:24]
        rows.append(["*" if s.key == chosen_key else "", str(s.index), s.key, s.modality, _fmt(s.number),
                     desc, str(s.slices), f"{s.rows}x{s.cols}",
                     f"{s.pixel_spacing[0]:.3g}x{s.pixel_spacing[1]:.3g}", _fmt(s.spacing, 4),
                     _fmt(s.thickness), f"{s.tilt_deg:.1f}", gaps, s.orientation,
                     s.transfer_syntax + (" [" + ", ".join(flags) + "]" if flags else "")])
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths)).rstrip())
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    print()
    print(_("files scanned: {count}").format(count=disc.files_scanned))
    if disc.skipped:
        print(_("skipped: {list}").format(list=", ".join(f"{n} {why}" for why, n in disc.skipped.items())))
    if chosen_key:
        print(_("run would read #{row} ({stack}): {reason}").format(
            row=next(s.index for s in disc.series if s.key == chosen_key), stack=chosen_key, reason=reason))
    else:
        print(_("run would fail: {error}").format(error=shown_error))
    if args.show_phi:
        print()
        print("patient identifiers (--show-phi):")
        for s in disc.series:
            phi = ", ".join(f"{k}={v}" for k, v in s._phi.items())
            print(f"  #{s.index} {phi}; {len(s.files)} file(s), first {s.files[0] if s.files else '-'}")
    sys.stdout.flush()
    return 0 if chosen_key else 1
