"""Printer profiles and material presets, read from TOML data files.

The built-in profiles live in ``printpipe/printers/*.toml`` (one printer per file) and the material
presets in ``printpipe/printers/materials.toml``. A user's own printer is a TOML file with the same
keys; it may start from a built-in profile with ``inherits = "ender3"`` and override only what
differs. Every profile is validated when it is loaded: a missing or nonsensical field raises
:class:`~printpipe.errors.PrinterError` naming the field and the file.

Coordinates: ``origin = "corner"`` means the bed spans ``0..bed_x_mm`` by ``0..bed_y_mm`` (Marlin
printers); ``"center"`` means ``-bed_x_mm/2..bed_x_mm/2`` (deltas, some Klipper machines).
``min_x_mm``/``min_y_mm`` are the lowest coordinates the nozzle may visit *outside* the printable
area (the Prusa MK3S draws its purge line at y = -3, its firmware allows y >= -4); they default to
the bed edge. Models are always placed inside the printable area; only start G-code may use the
margin.

Examples
--------
>>> from printpipe.slicing.printers import load_printer, load_material
>>> p = load_printer("ender3")
>>> p.bed_x_mm, p.bed_y_mm, p.max_z_mm
(220.0, 220.0, 250.0)
>>> load_material("PLA", p).hotend_c
205.0
"""

from __future__ import annotations

import ast
import dataclasses
import logging
import math
import os
import re
import sys
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Mapping

from printpipe.errors import PrinterError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

log = logging.getLogger(__name__)

__all__ = [
    "Printer",
    "Material",
    "load_printer",
    "load_material",
    "list_printers",
    "list_materials",
    "render_gcode",
    "user_config_dir",
    "user_printers_dir",
    "user_materials_dir",
]

_FLAVORS = ("marlin", "marlin2", "prusa", "klipper", "reprap")
_AXES = ("x", "y", "z", "e")
_ACCEL_KEYS = ("x", "y", "z", "e", "print", "retract", "travel")
_TEMPLATE_FIELD = re.compile(r"\{([^{}\n]*)\}")


