"""``printpipe printers``: the built-in printer profiles and material presets."""

from __future__ import annotations

import argparse
import json


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "printers",
        help="list the printer profiles and materials for --printer / --material",
        description="List the built-in printer profiles (use the id with --printer, or pass the "
                    "path of your own .toml profile, which may start with inherits = \"ender3\") "
                    "and the material presets (--material).",
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from printpipe.slicing.printers import list_materials, list_printers

    printers = list_printers()
    materials = list_materials()
    if getattr(args, "json", False):
        print(json.dumps({
            "printers": [{**p.to_dict(), "max_hotend_c": p.max_hotend_c, "max_bed_c": p.max_bed_c,
                          "aliases": list(p.aliases)} for p in printers],
            "materials": [{"name": m.name, "hotend_c": m.hotend_c, "bed_c": m.bed_c,
                           "density_g_cm3": m.density_g_cm3} for m in materials],
        }, indent=2))
        return 0
    rows = [("id", "name", "build volume", "nozzle", "flavour", "max nozzle/bed")]
    for p in printers:
        rows.append((p.id, p.name, p.volume_text, f"{p.nozzle_mm:g} mm", p.flavor,
                     f"{p.max_hotend_c:g}/{p.max_bed_c:g} C"))
    _table(rows)
    print()
    rows = [("material", "nozzle C (first layer)", "bed C (first layer)", "fan %", "density g/cm3")]
    for m in materials:
        rows.append((m.name, f"{m.hotend_c:g} ({m.first_layer_hotend_c:g})",
                     f"{m.bed_c:g} ({m.first_layer_bed_c:g})", f"{m.fan_percent:g}", f"{m.density_g_cm3:g}"))
    _table(rows)
    print("\nuse: printpipe slice MODEL.stl --printer ID [--material NAME] -o model.gcode")
    return 0


def _table(rows) -> None:
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    for k, r in enumerate(rows):
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip())
        if k == 0:
            print("  ".join("-" * w for w in widths))
