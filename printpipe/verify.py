"""Read written models back and check them against the manifest before a case is called "ok".

An in-memory mesh can be closed while the file written from it is not: binary STL stores float32
coordinates, so vertices that differ by less than a float32 step (about 8 mm at 10^8 mm from the
origin, 0.03 mm at 500 km) collapse into one and edges become non-manifold; a writer bug, a full
disk or a wrong frame transform give files whose counts or bounds differ from what the manifest
says. :func:`verify_outputs` reads every STL and 3MF of a case, cheaply and from the bytes alone,
and compares per part:

* the triangle count (and for 3MF, the vertex count);
* closed and edge-manifold with consistent winding: after welding the STL's corners by exact
  float32 coordinates (3MF is indexed already) every directed edge occurs once and its reverse
  once, and no face repeats a corner (:func:`printpipe.kernels.checks.edge_check`);
* the bounding box (float32 rounding: 1e-3 mm + 2e-7 x |coordinate|);
* the enclosed volume (relative 1e-4: float32 rounding moves it by about 1e-7).

``model.stl`` is the concatenation of the non-mirrored parts; when its triangle records are
byte-identical to the part files' (the normal case) the part files' checks stand for it, otherwise
each of its parts is checked in full. Any disagreement raises :class:`~printpipe.errors.MeshError`
with one line naming the file, the part and the figures; the pipeline then publishes nothing.

On the real pelvis (pelvic-ref003-ct, 5 parts, 572,000 triangles, a 46 MB 3MF model) the check
costs about 0.3 s of CPU on this shared machine: the STL files 0.09 s (weld, edge check, bounds and
volume), the 3MF 0.2 s (inflate 0.06 s with libdeflate or 0.16 s with zlib, parse 0.09 s, edge
check once per part when both files hold the same mesh). The pipeline runs it in a thread beside
the writing of the label maps, so a run waits for it hardly at all (``benchmarks/bench_checks.py``).
"""

from __future__ import annotations

import logging
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from printpipe.errors import MeshError

log = logging.getLogger(__name__)

__all__ = ["MeshFigures", "stl_figures", "read_3mf_figures", "verify_outputs"]

_STL_RECORD = np.dtype([("n", "<f4", 3), ("v", "<f4", (3, 3)), ("attr", "<u2")])
_ABS_TOL_MM = 1e-3
_REL_TOL = 2e-7  # float32 rounds to 6e-8 relative; three times that
_VOLUME_RTOL = 1e-4


class MeshFigures(dict):
    """Figures of one mesh read from a file: ``triangles``, ``vertices``, ``open_edges``,
    ``bad_edges``, ``degenerate``, ``bad_indices``, ``watertight``, ``volume_mm3``, ``min``, ``max``."""


def _figures(faces: np.ndarray, n_vertices: int, volume: float, lo: np.ndarray, hi: np.ndarray,
             counts: np.ndarray | None = None) -> MeshFigures:
    """Figures of an indexed mesh; ``counts`` (from :func:`edge_check` of the same structure) saves
    the edge check."""
    from printpipe.kernels.checks import edge_check

    if counts is None:
        counts = np.zeros(4, dtype=np.int64)
        if len(faces):
            edge_check(np.ascontiguousarray(faces, dtype=np.int64), int(n_vertices), counts)
    degenerate, open_edges, bad_edges, bad_idx = (int(c) for c in counts)
    return MeshFigures(
        triangles=int(len(faces)), vertices=int(n_vertices), open_edges=open_edges, bad_edges=bad_edges,
        degenerate=degenerate, bad_indices=bad_idx,
        watertight=bool(len(faces) > 0 and open_edges == 0 and bad_edges == 0 and degenerate == 0
                        and bad_idx == 0),
        volume_mm3=float(volume), min=[float(v) for v in lo], max=[float(v) for v in hi])


def stl_figures(corners: np.ndarray) -> MeshFigures:
    """Figures of a triangle soup ``(n, 3, 3)`` float32 as read from a binary STL.

    Corners are welded by exact float32 coordinates (``-0.0`` and ``0.0`` are one value), so two
    vertices that the float32 rounding of the writer merged count as one, as in any reader.
    """
    return _stl_figures(corners)[0]