@dataclass(frozen=True)
class Printer:
    """One FFF printer: geometry, motion limits, temperature limits and G-code templates.

    Parameters
    ----------
    id : str
        Short identifier used on the command line (``"ender3"``).
    name : str
        Human name (``"Creality Ender-3"``).
    bed_x_mm, bed_y_mm, max_z_mm : float
        Printable volume in millimetres.
    origin : {"corner", "center"}
        Where G-code (0, 0) lies on the bed.
    nozzle_mm, filament_diameter_mm : float
        Nozzle bore and filament diameter.
    flavor : {"marlin", "marlin2", "prusa", "klipper", "reprap"}
        Firmware dialect (``;FLAVOR:`` header, units of ``M203``, E-mode semantics of G90/G91).
    max_feedrate_mm_s : dict
        Per-axis speed limits ``{"x", "y", "z", "e"}`` (firmware ``M203``).
    max_accel_mm_s2 : dict
        Per-axis acceleration limits ``{"x", "y", "z", "e"}`` (``M201``) and the default move
        accelerations ``{"print", "retract", "travel"}`` (``M204 P R T``).
    jerk_mm_s : dict or None
        Classic-jerk limits ``{"x", "y", "z", "e"}`` (``M205 X Y Z E``); ``None`` when the firmware
        uses junction deviation.
    junction_deviation_mm : float or None
        Junction deviation (``M205 J``) when the firmware uses it instead of jerk.
    min_hotend_c : float
        Lowest nozzle temperature at which extrusion is allowed (cold-extrusion guard).
    max_hotend_c, max_bed_c : float
        Highest temperatures the machine may be asked for.
    start_gcode, end_gcode : str
        Templates; ``{name}`` fields are filled by :meth:`render_start` / :meth:`render_end`.
    retract_mm, retract_speed_mm_s : float
        Default retraction (bowden machines retract more than direct-drive ones).
    print_speed_mm_s, outer_wall_speed_mm_s, infill_speed_mm_s, support_speed_mm_s,
    first_layer_speed_mm_s, travel_speed_mm_s, z_speed_mm_s : float
        Default speeds for the slicer.
    min_x_mm, min_y_mm : float
        Lowest reachable coordinates outside the printable area (see module docstring).
    aliases : tuple of str
        Other names accepted by :func:`load_printer`.
    thumbnails : tuple of ThumbnailSpec
        Preview pictures to embed in the G-code (profile key ``thumbnails = ["16x16/PNG",
        "220x124/PNG"]``; ``/JPG`` for firmware that reads ``; thumbnail_JPG`` blocks); empty =
        none.
    printer_model : str
        Model code checked by Prusa firmware (``M862.3 P "MK3S"``; the template value
        ``{printer_model}``); empty for other printers.
    source : str
        Where the values come from.
    """

    id: str
    name: str
    bed_x_mm: float
    bed_y_mm: float
    max_z_mm: float
    origin: str
    nozzle_mm: float
    filament_diameter_mm: float
    flavor: str
    max_feedrate_mm_s: dict
    max_accel_mm_s2: dict
    jerk_mm_s: dict | None
    junction_deviation_mm: float | None
    min_hotend_c: float
    max_hotend_c: float
    max_bed_c: float
    start_gcode: str
    end_gcode: str
    retract_mm: float
    retract_speed_mm_s: float
    print_speed_mm_s: float
    outer_wall_speed_mm_s: float
    infill_speed_mm_s: float
    support_speed_mm_s: float
    first_layer_speed_mm_s: float
    travel_speed_mm_s: float
    z_speed_mm_s: float
    min_x_mm: float | None = None
    min_y_mm: float | None = None
    aliases: tuple = ()
    thumbnails: tuple = ()
    printer_model: str = ""
    source: str = ""
    path: str = field(default="", compare=False)

    # -- geometry helpers --------------------------------------------------------------------
    @property
    def bed_bounds_mm(self) -> tuple[float, float, float, float]:
        """Printable area ``(xmin, xmax, ymin, ymax)`` in G-code coordinates."""
        if self.origin == "center":
            return (-self.bed_x_mm / 2, self.bed_x_mm / 2, -self.bed_y_mm / 2, self.bed_y_mm / 2)
        return (0.0, self.bed_x_mm, 0.0, self.bed_y_mm)

    @property
    def bed_center_mm(self) -> tuple[float, float]:
        """Centre of the printable area in G-code coordinates."""
        x0, x1, y0, y1 = self.bed_bounds_mm
        return ((x0 + x1) / 2, (y0 + y1) / 2)

    @property
    def travel_bounds_mm(self) -> tuple[float, float, float, float]:
        """Area the nozzle may visit ``(xmin, xmax, ymin, ymax)``: the bed plus the profile's
        ``min_x_mm``/``min_y_mm`` allowance (purge lines outside the print area)."""
        x0, x1, y0, y1 = self.bed_bounds_mm
        if self.min_x_mm is not None:
            x0 = min(x0, x0 + self.min_x_mm) if self.origin == "center" else min(x0, self.min_x_mm)
        if self.min_y_mm is not None:
            y0 = min(y0, y0 + self.min_y_mm) if self.origin == "center" else min(y0, self.min_y_mm)
        return (x0, x1, y0, y1)

    @property
    def volume_text(self) -> str:
        """``"220 x 220 x 250 mm"``."""
        return f"{_fmt(self.bed_x_mm)} x {_fmt(self.bed_y_mm)} x {_fmt(self.max_z_mm)} mm"

    # -- G-code templates --------------------------------------------------------------------
    def template_values(self, material: "Material | None" = None, **extra: Any) -> dict:
        """Values available to the start/end templates: every numeric printer field, every
        material field (``hotend_c``, ``bed_c``, ``first_layer_hotend_c``...), and ``extra``."""
        values: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(v, (int, float, str)) and f.name not in ("start_gcode", "end_gcode"):
                values[f.name] = v
        values["min_x_mm"] = self.travel_bounds_mm[0]
        values["min_y_mm"] = self.travel_bounds_mm[2]
        if material is not None:
            for f in dataclasses.fields(material):
                v = getattr(material, f.name)
                if isinstance(v, (int, float, str)):
                    values[f.name if f.name != "name" else "material"] = v
        values.setdefault("e_mode", "M83")
        # slice-dependent values (to_gcode passes the real ones; these let a profile load)
        values.update(layer_height_mm=0.2, first_layer_height_mm=0.2, layer_count=1,
                      max_layer_z_mm=0.0)
        values.update(extra)
        return values

    def render_start(self, material: "Material", *, relative_e: bool = True, **extra: Any) -> str:
        """Start G-code for ``material``: home, heat with waits, purge line.

        ``{e_mode}`` in the template becomes ``M83`` (``relative_e``) or ``M82``. The built-in
        templates reset E with ``G92 E0`` before each purge move, so they extrude the same amount
        in either mode.
        """
        values = self.template_values(material, e_mode="M83" if relative_e else "M82", **extra)
        return render_gcode(self.start_gcode, values, what=f"start_gcode of {self.id}")

    def render_end(self, material: "Material | None" = None, *, max_layer_z_mm: float = 0.0,
                   **extra: Any) -> str:
        """End G-code: retract, lift to ``{park_z_mm}`` (10 mm above the print, capped at the
        machine height), present the bed, heaters and fan off, motors off."""
        park = min(float(max_layer_z_mm) + 10.0, self.max_z_mm)
        values = self.template_values(material, park_z_mm=round(park, 3),
                                      max_layer_z_mm=max_layer_z_mm, **extra)
        return render_gcode(self.end_gcode, values, what=f"end_gcode of {self.id}")

    def to_dict(self) -> dict:
        """JSON-serialisable summary (for manifests)."""
        return {"id": self.id, "name": self.name, "bed_mm": [self.bed_x_mm, self.bed_y_mm, self.max_z_mm],
                "origin": self.origin, "nozzle_mm": self.nozzle_mm, "flavor": self.flavor}


