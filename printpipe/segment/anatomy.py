"""Separation seeded by anatomy: one marker per bone, placed from the femoral heads, then a
watershed that follows the joint spaces.

With both femoral heads found (:mod:`printpipe.segment.heads`), every bone of the pelvic region
gets one marker from anatomy alone, in millimetres of the patient frame:

* ``femur_left``/``femur_right``: the ball inside the head's joint space, and the bone lateral to
  and below the head's centre (greater trochanter, shaft), where no part of the hip bone lies;
* ``hip_left``/``hip_right``: the acetabular roof, the bone just outside the joint space above the
  head's centre;
* ``sacrum``: bone on the mid-sagittal plane between the heads, posterior to them and 30-90 mm
  above them (S2-S4; the promontory is ~100 mm above the heads, the symphysis below them).
* ``implant_left``/``implant_right``: where a hip prosthesis stands in for a head
  (:class:`~printpipe.segment.heads.ImplantHead`), its metal (every piece above the head's
  ``metal_hu`` that reaches within 5 mm of its cup: ball, trunnion and stem, cup, cup screws) and the
  one-voxel rim of partial volume around it. Metal is not bone: the watershed neither grows from nor
  into it, so no bone part holds any of it; on that side the femoral marker is the shaft alone
  (the head and neck were resected) and the hip joint needs no cut (the cup and the liner lie
  between the bones).

The hip joint is cut along the fitted sphere (the shell at the joint space's radius, except
where the neck leaves the head); the other joints (sacroiliac, symphysis, lumbosacral) are
carved where a thin dark layer lies between two bright plates (``valley_map``). A marker
watershed on the distance to the carved surface then settles every other voxel, with its
borders at the carved joints and the narrow necks of bony bridges. Bone not connected to a
marker is not part of the pelvis and is labelled separately.
"""

from __future__ import annotations

import logging
from typing import Any, NamedTuple

import numpy as np

from printpipe.segment.heads import HeadSphere
from printpipe.volume import Volume

log = logging.getLogger(__name__)

#: marker labels
FEMUR = {"left": 1, "right": 2}
HIP = {"left": 3, "right": 4}
SACRUM = 5
IMPLANT = {"left": 6, "right": 7}
NAMES = {1: "femur_left", 2: "femur_right", 3: "hip_left", 4: "hip_right", 5: "sacrum", 6: "implant_left",
         7: "implant_right"}
#: the marker of bowel contrast touching bone: its basin is removed after the watershed
CONTRAST = 9

#: the femoral marker: the ball this far (mm) inside the joint space ...
_HEAD_INSET_MM = 2.0
#: ... and bone at least this far lateral of and below the head's centre (mm)
_SHAFT_LATERAL_MM = 20.0
_SHAFT_BELOW_MM = 20.0
#: ... within this distance (mm) of the joint space: the markers are seeds, the watershed does the rest
_SHAFT_REACH_MM = 40.0
#: the acetabular marker: bone between these distances (mm) outside the joint space, in the
#: directions more than 35 deg above the head's equator
_ROOF_MM = (2.0, 14.0)
_ROOF_SIN = 0.57
#: the sacral marker: within this distance (mm) of the mid-sagittal plane, this high above the
#: heads' centres (mm), and at least this far posterior of them (mm)
_SACRUM_HALF_MM = 15.0
_SACRUM_Z_MM = (30.0, 90.0)
_SACRUM_POSTERIOR_MM = 10.0
#: ... and up the vertebral column, every eroded piece of bone there of at least this volume (mm^3;
#: pieces are judged for contrast from this size, here and in :func:`contrast_markers`)
_PIECE_MM3 = 200.0
#: contrast pressed against the sacrum: its piece is eroded one voxel more at a time, until the
#: loop parts from the bone at the contact, down to this depth in all (mm in-plane, the two voxels
#: of :func:`core_pieces` included); a loop of the rectum or sigmoid that carries enough contrast
#: to press on the bone is at least 15 mm across (see :func:`pressed_contrast`)
_SPLIT_MM = 6.0
#: ... and a piece that parts is not contrast when the bone within this reach (mm, in-plane)
#: encloses it in its slices (see :func:`_enclosed`)
_ENCLOSED_MM = 30.0
#: ... nor when it is smaller than this (cm^3): the lumen of a loop that presses on the bone is 15 mm
#: across or more, and a piece that parts holds at least a 12 mm length of it (pi 7.5^2 12 mm^3);
#: bright spots of a vertebral endplate part at 0.4-0.7 cm^3 (pelvic-ref002 on 0.75 mm slices)
_LOOP_CM3 = 2.0
#: ... nor when it lies farther than this (mm) from the sacral marker (on the sacral bodies' core,
#: two voxels inside their surface, and up the column): a loop pressed on the bone touches it
_TOUCH_MM = 10.0
#: the hip-joint cut: a shell this thick (mm, at least one voxel) at the joint-space radius, left
#: open within this angle (deg) of the neck's axis
_SHELL_MM = 1.0
_NECK_HALF_DEG = 55.0


