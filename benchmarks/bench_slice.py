"""Benchmark: printpipe's slicer against PrusaSlicer 2.5 (Debian ``prusa-slicer``) at equal settings.

For each model (the sample pelvis, a femur from the real pelvic CT when available, a torus) it
slices with both at the same settings -- Ender-3 bed and motion limits, 0.2 mm layers, 2 walls,
4 top / 3 bottom layers, 15 % grid infill at 45 degrees, 0.45 mm lines, the same speeds,
accelerations, jerk and retraction, supports off (and, with ``--supports``, on at the same
threshold angle, line pitch, z and xy gaps, no interface layers, from the bed only; the
skin/infill rules that PrusaSlicer leaves to defaults -- solid infill below 70 mm2, infill
anchors, no vertical-shell thickening, no support sheath -- are written out
explicitly from printpipe's config) -- and prints one table:

- slicing wall time (median of ``--repeat`` runs, after one warm-up run for ours, which compiles
  the numba kernels; PrusaSlicer's process start-up is included in its time);
- estimated print time and filament: ours (printpipe's ``;TIME:``), PrusaSlicer's own
  (``; estimated printing time (normal mode)``, ``; filament used [mm]``), and printpipe's
  estimator run on PrusaSlicer's G-code (the estimator checked on the same toolpaths);
- the ratios ours / PrusaSlicer;
- then the filament of each feature (walls, skin, sparse infill, supports) for both, from the
  ``;TYPE:`` labels of the two G-code files.

It also runs :func:`printpipe.slicing.gcode.check_inside_outline` on both slicers' G-code for the
torus (the acceptance check: both must keep every model extrusion inside the cross-section).

Setup: ``sh benchmarks/setup_peers.sh`` installs ``prusa-slicer`` with apt if it is missing
(``--install`` runs it). Models: ``--pelvis PATH`` (default ``out/demo/model.stl``, else made with
``printpipe run sample_dicom``), ``--femur PATH`` (default: ``out/bench/pelvic/parts/femur_*.stl``,
made from ``../shared/realdata/pelvic-ref003-ct`` with ``--make-femur``); a generated shape stands
in when the pelvis cannot be made.

Usage::

    .venv/bin/python benchmarks/bench_slice.py [--repeat 3] [--supports] [--make-femur]
"""

from __future__ import annotations

import argparse
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import trimesh

REPO = Path(__file__).resolve().parents[1]
REALDATA = REPO.parent / "shared" / "realdata"
sys.path.insert(0, str(REPO))

from printpipe.slicing.config import SliceConfig  # noqa: E402
from printpipe.slicing.estimate import estimate  # noqa: E402
from printpipe.slicing.printers import load_material, load_printer  # noqa: E402

PRINTER = "ender3"
MATERIAL = "PLA"
LINE_W = 0.45


# ------------------------------------------------------------------------------------------------
# models
# ------------------------------------------------------------------------------------------------

def find_pelvis(arg: str | None, workdir: Path) -> tuple[str, Path]:
    if arg:
        return "pelvis", Path(arg)
    demo = REPO / "out" / "demo" / "model.stl"
    if demo.is_file():
        return "pelvis", demo
    made = REPO / "out" / "bench" / "pelvis" / "model.stl"
    if made.is_file():
        return "pelvis", made
    sample = REPO / "sample_dicom"
    if sample.is_dir():
        print("making the sample pelvis with `printpipe run sample_dicom` ...", file=sys.stderr)
        r = subprocess.run([sys.executable, "-m", "printpipe.cli.main", "run", str(sample), "-o",
                            str(made.parent), "--no-report", "--quiet"], cwd=REPO)
        if r.returncode == 0 and made.is_file():
            return "pelvis", made
    print("no pelvis model available: using a generated test shape instead", file=sys.stderr)
    shape = trimesh.boolean.union([
        trimesh.creation.torus(major_radius=45, minor_radius=12),
        trimesh.creation.box(extents=(30, 110, 20)),
    ], engine="manifold")
    out = workdir / "shape.stl"
    shape.export(out)
    return "test shape", out