@dataclass(frozen=True)
class Material:
    """A filament preset, already checked against one printer's limits when loaded with it.

    Parameters
    ----------
    name : str
        ``"PLA"``, ``"PETG"``...
    density_g_cm3 : float
        For the filament weight.
    hotend_c, first_layer_hotend_c, bed_c, first_layer_bed_c : float
        Temperatures (deg C).
    hotend_range_c, bed_range_c : tuple of float
        The range in which the material prints; a printer that cannot reach the low end cannot
        print it.
    fan_percent, first_layer_fan_percent : float
        Part-cooling fan (0-100).
    retract_mm, retract_speed_mm_s : float
        Retraction (the printer's unless the material overrides it).
    max_volumetric_mm3_s : float
        Melt-rate limit the slicer must respect (``speed * width * height``).
    """

    name: str
    density_g_cm3: float
    hotend_c: float
    first_layer_hotend_c: float
    bed_c: float
    first_layer_bed_c: float
    hotend_range_c: tuple
    bed_range_c: tuple
    fan_percent: float
    first_layer_fan_percent: float
    retract_mm: float
    retract_speed_mm_s: float
    max_volumetric_mm3_s: float
    source: str = ""


# ------------------------------------------------------------------------------------------------
# public functions
# ------------------------------------------------------------------------------------------------

def list_printers(*, user: bool = True) -> list[Printer]:
    """The built-in printer profiles, sorted by id, then the user's (:func:`user_printers_dir`).

    Parameters
    ----------
    user : bool
        Include the user's profiles (a broken one is skipped with a logged warning).

    Returns
    -------
    list of Printer
    """
    out = [_load_printer_file(p) for p in sorted(_builtin_printer_files().values())]
    if user:
        for path in sorted(_user_printer_files().values()):
            try:
                out.append(_load_printer_file(path))
            except PrinterError as exc:
                log.warning("user printer profile %s skipped: %s", path, exc)
    return out


def user_config_dir() -> Path:
    """``$XDG_CONFIG_HOME/printpipe`` (``~/.config/printpipe`` when the variable is unset)."""
    base = os.environ.get("XDG_CONFIG_HOME") or ""
    root = Path(base).expanduser() if base.strip() else Path.home() / ".config"
    return root / "printpipe"


def user_printers_dir() -> Path:
    """Where the user's printer profiles live (``printpipe printers import`` writes here):
    ``$XDG_CONFIG_HOME/printpipe/printers``. Profiles there are found by id like built-in ones."""
    return user_config_dir() / "printers"


def user_materials_dir() -> Path:
    """Where the user's material presets live: ``$XDG_CONFIG_HOME/printpipe/materials``."""
    return user_config_dir() / "materials"


def list_materials() -> list[Material]:
    """All built-in material presets (not yet checked against a printer).

    Returns
    -------
    list of Material
    """
    table = _materials_table()
    return [_material_from_table(name, data, None, "materials.toml") for name, data in table.items()]


def load_printer(name_or_path: "str | Path | Printer") -> Printer:
    """Load a printer profile by built-in id/alias (case-insensitive) or from a TOML file.

    Parameters
    ----------
    name_or_path : str, Path or Printer
        ``"ender3"``, ``"Ender-3"``, ``"prusa-mk3s"``..., or the path of a user's ``.toml``
        profile. A :class:`Printer` is returned unchanged.

    Returns
    -------
    Printer

    Raises
    ------
    PrinterError
        Unknown name (the message lists the known ones), unreadable file, missing or invalid field.
    """
    if isinstance(name_or_path, Printer):
        return name_or_path
    text = str(name_or_path)
    path = Path(text).expanduser()
    if text.lower().endswith(".toml") or path.is_file():
        if not path.is_file():
            raise PrinterError(f"printer profile file {text!r} does not exist; pass a built-in name "
                               f"({', '.join(_known_ids())}) or the path of an existing .toml file")
        return _load_printer_file(path)
    key = _norm(text)
    files = _builtin_printer_files()
    if key in files:
        return _load_printer_file(files[key])
    for pfile in files.values():
        p = _load_printer_file(pfile)
        if key in {_norm(a) for a in (p.id, p.name, *p.aliases)}:
            return p
    user_files = _user_printer_files()
    if key in user_files:
        return _load_printer_file(user_files[key])
    for pfile in user_files.values():
        try:
            p = _load_printer_file(pfile)
        except PrinterError:
            continue
        if key in {_norm(a) for a in (p.id, p.name, *p.aliases)}:
            return p
    raise PrinterError(f"unknown printer {text!r}; choose one of {', '.join(_known_ids())} "
                       "(see `printpipe printers`) or pass the path of your own profile .toml")


