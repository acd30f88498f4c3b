"""Cost of what the printer shows: thumbnails, M73/M117 progress and M486 object labels.

Slices the demo case's parts once (orientation, layout and toolpaths as ``slice_parts`` does),
then writes each plate's G-code with the extras off, with each one alone and with all of them,
and reports the file size, the ``to_gcode`` CPU time and the validator's CPU time (medians of
``--repeat`` runs; CPU time, so that other processes on the machine do not distort it). Usage::

    .venv/bin/printpipe run sample_dicom -o out/demo --printer ender3    # or make demo
    .venv/bin/python benchmarks/bench_gcode_display.py out/demo/parts --printer ender3
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import trimesh


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("parts", nargs="?", default="out/demo/parts", help="folder of part STLs")
    ap.add_argument("--printer", default="ender3")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)

    from printpipe.slicing.config import SliceConfig
    from printpipe.slicing.gcode import to_gcode
    from printpipe.slicing.layout import layout
    from printpipe.slicing.orient import orient
    from printpipe.slicing.printers import load_material, load_printer
    from printpipe.slicing.toolpaths import slice_mesh
    from printpipe.slicing.validate import validate_gcode

    folder = Path(args.parts)
    files = sorted(folder.glob("*.stl"))
    if not files:
        print(f"no part STLs in {folder}; run `make demo` first", file=sys.stderr)
        return 1
    printer = load_printer(args.printer)
    material = load_material("PLA", printer)
    base = SliceConfig()
    oriented = {}
    for f in files:
        m = trimesh.load(f, force="mesh")
        rot, _ = orient(m, printer, "auto")
        m.apply_transform(np.asarray(rot, dtype=np.float64))
        oriented[f.stem] = m
    plates = []
    t0 = time.process_time()
    for plate in layout(oriented, printer):
        sliced = []
        for name, transform in plate:
            m = oriented[name].copy()
            m.apply_transform(np.asarray(transform, dtype=np.float64))
            sliced.append(slice_mesh(m, printer, material, base, name=name))
        plates.append(sliced)
    print(f"{len(files)} parts, {len(plates)} plates, toolpaths in {time.process_time() - t0:.1f} s "
          f"({printer.name}, thumbnails {', '.join(map(str, printer.thumbnails)) or 'none'})")

    variants = {
        "plain": dict(thumbnails=False, label_objects=False, progress_gcode=False),
        "+thumbnails": dict(thumbnails=True, label_objects=False, progress_gcode=False),
        "+M73/M117": dict(thumbnails=False, label_objects=False, progress_gcode=True),
        "+labels": dict(thumbnails=False, label_objects=True, progress_gcode=False),
        "all (default)": dict(thumbnails=True, label_objects=True, progress_gcode=True),
    }
    rows = []
    for name, flags in variants.items():
        cfg = base.replace(**flags)
        size = 0
        times, vtimes = [], []
        for _ in range(max(1, args.repeat)):
            t_all = v_all = 0.0
            size = 0
            for i, sliced in enumerate(plates, 1):
                t = time.process_time()
                text = to_gcode(sliced, printer, material, cfg, {"plate": f"{i} of {len(plates)}"})
                t_all += time.process_time() - t
                t = time.process_time()
                validate_gcode(text, printer, material)
                v_all += time.process_time() - t
                size += len(text.encode())
            times.append(t_all)
            vtimes.append(v_all)
        rows.append((name, size, statistics.median(times), statistics.median(vtimes)))
    plain = rows[0]
    print(f"{'G-code':<15}{'bytes':>13}{'vs plain':>10}{'to_gcode s':>12}{'vs plain':>10}{'validate s':>12}")
    for name, size, t, v in rows:
        print(f"{name:<15}{size:>13,}{100 * (size / plain[1] - 1):>9.2f}%{t:>12.2f}"
              f"{t - plain[2]:>+10.2f}{v:>12.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