def find_femur(arg: str | None, make: bool) -> Path | None:
    if arg:
        return Path(arg)
    folder = REPO / "out" / "bench" / "pelvic" / "parts"
    found = sorted(folder.glob("femur_*.stl")) if folder.is_dir() else []
    if found:
        return found[0]
    src = REALDATA / "pelvic-ref003-ct"
    if make and src.is_dir():
        print("making a femur from the real pelvic CT (printpipe run) ...", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "printpipe.cli.main", "run", str(src), "-o",
                        str(folder.parent), "--no-report", "--quiet"], cwd=REPO)
        found = sorted(folder.glob("femur_*.stl")) if folder.is_dir() else []
        return found[0] if found else None
    return None


# ------------------------------------------------------------------------------------------------
# PrusaSlicer
# ------------------------------------------------------------------------------------------------

def prusa_ini(cfg: SliceConfig, printer, material, height_mm: float) -> str:
    """A PrusaSlicer config matching printpipe's settings for ``printer`` / ``material``."""
    r = cfg.resolved(printer, material)
    sp = r.speeds
    f, a, j = printer.max_feedrate_mm_s, printer.max_accel_mm_s2, printer.jerk_mm_s
    # PrusaSlicer's support line pitch is support_material_spacing + the flow spacing (which is
    # printpipe's spacing r.spacing: the same rounded-rectangle model); printpipe's is
    # spacing / density
    support_spacing = r.spacing / max(cfg.support_density, 1e-3) - r.spacing
    anchor = cfg.infill_anchor_mm if cfg.infill_anchor_mm is not None else 6 * r.line_width
    start = printer.render_start(material, relative_e=True)
    end = printer.render_end(material, max_layer_z_mm=height_mm)
    esc = lambda s: s.strip().replace("\n", "\\n")  # noqa: E731
    conf = {
        # printer
        "printer_technology": "FFF", "gcode_flavor": "marlin",
        "bed_shape": f"0x0,{printer.bed_x_mm:g}x0,{printer.bed_x_mm:g}x{printer.bed_y_mm:g},0x{printer.bed_y_mm:g}",
        "max_print_height": f"{printer.max_z_mm:g}", "nozzle_diameter": f"{printer.nozzle_mm:g}",
        "use_relative_e_distances": "1", "z_offset": "0",
        "machine_limits_usage": "time_estimate_only",
        "machine_max_feedrate_x": f"{f['x']:g}", "machine_max_feedrate_y": f"{f['y']:g}",
        "machine_max_feedrate_z": f"{f['z']:g}", "machine_max_feedrate_e": f"{f['e']:g}",
        "machine_max_acceleration_x": f"{a['x']:g}", "machine_max_acceleration_y": f"{a['y']:g}",
        "machine_max_acceleration_z": f"{a['z']:g}", "machine_max_acceleration_e": f"{a['e']:g}",
        "machine_max_acceleration_extruding": f"{a['print']:g}",
        "machine_max_acceleration_retracting": f"{a['retract']:g}",
        "machine_max_acceleration_travel": f"{a['travel']:g}",
        "machine_max_jerk_x": f"{j['x']:g}", "machine_max_jerk_y": f"{j['y']:g}",
        "machine_max_jerk_z": f"{j['z']:g}", "machine_max_jerk_e": f"{j['e']:g}",
        "machine_min_extruding_rate": "0", "machine_min_travel_rate": "0",
        "retract_length": f"{material.retract_mm:g}", "retract_speed": f"{material.retract_speed_mm_s:g}",
        "deretract_speed": "0", "retract_before_travel": f"{cfg.retract_min_travel_mm:g}",
        "retract_layer_change": "1", "retract_lift": "0", "wipe": "0", "retract_before_wipe": "0%",
        "start_gcode": esc(start), "end_gcode": esc(end),
        "before_layer_gcode": "", "layer_gcode": "G92 E0",
        # filament
        "filament_diameter": f"{printer.filament_diameter_mm:g}",
        "filament_density": f"{material.density_g_cm3:g}",
        "temperature": f"{material.hotend_c:g}", "first_layer_temperature": f"{material.first_layer_hotend_c:g}",
        "bed_temperature": f"{material.bed_c:g}", "first_layer_bed_temperature": f"{material.first_layer_bed_c:g}",
        "filament_max_volumetric_speed": f"{material.max_volumetric_mm3_s:g}",
        "cooling": "1", "fan_always_on": "1", "min_fan_speed": f"{material.fan_percent:g}",
        "max_fan_speed": f"{material.fan_percent:g}", "disable_fan_first_layers": "1",
        "slowdown_below_layer_time": "0", "fan_below_layer_time": "0", "min_print_speed": "10",
        # print
        "layer_height": f"{r.layer_height:g}", "first_layer_height": f"{r.first_layer_height:g}",
        "perimeters": str(cfg.walls), "top_solid_layers": str(cfg.top_layers),
        "bottom_solid_layers": str(cfg.bottom_layers), "fill_density": f"{cfg.infill_density * 100:g}%",
        "fill_pattern": "grid" if cfg.infill_pattern == "grid" else "rectilinear",
        "fill_angle": f"{cfg.infill_angle_deg:g}", "top_fill_pattern": "rectilinear",
        "bottom_fill_pattern": "rectilinear", "infill_every_layers": "1",
        "perimeter_generator": "classic", "thin_walls": "0", "gap_fill_enabled": "0",
        "extra_perimeters": "0", "ensure_vertical_shell_thickness": "0", "overhangs": "0",
        # skin and infill rules printpipe implements the same way (explicit, not left to defaults)
        "top_solid_min_thickness": "0", "bottom_solid_min_thickness": "0",
        "solid_infill_below_area": f"{cfg.solid_infill_below_area_mm2:g}",
        "solid_infill_every_layers": "0", "infill_overlap": "25%",
        "infill_anchor": f"{anchor:g}" if cfg.infill_connect_mm > 0 else "0",
        "infill_anchor_max": f"{cfg.infill_connect_mm:g}",
        "support_material_with_sheath": "0", "support_material_closing_radius": "0",
        "raft_layers": "0", "support_material_interface_contact_loops": "0",
        "seam_position": "aligned", "avoid_crossing_perimeters": "0",
        "only_retract_when_crossing_perimeters": "0", "infill_only_where_needed": "0",
        "extrusion_width": f"{LINE_W}", "first_layer_extrusion_width": f"{LINE_W}",
        "perimeter_extrusion_width": f"{LINE_W}", "external_perimeter_extrusion_width": f"{LINE_W}",
        "infill_extrusion_width": f"{LINE_W}", "solid_infill_extrusion_width": f"{LINE_W}",
        "top_infill_extrusion_width": f"{LINE_W}", "support_material_extrusion_width": f"{LINE_W}",
        "perimeter_speed": f"{sp['perimeter']:g}", "small_perimeter_speed": f"{sp['perimeter']:g}",
        "external_perimeter_speed": f"{sp['outer_wall']:g}", "infill_speed": f"{sp['infill']:g}",
        "solid_infill_speed": f"{sp['skin']:g}", "top_solid_infill_speed": f"{sp['skin']:g}",
        "gap_fill_speed": f"{sp['skin']:g}", "bridge_speed": f"{sp['skin']:g}",
        "support_material_speed": f"{sp['support']:g}",
        "support_material_interface_speed": f"{sp['support']:g}",
        "travel_speed": f"{sp['travel']:g}", "travel_speed_z": f"{printer.z_speed_mm_s:g}",
        "first_layer_speed": f"{sp['first_layer']:g}", "first_layer_speed_over_raft": f"{sp['first_layer']:g}",
        "default_acceleration": "0", "perimeter_acceleration": "0", "infill_acceleration": "0",
        "bridge_acceleration": "0", "first_layer_acceleration": "0",
        "skirts": str(cfg.skirt_loops), "skirt_distance": f"{cfg.skirt_distance_mm:g}",
        "skirt_height": "1", "min_skirt_length": "0", "brim_width": f"{cfg.brim_width_mm:g}",
        "support_material": "1" if cfg.support else "0",
        "support_material_auto": "1",
        # PrusaSlicer adds 1 degree to the threshold ("+1 makes the threshold inclusive"): ask for
        # one less so both use printpipe's angle from the horizontal
        "support_material_threshold": f"{max(90 - cfg.support_angle_deg - 1, 1):g}",
        "support_material_contact_distance": f"{cfg.support_z_gap_layers * r.layer_height:g}",
        "support_material_spacing": f"{support_spacing:.3f}",
        "support_material_xy_spacing": f"{cfg.support_xy_gap_mm:g}",
        "support_material_interface_layers": "0", "support_material_buildplate_only": "1",
        "support_material_style": "grid", "support_material_pattern": "rectilinear",
        "complete_objects": "0", "gcode_comments": "0", "gcode_label_objects": "0",
        "output_filename_format": "out.gcode",
    }
    return "".join(f"{k} = {v}\n" for k, v in conf.items())