def load_material(name: "str | Path | Material" = "PLA", printer: Printer | None = None) -> Material:
    """Load a material preset and, with ``printer``, check it against the printer's limits.

    Parameters
    ----------
    name : str, Path or Material
        ``"PLA"``, ``"petg"``... (case-insensitive) or a TOML file with one material's keys.
    printer : Printer, optional
        When given, the material's retraction defaults to the printer's, and its temperatures are
        checked: a temperature above the printer's maximum is lowered to it (with a warning) when
        the material's range allows; a material whose lowest printing temperature is above the
        printer's maximum raises.

    Returns
    -------
    Material

    Raises
    ------
    PrinterError
        Unknown material, invalid field, or a printer that cannot reach the material's temperatures.
    """
    if isinstance(name, Material):
        mat_data, src = dataclasses.asdict(name), "given Material"
        mat_name = name.name
    else:
        text = str(name)
        path = Path(text).expanduser()
        if text.lower().endswith(".toml") or path.is_file():
            if not path.is_file():
                raise PrinterError(f"material file {text!r} does not exist; use a built-in material "
                                   f"({', '.join(m.name for m in list_materials())}) or an existing .toml")
            data = _read_toml(path)
            mat_name = str(data.get("name", path.stem))
            base = data.get("inherits")
            if base is not None:
                merged = dict(_lookup_material(str(base))[1])
                merged.update({k: v for k, v in data.items() if k != "inherits"})
                data = merged
            mat_data, src = data, str(path)
        else:
            user_file = _user_material_files().get(_norm(text))
            if user_file is not None and _norm(text) not in {_norm(k) for k in _materials_table()}:
                return load_material(user_file, printer)
            mat_name, mat_data = _lookup_material(text)
            src = "materials.toml"
    return _material_from_table(mat_name, mat_data, printer, src)


def render_gcode(template: str, values: Mapping[str, Any], *, what: str = "G-code template") -> str:
    """Fill the placeholders of a G-code template.

    ``{name}`` is replaced by a value; ``{expression}`` may also compute with values, numbers and
    strings (``+ - * / %``, comparisons, ``and or not``, ``min max abs round int``), e.g.
    ``{min(max_layer_z_mm + 2, max_z_mm)}``; ``{if condition}...{elsif condition}...{else}...{endif}``
    keeps one branch. Nothing else is evaluated (no attribute access, no other calls), and braces
    never occur in plain G-code, so G-code itself is never misread. Floats are written without
    trailing zeros.

    Raises
    ------
    PrinterError
        A placeholder with no value (names the placeholder and the known ones), an expression
        that is not allowed, or an ``{if}`` without its ``{endif}``.
    """
    out: list[str] = []
    stack: list[list[bool]] = []  # per open {if}: [parent active, a branch was taken]
    active = True
    pos = 0
    for m in _TEMPLATE_FIELD.finditer(template):
        if active:
            out.append(template[pos:m.start()])
        pos = m.end()
        body = m.group(1).strip()
        word = body.split(None, 1)
        head = word[0] if word else ""
        if head in ("if", "elsif") and len(word) == 2:
            cond = bool(_eval_template(word[1], values, what, m.group(0)))
            if head == "if":
                stack.append([active, cond])
                active = active and cond
            else:
                if not stack:
                    raise PrinterError(f"{what} has {m.group(0)} without an {{if}}; fix the template")
                parent, taken = stack[-1]
                active = parent and not taken and cond
                stack[-1][1] = taken or cond
        elif body == "else":
            if not stack:
                raise PrinterError(f"{what} has {{else}} without an {{if}}; fix the template")
            parent, taken = stack[-1]
            active = parent and not taken
            stack[-1][1] = True
        elif body == "endif":
            if not stack:
                raise PrinterError(f"{what} has {{endif}} without an {{if}}; fix the template")
            active = stack.pop()[0]
        else:
            v = _eval_template(body, values, what, m.group(0))
            if active:
                out.append(_fmt(v) if isinstance(v, float) else str(int(v)) if isinstance(v, bool) else str(v))
    if stack:
        raise PrinterError(f"{what} has an {{if}} without its {{endif}}; add {{endif}}")
    if active:
        out.append(template[pos:])
    text = "".join(out)
    return text if text.endswith("\n") else text + "\n"


_CALLS = {"min": min, "max": max, "abs": abs, "round": round, "int": int}
_BINOPS = {ast.Add: lambda a, b: a + b, ast.Sub: lambda a, b: a - b, ast.Mult: lambda a, b: a * b,
           ast.Div: lambda a, b: a / b, ast.Mod: lambda a, b: a % b}