def _coords(vol: Volume, sl: tuple[slice, slice, slice]) -> np.ndarray:
    """LPS coordinates (mm) of the voxel centres of the box ``sl``: an (nz, ny, nx, 3) float32 array."""
    k = np.arange(sl[0].start, sl[0].stop)
    j = np.arange(sl[1].start, sl[1].stop)
    i = np.arange(sl[2].start, sl[2].stop)
    a = vol.affine
    out = (a[:3, 3].astype(np.float32)
           + (k[:, None, None, None] * a[:3, 0]).astype(np.float32)
           + (j[None, :, None, None] * a[:3, 1]).astype(np.float32)
           + (i[None, None, :, None] * a[:3, 2]).astype(np.float32))
    return out


def _box(vol: Volume, center: np.ndarray, radius) -> tuple[slice, slice, slice]:
    """Index box covering the LPS box ``center`` +- ``radius`` (mm; a number or one per axis)."""
    rx, ry, rz = np.broadcast_to(np.asarray(radius, dtype=float), (3,))
    lo = np.full(3, np.inf)
    hi = np.full(3, -np.inf)
    for dx in (-rx, rx):
        for dy in (-ry, ry):
            for dz in (-rz, rz):
                k = vol.patient_to_index(np.array([center + [dx, dy, dz]]))[0]
                lo = np.minimum(lo, k)
                hi = np.maximum(hi, k)
    lo = np.clip(np.floor(lo).astype(int), 0, vol.shape)
    hi = np.clip(np.ceil(hi).astype(int) + 1, 0, vol.shape)
    return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))


class _Pieces(tuple):
    """``(comp, n)``, and the boxes of the pieces (``scipy.ndimage.find_objects(comp)``), found
    once on first use."""

    _objs = None

    @property
    def objs(self) -> list:
        if self._objs is None:
            from scipy import ndimage as ndi

            self._objs = ndi.find_objects(self[0])
        return self._objs


def _dilate2(core: np.ndarray) -> np.ndarray:
    """``core`` dilated twice by the 6-neighbour cross (``binary_dilation(core, cross, iterations=2)``)."""
    return _dilate(core, 2)


def core_pieces(bone: np.ndarray) -> tuple[np.ndarray, int]:
    """The 6-connected pieces of the bone mask eroded by two voxels (a contact through the blurred
    wall of a bowel loop, or a thin bony bridge, breaks), numbered."""
    import cc3d

    from printpipe.kernels.segment import erode_cross

    core = erode_cross(np.ascontiguousarray(bone, dtype=bool), 2, False)
    return _Pieces(cc3d.connected_components(core, connectivity=6, return_N=True))


def contrast_markers(vol: Volume, bone: np.ndarray, mk: np.ndarray, pieces: tuple[np.ndarray, int]
                     ) -> tuple[np.ndarray, dict[str, Any]]:
    """Mark (in place, label :data:`CONTRAST`) bowel contrast that touches bone: the pieces of the
    mask eroded by two voxels (a contact through blurred bowel wall breaks) that hold no
    anatomical marker and have no cortex (see :func:`printpipe.segment.naming.looks_like_contrast`),
    and contrast pressed against the sacrum or the spine (:func:`pressed_contrast`)."""
    hu = vol.hu
    vox_mm3 = float(np.prod(vol.spacing))
    comp, n = pieces[0], pieces[1]
    if n == 0:
        return mk, {"contrast_pieces": 0}
    marked = np.zeros(n + 1, bool)
    marked[np.unique(comp[mk > 0])] = True
    objs = _piece_boxes(pieces)
    found = []
    for i, sl in enumerate(objs, 1):
        if sl is None or marked[i]:
            continue
        m = comp[sl] == i
        if m.sum() * vox_mm3 < _PIECE_MM3:
            continue
        is_c, _ = _judge_piece(comp, i, sl, bone, hu)
        if is_c:
            mk[sl][m] = CONTRAST
            found.append(round(float(m.sum() * vox_mm3 / 1000.0), 1))
    pressed = pressed_contrast(vol, hu, bone, mk, pieces)
    return mk, {"contrast_pieces": len(found), "volume_cm3": found[:20], "pressed_on_sacrum": len(pressed),
                "pressed_cm3": pressed[:20]}