def _stl_figures(corners: np.ndarray) -> tuple[MeshFigures, np.ndarray, np.ndarray]:
    """:func:`stl_figures`, plus the corner ids (3n,) and the edge counts."""
    from printpipe.kernels.checks import soup_stats, weld

    corners = np.asarray(corners)
    if corners.dtype != np.float32:
        corners = corners.astype(np.float32)
    # the kernels read the STL records in place (a strided view): no copy of the triangles
    ids = np.empty(3 * len(corners), dtype=np.int64)
    n_vertices = int(weld(corners.view(np.uint32), ids)) if len(corners) else 0
    lo, hi = np.full(3, np.nan), np.full(3, np.nan)
    volume = soup_stats(corners, lo, hi) if len(corners) else 0.0
    fig = _figures(ids.reshape(-1, 3), n_vertices, volume, lo, hi)
    counts = np.array([fig["degenerate"], fig["open_edges"], fig["bad_edges"], fig["bad_indices"]])
    return fig, ids, counts


def _read_stl(path: Path) -> tuple[bytes, np.ndarray]:
    data = path.read_bytes()
    if len(data) < 84:
        raise MeshError(f"{path.name} as written is {len(data)} bytes, shorter than a binary STL "
                        f"header; nothing was published; check the disk and run the case again")
    n = int(np.frombuffer(data, dtype="<u4", count=1, offset=80)[0])
    if len(data) != 84 + 50 * n:
        raise MeshError(f"{path.name} as written holds {len(data)} bytes but its header announces {n} "
                        f"triangles ({84 + 50 * n} bytes); nothing was published; check the disk and "
                        f"run the case again")
    rec = np.frombuffer(data, dtype=_STL_RECORD, count=n, offset=84)
    return data, rec["v"]


def read_3mf_figures(path: Path, expect: tuple[int, int, int] | None = None) -> list[MeshFigures]:
    """Figures of every ``<object>`` of a 3MF file, in document order.

    ``expect`` (vertices, triangles, objects) sizes the arrays for one parsing pass; without it, or
    when the file holds more, the elements are counted first.
    """
    return [_figures(t, nv, volume, lo, hi) for t, nv, volume, lo, hi in _read_3mf(path, expect)]


def _read_3mf(path: Path, expect: tuple[int, int, int] | None = None) -> list[tuple]:
    """Per ``<object>`` of a 3MF: (triangles (n, 3) int64, vertex count, volume, lo, hi)."""
    from printpipe.kernels.checks import count_3mf, indexed_stats, parse_3mf

    try:
        xml = _read_member(path, "3D/3dmodel.model")
    except (zipfile.BadZipFile, KeyError, OSError, ValueError) as exc:
        raise MeshError(f"{path.name} as written cannot be read back ({exc}); nothing was published; "
                        f"check the disk and run the case again") from None
    buf = np.frombuffer(xml, dtype=np.uint8)
    got_v = -1
    for attempt in ("expected", "counted"):
        if attempt == "expected":
            if expect is None:
                continue
            nv, nt, no = (int(c) for c in expect)
        else:
            counts = np.zeros(3, dtype=np.int64)
            count_3mf(buf, counts)
            nv, nt, no = (int(c) for c in counts)
        verts = np.empty((nv, 3), dtype=np.float64)
        tris = np.empty((nt, 3), dtype=np.int64)
        obj_v = np.zeros(no + 1, dtype=np.int64)
        obj_t = np.zeros(no + 1, dtype=np.int64)
        got_v, _got_t, got_o, errors = parse_3mf(buf, verts, tris, obj_v, obj_t)
        if got_v >= 0:
            break
    if got_v < 0 or errors:
        raise MeshError(f"{path.name} as written holds {errors or 'too many'} malformed vertex or "
                        f"triangle element(s); nothing was published; run the case again or report a bug")
    out = []
    for k in range(got_o):
        v = verts[obj_v[k]:obj_v[k + 1]]
        t = tris[obj_t[k]:obj_t[k + 1]]
        lo, hi = np.full(3, np.nan), np.full(3, np.nan)
        volume = indexed_stats(v, t, lo, hi) if len(t) else 0.0
        out.append((t, len(v), volume, lo, hi))
    return out