_CMPOPS = {ast.Eq: lambda a, b: a == b, ast.NotEq: lambda a, b: a != b, ast.Lt: lambda a, b: a < b,
           ast.LtE: lambda a, b: a <= b, ast.Gt: lambda a, b: a > b, ast.GtE: lambda a, b: a >= b}


def _eval_template(expr: str, values: Mapping[str, Any], what: str, shown: str):
    """Evaluate one template expression over ``values`` (the whitelist of :func:`render_gcode`)."""
    if expr in ("true", "false") and expr not in values:
        return expr == "true"
    if re.fullmatch(r"[a-z_][a-z0-9_]*", expr):
        if expr not in values:
            raise PrinterError(f"{what} uses {{{expr}}}, which has no value; use one of "
                               f"{', '.join(sorted(values))}")
        return values[expr]
    try:
        tree = ast.parse(expr, mode="eval")
    except SyntaxError:
        raise PrinterError(f"{what}: {shown} is neither a placeholder nor an expression printpipe "
                           "understands; write {name} or {if name < 10}...{endif}") from None

    def ev(node):
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float, str, bool)):
            return node.value
        if isinstance(node, ast.Name):
            if node.id in ("true", "false"):
                return node.id == "true"
            if node.id not in values:
                raise PrinterError(f"{what} uses {node.id!r} in {shown}, which has no value; use "
                                   f"one of {', '.join(sorted(values))}")
            return values[node.id]
        if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
            return _BINOPS[type(node.op)](ev(node.left), ev(node.right))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd, ast.Not)):
            v = ev(node.operand)
            return -v if isinstance(node.op, ast.USub) else (+v if isinstance(node.op, ast.UAdd) else not v)
        if isinstance(node, ast.BoolOp):
            vals = [ev(v) for v in node.values]
            return all(vals) if isinstance(node.op, ast.And) else any(vals)
        if isinstance(node, ast.Compare) and all(type(o) in _CMPOPS for o in node.ops):
            left = ev(node.left)
            for op, right_node in zip(node.ops, node.comparators):
                right = ev(right_node)
                if not _CMPOPS[type(op)](left, right):
                    return False
                left = right
            return True
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _CALLS
                and not node.keywords):
            return _CALLS[node.func.id](*[ev(a) for a in node.args])
        raise PrinterError(f"{what}: {shown} uses something printpipe templates do not allow "
                           f"({type(node).__name__}); use names, numbers, + - * /, comparisons, "
                           "and/or/not and min/max/abs/round/int")

    try:
        return ev(tree)
    except PrinterError:
        raise
    except (TypeError, ValueError, ZeroDivisionError) as exc:
        raise PrinterError(f"{what}: {shown} cannot be computed ({exc}); fix the template") from exc


# ------------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------------

def _fmt(v: float) -> str:
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return f"{v:.4f}".rstrip("0").rstrip(".") if isinstance(v, float) else str(v)


def _norm(s: str) -> str:
    return re.sub(r"[^a-z0-9+]", "", s.lower())


def _printers_dir():
    return resources.files("printpipe.printers")


def _builtin_printer_files() -> dict[str, Path]:
    out = {}
    for entry in _printers_dir().iterdir():
        name = entry.name
        if name.endswith(".toml") and name != "materials.toml":
            out[_norm(name[:-5])] = Path(str(entry))
    return out


def _known_ids() -> list[str]:
    return sorted(_builtin_printer_files()) + sorted(k for k in _user_printer_files()
                                                     if k not in _builtin_printer_files())


def _user_printer_files() -> dict[str, Path]:
    d = user_printers_dir()
    if not d.is_dir():
        return {}
    return {_norm(f.stem): f for f in sorted(d.glob("*.toml"))}


def _user_material_files() -> dict[str, Path]:
    d = user_materials_dir()
    if not d.is_dir():
        return {}
    return {_norm(f.stem): f for f in sorted(d.glob("*.toml"))}


def _read_toml(path: Path) -> dict:
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except OSError as exc:
        raise PrinterError(f"cannot read profile {str(path)!r}: {exc}; check the path and permissions") from exc
    except tomllib.TOMLDecodeError as exc:
        raise PrinterError(f"profile {str(path)!r} is not valid TOML ({exc}); fix the syntax") from exc


_PRINTER_CACHE: dict[tuple[str, float], Printer] = {}