class _Split(NamedTuple):
    """What :func:`pressed_contrast` judges one marked piece with."""

    piece: np.ndarray       # the marked piece (bool) on the box ``sl``
    sl: tuple[slice, slice, slice]
    bone: np.ndarray        # the whole bone mask
    hu: np.ndarray          # the whole HU volume
    other: np.ndarray       # on the box: the piece's femoral, hip and implant markers
    ant: np.ndarray         # the anterior direction in index space (k, j, i)
    spacing: tuple[float, float, float]
    min_vox: float
    sac: np.ndarray         # on the box: the sacral marker


def pressed_contrast(vol: Volume, hu: np.ndarray, bone: np.ndarray, mk: np.ndarray,
                     pieces: tuple[np.ndarray, int]) -> list[float]:
    """Mark (in place, :data:`CONTRAST`) bowel contrast pressed against the sacrum or the lumbar
    spine over more than the two voxels :func:`core_pieces` erodes: it then lies in the sacral
    marker's own piece. That piece is eroded one voxel more at a time (to ``_SPLIT_MM``); a loop
    pressed against the bone parts from it at the contact, which is narrower than the loop. A piece
    that parts is contrast (:func:`_parted_loop`) when it lies in front of the bone it parted from
    and is not enclosed by bone, holds no femoral or hip marker, and is a plateau that dims at its
    rim with no cortex. Returns the volumes marked (cm^3)."""
    comp = pieces[0]
    objs = _piece_boxes(pieces)
    min_vox = _PIECE_MM3 / float(np.prod(vol.spacing))
    # LPS y grows towards the patient's back
    ant = -vol.affine[1, :3]
    steps = max(1, round(_SPLIT_MM / float(min(vol.spacing[1:]))) - 2)
    found: list[float] = []
    for i in np.unique(comp[mk == SACRUM]).tolist():
        if i == 0 or objs[i - 1] is None:
            continue
        pad = steps + 2
        sl = tuple(slice(max(a.start - pad, 0), min(a.stop + pad, n)) for a, n in zip(objs[i - 1], comp.shape))
        piece = comp[sl] == i
        if np.count_nonzero(piece) < 2 * min_vox:
            continue
        m = mk[sl]
        other = piece & (m > 0) & (m != SACRUM) & (m != CONTRAST)
        sp = _Split(piece, sl, bone, hu, other, ant, vol.spacing, min_vox, piece & (m == SACRUM))
        found += _split_off_contrast(sp, m, steps)
    return found


def _split_off_contrast(sp: _Split, m: np.ndarray, steps: int) -> list[float]:
    """:func:`pressed_contrast` for one marked piece; ``m``: the markers on its box (marked in
    place)."""
    import cc3d

    from printpipe.kernels.segment import erode_cross
    from printpipe.segment import _fast

    sac = sp.sac
    cur = sp.piece
    found: list[float] = []
    for k in range(1, steps + 1):
        cur = erode_cross(cur, 1, False)
        cc, n = cc3d.connected_components(cur, connectivity=6, return_N=True)
        if n < 2:
            continue
        held = _fast.bincount(cc[sac], n + 1)
        held[0] = 0
        main = int(np.argmax(held))
        if held[main] == 0:
            break
        boxes = _fast.find_objects(cc, n)
        loops = [j for j, bx in enumerate(boxes, 1)
                 if j != main and bx is not None and _parted_loop(sp, cc, j, k, bx, main)]
        if not loops:
            continue
        # the loops together (one loop can part in several pieces), grown back as far as no bone
        # piece is nearer: its share of the marked piece is the contrast marker; no sacral seed
        # stays nearer to it than to the bone (the watershed settles the contact)
        is_loop = _fast.isin(cc, loops)
        region, _ = _grown_back(is_loop, (cc > 0) & ~is_loop, k, sp.piece, sp.bone[sp.sl])
        pad = k + 4
        near = tuple(slice(max(min(boxes[j - 1][a].start for j in loops) - pad, 0),
                           max(boxes[j - 1][a].stop for j in loops) + pad) for a in range(3))
        seeds = m[near] == SACRUM
        seeds &= _nearer(is_loop[near], (cc[near] > 0) & ~is_loop[near], sp.spacing)
        m[near][seeds] = 0
        m[region] = CONTRAST
        cur &= ~region
        found.append(round(float(np.count_nonzero(region) * np.prod(sp.spacing) / 1000.0), 1))
    return found