def _read_member(path: Path, name: str) -> bytes | bytearray:
    """A zip member's bytes, CRC checked; deflated members are inflated by libdeflate when the
    system has it (2.7x less CPU than zlib on the pelvis 3MF: 59 against 160 ms), else by zipfile."""
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo(name)
        lib = _libdeflate() if info.compress_type == zipfile.ZIP_DEFLATED else None
        if lib is None:
            return zf.read(name)
    import ctypes

    with open(path, "rb") as fh:
        fh.seek(info.header_offset)
        head = fh.read(30)
        if len(head) < 30 or head[:4] != b"PK\x03\x04":
            raise zipfile.BadZipFile(f"no local header for {name}")
        n_name, n_extra = int.from_bytes(head[26:28], "little"), int.from_bytes(head[28:30], "little")
        fh.seek(info.header_offset + 30 + n_name + n_extra)
        raw = fh.read(info.compress_size)
    out = bytearray(info.file_size)
    dst = (ctypes.c_char * len(out)).from_buffer(out)
    got = ctypes.c_size_t(0)
    handle = lib.libdeflate_alloc_decompressor()
    if not handle:
        raise MemoryError("libdeflate could not allocate a decompressor")
    try:
        status = lib.libdeflate_deflate_decompress(handle, raw, len(raw), dst, len(out), ctypes.byref(got))
    finally:
        lib.libdeflate_free_decompressor(handle)
    if status != 0 or got.value != info.file_size:
        raise zipfile.BadZipFile(f"{name} does not inflate to its {info.file_size} bytes")
    if lib.libdeflate_crc32(0, dst, len(out)) != info.CRC:
        raise zipfile.BadZipFile(f"CRC-32 of {name} does not match")
    del dst  # release the export on ``out``
    return out


_LIBDEFLATE: list = []


def _libdeflate():
    """The system's libdeflate through ctypes (calls release the GIL), or None."""
    if not _LIBDEFLATE:
        lib = None
        try:
            import ctypes
            import ctypes.util

            found = ctypes.util.find_library("deflate")
            if found:
                lib = ctypes.CDLL(found)
                lib.libdeflate_alloc_decompressor.restype = ctypes.c_void_p
                lib.libdeflate_alloc_decompressor.argtypes = []
                lib.libdeflate_free_decompressor.argtypes = [ctypes.c_void_p]
                lib.libdeflate_deflate_decompress.argtypes = [
                    ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_void_p, ctypes.c_size_t,
                    ctypes.POINTER(ctypes.c_size_t)]
                lib.libdeflate_deflate_decompress.restype = ctypes.c_int
                lib.libdeflate_crc32.argtypes = [ctypes.c_uint32, ctypes.c_void_p, ctypes.c_size_t]
                lib.libdeflate_crc32.restype = ctypes.c_uint32
        except (OSError, AttributeError) as exc:  # absent, or too old to have these functions
            log.debug("libdeflate not usable (%s); 3MF read back with zlib", exc)
            lib = None
        _LIBDEFLATE.append(lib)
    return _LIBDEFLATE[0]