def _load_printer_file(path: Path) -> Printer:
    path = Path(path)
    try:
        key = (str(path.resolve()), path.stat().st_mtime)
    except OSError:
        key = (str(path), 0.0)
    if key in _PRINTER_CACHE:
        return _PRINTER_CACHE[key]
    data = _read_toml(path)
    base = data.get("inherits")
    if base is not None:
        files = {**_user_printer_files(), **_builtin_printer_files()}
        bkey = _norm(str(base))
        if bkey not in files or files[bkey] == path:
            raise PrinterError(f"profile {str(path)!r} inherits from unknown printer {base!r}; "
                               f"use one of {', '.join(_known_ids())}")
        merged = _read_toml(files[bkey])
        merged.pop("aliases", None)
        for k, v in data.items():
            if k == "inherits":
                continue
            if isinstance(v, dict) and isinstance(merged.get(k), dict):
                merged[k] = {**merged[k], **v}
            else:
                merged[k] = v
        data = merged
        data.setdefault("id", path.stem)
    printer = _printer_from_table(data, path)
    _PRINTER_CACHE[key] = printer
    return printer


def _req(data: Mapping, key: str, src: str, kind=float):
    if key not in data:
        raise PrinterError(f"printer profile {src!r} is missing the field {key!r}; add it "
                           "(see the built-in profiles in printpipe/printers/ for the format)")
    val = data[key]
    if kind is float:
        if isinstance(val, bool) or not isinstance(val, (int, float)) or not math.isfinite(val):
            raise PrinterError(f"field {key!r} of {src!r} must be a number, got {val!r}")
        return float(val)
    if kind is str:
        if not isinstance(val, str):
            raise PrinterError(f"field {key!r} of {src!r} must be a string, got {val!r}")
        return val
    return val


def _axis_table(data: Mapping, key: str, keys: tuple, src: str) -> dict:
    tab = _req(data, key, src, kind=dict)
    if not isinstance(tab, dict):
        raise PrinterError(f"field {key!r} of {src!r} must be a table with keys {', '.join(keys)}, got {tab!r}")
    out = {}
    for k in keys:
        v = tab.get(k)
        if v is None:
            raise PrinterError(f"printer profile {src!r} is missing the field {key}.{k}; add it")
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0:
            raise PrinterError(f"field {key}.{k} of {src!r} must be a positive number, got {v!r}")
        out[k] = float(v)
    return out