def _parted_loop(sp: _Split, cc: np.ndarray, j: int, k: int, bx: tuple[slice, slice, slice], main: int) -> bool:
    """Whether the piece ``j`` of ``cc`` (the marked piece eroded ``k`` voxels more; box ``bx``;
    ``main``: the piece that holds the sacral marker) is contrast that parted from the sacrum:

    * in front of the bone it parted from (:func:`_in_front`): bowel lies in front of the sacrum
      and the spine, their processes stand behind;
    * not enclosed by bone in its slices (:func:`_enclosed`): a bright spot inside a vertebral
      body (a sclerotic endplate, a bone island in fatty marrow) is;
    * of a loop's size (``_LOOP_CM3``), holding no femoral, hip or implant marker, and lying on
      the sacrum or the vertebral bodies (:func:`_touches_sacrum`);
    * a plateau that dims at its rim, with no cortex (:func:`~printpipe.segment.naming.looks_like_contrast`
      with no margin: a piece that parted at a narrow contact needs none; bone has its cortex at
      the rim, darker inside).
    """
    from printpipe.segment.naming import _CORTEX_HU, looks_like_contrast

    if np.count_nonzero(cc[bx] == j) < sp.min_vox / 4:
        return False
    axis = 1 + int(abs(sp.ant[2]) > abs(sp.ant[1]))
    rows = tuple(slice(None) if a == axis else b for a, b in enumerate(bx))
    if _in_front(cc[rows] == j, cc[rows] == main, axis, bool(sp.ant[axis] > 0)) < 0.5:
        return False
    if _enclosed(sp, cc, j, k, bx) >= 0.5:
        return False
    sub = tuple(slice(max(b.start - k - 2, 0), min(b.stop + k + 2, n)) for b, n in zip(bx, cc.shape))
    side = cc[sub] == j
    box = tuple(slice(s.start + b.start, s.start + b.stop) for s, b in zip(sp.sl, sub))
    region, full = _grown_back(side, (cc[sub] > 0) & ~side, k, sp.piece[sub], sp.bone[box])
    if np.count_nonzero(region) * np.prod(sp.spacing) < _LOOP_CM3 * 1000.0 or (region & sp.other[sub]).any():
        return False
    if not _touches_sacrum(sp, region, sub):
        return False
    _, stats = looks_like_contrast(full, sp.hu[box])
    return bool(stats) and stats["p95_hu"] < _CORTEX_HU and stats["inside_minus_rim_hu"] > 0


def _touches_sacrum(sp: _Split, region: np.ndarray, sub: tuple[slice, slice, slice]) -> bool:
    """Whether ``region`` (on ``sub`` of the marked piece's box) comes within ``_TOUCH_MM`` of the
    sacral marker: a loop pressed against the sacrum or the vertebral bodies lies on them, where a
    piece of a hip bone that parts at a thin ramus (the pubis, in front of the sacrum too) lies
    10 cm from them."""
    import edt

    pad = [int(np.ceil(_TOUCH_MM / s)) for s in sp.spacing]
    box = tuple(slice(max(b.start - p, 0), min(b.stop + p, n)) for b, p, n in zip(sub, pad, sp.sac.shape))
    seeds = sp.sac[box]
    if not seeds.any():
        return False
    mine = np.zeros(seeds.shape, bool)
    mine[tuple(slice(b.start - c.start, b.start - c.start + r) for b, c, r in zip(sub, box, region.shape))] = region
    d = edt.edt(~seeds, anisotropy=tuple(map(float, sp.spacing)), black_border=False)
    return bool(np.min(d[mine]) <= _TOUCH_MM)