def verify_outputs(folder: str | Path, parts: Sequence[Mapping[str, Any]], *,
                   model_parts: Sequence[str] | None = None, translation: Sequence[float] | None = None,
                   shifts: Mapping[str, Sequence[float]] | None = None) -> dict[str, Any]:
    """Check every written STL and 3MF in ``folder`` against the manifest's part entries.

    Parameters
    ----------
    folder : path
        Case folder (the pipeline's staging folder): ``model.stl``, ``parts/<name>.stl``,
        ``model.3mf`` where present.
    parts : sequence of dict
        Manifest part entries (``name``, ``triangles``, ``vertices``, ``volume_mm3``,
        ``bbox_mm``), in the order the 3MF holds its objects.
    model_parts : sequence of str, optional
        Names of the parts in ``model.stl``, in order (default: every part).
    translation : (3,) float, optional
        Offset of the written frame from the manifest's bounding boxes (build-plate frame).
    shifts : mapping of part name to (3,) float, optional
        Per-part offsets, instead of ``translation`` for the parts named.

    Returns
    -------
    dict
        ``{"files": {relative path: {"parts": n, "triangles": n, "watertight": bool}},
        "watertight": {part name: bool}, "seconds": s, "seconds_stl": s, "seconds_3mf": s,
        "cpu_s": s}`` (the 3MF is read in a thread beside the STL files; ``cpu_s`` is the CPU time
        of both threads, which on a busy machine says more about the cost than wall time).

    Raises
    ------
    MeshError
        A file that cannot be read back, is not closed and manifold, or whose counts, bounds or
        volume differ from the manifest (one line: file, part, figure seen and expected).
    """
    t0 = time.perf_counter()
    folder = Path(folder)
    entries = {str(p["name"]): p for p in parts}
    base = np.zeros(3) if translation is None else np.asarray(translation, dtype=float)
    shift = {name: np.asarray((shifts or {}).get(name, base), dtype=float) for name in entries}
    model_parts = list(entries) if model_parts is None else list(model_parts)
    files: dict[str, dict[str, Any]] = {}
    tight: dict[str, bool] = {}
    part_bytes: dict[str, bytes] = {}
    three = folder / "model.3mf"
    # the 3MF (inflate and parse, both without the GIL) is read in a thread beside the STL checks
    pool = ThreadPoolExecutor(max_workers=1) if three.exists() else None
    expect = (sum(int(p["vertices"]) for p in entries.values()),
              sum(int(p["triangles"]) for p in entries.values()), len(entries))
    three_figs = pool.submit(_timed, _read_3mf, three, expect) if pool is not None else None
    structure: dict[str, tuple[np.ndarray, int, np.ndarray]] = {}  # part -> STL corner ids, count, edges
    seconds_3mf = cpu_3mf = 0.0
    c0 = time.thread_time()
    try:
        t_stl = time.perf_counter()
        _check_stls(folder, entries, model_parts, shift, files, tight, part_bytes, structure)
        seconds_stl = time.perf_counter() - t_stl
        if three_figs is not None:
            objects, seconds_3mf, cpu_3mf = three_figs.result()
            if len(objects) != len(entries):
                raise MeshError(f"model.3mf as written holds {len(objects)} objects, the manifest {len(entries)} "
                                f"parts; nothing was published; run the case again or report a bug")
            figs = []
            for (t, nv, volume, lo, hi), (name, entry) in zip(objects, entries.items()):
                fig = _figures(t, nv, volume, lo, hi, counts=_shared_counts(structure.get(name), t, nv))
                _compare("model.3mf", name, fig, entry, shift[name], indexed=True)
                tight[name] = True
                figs.append(fig)
            files["model.3mf"] = {"parts": len(figs), "triangles": int(sum(f["triangles"] for f in figs)),
                                  "watertight": True}
    finally:
        if pool is not None:
            pool.shutdown(wait=True)
    seconds = time.perf_counter() - t0
    cpu = time.thread_time() - c0 + cpu_3mf
    log.info("verified %d model file(s) in %.3f s (%.3f s CPU)", len(files), seconds, cpu)
    return {"files": files, "watertight": tight, "seconds": round(seconds, 4),
            "seconds_stl": round(seconds_stl, 4), "seconds_3mf": round(seconds_3mf, 4),
            "cpu_s": round(cpu, 4)}


def _timed(fn, *args):
    t0, c0 = time.perf_counter(), time.thread_time()
    out = fn(*args)
    return out, time.perf_counter() - t0, time.thread_time() - c0


def _shared_counts(stl: tuple | None, tris: np.ndarray, n_vertices: int) -> np.ndarray | None:
    """The STL's edge counts when the 3MF object is the same mesh up to numbering, else None."""
    from printpipe.kernels.checks import same_structure

    if stl is None:
        return None
    ids, n_ids, counts = stl
    return counts if same_structure(ids, np.ascontiguousarray(tris), n_ids, int(n_vertices)) else None