def prusa_slice(model: Path, ini: Path, out: Path) -> float:
    cx, cy = load_printer(PRINTER).bed_center_mm
    t0 = time.perf_counter()
    r = subprocess.run(["prusa-slicer", "--export-gcode", "--load", str(ini), "--center",
                        f"{cx:g},{cy:g}", "--output", str(out), str(model)],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    dt = time.perf_counter() - t0
    if r.returncode != 0 or not out.is_file():
        raise RuntimeError(f"prusa-slicer failed ({r.returncode}): {r.stdout[-2000:]}")
    return dt


# PrusaSlicer's ;TYPE: names -> printpipe's
_PRUSA_TYPES = {"External perimeter": "WALL-OUTER", "Overhang perimeter": "WALL-OUTER",
                "Perimeter": "WALL-INNER", "Solid infill": "SKIN", "Top solid infill": "SKIN",
                "Bridge infill": "SKIN", "Gap fill": "SKIN", "Internal infill": "FILL",
                "Support material": "SUPPORT", "Support material interface": "SUPPORT",
                "Skirt/Brim": "SKIRT"}


def filament_by_type(text: str) -> dict:
    """Filament (mm) of the extruding XY moves of a G-code file by printpipe feature name
    (PrusaSlicer's names mapped; retractions and purge lines not counted)."""
    from printpipe.slicing.validate import parse_gcode

    pg = parse_gcode(text)
    sx = np.r_[pg.start_xyz[0], pg.x[:-1]]
    sy = np.r_[pg.start_xyz[1], pg.y[:-1]]
    moved = np.hypot(pg.x - sx, pg.y - sy) > 1e-6
    names = np.array(list(pg.types) + ["other"], dtype=object)[np.where(pg.type_id >= 0, pg.type_id, len(pg.types))]
    ext = moved & (pg.de > 0)
    out: dict = {}
    for name, de in zip(names[ext], pg.de[ext]):
        key = _PRUSA_TYPES.get(str(name), str(name))
        out[key] = out.get(key, 0.0) + float(de)
    return out


def prusa_figures(text: str) -> dict:
    def grab(pattern):
        m = re.search(pattern, text)
        return m.group(1).strip() if m else None

    t = grab(r"; estimated printing time \(normal mode\) = (.+)")
    secs = 0.0
    if t:
        for val, unit in re.findall(r"(\d+)([dhms])", t):
            secs += int(val) * {"d": 86400, "h": 3600, "m": 60, "s": 1}[unit]
    mm = grab(r"; filament used \[mm\] = ([\d.]+)")
    g = grab(r"; filament used \[g\] = ([\d.]+)")
    return {"time_s": secs if t else float("nan"), "filament_mm": float(mm) if mm else float("nan"),
            "filament_g": float(g) if g else float("nan")}


# ------------------------------------------------------------------------------------------------
# printpipe
# ------------------------------------------------------------------------------------------------

def ours_slice(model: Path, cfg: SliceConfig, out: Path):
    from printpipe.slicing import slice_file

    t0 = time.perf_counter()
    res = slice_file(model, PRINTER, MATERIAL, cfg, out)
    return time.perf_counter() - t0, res


def fit_to_bed(model: Path, printer, work: Path) -> Path:
    """The model turned about z (by printpipe's layout) so that it fits the bed as it is: both
    slicers then get the same geometry, and PrusaSlicer (which does not rotate) can place it.
    The bottom 0.3 mm is cut off flat: bone models touch the bed at a point, and PrusaSlicer
    refuses an object whose first layer holds no extrusion."""
    from printpipe.slicing import load_parts
    from printpipe.slicing.layout import layout

    parts = load_parts(model)
    mesh = trimesh.util.concatenate(list(parts.values()))
    (plate, *rest) = layout({"m": mesh}, printer)
    T = plate[0][1]
    out = work / f"{model.stem}-on-bed.stl"
    mesh = mesh.copy()
    mesh.apply_transform(T)
    z0 = float(mesh.bounds[0][2])
    cut = trimesh.intersections.slice_mesh_plane(mesh, plane_normal=[0, 0, 1],
                                                 plane_origin=[0, 0, z0 + 0.3], cap=True)
    if cut.is_watertight and len(cut.faces):
        mesh = cut
    mesh.export(out)
    return out


def mesh_in_gcode_frame_ours(model: Path):
    """The model as printpipe placed it (orient none + layout are deterministic)."""
    from printpipe.slicing import load_parts
    from printpipe.slicing.layout import layout

    parts = load_parts(model)
    plates = layout(parts, load_printer(PRINTER))
    meshes = []
    for name, T in plates[0]:
        m = parts[name].copy()
        m.apply_transform(T)
        meshes.append(m)
    return trimesh.util.concatenate(meshes)


def mesh_in_gcode_frame_prusa(model: Path, text: str):
    """The model where PrusaSlicer put it: bounding box centred on the outer walls' box, on z=0.

    PrusaSlicer centres the object on ``--center``; this recovers that translation from the
    G-code's own outer perimeters (x/y only), so a misplacement cannot hide a real error in z.
    """
    mesh = trimesh.load(model, force="mesh")
    xs, ys = [], []
    cur = None
    x = y = 0.0
    for line in text.splitlines():
        if line.startswith(";TYPE:"):
            cur = line[6:].strip()
            continue
        if line.startswith("G1") and "E" in line:
            for w in line.split(";")[0].split()[1:]:
                if w[0] == "X":
                    x = float(w[1:])
                elif w[0] == "Y":
                    y = float(w[1:])
            if cur == "External perimeter":
                xs.append(x)
                ys.append(y)
        elif line.startswith(("G1", "G0")):
            for w in line.split(";")[0].split()[1:]:
                if w[0] == "X":
                    x = float(w[1:])
                elif w[0] == "Y":
                    y = float(w[1:])
    lo, hi = mesh.bounds
    shift = np.array([(min(xs) + max(xs)) / 2 - (lo[0] + hi[0]) / 2,
                      (min(ys) + max(ys)) / 2 - (lo[1] + hi[1]) / 2, -lo[2]])
    mesh.apply_translation(shift)
    return mesh


# ------------------------------------------------------------------------------------------------
# main
# ------------------------------------------------------------------------------------------------

def main(argv=None) -> int:
    global PRINTER
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=3, help="timed runs per slicer and model (median)")
    ap.add_argument("--supports", action="store_true", help="also slice the pelvis with supports")
    ap.add_argument("--pelvis", default=None, help="pelvis STL (default out/demo/model.stl)")
    ap.add_argument("--femur", default=None, help="femur STL")
    ap.add_argument("--make-femur", action="store_true", help="run the pipeline on the real pelvic CT for a femur")
    ap.add_argument("--install", action="store_true", help="install prusa-slicer with apt if missing")
    ap.add_argument("--keep", default=None, help="folder to keep the G-code files in")
    ap.add_argument("--printer", default=PRINTER, help="printer profile with classic jerk (default ender3)")
    args = ap.parse_args(argv)
    PRINTER = args.printer

    if shutil.which("prusa-slicer") is None:
        if args.install:
            subprocess.run(["sh", str(REPO / "benchmarks" / "setup_peers.sh")], check=True)
        if shutil.which("prusa-slicer") is None:
            print("prusa-slicer is not installed: run `sh benchmarks/setup_peers.sh` (or --install)",
                  file=sys.stderr)
            return 2

    printer = load_printer(PRINTER)
    if printer.jerk_mm_s is None:
        print(f"{printer.id} uses junction deviation, which PrusaSlicer 2.5 cannot model; pick a "
              "classic-jerk printer", file=sys.stderr)
        return 2
    material = load_material(MATERIAL, printer)
    base = SliceConfig(orient="none", support=False)
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench_slice_"))
    work.mkdir(parents=True, exist_ok=True)

    models = [find_pelvis(args.pelvis, work)]
    femur = find_femur(args.femur, args.make_femur)
    if femur is None and (REPO / "out" / "bench" / "pelvic" / "femur_left.stl").is_file():
        femur = REPO / "out" / "bench" / "pelvic" / "femur_left.stl"
    if femur is not None:
        models.append(("femur", femur))
    else:
        print("no femur model (use --femur PATH or --make-femur): row skipped", file=sys.stderr)
    torus = work / "torus.stl"
    trimesh.creation.torus(major_radius=30, minor_radius=10).export(torus)
    models.append(("torus", torus))
    runs = [(name, path, base) for name, path in models]
    if args.supports:
        runs.insert(1, (models[0][0] + " +supports", models[0][1], base.replace(support=True)))

    rows = []
    checks = {}
    prepared: dict = {}
    for name, path, cfg in runs:
        if path not in prepared:
            prepared[path] = fit_to_bed(path, printer, work)
        path = prepared[path]
        mesh = trimesh.load(path, force="mesh")
        height = float(mesh.extents[2])
        tag = re.sub(r"\W+", "_", name)
        ini = work / f"{tag}.ini"
        ini.write_text(prusa_ini(cfg, printer, material, height))
        p_out = work / f"{tag}-prusa.gcode"
        o_out = work / f"{tag}-ours.gcode"
        ours_slice(path, cfg, o_out)  # warm-up (numba compile, caches)
        p_times, o_times = [], []
        for _ in range(max(1, args.repeat)):
            p_times.append(prusa_slice(path, ini, p_out))
            dt, res = ours_slice(path, cfg, o_out)
            o_times.append(dt)
        p_text = p_out.read_text()
        pf = prusa_figures(p_text)
        ours_on_prusa = estimate(p_text, printer, density_g_cm3=material.density_g_cm3)
        rows.append({
            "model": name, "facets": len(mesh.faces),
            "slice_ours_s": statistics.median(o_times), "slice_prusa_s": statistics.median(p_times),
            "time_ours_s": res.time_s, "time_prusa_s": pf["time_s"],
            "time_est_on_prusa_s": ours_on_prusa["time_s"],
            "fil_ours_mm": res.filament_mm, "fil_prusa_mm": pf["filament_mm"],
            "fil_est_on_prusa_mm": ours_on_prusa["filament_mm"],
            "g_ours": res.filament_g, "g_prusa": pf["filament_g"],
            "types_ours": filament_by_type(o_out.read_text()), "types_prusa": filament_by_type(p_text),
        })
        if name == "torus":
            from printpipe.slicing.gcode import check_inside_outline

            checks["prusa"] = check_inside_outline(p_text, mesh_in_gcode_frame_prusa(path, p_text), LINE_W)
            checks["ours"] = check_inside_outline(o_out.read_text(), mesh_in_gcode_frame_ours(path), LINE_W)

    def hm(s):
        m = int(round(s / 60))
        return f"{m // 60}:{m % 60:02d}"

    print(f"\nprintpipe vs PrusaSlicer 2.5 - {printer.name}, {material.name}, 0.2 mm, 2 walls, "
          f"15 % grid, median of {args.repeat} runs (same machine, same moment)")
    head = (f"{'model':<20}{'facets':>9}{'slice ours s':>14}{'prusa s':>9}{'ratio':>7}"
            f"{'time ours':>11}{'prusa':>8}{'ratio':>7}{'est(prusa gc)':>14}{'ratio':>7}"
            f"{'fil ours m':>12}{'prusa':>8}{'ratio':>7}{'g ours':>8}{'prusa':>7}")
    print(head)
    print("-" * len(head))
    for r in rows:
        print(f"{r['model']:<20}{r['facets']:>9}{r['slice_ours_s']:>14.2f}{r['slice_prusa_s']:>9.2f}"
              f"{r['slice_ours_s'] / r['slice_prusa_s']:>7.2f}"
              f"{hm(r['time_ours_s']):>11}{hm(r['time_prusa_s']):>8}{r['time_ours_s'] / r['time_prusa_s']:>7.3f}"
              f"{hm(r['time_est_on_prusa_s']):>14}{r['time_est_on_prusa_s'] / r['time_prusa_s']:>7.3f}"
              f"{r['fil_ours_mm'] / 1000:>12.2f}{r['fil_prusa_mm'] / 1000:>8.2f}"
              f"{r['fil_ours_mm'] / r['fil_prusa_mm']:>7.3f}{r['g_ours']:>8.1f}{r['g_prusa']:>7.1f}")
    print("\nest(prusa gc): printpipe's estimator on PrusaSlicer's G-code vs PrusaSlicer's own estimate")
    kinds = ("WALL-OUTER", "WALL-INNER", "SKIN", "FILL", "SUPPORT")
    print("\nfilament by feature, m (ours / PrusaSlicer = ratio); SKIN = PrusaSlicer's solid, top solid, "
          "bridge infill and gap fill")
    print(f"{'model':<20}" + "".join(f"{k:>24}" for k in kinds))
    for r in rows:
        cells = []
        for k in kinds:
            a, b = r["types_ours"].get(k, 0.0) / 1000, r["types_prusa"].get(k, 0.0) / 1000
            cells.append(f"{a:.2f} / {b:.2f} = {a / b:.3f}" if b > 0 else f"{a:.2f} / {b:.2f}")
        print(f"{r['model']:<20}" + "".join(f"{c:>24}" for c in cells))
    if checks:
        print("\ncheck_inside_outline on the torus (line width 0.45 mm):")
        for who, c in checks.items():
            ok = c["outside"] == 0
            print(f"  {who:<6} {'PASS' if ok else 'FAIL'}: {c['moves']} model extrusions, {c['outside']} "
                  f"outside (max {c['max_outside_mm']:.3f} mm), outer wall offset median "
                  f"{c['outer_wall_offset_median_mm']:.3f} mm, outline traced "
                  f"{c['outline_traced_fraction']:.3f}")
    print(f"\nG-code and configs in {work}")
    return 0 if all(c["outside"] == 0 for c in checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