def _printer_from_table(data: Mapping, path: Path) -> Printer:
    src = str(path)
    num = {k: _req(data, k, src) for k in (
        "bed_x_mm", "bed_y_mm", "max_z_mm", "nozzle_mm", "filament_diameter_mm", "min_hotend_c",
        "max_hotend_c", "max_bed_c", "retract_mm", "retract_speed_mm_s", "print_speed_mm_s",
        "outer_wall_speed_mm_s", "infill_speed_mm_s", "support_speed_mm_s",
        "first_layer_speed_mm_s", "travel_speed_mm_s", "z_speed_mm_s")}
    for k in ("bed_x_mm", "bed_y_mm", "max_z_mm", "nozzle_mm", "filament_diameter_mm",
              "max_hotend_c", "retract_speed_mm_s", "print_speed_mm_s", "outer_wall_speed_mm_s",
              "infill_speed_mm_s", "support_speed_mm_s", "first_layer_speed_mm_s",
              "travel_speed_mm_s", "z_speed_mm_s"):
        if num[k] <= 0:
            raise PrinterError(f"field {k!r} of {src!r} must be positive, got {num[k]}")
    if not 0.1 <= num["nozzle_mm"] <= 2.0:
        raise PrinterError(f"nozzle_mm of {src!r} is {num['nozzle_mm']} mm; expected 0.1-2.0 mm")
    if num["filament_diameter_mm"] not in (1.75, 2.85, 3.0):
        log.warning("%s: unusual filament diameter %.2f mm", src, num["filament_diameter_mm"])
    if not 150 <= num["max_hotend_c"] <= 500 or not 0 < num["min_hotend_c"] < num["max_hotend_c"]:
        raise PrinterError(f"hotend limits of {src!r} are min {num['min_hotend_c']} / max "
                           f"{num['max_hotend_c']} C; expected 0 < min < max <= 500")
    if not 0 <= num["max_bed_c"] <= 150:
        raise PrinterError(f"max_bed_c of {src!r} is {num['max_bed_c']} C; expected 0-150 (0: unheated)")
    origin = _req(data, "origin", src, kind=str)
    if origin not in ("corner", "center"):
        raise PrinterError(f"origin of {src!r} is {origin!r}; use \"corner\" or \"center\"")
    flavor = _req(data, "flavor", src, kind=str).lower()
    if flavor not in _FLAVORS:
        raise PrinterError(f"flavor of {src!r} is {flavor!r}; use one of {', '.join(_FLAVORS)}")
    feed = _axis_table(data, "max_feedrate_mm_s", _AXES, src)
    accel = _axis_table(data, "max_accel_mm_s2", _ACCEL_KEYS, src)
    jerk = data.get("jerk_mm_s")
    jd = data.get("junction_deviation_mm")
    if jerk is None and jd is None:
        raise PrinterError(f"printer profile {src!r} needs either the table 'jerk_mm_s' "
                           "(x, y, z, e; classic jerk) or 'junction_deviation_mm'; add the one "
                           "your firmware uses (M503 shows M205)")
    if jerk is not None:
        jerk = _axis_table(data, "jerk_mm_s", _AXES, src)
    if jd is not None:
        jd = _req(data, "junction_deviation_mm", src)
        if not 0 < jd < 1:
            raise PrinterError(f"junction_deviation_mm of {src!r} is {jd}; expected 0-1 mm (Marlin: 0.013-0.1)")
        jerk = None if jerk is None else jerk
    start = _req(data, "start_gcode", src, kind=str)
    end = _req(data, "end_gcode", src, kind=str)
    for tag, code in (("end_gcode", end),):
        flat = code.upper()
        if "M104 S0" not in flat or "M140 S0" not in flat:
            raise PrinterError(f"{tag} of {src!r} must switch the heaters off with M104 S0 and M140 S0")
    if "G28" not in start.upper():
        raise PrinterError(f"start_gcode of {src!r} must home the axes with G28 before moving")
    min_x = data.get("min_x_mm")
    min_y = data.get("min_y_mm")
    for k, v in (("min_x_mm", min_x), ("min_y_mm", min_y)):
        if v is not None and (not isinstance(v, (int, float)) or not -20 <= v <= 0):
            raise PrinterError(f"{k} of {src!r} is {v!r}; expected a number between -20 and 0 mm")
    aliases = data.get("aliases", [])
    if not isinstance(aliases, list) or not all(isinstance(a, str) for a in aliases):
        raise PrinterError(f"aliases of {src!r} must be a list of strings, got {aliases!r}")
    from printpipe.slicing.thumbnail import parse_spec

    thumbs = data.get("thumbnails", [])
    if isinstance(thumbs, str):
        thumbs = [t for t in thumbs.split(",") if t.strip()]
    if not isinstance(thumbs, list):
        raise PrinterError(f"thumbnails of {src!r} must be a list like [\"16x16/PNG\", \"220x124/PNG\"], "
                           f"got {thumbs!r}")
    thumbs = tuple(parse_spec(t, where=f"thumbnails of {src!r}") for t in thumbs)
    model = data.get("printer_model", "")
    if not isinstance(model, str) or not re.fullmatch(r"[A-Za-z0-9_.+-]{0,32}", model):
        raise PrinterError(f"printer_model of {src!r} is {model!r}; use the firmware's model code "
                           "(letters, digits, e.g. \"MK3S\") or leave it out")
    pid = str(data.get("id", path.stem))
    printer = Printer(
        id=pid, name=_req(data, "name", src, kind=str),
        bed_x_mm=num["bed_x_mm"], bed_y_mm=num["bed_y_mm"], max_z_mm=num["max_z_mm"],
        origin=origin, nozzle_mm=num["nozzle_mm"], filament_diameter_mm=num["filament_diameter_mm"],
        flavor=flavor, max_feedrate_mm_s=feed, max_accel_mm_s2=accel, jerk_mm_s=jerk,
        junction_deviation_mm=jd, min_hotend_c=num["min_hotend_c"],
        max_hotend_c=num["max_hotend_c"], max_bed_c=num["max_bed_c"], start_gcode=start,
        end_gcode=end, retract_mm=num["retract_mm"], retract_speed_mm_s=num["retract_speed_mm_s"],
        print_speed_mm_s=num["print_speed_mm_s"], outer_wall_speed_mm_s=num["outer_wall_speed_mm_s"],
        infill_speed_mm_s=num["infill_speed_mm_s"], support_speed_mm_s=num["support_speed_mm_s"],
        first_layer_speed_mm_s=num["first_layer_speed_mm_s"],
        travel_speed_mm_s=num["travel_speed_mm_s"], z_speed_mm_s=num["z_speed_mm_s"],
        min_x_mm=None if min_x is None else float(min_x),
        min_y_mm=None if min_y is None else float(min_y),
        aliases=tuple(aliases), thumbnails=thumbs, printer_model=model,
        source=str(data.get("source", "")), path=src,
    )
    # the templates must render with a default material: catch typos at load time
    dummy = Material("PLA", 1.24, 200.0, 200.0, 60.0, 60.0, (190.0, 220.0), (0.0, 70.0), 100.0,
                     0.0, 1.0, 30.0, 10.0)
    printer.render_start(dummy)
    printer.render_end(dummy, max_layer_z_mm=10.0)
    return printer


def _materials_table() -> dict:
    path = Path(str(_printers_dir().joinpath("materials.toml")))
    return _read_toml(path)


def _lookup_material(text: str) -> tuple[str, dict]:
    table = _materials_table()
    for name, data in table.items():
        if _norm(name) == _norm(text):
            return name, data
    raise PrinterError(f"unknown material {text!r}; choose one of {', '.join(table)} "
                       "or pass the path of your own material .toml")