def _enclosed(sp: _Split, cc: np.ndarray, j: int, k: int, bx: tuple[slice, slice, slice]) -> float:
    """The share of the piece ``j`` of ``cc`` (box ``bx`` on the marked piece's box) that the other
    bone encloses in its slices (a hole of the bone, the piece and its rim left out), looked for
    within ``_ENCLOSED_MM`` of it: a vertebral body, 35-50 mm across, encloses a spot inside it;
    the pelvic ring, 100 mm and more across, encloses no loop at that reach."""
    from printpipe.segment import _fast

    pad = [0] + [int(np.ceil(_ENCLOSED_MM / s)) for s in sp.spacing[1:]]
    box = tuple(slice(max(s.start + b.start - p, 0), min(s.start + b.stop + p, n))
                for s, b, p, n in zip(sp.sl, bx, pad, sp.bone.shape))
    mine = np.zeros([b.stop - b.start for b in box], bool)
    local = tuple(slice(s.start + b.start - c.start, s.start + b.stop - c.start) for s, b, c in zip(sp.sl, bx, box))
    mine[local] = cc[bx] == j
    holes = _fast.fill_holes_slices(sp.bone[box] & ~_dilate(mine, k + 2))
    return float(np.count_nonzero(holes & mine)) / max(int(np.count_nonzero(mine)), 1)


def _in_front(mine: np.ndarray, bone: np.ndarray, axis: int, forward: bool) -> float:
    """The share of ``mine`` with no voxel of ``bone`` in front of it, along the image ``axis``
    (towards higher indices when ``forward``), in its own row."""
    n = mine.shape[axis]
    idx = np.arange(n).reshape([-1 if a == axis else 1 for a in range(3)])
    if forward:
        front = mine & (idx > np.where(bone, idx, -1).max(axis=axis, keepdims=True))
    else:
        front = mine & (idx < np.where(bone, idx, n).min(axis=axis, keepdims=True))
    return float(np.count_nonzero(front)) / max(int(np.count_nonzero(mine)), 1)


def _nearer(a: np.ndarray, b: np.ndarray, spacing) -> np.ndarray:
    """Voxels nearer (mm) to ``a`` than to ``b``."""
    import edt

    sp = tuple(map(float, spacing))
    return edt.edt(~a, anisotropy=sp, black_border=False) < edt.edt(~b, anisotropy=sp, black_border=False)


def _grown_back(side: np.ndarray, rest: np.ndarray, k: int, piece: np.ndarray, bone: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray]:
    """``side`` (pieces of the marked piece eroded ``k`` voxels more) grown back: its share of the
    marked piece ``piece`` (``k`` voxels, not into the growth of the other pieces ``rest``) and of
    the bone (the two voxels more that :func:`core_pieces` eroded: the rim it is judged with)."""
    region = _dilate(side, k) & piece & ~_dilate(rest, k)
    full = _dilate(region, 2) & bone & ~_dilate(rest, k + 2)
    return region, full


def _dilate(m: np.ndarray, n: int) -> np.ndarray:
    """``m`` dilated ``n`` times by the 6-neighbour cross."""
    from printpipe.kernels.segment import erode_cross

    return ~erode_cross(~m, n, True)


def _sacral_core(cand: np.ndarray, sl: tuple[slice, slice, slice], bone: np.ndarray, hu: np.ndarray,
                 comp: np.ndarray | tuple) -> np.ndarray:
    """The largest piece of the eroded bone in ``cand`` (a mask on the box ``sl``) that is bone,
    not contrast; each piece is judged whole, with the rim the erosion took. ``comp``: the pieces
    (numbered), or :func:`core_pieces`' result."""
    pieces = comp
    comp = pieces[0] if isinstance(pieces, tuple) else pieces
    ids, counts = np.unique(comp[sl][cand], return_counts=True)
    objs = _piece_boxes(pieces)
    for i in ids[np.argsort(-counts)]:
        if i == 0:
            continue
        if not _judge_piece(comp, int(i), objs[i - 1], bone, hu)[0]:
            return cand & (comp[sl] == i)
    return np.zeros_like(cand)


def _piece_boxes(pieces) -> list:
    """The boxes of the numbered pieces ``pieces`` (:func:`core_pieces`' result, or the numbered
    array itself)."""
    if isinstance(pieces, _Pieces):
        return pieces.objs
    from scipy import ndimage as ndi

    return ndi.find_objects(pieces[0] if isinstance(pieces, tuple) else pieces)


def _judge_piece(comp: np.ndarray, i: int, sl: tuple[slice, slice, slice], bone: np.ndarray, hu: np.ndarray
                 ) -> tuple[bool, dict[str, float]]:
    """:func:`printpipe.segment.naming.looks_like_contrast` for the eroded piece ``i`` (box ``sl``),
    judged whole: with the two voxel layers the erosion took (its rim), not its core alone."""
    from printpipe.segment.naming import looks_like_contrast

    pad = tuple(slice(max(a.start - 2, 0), a.stop + 2) for a in sl)
    full = _dilate2(comp[pad] == i) & bone[pad]
    return looks_like_contrast(full, hu[pad])


