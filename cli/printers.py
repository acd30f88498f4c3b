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
    sub = p.add_subparsers(dest="printers_command", metavar="import")
    imp = sub.add_parser(
        "import",
        help="import a PrusaSlicer .ini or Cura .def.json printer profile",
        description="Translate a PrusaSlicer .ini (exported config, config bundle or vendor bundle: "
                    "printer, filament and print sections, inherits, bed_shape, machine_max_*) or a "
                    "Cura .def.json (machine_width/depth/height, start/end G-code) into a printpipe "
                    "TOML profile, written where --printer finds it (the user profile folder, "
                    "$XDG_CONFIG_HOME/printpipe/printers) unless --out says otherwise. A filament "
                    "section becomes a material preset beside it. Slicer placeholders become "
                    "printpipe's; an unknown one is refused by name and nothing is written.",
    )
    imp.add_argument("file", help="PrusaSlicer .ini or Cura .def.json")
    imp.add_argument("--out", metavar="PATH", default=None,
                     help="where to write the profile (.toml file or folder; default: the user profile folder)")
    imp.add_argument("--id", dest="profile_id", metavar="ID", default=None,
                     help="id of the new profile for --printer (default: from the printer's name)")
    imp.add_argument("--preset", metavar="NAME", default=None,
                     help="the [printer:NAME] section of a PrusaSlicer bundle to import")
    imp.add_argument("--filament", metavar="NAME", default=None,
                     help="the [filament:NAME] section to import as a material preset")
    imp.add_argument("--print", dest="print_preset", metavar="NAME", default=None,
                     help="the [print:NAME] section whose speeds to use")
    imp.add_argument("--force", action="store_true", help="replace an existing profile of that id")
    imp.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                     help="show the full traceback on errors and debug logging")
    imp.set_defaults(func=run_import)
    return p


def run_import(args: argparse.Namespace) -> int:
    from printpipe.slicing.profile_import import import_profile, write_imported

    prof = import_profile(args.file, preset=args.preset, filament=args.filament,
                          print_preset=args.print_preset, profile_id=args.profile_id)
    printer_path, material_path = write_imported(prof, args.out, force=args.force)
    print(f"imported {prof.printer['name']} as printer {prof.printer_id!r}")
    print(f"wrote {printer_path}")
    if material_path is not None:
        print(f"wrote {material_path} (material {prof.material['name']!r})")
    for note in prof.notes:
        print(f"check: {note}")
    print(f"use: printpipe slice MODEL.stl --printer {printer_path if args.out else prof.printer_id}")
    return 0


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
