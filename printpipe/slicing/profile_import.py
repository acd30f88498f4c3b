"""Import the printer profile a hospital already has: PrusaSlicer ``.ini`` and Cura ``.def.json``.

:func:`import_profile` reads the file, resolves ``inherits`` and translates what printpipe uses
into a readable TOML printer profile (and, from a PrusaSlicer filament section, a material
preset); :func:`write_imported` writes them where :func:`~printpipe.slicing.printers.load_printer`
finds user profiles (``$XDG_CONFIG_HOME/printpipe/printers``), after loading the result once to
prove that it is a valid profile. ``printpipe printers import FILE`` is the command line.

PrusaSlicer files come in three shapes, all accepted:

* one exported config (*File > Export > Export Config*): ``key = value`` lines, no sections;
* a config bundle (*Export Config Bundle*): ``[printer:NAME]``, ``[filament:NAME]``,
  ``[print:NAME]`` sections and a ``[presets]`` section naming the selected ones;
* a vendor bundle (``resources/profiles/Creality.ini``): the same sections with abstract
  parents (``[printer:*common*]``) that presets name in ``inherits = *common*; *0.4nozzle*``.

Multi-line values are stored on one line with ``\\n`` escapes. Per-extruder values are comma
lists (the first extruder's value is used); ``machine_max_*`` values are "normal, silent" pairs
(the normal one is used).

Cura definitions (``resources/definitions/*.def.json``) keep printer settings under
``overrides`` (and, in base definitions, a nested ``settings`` tree), each with a
``default_value`` and sometimes a ``value``; a parent named in ``inherits`` is read when its file
lies beside the imported one.

Placeholders in start/end G-code become printpipe's (``[first_layer_temperature]`` and
``{material_print_temperature_layer_0}`` become ``{first_layer_hotend_c}``); conditionals and
arithmetic (``{if max_layer_z < max_print_height}G1 Z{min(max_layer_z + 2, max_print_height)}{endif}``)
are kept in printpipe's template language. A placeholder printpipe has no value for is refused
by name, in one line, and nothing is written.

What neither format records -- the firmware's temperature limits -- gets conservative defaults
(nozzle 250 C, bed 100 C, or the highest temperature the file's own filament uses), listed at
the top of the TOML so the user can check them against the firmware (``M503``,
``HEATER_0_MAXTEMP``).
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import math
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

from printpipe.errors import PrinterError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

log = logging.getLogger(__name__)

__all__ = ["ImportedProfile", "import_profile", "write_imported", "translate_gcode"]

# PrusaSlicer placeholder -> printpipe template value (None: a per-file constant, see _constants)
PRUSA_NAMES = {
    "first_layer_temperature": "first_layer_hotend_c",
    "temperature": "hotend_c",
    "first_layer_bed_temperature": "first_layer_bed_c",
    "bed_temperature": "bed_c",
    "max_layer_z": "max_layer_z_mm",
    "layer_z": "max_layer_z_mm",
    "max_print_height": "max_z_mm",
    "nozzle_diameter": "nozzle_mm",
    "filament_diameter": "filament_diameter_mm",
    "printer_model": "printer_model",
    "layer_height": "layer_height_mm",
    "first_layer_height": "first_layer_height_mm",
    "total_layer_count": "layer_count",
    "retract_length": "retract_mm",
    "filament_type": "material",
    "initial_extruder": None,
    "current_extruder": None,
    "initial_tool": None,
    "z_offset": None,
    "print_bed_max": None,
    "print_bed_min": None,
    "print_bed_size": None,
}
# Cura setting -> printpipe template value
CURA_NAMES = {
    "material_print_temperature": "hotend_c",
    "material_print_temperature_layer_0": "first_layer_hotend_c",
    "material_initial_print_temperature": "first_layer_hotend_c",
    "material_bed_temperature": "bed_c",
    "material_bed_temperature_layer_0": "first_layer_bed_c",
    "machine_width": "bed_x_mm",
    "machine_depth": "bed_y_mm",
    "machine_height": "max_z_mm",
    "machine_nozzle_size": "nozzle_mm",
    "material_diameter": "filament_diameter_mm",
    "layer_height": "layer_height_mm",
    "layer_height_0": "first_layer_height_mm",
    "retraction_amount": "retract_mm",
    "material_type": "material",
    "speed_travel": "travel_speed_mm_s",
    "machine_name": "name",
    "initial_extruder_nr": None,
    # legacy names that older Cura definitions still carry
    "print_temperature": "hotend_c",
    "print_bed_temperature": "bed_c",
    "travel_speed": "travel_speed_mm_s",
}
_KEYWORDS = {"if", "elsif", "else", "endif", "and", "or", "not", "true", "false", "min", "max",
             "abs", "round", "int"}
_PRUSA_FLAVORS = {"marlin": "marlin", "marlinlegacy": "marlin", "marlin2": "marlin2",
                  "klipper": "klipper", "reprap": "reprap", "reprapfirmware": "reprap"}
_CURA_FLAVORS = {"RepRap (Marlin/Sprinter)": "marlin", "RepRap (RepRap)": "reprap"}
DEFAULT_MAX_HOTEND_C = 250.0
DEFAULT_MAX_BED_C = 100.0
DEFAULT_MIN_HOTEND_C = 170.0


@dataclass
class ImportedProfile:
    """A translated profile, not yet written.

    Attributes
    ----------
    printer_id : str
        File stem and ``--printer`` name of the new profile.
    printer : dict
        The TOML keys of the printer profile.
    material : dict or None
        The TOML keys of a material preset (PrusaSlicer filament section), with ``name``.
    notes : list of str
        What was assumed or left out (also written as comments into the TOML).
    source : str
        ``"PrusaSlicer"`` or ``"Cura"``, and the preset names read.
    """

    printer_id: str
    printer: dict
    material: dict | None = None
    notes: list = field(default_factory=list)
    source: str = ""
    extra_comments: list = field(default_factory=list)

    def printer_toml(self) -> str:
        """The printer profile as commented TOML."""
        head = [f"# {self.printer.get('name', self.printer_id)} -- printpipe printer profile (TOML), "
                f"imported by `printpipe printers import` from {self.source}",
                f"# on {_dt.date.today().isoformat()}. Units: mm, mm/s, mm/s^2, deg C. Edit freely; "
                "`printpipe printers` lists it and --printer "
                f"{self.printer_id} uses it."]
        if self.notes:
            head.append("#")
            head.append("# Check these (not in the source file, or changed on import):")
            head.extend(f"#   - {n}" for n in self.notes)
        if self.extra_comments:
            head.append("#")
            head.extend(f"# {c}" for c in self.extra_comments)
        return "\n".join(head) + "\n\n" + _toml(self.printer, _PRINTER_ORDER)

    def material_toml(self) -> str | None:
        """The material preset as commented TOML, or ``None``."""
        if self.material is None:
            return None
        head = (f"# {self.material['name']} -- printpipe material preset, imported from {self.source}.\n"
                "# Temperatures in deg C; use it with --material "
                f"{_slug(self.material['name'])}\n\n")
        return head + _toml(self.material, _MATERIAL_ORDER)


# ------------------------------------------------------------------------------------------------
# public functions
# ------------------------------------------------------------------------------------------------

def import_profile(path: "str | Path", *, preset: str | None = None, filament: str | None = None,
                   print_preset: str | None = None, profile_id: str | None = None) -> ImportedProfile:
    """Translate a PrusaSlicer ``.ini`` or Cura ``.def.json`` printer profile.

    Parameters
    ----------
    path : path
        The profile file.
    preset, filament, print_preset : str, optional
        Which ``[printer:...]``, ``[filament:...]`` and ``[print:...]`` sections of a PrusaSlicer
        bundle to read (default: the ones its ``[presets]`` section selects, or the only one).
    profile_id : str, optional
        Id of the new profile (default: from the printer's name).

    Returns
    -------
    ImportedProfile

    Raises
    ------
    PrinterError
        Unreadable file, unknown format, missing bed size, unsupported firmware flavour or bed
        shape, or a G-code placeholder printpipe does not know (named in the message).
    """
    path = Path(path)
    if not path.is_file():
        raise PrinterError(f"profile file {str(path)!r} does not exist; give the path of a PrusaSlicer "
                           ".ini or a Cura .def.json file")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise PrinterError(f"cannot read {path.name!r} ({exc}); export the profile again as UTF-8 text") from exc
    name = path.name.lower()
    if name.endswith(".json"):
        prof = _from_cura(path, text)
    elif name.endswith(".ini") or name.endswith(".cfg"):
        prof = _from_prusa(path, text, preset, filament, print_preset)
    else:
        raise PrinterError(f"{path.name!r} is neither a PrusaSlicer .ini nor a Cura .def.json file; "
                           "export the printer profile from the slicer and import that")
    if profile_id:
        if not re.fullmatch(r"[a-z0-9][a-z0-9_.+-]{0,63}", profile_id):
            raise PrinterError(f"--id {profile_id!r} is not a usable profile id; use lower-case letters, "
                               "digits and - (e.g. ward3-ender3)")
        prof.printer_id = profile_id
    prof.printer["id"] = prof.printer_id
    prof.notes = _merge_limit_notes(prof.notes)
    return prof


def _merge_limit_notes(notes: list) -> list:
    """One note for all motion limits that were not in the file, instead of one per axis."""
    pat = re.compile(r"^(max_feedrate_mm_s|max_accel_mm_s2|jerk_mm_s)\.(\w+): (\S+) \((\S+) not in the file\)$")
    missing = [m for m in map(pat.match, notes) if m]
    if len(missing) < 2:
        return notes
    rest = [n for n in notes if not pat.match(n)]
    shown = ", ".join(f"{m.group(1)}.{m.group(2)} = {m.group(3)}" for m in missing)
    return [f"motion limits not in the file, printpipe defaults (M503 shows the firmware's): {shown}"] + rest


def write_imported(prof: ImportedProfile, out: "str | Path | None" = None, *, force: bool = False,
                   material_dir: "str | Path | None" = None) -> tuple[Path, Path | None]:
    """Write an imported profile (and its material), after checking that it loads.

    Parameters
    ----------
    prof : ImportedProfile
    out : path, optional
        The printer ``.toml`` file, or a folder for ``<id>.toml``; default
        :func:`~printpipe.slicing.printers.user_printers_dir`.
    force : bool
        Replace existing files.
    material_dir : path, optional
        Folder of the material preset (default
        :func:`~printpipe.slicing.printers.user_materials_dir`).

    Returns
    -------
    (Path, Path or None)
        The printer profile and the material preset written.

    Raises
    ------
    PrinterError
        A file exists (without ``force``), a built-in printer has the same id, or the translated
        profile does not load (nothing is written then).
    """
    from printpipe._atomic import atomic_path
    from printpipe.slicing import printers as P

    if out is None:
        target = P.user_printers_dir() / f"{prof.printer_id}.toml"
    else:
        out = Path(out).expanduser()
        target = out / f"{prof.printer_id}.toml" if out.is_dir() or not out.suffix else out
    if target.suffix.lower() != ".toml":
        raise PrinterError(f"--out {str(target)!r} should be a folder or end in .toml")
    if P._norm(target.stem) in P._builtin_printer_files():
        raise PrinterError(f"{target.stem!r} is the id of a built-in printer; choose another with --id")
    if target.exists() and not force:
        raise PrinterError(f"{str(target)!r} already exists; pass --force to replace it or --id to "
                           "import under another name")
    mat_target = None
    mat_text = prof.material_toml()
    if mat_text is not None:
        mdir = Path(material_dir).expanduser() if material_dir else (
            target.parent if out is not None else P.user_materials_dir())
        mat_target = mdir / f"{_slug(prof.material['name'])}.toml"
        if mat_target.exists() and not force:
            raise PrinterError(f"{str(mat_target)!r} already exists; pass --force to replace it")
    target.parent.mkdir(parents=True, exist_ok=True)
    text = prof.printer_toml()
    with atomic_path(target, suffix=".toml") as tmp:
        tmp.write_text(text, encoding="utf-8")
        printer = P._load_printer_file(tmp)  # validates fields and renders the templates
    if mat_target is not None:
        mat_target.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(mat_target, suffix=".toml") as tmp:
            tmp.write_text(mat_text, encoding="utf-8")
            P.load_material(tmp, printer)
    return target, mat_target


def translate_gcode(code: str, names: dict, constants: dict, *, where: str, style: str) -> str:
    """Turn a slicer's G-code template into printpipe's (see the module docstring).

    Parameters
    ----------
    code : str
    names : dict
        Slicer placeholder -> printpipe value name (``None``: look it up in ``constants``).
    constants : dict
        Values fixed at import (``z_offset``, ``initial_extruder``, ``print_bed_max[0]``...).
    where : str
        For messages (``"start_gcode of 'Creality Ender-3'"``).
    style : {"prusa", "cura"}

    Raises
    ------
    PrinterError
        A placeholder or operator printpipe does not know, named.
    """
    known = ", ".join(sorted(names))

    def unknown(what: str) -> PrinterError:
        return PrinterError(f"{where} uses {what}, which printpipe cannot fill; replace it in the profile "
                            f"with plain G-code, or use one of: {known}")

    def ident(name: str, index: str | None, shown: str) -> str:
        key = f"{name}[{index}]" if index is not None else name
        if key in constants:
            return _literal(constants[key])
        if name not in names:
            raise unknown(shown)
        mapped = names[name]
        if mapped is None:
            if name in constants:
                return _literal(constants[name])
            raise unknown(shown)
        return mapped

    def expr(body: str, shown: str) -> str:
        if re.search(r"=~|\blocal\b|\bglobal\b|[?:]", body):
            raise unknown(shown)
        body = body.replace("&&", " and ").replace("||", " or ").replace("<>", "!=")
        body = re.sub(r"!(?!=)", " not ", body)
        out, pos = [], 0
        token = re.compile(r'"(?:[^"\\]|\\.)*"|([A-Za-z_]\w*)(?:\s*\[\s*([^\]]*?)\s*\])?|(\[)')
        for m in token.finditer(body):
            out.append(body[pos:m.start()])
            pos = m.end()
            if m.group(3):
                raise unknown(shown)
            name = m.group(1)
            if name is None:
                out.append(m.group(0))
                continue
            index = m.group(2)
            if name in _KEYWORDS and index is None:
                out.append(name)
                continue
            if style == "cura" and index is None and name in names:
                out.append(ident(name, None, shown))
                continue
            if index is not None and index in ("initial_extruder", "current_extruder", "initial_tool", "0"):
                if f"{name}[{index}]" not in constants and name not in ("print_bed_max", "print_bed_min",
                                                                         "print_bed_size"):
                    index = None
            out.append(ident(name, index, shown))
        out.append(body[pos:])
        return re.sub(r" {2,}", " ", "".join(out)).strip()

    result, pos = [], 0
    pattern = (re.compile(r"\{([^{}\n]*)\}|\[([A-Za-z_]\w*?)(?:_(\d+))?\]") if style == "prusa"
               else re.compile(r"\{([^{}\n]*)\}"))
    for m in pattern.finditer(code):
        result.append(code[pos:m.start()])
        pos = m.end()
        shown = m.group(0)
        if m.group(1) is None:  # PrusaSlicer legacy [name] / [name_0]
            name, idx = m.group(2), m.group(3)
            if name not in names and idx is not None and f"{name}_{idx}" in names:
                name, idx = f"{name}_{idx}", None
            result.append("{" + ident(name, None, shown) + "}")
            continue
        body = m.group(1).strip()
        if style == "cura":
            body = re.sub(r"^([A-Za-z_]\w*)\s*,\s*\d+$", r"\1", body)  # {name, extruder}
        head = body.split(None, 1)
        if body in ("else", "endif"):
            result.append("{" + body + "}")
        elif head and head[0] in ("if", "elsif") and len(head) == 2:
            result.append("{" + head[0] + " " + expr(head[1], shown) + "}")
        else:
            result.append("{" + expr(body, shown) + "}")
    result.append(code[pos:])
    return "".join(result)


# ------------------------------------------------------------------------------------------------
# PrusaSlicer
# ------------------------------------------------------------------------------------------------

def _parse_ini(text: str, src: str) -> dict:
    """``{section: {key: value}}``; keys before any section go to ``""``."""
    sections: dict[str, dict] = {"": {}}
    cur = sections[""]
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            cur = sections.setdefault(line[1:-1].strip(), {})
            continue
        if "=" not in line:
            raise PrinterError(f"{src} line {n} is not 'key = value' ({line[:40]!r}); is this a "
                               "PrusaSlicer .ini export?")
        k, v = line.split("=", 1)
        cur[k.strip()] = v.strip()
    return sections


def _unescape(v: str) -> str:
    if len(v) >= 2 and v[0] == '"' and v[-1] == '"':
        v = v[1:-1]
    return re.sub(r"\\(.)", lambda m: {"n": "\n", "t": "\t", "r": ""}.get(m.group(1), m.group(1)), v)


def _resolve(sections: dict, kind: str, name: str, src: str, notes: list, seen=()) -> dict:
    data = sections[f"{kind}:{name}"]
    merged: dict = {}
    parents = [p.strip() for p in data.get("inherits", "").split(";") if p.strip()]
    for parent in parents:
        if parent in seen:
            raise PrinterError(f"{kind} preset {name!r} of {src} inherits from itself through {parent!r}; "
                               "fix the inherits chain")
        if f"{kind}:{parent}" not in sections:
            notes.append(f"{kind} preset {name!r} inherits {parent!r}, which is not in the file; only "
                         "the values written in the preset itself were used")
            continue
        merged.update(_resolve(sections, kind, parent, src, notes, (*seen, name)))
    merged.update({k: v for k, v in data.items() if k != "inherits"})
    return merged


def _pick(sections: dict, kind: str, wanted: str | None, src: str, required: bool) -> str | None:
    names = [s.split(":", 1)[1] for s in sections if s.startswith(f"{kind}:")]
    concrete = [n for n in names if not (n.startswith("*") and n.endswith("*"))]
    if wanted is not None:
        if wanted not in names:
            raise PrinterError(f"{src} has no {kind} preset {wanted!r}; choose one of "
                               f"{', '.join(concrete) or '(none)'}")
        return wanted
    selected = sections.get("presets", {}).get(kind)
    if selected in names:
        return selected
    if len(concrete) == 1:
        return concrete[0]
    if not concrete:
        if required:
            raise PrinterError(f"{src} holds no printer preset; export the printer profile from PrusaSlicer "
                               "(File > Export > Export Config) and import that")
        return None
    if not required:
        return None
    opt = {"printer": "--preset", "filament": "--filament", "print": "--print"}[kind]
    shown = ", ".join(repr(n) for n in concrete[:8]) + (" ..." if len(concrete) > 8 else "")
    raise PrinterError(f"{src} holds {len(concrete)} {kind} presets; choose one with {opt} NAME "
                       f"({shown})")


def _first(v, default=None):
    if v is None or str(v).strip() == "":
        return default
    s = str(v).split(",")[0].strip()
    return s if s not in ("nil", "") else default


def _num(v, default=None) -> float | None:
    s = _first(v)
    if s is None:
        return default
    if s.endswith("%"):
        return default
    try:
        x = float(s)
    except ValueError:
        return default
    return x if math.isfinite(x) else default


def _from_prusa(path: Path, text: str, preset, filament, print_preset) -> ImportedProfile:
    src = repr(path.name)
    sections = _parse_ini(text, src)
    notes: list[str] = []
    flat = sections[""]
    if any(s.startswith("printer:") for s in sections):
        pname = _pick(sections, "printer", preset, src, True)
        pr = _resolve(sections, "printer", pname, src, notes)
        fname = _pick(sections, "filament", filament, src, False)
        fi = _resolve(sections, "filament", fname, src, notes) if fname else {}
        tname = _pick(sections, "print", print_preset, src, False)
        pp = _resolve(sections, "print", tname, src, notes) if tname else {}
    else:
        if "bed_shape" not in flat:
            raise PrinterError(f"{src} has no bed_shape and no [printer:...] section; export the printer "
                               "profile from PrusaSlicer (File > Export > Export Config)")
        pr = fi = pp = flat
        pname = flat.get("printer_settings_id") or path.stem.split(".")[0]
        fname = flat.get("filament_settings_id") or ("filament" if "temperature" in flat else None)
        fname = _unescape(fname).strip('"') if fname else None
        tname = _unescape(flat["print_settings_id"]) if flat.get("print_settings_id") else None
        pname = _unescape(pname).strip('"')
    where = f"printer preset {pname!r}"
    printer: dict = {"name": pname}

    # bed
    shape = pr.get("bed_shape")
    if not shape:
        raise PrinterError(f"{where} of {src} has no bed_shape; add it (e.g. bed_shape = 0x0,220x0,220x220,0x220)")
    try:
        pts = [tuple(float(c) for c in p.strip().split("x")) for p in shape.split(",") if p.strip()]
    except ValueError:
        raise PrinterError(f"bed_shape {shape!r} of {src} is not a list of XxY points") from None
    xs, ys = sorted({p[0] for p in pts}), sorted({p[1] for p in pts})
    if len(pts) != 4 or len(xs) != 2 or len(ys) != 2:
        raise PrinterError(f"bed_shape {shape!r} of {src} is not a rectangle; printpipe supports "
                           "rectangular beds only (round delta beds are not supported)")
    (x0, x1), (y0, y1) = xs, ys
    if abs(x0 + x1) < 1e-6 and abs(y0 + y1) < 1e-6 and x0 < 0:
        printer.update(bed_x_mm=x1 - x0, bed_y_mm=y1 - y0, origin="center")
    elif -20 <= x0 <= 0 and -20 <= y0 <= 0:
        printer.update(bed_x_mm=x1, bed_y_mm=y1, origin="corner")
        if x0 < 0:
            printer["min_x_mm"] = x0
        if y0 < 0:
            printer["min_y_mm"] = y0
            notes.append(f"bed_shape starts at y = {y0:g}: parts are placed at y >= 0, the strip below "
                         "is allowed only for purge lines (min_y_mm)")
    else:
        raise PrinterError(f"bed_shape {shape!r} of {src} starts at ({x0:g}, {y0:g}); printpipe needs "
                           "the origin at the front-left corner or the centre of the bed")
    height = _num(pr.get("max_print_height"))
    if not height or height <= 0:
        raise PrinterError(f"{where} of {src} has no max_print_height; add the printer's build height in mm")
    printer["max_z_mm"] = height
    printer["nozzle_mm"] = _num(pr.get("nozzle_diameter"), 0.4)
    printer["filament_diameter_mm"] = _num(fi.get("filament_diameter"), 1.75)
    if fi.get("filament_diameter") is None:
        notes.append("filament_diameter_mm = 1.75 (no filament section)")
    flavor = str(pr.get("gcode_flavor", "marlin2")).strip()
    if flavor not in _PRUSA_FLAVORS:
        raise PrinterError(f"gcode_flavor {flavor!r} of {src} is not supported; printpipe writes G-code "
                           "for Marlin, Marlin 2, Klipper and RepRapFirmware")
    printer["flavor"] = _PRUSA_FLAVORS[flavor]
    model = re.sub(r"[^A-Za-z0-9_.+-]", "", str(pr.get("printer_model", "")))[:32]
    if model:
        printer["printer_model"] = model

    # motion limits
    def lim(key, default, what):
        v = _num(pr.get(key))
        if v is None or v <= 0:
            notes.append(f"{what}: {default:g} ({key} not in the file)")
            return default
        return v

    printer["max_feedrate_mm_s"] = {a: lim(f"machine_max_feedrate_{a}", d, f"max_feedrate_mm_s.{a}")
                                    for a, d in (("x", 200.0), ("y", 200.0), ("z", 5.0), ("e", 25.0))}
    acc = {a: lim(f"machine_max_acceleration_{a}", d, f"max_accel_mm_s2.{a}")
           for a, d in (("x", 500.0), ("y", 500.0), ("z", 100.0), ("e", 5000.0))}
    acc["print"] = lim("machine_max_acceleration_extruding", 500.0, "max_accel_mm_s2.print")
    acc["retract"] = lim("machine_max_acceleration_retracting", acc["print"], "max_accel_mm_s2.retract")
    travel = _num(pr.get("machine_max_acceleration_travel"))
    acc["travel"] = travel if travel and travel > 0 else acc["print"]
    printer["max_accel_mm_s2"] = acc
    jd = _num(pr.get("machine_max_junction_deviation"))
    if jd and 0 < jd < 1 and printer["flavor"] == "marlin2":
        printer["junction_deviation_mm"] = jd
    else:
        printer["jerk_mm_s"] = {a: lim(f"machine_max_jerk_{a}", d, f"jerk_mm_s.{a}")
                                for a, d in (("x", 10.0), ("y", 10.0), ("z", 0.3), ("e", 5.0))}
    if str(pr.get("machine_limits_usage", "")).strip() == "ignore":
        notes.append("the PrusaSlicer profile ignores machine limits (machine_limits_usage = ignore); "
                     "the limits above only shape the time estimate")

    # temperatures: neither format records the firmware's limits
    temps = [_num(fi.get(k)) for k in ("temperature", "first_layer_temperature")]
    beds = [_num(fi.get(k)) for k in ("bed_temperature", "first_layer_bed_temperature")]
    _limits(printer, [t for t in temps if t], [b for b in beds if b], notes)

    printer["retract_mm"] = _num(pr.get("retract_length"), 1.0)
    printer["retract_speed_mm_s"] = _num(pr.get("retract_speed"), 35.0)

    # speeds from the print section
    perim = _num(pp.get("perimeter_speed"), 45.0)
    z_lim = printer["max_feedrate_mm_s"]["z"]
    printer.update(
        print_speed_mm_s=perim,
        outer_wall_speed_mm_s=_speed(pp.get("external_perimeter_speed"), perim, 25.0),
        infill_speed_mm_s=_num(pp.get("infill_speed"), 60.0),
        support_speed_mm_s=_num(pp.get("support_material_speed"), 50.0),
        first_layer_speed_mm_s=_speed(pp.get("first_layer_speed"), perim, 20.0),
        travel_speed_mm_s=_num(pp.get("travel_speed"), 150.0),
        z_speed_mm_s=min(z_lim, _num(pp.get("travel_speed_z"), 0.0) or z_lim),
    )
    if not pp:
        notes.append("speeds: printpipe defaults (no print section in the file)")

    # thumbnails
    thumbs = _prusa_thumbnails(pr, notes)
    if thumbs:
        printer["thumbnails"] = thumbs

    # G-code
    constants = _prusa_constants(printer, pr)
    gc = {}
    for key in ("start_gcode", "end_gcode"):
        raw = _unescape(pr.get(key, ""))
        gc[key] = translate_gcode(raw, PRUSA_NAMES, constants, where=f"{key} of {where}", style="prusa")
    relative = str(pr.get("use_relative_e_distances", pp.get("use_relative_e_distances", "1"))).strip() != "0"
    printer["start_gcode"], printer["end_gcode"] = _fix_gcode(gc["start_gcode"], gc["end_gcode"],
                                                              relative, notes)
    for key in ("before_layer_gcode", "layer_gcode", "toolchange_gcode", "color_change_gcode"):
        code = _unescape(pr.get(key, ""))
        if re.sub(r"(?m)^\s*;.*$", "", code).strip():
            notes.append(f"{key} was not imported (printpipe has no per-layer custom G-code): {code[:60]!r}")
    printer["source"] = f"PrusaSlicer preset {pname!r} from {path.name}"

    extra = []
    if pp:
        hint = [f"{k} = {pp[k]}" for k in ("layer_height", "perimeters", "fill_density", "support_material")
                if k in pp]
        if hint:
            extra.append(f"print preset {tname!r}: {', '.join(hint)} (printpipe takes these from "
                         "--layer-height, --walls, --infill, --supports)")
    material = _prusa_material(fi, fname, printer) if fname and fi else None
    return ImportedProfile(printer_id=_slug(pname), printer=printer, material=material, notes=notes,
                           source=f"{path.name} (PrusaSlicer)", extra_comments=extra)


def _speed(v, base: float, default: float) -> float:
    s = _first(v)
    if s is None:
        return default
    if s.endswith("%"):
        try:
            return base * float(s[:-1]) / 100.0
        except ValueError:
            return default
    x = _num(s, default)
    return x if x and x > 0 else default


def _prusa_thumbnails(pr: dict, notes: list) -> list:
    raw = str(pr.get("thumbnails", "")).strip()
    if not raw:
        return []
    fmt_all = str(pr.get("thumbnails_format", "PNG")).strip().upper() or "PNG"
    out = []
    for item in raw.split(","):
        item = item.strip()
        if not item:
            continue
        size, _, fmt = item.partition("/")
        fmt = (fmt or fmt_all).strip().upper()
        if fmt in ("QOI", "BTT_TFT"):
            notes.append(f"thumbnail {size} was {fmt} in PrusaSlicer; printpipe writes PNG")
            fmt = "PNG"
        out.append(f"{size.strip()}/{'JPG' if fmt == 'JPEG' else fmt}")
    return out


def _prusa_constants(printer: dict, pr: dict) -> dict:
    bx, by = printer["bed_x_mm"], printer["bed_y_mm"]
    lo = (-bx / 2, -by / 2) if printer["origin"] == "center" else (0.0, 0.0)
    z_off = _num(pr.get("z_offset"), 0.0)
    return {"z_offset": z_off, "initial_extruder": 0, "current_extruder": 0, "initial_tool": 0,
            "print_bed_max[0]": lo[0] + bx, "print_bed_max[1]": lo[1] + by,
            "print_bed_min[0]": lo[0], "print_bed_min[1]": lo[1],
            "print_bed_size[0]": bx, "print_bed_size[1]": by}


def _prusa_material(fi: dict, fname: str, printer: dict) -> dict | None:
    t = _num(fi.get("temperature"))
    b = _num(fi.get("bed_temperature"))
    if t is None or b is None:
        return None
    t0 = _num(fi.get("first_layer_temperature"), t)
    b0 = _num(fi.get("first_layer_bed_temperature"), b)
    kind = str(_first(fi.get("filament_type"), "")).upper()
    mat: dict = {"name": _clean_name(fname)}
    fan = _num(fi.get("max_fan_speed"), 100.0)
    if str(fi.get("fan_always_on", "1")).strip() == "0" and str(fi.get("cooling", "1")).strip() == "0":
        fan = 0.0
    vol = _num(fi.get("filament_max_volumetric_speed"), 0.0)
    from printpipe.slicing.printers import list_materials

    base = {m.name.upper(): m for m in list_materials()}.get(kind)
    lo_t, hi_t = (base.hotend_range_c if base else (min(t, t0) - 10, max(t, t0) + 10))
    lo_b, hi_b = (base.bed_range_c if base else (0.0, max(b, b0) + 10))
    if base is not None:
        mat["inherits"] = base.name
    mat.update(
        source=f"PrusaSlicer filament preset {fname!r}",
        density_g_cm3=_num(fi.get("filament_density"), base.density_g_cm3 if base else 1.24) or 1.24,
        hotend_c=t, first_layer_hotend_c=t0, bed_c=b, first_layer_bed_c=b0,
        hotend_range_c=[min(lo_t, t, t0), max(hi_t, t, t0)], bed_range_c=[min(lo_b, b, b0), max(hi_b, b, b0)],
        fan_percent=min(max(fan, 0.0), 100.0), first_layer_fan_percent=0.0,
        max_volumetric_mm3_s=vol if vol and vol > 0 else (base.max_volumetric_mm3_s if base else 11.0),
    )
    return mat


# ------------------------------------------------------------------------------------------------
# Cura
# ------------------------------------------------------------------------------------------------

def _cura_values(path: Path, notes: list, seen=()) -> tuple[dict, str]:
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except (OSError, ValueError) as exc:
        raise PrinterError(f"{path.name!r} is not a readable Cura definition ({exc}); export it again") from exc
    if not isinstance(data, dict) or not ("overrides" in data or "settings" in data):
        raise PrinterError(f"{path.name!r} has neither 'overrides' nor 'settings'; is it a Cura "
                           ".def.json printer definition?")
    values: dict = {}
    parent = data.get("inherits")
    if isinstance(parent, str) and parent:
        pfile = path.with_name(f"{parent}.def.json")
        if parent in seen:
            raise PrinterError(f"{path.name!r} inherits from itself through {parent!r}; fix 'inherits'")
        if pfile.is_file():
            values.update(_cura_values(pfile, notes, (*seen, path.name.split(".")[0]))[0])
        elif parent != "fdmprinter":
            notes.append(f"inherits {parent!r}, whose file is not beside the imported one; only the "
                         "values written in the file itself were used")

    def walk(tree: dict) -> None:
        for key, entry in tree.items():
            if not isinstance(entry, dict):
                continue
            val = entry.get("default_value")
            expr = entry.get("value")
            if expr is not None:
                lit = _cura_literal(expr)
                if lit is not None:
                    val = lit
                elif val is None:
                    notes.append(f"{key} = {expr!r} is a Cura formula; not evaluated")
            if val is not None:
                values[key] = val
            if isinstance(entry.get("children"), dict):
                walk(entry["children"])

    if isinstance(data.get("settings"), dict):
        walk(data["settings"])
    if isinstance(data.get("overrides"), dict):
        walk(data["overrides"])
    # the first extruder's definition (nozzle, filament diameter), when it lies beside the file
    trains = (data.get("metadata") or {}).get("machine_extruder_trains")
    if isinstance(trains, dict) and isinstance(trains.get("0"), str):
        efile = path.with_name(f"{trains['0']}.def.json")
        if efile.is_file():
            try:
                ext = json.loads(efile.read_text(encoding="utf-8-sig"))
            except (OSError, ValueError):
                ext = {}
            for key in ("machine_nozzle_size", "material_diameter"):
                entry = (ext.get("overrides") or {}).get(key)
                if isinstance(entry, dict) and isinstance(entry.get("default_value"), (int, float)):
                    values[key] = entry["default_value"]
    return values, str(data.get("name", path.name.split(".")[0]))


def _cura_literal(expr):
    if isinstance(expr, (int, float, bool)):
        return expr
    if not isinstance(expr, str):
        return None
    s = expr.strip()
    if re.fullmatch(r"-?\d+(\.\d+)?", s):
        return float(s)
    if s in ("True", "False"):
        return s == "True"
    if len(s) >= 2 and s[0] == s[-1] and s[0] in "'\"":
        return s[1:-1]
    return None


def _from_cura(path: Path, text: str) -> ImportedProfile:
    notes: list[str] = []
    v, title = _cura_values(path, notes)
    src = repr(path.name)
    name = str(v.get("machine_name") or title)
    printer: dict = {"name": name}
    for key, out in (("machine_width", "bed_x_mm"), ("machine_depth", "bed_y_mm"), ("machine_height", "max_z_mm")):
        x = v.get(key)
        if not isinstance(x, (int, float)) or isinstance(x, bool) or not x > 0:
            raise PrinterError(f"{src} has no {key}; add it under \"overrides\" (the bed size in mm)")
        printer[out] = float(x)
    printer["origin"] = "center" if v.get("machine_center_is_zero") is True else "corner"
    nozzle = v.get("machine_nozzle_size")
    printer["nozzle_mm"] = float(nozzle) if isinstance(nozzle, (int, float)) and nozzle > 0 else 0.4
    if nozzle is None:
        notes.append("nozzle_mm = 0.4 (machine_nozzle_size is in Cura's extruder definition, not read)")
    dia = v.get("material_diameter")
    printer["filament_diameter_mm"] = float(dia) if isinstance(dia, (int, float)) and dia > 0 else 1.75
    if dia is None:
        notes.append("filament_diameter_mm = 1.75 (material_diameter not in the file; Cura's own default is 2.85)")
    flavor = str(v.get("machine_gcode_flavor", "RepRap (Marlin/Sprinter)"))
    if flavor not in _CURA_FLAVORS:
        raise PrinterError(f"machine_gcode_flavor {flavor!r} of {src} is not supported; printpipe writes "
                           "G-code for Marlin (\"RepRap (Marlin/Sprinter)\") and RepRapFirmware")
    printer["flavor"] = _CURA_FLAVORS[flavor]

    def num(key, default, what):
        x = v.get(key)
        if isinstance(x, (int, float)) and not isinstance(x, bool) and x > 0:
            return float(x)
        notes.append(f"{what}: {default:g} ({key} not in the file)")
        return default

    printer["max_feedrate_mm_s"] = {a: num(f"machine_max_feedrate_{a}", d, f"max_feedrate_mm_s.{a}")
                                    for a, d in (("x", 200.0), ("y", 200.0), ("z", 5.0), ("e", 25.0))}
    acc = {a: num(f"machine_max_acceleration_{a}", d, f"max_accel_mm_s2.{a}")
           for a, d in (("x", 500.0), ("y", 500.0), ("z", 100.0), ("e", 5000.0))}
    default_acc = num("machine_acceleration", 500.0, "max_accel_mm_s2.print")
    acc["print"] = float(v["acceleration_print"]) if isinstance(v.get("acceleration_print"), (int, float)) else default_acc
    acc["travel"] = float(v["acceleration_travel"]) if isinstance(v.get("acceleration_travel"), (int, float)) else acc["print"]
    acc["retract"] = acc["print"]
    printer["max_accel_mm_s2"] = acc
    printer["jerk_mm_s"] = {"x": num("machine_max_jerk_xy", 10.0, "jerk_mm_s.x")}
    printer["jerk_mm_s"]["y"] = printer["jerk_mm_s"]["x"]
    printer["jerk_mm_s"]["z"] = num("machine_max_jerk_z", 0.3, "jerk_mm_s.z")
    printer["jerk_mm_s"]["e"] = num("machine_max_jerk_e", 5.0, "jerk_mm_s.e")
    temps = [float(v[k]) for k in ("material_print_temperature", "material_print_temperature_layer_0")
             if isinstance(v.get(k), (int, float))]
    beds = [float(v[k]) for k in ("material_bed_temperature", "material_bed_temperature_layer_0")
            if isinstance(v.get(k), (int, float))]
    _limits(printer, temps, beds, notes)
    if v.get("machine_heated_bed") is False:
        printer["max_bed_c"] = 0.0
    printer["retract_mm"] = float(v.get("retraction_amount", 5.0) or 0.0)
    printer["retract_speed_mm_s"] = float(v.get("retraction_speed", 40.0) or 40.0)
    sp = lambda k, d: float(v[k]) if isinstance(v.get(k), (int, float)) and v[k] > 0 else d  # noqa: E731
    perim = sp("speed_wall_x", sp("speed_print", 50.0))
    printer.update(
        print_speed_mm_s=perim, outer_wall_speed_mm_s=sp("speed_wall_0", min(perim, 25.0)),
        infill_speed_mm_s=sp("speed_infill", sp("speed_print", 50.0)),
        support_speed_mm_s=sp("speed_support", sp("speed_print", 50.0)),
        first_layer_speed_mm_s=sp("speed_layer_0", 20.0), travel_speed_mm_s=sp("speed_travel", 150.0),
        z_speed_mm_s=min(printer["max_feedrate_mm_s"]["z"], sp("speed_z_hop", 5.0)),
    )
    constants = {"initial_extruder_nr": 0}
    gc = {}
    for key, out in (("machine_start_gcode", "start_gcode"), ("machine_end_gcode", "end_gcode")):
        raw = str(v.get(key, "") or "")
        gc[out] = translate_gcode(raw, CURA_NAMES, constants, where=f"{key} of {src}", style="cura")
    relative = v.get("relative_extrusion") is True
    printer["start_gcode"], printer["end_gcode"] = _fix_gcode(gc["start_gcode"], gc["end_gcode"],
                                                              relative, notes)
    if v.get("machine_disallowed_areas"):
        notes.append("machine_disallowed_areas were not imported (printpipe uses the whole bed)")
    printer["source"] = f"Cura definition {title!r} from {path.name}"
    return ImportedProfile(printer_id=_slug(name), printer=printer, notes=notes,
                           source=f"{path.name} (Cura)")


# ------------------------------------------------------------------------------------------------
# shared helpers
# ------------------------------------------------------------------------------------------------

def _limits(printer: dict, temps: list, beds: list, notes: list) -> None:
    hot = max([DEFAULT_MAX_HOTEND_C] + [t for t in temps if t <= 300])
    bed = max([DEFAULT_MAX_BED_C] + [b for b in beds if b <= 120])
    printer.update(min_hotend_c=DEFAULT_MIN_HOTEND_C, max_hotend_c=hot, max_bed_c=bed)
    notes.append(f"max_hotend_c = {hot:g}, max_bed_c = {bed:g}, min_hotend_c = {DEFAULT_MIN_HOTEND_C:g}: "
                 "conservative limits (slicer profiles do not record the firmware's); check them "
                 "against the firmware (HEATER_0_MAXTEMP - 15, EXTRUDE_MINTEMP)")


def _fix_gcode(start: str, end: str, relative_e: bool, notes: list) -> tuple[str, str]:
    """Make imported start/end G-code meet printpipe's rules without changing what it does."""
    mode = "M83" if relative_e else "M82"
    if not re.search(r"(?mi)^\s*M8[23]\b", start):
        start = (f"{mode} ; extrusion mode the imported start G-code was written for "
                 "(printpipe switches to M83 after it)\n" + start)
    if not re.search(r"(?mi)^\s*G28\b", start):
        start = "G28 ; home (printpipe needs homing before the first move)\n" + start
        notes.append("start_gcode had no G28; printpipe added one at the top")
    up = end.upper()
    add = [c for c in ("M104 S0", "M140 S0") if c not in up]
    if add:
        end = end.rstrip("\n") + "\n" + "\n".join(f"{c} ; heater off (added by printpipe)" for c in add) + "\n"
        notes.append(f"end_gcode did not switch the heaters off; printpipe added {' and '.join(add)}")
    return start.strip("\n") + "\n", end.strip("\n") + "\n"


def _literal(v) -> str:
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return repr(v)


def _clean_name(name: str) -> str:
    return re.sub(r"\s+", " ", str(name).replace('"', "")).strip() or "imported"


def _slug(name: str) -> str:
    s = re.sub(r"[^a-z0-9]+", "-", str(name).lower()).strip("-")
    return (s or "imported")[:64]


_PRINTER_ORDER = ("id", "name", "source", "bed_x_mm", "bed_y_mm", "max_z_mm", "origin", "min_x_mm",
                  "min_y_mm", "nozzle_mm", "filament_diameter_mm", "min_hotend_c", "max_hotend_c",
                  "max_bed_c", "flavor", "printer_model", "max_feedrate_mm_s", "max_accel_mm_s2",
                  "jerk_mm_s", "junction_deviation_mm", "thumbnails", "retract_mm",
                  "retract_speed_mm_s", "print_speed_mm_s", "outer_wall_speed_mm_s",
                  "infill_speed_mm_s", "support_speed_mm_s", "first_layer_speed_mm_s",
                  "travel_speed_mm_s", "z_speed_mm_s", "start_gcode", "end_gcode")
_MATERIAL_ORDER = ("name", "inherits", "source", "density_g_cm3", "hotend_c", "first_layer_hotend_c",
                   "hotend_range_c", "bed_c", "first_layer_bed_c", "bed_range_c", "fan_percent",
                   "first_layer_fan_percent", "max_volumetric_mm3_s")


def _toml(data: dict, order: tuple) -> str:
    keys = [k for k in order if k in data] + [k for k in data if k not in order]
    lines = []
    for k in keys:
        lines.append(f"{k} = {_toml_value(data[k])}")
    text = "\n".join(lines) + "\n"
    tomllib.loads(text)  # never write what printpipe could not read back
    return text


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        v = float(v)
        return str(int(v)) if v.is_integer() else repr(round(v, 6))
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(x)}" for k, x in v.items()) + " }"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    s = str(v)
    if "\n" in s:
        if "'''" not in s and not re.search(r"[\x00-\x08\x0b-\x1f\x7f]", s.replace("\r", "")):
            return "'''\n" + s.replace("\r", "") + "'''"
        return '"""\n' + json.dumps(s)[1:-1].replace("\\n", "\n") + '"""'
    return json.dumps(s, ensure_ascii=False)
