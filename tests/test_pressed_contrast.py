"""Contrast pressed against the sacrum (printpipe.segment.anatomy.pressed_contrast), on a synthetic
scene with a known answer: a block of bone (cortex around cancellous bone) holding the sacral
marker, with three things pressed against it, each joined to it in the bone mask after the two-voxel
erosion of ``core_pieces``:

* in front, a loop of bowel: contrast in a lumen, behind a thin soft-tissue wall that touches the
  cortex; the blur of the scanner closes the wall;
* in front, a bony knob of the same size (cortex around cancellous bone): bone, not contrast;
* behind, the same loop as in front: no bowel lies behind the sacrum, so this is left to the
  bone (it stands for a process of the sacrum or a vertebra);
* in front but with its edge 14 mm lateral of the sacral marker, the same loop again: a piece that parts far
  from the sacral marker may be a hip bone's ramus, so it is left to the bone."""

import numpy as np
import pytest
from scipy import ndimage as ndi

from printpipe.segment import anatomy as A
from printpipe.volume import Volume


def _scene(wall_mm: float):
    sp = (3.0, 1.0, 1.0)
    z, y, x = np.meshgrid(*(np.arange(n) * s for n, s in zip((30, 110, 140), sp)), indexing="ij")
    hu = np.full(x.shape, 40.0)
    block = (np.abs(x - 70) <= 45) & (y >= 55) & (y <= 85) & (z >= 6) & (z <= 84)
    hu[block] = 800.0                                                           # cortex ...
    hu[block & (np.abs(x - 70) <= 43) & (y >= 57) & (y <= 83) & (z >= 9) & (z <= 81)] = 300.0   # ... and inside

    def tube(cx, cy, r):
        return ((x - cx) ** 2 + (y - cy) ** 2 < r ** 2) & (z >= 12) & (z <= 78)

    # lumens of 8 mm radius whose wall (wall_mm of soft tissue) touches the cortex; LPS y grows
    # towards the back, so the front of the block is its low-y face
    front = tube(60, 55 - 8 - wall_mm, 8.0)
    back = tube(70, 85 + 8 + wall_mm, 8.0)
    far = tube(33, 55 - 8 - wall_mm, 8.0)   # pressed on the block, 14 mm lateral of the sacral marker
    knob = tube(90, 55 - 9, 9.0) & ~block
    hu[front | back | far] = 420.0
    hu[knob] = 800.0
    hu[knob & tube(90, 55 - 9, 7.0)] = 300.0
    hu = ndi.gaussian_filter(hu, [0.5, 1.0, 1.0])
    vol = Volume(np.clip(hu, -1024, 3071).astype(np.int16), sp)
    bone = vol.hu >= 226
    pieces = A.core_pieces(bone)
    mk = np.zeros(bone.shape, np.uint8)
    mk[block & (pieces[0] > 0) & (np.abs(x - 70) <= 15)] = A.SACRUM
    return vol, bone, pieces, mk, block, front, back, knob, far


@pytest.mark.parametrize("wall_mm", [1.0, 1.5])
def test_the_loop_in_front_parts_from_the_sacrum_and_is_marked_as_contrast(wall_mm):
    vol, bone, pieces, mk, block, front, back, knob, far = _scene(wall_mm)
    # one piece after the erosion of core_pieces: the loops and the knob touch the block there
    ids = {int(v) for m in (block, front, back, knob, far) for v in np.unique(pieces[0][m]) if v}
    assert len(ids) == 1
    sacral_before = int((mk == A.SACRUM).sum())
    found = A.pressed_contrast(vol, vol.hu, bone, mk, pieces)
    contrast = mk == A.CONTRAST
    assert len(found) == 1
    # the loop's core is marked (its rim and the neck at the contact are left to the watershed)
    assert contrast[front].sum() >= 0.25 * front.sum()
    assert not (contrast & ~front).any()
    assert not (contrast & (knob | back)).any()
    assert not (contrast & far).any()   # far from the sacral marker: a hip bone's ramus parts so
    assert int((mk == A.SACRUM).sum()) == sacral_before   # no sacral seed lay on the loop


def test_without_a_sacral_marker_nothing_is_split():
    vol, bone, pieces, mk, *_ = _scene(1.0)
    empty = np.zeros_like(mk)
    assert A.pressed_contrast(vol, vol.hu, bone, empty, pieces) == []
    assert not empty.any()


def _split_on(bone, spacing=(3.0, 1.0, 1.0)):
    shape = bone.shape
    box = tuple(slice(0, n) for n in shape)
    return A._Split(np.ones(shape, bool), box, bone, np.zeros(shape, np.int16), np.zeros(shape, bool),
                    np.array([0.0, -1.0, 0.0]), spacing, 10.0, np.zeros(shape, bool))


def test_a_spot_inside_a_vertebral_body_is_enclosed_a_loop_in_the_pelvic_ring_is_not():
    z, y, x = np.mgrid[0:6, 0:200, 0:200]
    r = np.hypot(y - 100.0, x - 100.0)
    spot = (r < 6) & (z > 0) & (z < 5)
    cc = spot.astype(np.int32) * 2
    bx = tuple(slice(*a) for a in ((1, 5), (94, 107), (94, 107)))
    body = (r > 18) & (r < 21)        # a vertebral body's cortex ring, 40 mm across
    assert A._enclosed(_split_on(body | spot), cc, 2, 1, bx) == 1.0
    opened = body & ~((x > 100) & (np.abs(y - 100) < 3))   # a ring broken on one side encloses nothing
    assert A._enclosed(_split_on(opened | spot), cc, 2, 1, bx) == 0.0
    ring = (r > 70) & (r < 74)        # the pelvic ring, 140 mm across: beyond the 30 mm reach
    assert A._enclosed(_split_on(ring | spot), cc, 2, 1, bx) == 0.0


def test_in_front_counts_rows_with_no_bone_ahead():
    mine = np.zeros((1, 10, 4), bool)
    mine[0, 2:4, :] = True
    bone = np.zeros_like(mine)
    bone[0, 6:8, :2] = True           # bone behind (higher index) in two of the four columns
    # the front at lower indices: nothing ahead of ``mine`` anywhere
    assert A._in_front(mine, bone, 1, False) == 1.0
    # the front at higher indices: half of it has bone ahead
    assert A._in_front(mine, bone, 1, True) == 0.5