def _check_stls(folder: Path, entries: dict, model_parts: list[str], shift: dict, files: dict,
                tight: dict, part_bytes: dict, structure: dict) -> None:
    """Check ``parts/<name>.stl`` and ``model.stl``, filling ``files``, ``tight`` and ``part_bytes``."""
    for name, entry in entries.items():
        path = folder / "parts" / f"{name}.stl"
        if not path.exists():
            continue
        data, corners = _read_stl(path)
        part_bytes[name] = data[84:]
        fig, ids, counts = _stl_figures(corners)
        structure[name] = (ids, fig["vertices"], counts)
        _compare(f"parts/{name}.stl", name, fig, entry, shift[name], indexed=False)
        files[f"parts/{name}.stl"] = {"parts": 1, "triangles": fig["triangles"], "watertight": True}
        tight[name] = True

    model = folder / "model.stl"
    if model.exists():
        data, corners = _read_stl(model)
        if _concatenates(data, 84, [part_bytes.get(n) for n in model_parts]):
            pass  # the part files just checked hold exactly these triangles
        else:
            start = 0
            for name in model_parts:
                count = int(entries[name]["triangles"])
                fig = stl_figures(corners[start:start + count])
                _compare("model.stl", name, fig, entries[name], shift[name], indexed=False)
                start += count
            if start != len(corners):
                raise MeshError(f"model.stl as written holds {len(corners)} triangles, the manifest's parts "
                                f"{start}; nothing was published; run the case again or report a bug")
        files["model.stl"] = {"parts": len(model_parts), "triangles": int(len(corners)), "watertight": True}
        for name in model_parts:
            tight[name] = True


def _concatenates(data: bytes, start: int, pieces: list) -> bool:
    """Whether ``data[start:]`` is exactly ``pieces`` one after another (bytes slices compare with
    memcmp; a memoryview compares item by item, 15 times slower)."""
    if any(p is None for p in pieces) or len(data) - start != sum(len(p) for p in pieces):
        return False
    for p in pieces:
        if data[start:start + len(p)] != p:
            return False
        start += len(p)
    return True


def _compare(file: str, name: str, fig: MeshFigures, entry: Mapping[str, Any], shift: np.ndarray, *,
             indexed: bool) -> None:
    # each message spelled out at its raise (the i18n extractor reads raise sites)
    seen, want = fig["triangles"], int(entry["triangles"])
    if seen != want:
        raise MeshError(f"{file} as written does not match the manifest: part {name} holds {seen} triangles, "
                        f"the manifest says {want}; nothing was published; run the case again, and report "
                        f"a bug if it persists")
    seen, want = fig["vertices"], int(entry["vertices"])
    if indexed and seen != want:
        raise MeshError(f"{file} as written does not match the manifest: part {name} holds {seen} vertices, "
                        f"the manifest says {want}; nothing was published; run the case again, and report "
                        f"a bug if it persists")
    lo = np.asarray(entry["bbox_mm"]["min"], dtype=float) + shift
    hi = np.asarray(entry["bbox_mm"]["max"], dtype=float) + shift
    if not fig["watertight"]:
        far = float(np.nanmax(np.abs(np.concatenate([lo, hi]))))
        raise MeshError(
            f"{file} as written is not a closed manifold surface: part {name} has {fig['open_edges']} open "
            f"edge(s), {fig['bad_edges']} over-shared or mis-wound edge(s) and {fig['degenerate']} "
            f"collapsed triangle(s) when read back (coordinates up to {far:.3g} mm); nothing was "
            f"published; check the input geometry (`printpipe inspect`), use --frame plate, or report a bug")
    got_lo, got_hi = np.asarray(fig["min"]), np.asarray(fig["max"])
    tol = _ABS_TOL_MM + _REL_TOL * np.maximum(np.abs(lo), np.abs(hi))
    if not (np.all(np.abs(got_lo - lo) <= tol) and np.all(np.abs(got_hi - hi) <= tol)):
        spans = f"{np.round(got_lo, 3).tolist()}..{np.round(got_hi, 3).tolist()}"
        says = f"{np.round(lo, 3).tolist()}..{np.round(hi, 3).tolist()}"
        raise MeshError(f"{file} as written does not match the manifest: part {name} spans {spans} mm, the "
                        f"manifest says {says} mm; nothing was published; run the case again, and report a "
                        f"bug if it persists")
    got, want_mm3 = fig["volume_mm3"], float(entry["volume_mm3"])
    if not abs(got - want_mm3) <= _VOLUME_RTOL * abs(want_mm3) + 1e-3:
        raise MeshError(f"{file} as written does not match the manifest: part {name} encloses {got:.6g} mm3, "
                        f"the manifest says {want_mm3:.6g} mm3; nothing was published; run the case again, "
                        f"and report a bug if it persists")