def markers(vol: Volume, bone: np.ndarray, heads: dict[str, HeadSphere], hu: np.ndarray,
            pieces: tuple[np.ndarray, int]) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Anatomical markers (uint8, labels of :data:`NAMES`) and the hip-joint cut (bool) on ``vol``."""
    mk = np.zeros(bone.shape, np.uint8)
    cut = np.zeros(bone.shape, bool)
    cl, cr = heads["left"].center, heads["right"].center
    mid = (cl + cr) / 2
    lat = (cl - cr) / np.linalg.norm(cl - cr)  # towards the patient's left
    info: dict[str, Any] = {}
    shell = max(_SHELL_MM, float(min(vol.spacing)))
    for side, h in heads.items():
        out = 1.0 if side == "left" else -1.0
        reach = h.joint_mm + max(_ROOF_MM[1], _SHAFT_REACH_MM)
        sl = _box(vol, h.center, reach)
        p = _coords(vol, sl) - h.center.astype(np.float32)
        # |p| summed component by component: the same float32 sums as (p ** 2).sum(-1), 3x faster
        d = np.sqrt(p[..., 0] * p[..., 0] + p[..., 1] * p[..., 1] + p[..., 2] * p[..., 2])
        b = bone[sl]
        m = mk[sl]
        # neck axis: from the centre towards the femur's bone lateral of and below the head
        lateral = (p @ lat.astype(np.float32)) * out
        below = -p[..., 2]
        shaft = b & (lateral > _SHAFT_LATERAL_MM) & (below > _SHAFT_BELOW_MM)
        near = b & (d > h.joint_mm + 3) & (d < h.joint_mm + 20) & (lateral > 0) & (p[..., 2] < 0.3 * d)
        axis = p[near].mean(axis=0) if near.any() else np.array([out * lat[0], out * lat[1], -1.0])
        axis = axis / max(np.linalg.norm(axis), 1e-9)
        cosang = (p @ axis.astype(np.float32)) / np.maximum(d, 1e-6)
        in_neck = cosang > np.cos(np.deg2rad(_NECK_HALF_DEG))
        roof = b & (d > h.joint_mm + _ROOF_MM[0]) & (d < h.joint_mm + _ROOF_MM[1]) & (p[..., 2] > _ROOF_SIN * d) & ~in_neck
        if h.implant:   # no head of bone, no joint to cut: the cup and liner lie between the bones
            head_ball = np.zeros_like(b)
        else:
            head_ball = b & (d < h.joint_mm - _HEAD_INSET_MM)
            cut[sl] |= b & (np.abs(d - h.joint_mm) <= shell / 2 + 0.5) & ~in_neck
        m[shaft | head_ball] = FEMUR[side]
        m[roof] = HIP[side]
        info[side] = {"neck_axis": [round(float(v), 2) for v in axis], "head_marker_voxels": int(head_ball.sum()),
                      "shaft_marker_voxels": int(shaft.sum()), "roof_marker_voxels": int(roof.sum())}
        if h.implant:
            metal = implant_mask(vol, bone, hu, h)
            mk[metal] = IMPLANT[side]
            info[side]["implant_voxels"] = int(metal.sum())
    # sacrum: on the mid-sagittal plane, above and behind the heads
    sl, sac = _midline_band(vol, bone, mk, mid, lat, _SACRUM_Z_MM[1])
    # the sacrum, not a loop of contrast-filled bowel in front of it (a thin contact breaks when
    # the mask is eroded by two voxels)
    sac = _sacral_core(sac, sl, bone, hu, pieces)
    mk[sl][sac] = SACRUM
    info["sacrum_marker_voxels"] = int(sac.sum())
    info["column_marker_voxels"] = _column_marker(vol, bone, hu, mk, pieces, mid, lat)
    return mk, cut, info


def _midline_band(vol: Volume, bone: np.ndarray, mk: np.ndarray, mid: np.ndarray, lat: np.ndarray, z_hi: float
                  ) -> tuple[tuple[slice, slice, slice], np.ndarray]:
    """The sacral markers' band: bone not yet marked within ``_SACRUM_HALF_MM`` of the heads'
    mid-sagittal plane, ``_SACRUM_POSTERIOR_MM`` or more behind the heads' midpoint ``mid`` and from
    ``_SACRUM_Z_MM[0]`` to ``z_hi`` (mm) above it; ``lat`` points to the patient's left. Returns the
    index box and the band on it."""
    lo = mid + np.array([-2 * _SACRUM_HALF_MM, _SACRUM_POSTERIOR_MM, _SACRUM_Z_MM[0]])
    hi = mid + np.array([2 * _SACRUM_HALF_MM, _SACRUM_POSTERIOR_MM + 150.0, z_hi])
    box = _box(vol, (lo + hi) / 2, (hi - lo) / 2)
    p = _coords(vol, box) - mid.astype(np.float32)
    off = p @ lat.astype(np.float32)
    band = (bone[box] & (np.abs(off) < _SACRUM_HALF_MM) & (p[..., 2] > _SACRUM_Z_MM[0]) & (p[..., 2] < z_hi)
            & (p[..., 1] > _SACRUM_POSTERIOR_MM) & (mk[box] == 0))
    return box, band


def _column_marker(vol: Volume, bone: np.ndarray, hu: np.ndarray, mk: np.ndarray, pieces: tuple[np.ndarray, int],
                   mid: np.ndarray, lat: np.ndarray) -> int:
    """Extend the sacral marker up the vertebral column, in place: the bone in the sacral marker's
    band about the mid-sagittal plane, behind the heads, from ``_SACRUM_Z_MM[0]`` above them to the
    top of the volume, in every eroded piece there of at least ``_PIECE_MM3`` that shows
    cortex (judged whole, with its rim: not contrast, and voxels of cortical HU) and is joined to
    the sacral marker through bone. The sacrum and the lumbar vertebrae stand on the midline and no
    hip bone comes within 15 mm of it there.
    Every piece, not only the marker's: an osteoporotic sacrum breaks
    into small pieces when eroded, so its largest piece can be a few hundred voxels; a sacroiliac
    joint bridged by a sharp kernel then let a hip bone's basin sweep up the sacral ala into the
    lumbar bodies before the sacral basin reached them (pelvic-ref002 under an unsharp mask: the
    right hip bone took the right half of L3-L5, 401 ml against 328). The spine is cut off the
    sacrum later, at the L5/S1 disc (:func:`printpipe.segment.spine._split_spine`). Returns the
    voxels marked."""
    from printpipe.segment.naming import _CORTEX_HU

    comp = pieces[0]
    corners = np.array([[0.0, 0.0, 0.0], [bone.shape[0] - 1.0, 0.0, 0.0]])
    z_hi = float(vol.index_to_patient(corners)[:, 2].max()) - float(mid[2])
    if z_hi <= _SACRUM_Z_MM[0]:
        return 0
    # to the top of the volume, its last slice included
    box, band = _midline_band(vol, bone, mk, mid, lat, z_hi + float(max(vol.spacing)))
    # only bone joined to the sacral marker (26-connected through the bone in the box): a loop of
    # bowel tagged denser than cortex (p95 above 500 HU) that lies free on the midline is no vertebra
    import cc3d

    cc = cc3d.connected_components(np.ascontiguousarray(bone[box]), connectivity=26)
    joined = np.unique(cc[mk[box] == SACRUM])
    joined = joined[joined > 0]
    if not len(joined):
        return 0
    band &= np.isin(cc, joined)
    del cc
    ids = np.unique(comp[box][band])
    objs = _piece_boxes(pieces)
    min_vox = _PIECE_MM3 / float(np.prod(vol.spacing))
    keep = []
    for i in ids.tolist():
        if i == 0 or objs[i - 1] is None:
            continue
        sl = objs[i - 1]
        if np.count_nonzero(comp[sl] == i) < min_vox:
            continue
        is_c, stats = _judge_piece(comp, i, sl, bone, hu)
        # bone shown, not only contrast ruled out: voxels of cortical HU (a loop whose contrast
        # dims towards its middle passes as "not contrast" but has none)
        if not is_c and stats and stats["p95_hu"] >= _CORTEX_HU:
            keep.append(i)
    if not keep:
        return 0
    col = band & np.isin(comp[box], keep)
    mk[box][col] = SACRUM
    return int(col.sum())


def implant_mask(vol: Volume, bone: np.ndarray, hu: np.ndarray, h: HeadSphere) -> np.ndarray:
    """The prosthesis around the implant head ``h``: every 26-connected piece of metal (above
    ``h.metal_hu``) that reaches within 5 mm of the outside of its cup, and the voxels of ``bone``
    26-adjacent to it (the partial-volume rim of the metal's edge, neither bone nor measurable)."""
    import cc3d
    from scipy import ndimage as ndi

    from printpipe.segment._util import _bbox

    out = np.zeros(bone.shape, bool)
    metal = hu > h.metal_hu
    if not metal.any():
        return out
    lo, hi = _bbox(metal, pad=1)
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    comp = cc3d.connected_components(metal[box], connectivity=26)
    # the cup's pieces, and the ball's (the same piece unless the head is out of its cup)
    balls = [(h.center, h.joint_mm + 5.0)]
    if getattr(h, "ball_center", None) is not None:
        balls.append((h.ball_center, h.radius_mm + 5.0))
    ids = []
    for c, reach in balls:
        near = tuple(slice(max(n.start, b.start), max(min(n.stop, b.stop), max(n.start, b.start)))
                     for n, b in zip(_box(vol, c, reach), box))
        near_rel = tuple(slice(n.start - b.start, n.stop - b.start) for n, b in zip(near, box))
        p = _coords(vol, near)
        inside = ((p - c.astype(np.float32)) ** 2).sum(-1) < np.float32(reach ** 2)
        ids += np.unique(comp[near_rel][inside]).tolist()
    ids = np.unique([i for i in ids if i > 0])
    if not len(ids):
        return out
    m = np.isin(comp, ids)
    out[box] = m | (ndi.binary_dilation(m, structure=np.ones((3, 3, 3), bool)) & bone[box])
    return out


def flood(hu: np.ndarray, bone: np.ndarray, spacing: tuple[float, float, float], mk: np.ndarray, cut: np.ndarray
          ) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Grow the markers through the bone: joint spaces carved (``valley_map`` and the hip-joint
    ``cut``), a marker watershed on the distance to the carved surface, then the carved voxels
    given to the nearest part. Bone no marker reaches keeps its own components, numbered after
    the markers. Returns uint16 regions (int32 when many), the joint-space map (bool) and a record."""
    import edt

    from printpipe.kernels.segment import distance_levels, label_counts, neighbour_dirs, valley_map
    from printpipe.kernels.segment import flood as _flood
    from printpipe.segment import separate as sep
    from printpipe.segment._util import _threads

    sp = np.asarray(spacing, dtype=float)
    dirs = neighbour_dirs()
    steps = np.array([max(1, int(round(sep._JOINT_RAY_MM / float(np.linalg.norm(d * sp))))) for d in dirs],
                     dtype=np.int64)
    valley = valley_map(hu, bone, dirs, steps, sep._VALLEY_CAP, sep._VALLEY_BRIGHT, sep._VALLEY_DELTA).view(bool)
    joint = valley | (cut & bone)
    carved = bone & ~joint
    counts = label_counts(mk, 256)   # np.bincount(mk.ravel()) without an int64 copy of mk
    imp = np.isin(mk, list(IMPLANT.values())) if counts[list(IMPLANT.values())].any() else None
    if imp is not None:   # the metal is its own part: no basin grows through it
        carved &= ~imp
    dist = np.asarray(edt.edt(carved, anisotropy=tuple(map(float, sp)), parallel=_threads()), dtype=np.float32)
    level = distance_levels(dist, 1.0 / sep._FLOOD_STEP_MM, 65000.0)   # min(dist / step, 65000) as uint16
    del dist
    # uint16 labels (half the memory of int32 on a 170 M voxel scan); widened below if needed
    markers = np.where(carved, mk, 0).astype(np.uint16)
    present = [int(v) for v in np.flatnonzero(counts) if v in NAMES]
    regions = _flood(markers, level, carved)
    del level
    regions, top = sep._grow_into(regions, bone if imp is None else bone & ~imp, CONTRAST)
    if imp is not None:
        regions[imp] = mk[imp]
    n_rest = top - CONTRAST
    info = {"method": "anatomical markers (femoral heads, acetabular roofs, sacrum) + watershed on the distance "
                      "to the carved joint spaces; hip joints cut on the fitted head spheres",
            "markers_present": [NAMES[v] for v in present], "joint_space_voxels": int(joint.sum()),
            "unmarked_components": int(n_rest)}
    # only the joint spaces seen in the image guide the surface refinement: the sphere cut runs
    # through bone wherever head and cup are fused and must not peel it
    return regions, valley, info