def _material_from_table(name: str, data: Mapping, printer: Printer | None, src: str) -> Material:
    def num(key, default=None):
        if key not in data or data[key] is None:
            if default is not None:
                return float(default)
            raise PrinterError(f"material {name!r} ({src}) is missing the field {key!r}; add it")
        v = data[key]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
            raise PrinterError(f"field {key!r} of material {name!r} must be a non-negative number, got {v!r}")
        return float(v)

    def rng(key):
        v = data.get(key)
        if not (isinstance(v, (list, tuple)) and len(v) == 2 and all(isinstance(x, (int, float)) for x in v)
                and v[0] <= v[1]):
            raise PrinterError(f"field {key!r} of material {name!r} ({src}) must be [low, high] in C, got {v!r}")
        return (float(v[0]), float(v[1]))

    hot_rng, bed_rng = rng("hotend_range_c"), rng("bed_range_c")
    vals = {k: num(k) for k in ("density_g_cm3", "hotend_c", "bed_c", "fan_percent", "max_volumetric_mm3_s")}
    vals["first_layer_hotend_c"] = num("first_layer_hotend_c", vals["hotend_c"])
    vals["first_layer_bed_c"] = num("first_layer_bed_c", vals["bed_c"])
    vals["first_layer_fan_percent"] = num("first_layer_fan_percent", 0.0)
    if not 0.5 <= vals["density_g_cm3"] <= 3.0:
        raise PrinterError(f"density_g_cm3 of material {name!r} is {vals['density_g_cm3']}; expected 0.5-3 g/cm3")
    for k in ("fan_percent", "first_layer_fan_percent"):
        if vals[k] > 100:
            raise PrinterError(f"{k} of material {name!r} is {vals[k]}; expected 0-100")
    for k in ("hotend_c", "first_layer_hotend_c"):
        if not hot_rng[0] <= vals[k] <= hot_rng[1]:
            raise PrinterError(f"{k} of material {name!r} is {vals[k]} C, outside its own range "
                               f"{hot_rng[0]:g}-{hot_rng[1]:g} C; fix the preset")
    retract = data.get("retract_mm")
    retract_speed = data.get("retract_speed_mm_s")
    if printer is not None:
        retract = printer.retract_mm if retract is None else retract
        retract_speed = printer.retract_speed_mm_s if retract_speed is None else retract_speed
        if hot_rng[0] > printer.max_hotend_c:
            raise PrinterError(f"{name} needs at least {hot_rng[0]:g} C at the nozzle but the "
                               f"{printer.name} is limited to {printer.max_hotend_c:g} C; choose another "
                               "material with --material or another printer with --printer")
        if hot_rng[1] < printer.min_hotend_c:
            raise PrinterError(f"{name} prints at most at {hot_rng[1]:g} C, below the {printer.name}'s "
                               f"cold-extrusion limit of {printer.min_hotend_c:g} C; choose another material")
        if bed_rng[0] > printer.max_bed_c:
            raise PrinterError(f"{name} needs a bed of at least {bed_rng[0]:g} C but the {printer.name}'s "
                               f"bed is limited to {printer.max_bed_c:g} C; choose another material or printer")
        for k, lim in (("hotend_c", printer.max_hotend_c), ("first_layer_hotend_c", printer.max_hotend_c),
                       ("bed_c", printer.max_bed_c), ("first_layer_bed_c", printer.max_bed_c)):
            if vals[k] > lim:
                log.warning("%s: %s %.0f C lowered to the %s's limit of %.0f C", name, k, vals[k],
                            printer.name, lim)
                vals[k] = float(lim)
    retract = 1.0 if retract is None else retract
    retract_speed = 35.0 if retract_speed is None else retract_speed
    if not isinstance(retract, (int, float)) or not 0 <= retract <= 15:
        raise PrinterError(f"retract_mm of material {name!r} is {retract!r}; expected 0-15 mm")
    if not isinstance(retract_speed, (int, float)) or not 0 < retract_speed <= 200:
        raise PrinterError(f"retract_speed_mm_s of material {name!r} is {retract_speed!r}; expected 0-200 mm/s")
    return Material(
        name=name, density_g_cm3=vals["density_g_cm3"], hotend_c=vals["hotend_c"],
        first_layer_hotend_c=vals["first_layer_hotend_c"], bed_c=vals["bed_c"],
        first_layer_bed_c=vals["first_layer_bed_c"], hotend_range_c=hot_rng, bed_range_c=bed_rng,
        fan_percent=vals["fan_percent"], first_layer_fan_percent=vals["first_layer_fan_percent"],
        retract_mm=float(retract), retract_speed_mm_s=float(retract_speed),
        max_volumetric_mm3_s=vals["max_volumetric_mm3_s"], source=str(data.get("source", src)),
    )
