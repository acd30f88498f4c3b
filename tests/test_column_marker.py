"""The sacral marker extended up the vertebral column (printpipe.segment.anatomy._column_marker),
on a synthetic scene with a known answer: a vertebral column on the mid-sagittal plane (its lowest
part holding the sacral marker), a loop of contrast-filled bowel beside it, a loop tagged denser
than cortex lying free on the midline, and a bone bar 35 mm lateral of the plane."""

import numpy as np
from scipy import ndimage as ndi

from printpipe.segment import anatomy as A
from printpipe.volume import Volume

MID = np.array([60.0, 40.0, 30.0])     # LPS mm: the heads' midpoint
LAT = np.array([1.0, 0.0, 0.0])        # towards the patient's left


def _scene():
    sp = (3.0, 1.0, 1.0)
    z, y, x = np.meshgrid(*(np.arange(n) * s for n, s in zip((64, 110, 120), sp)), indexing="ij")
    hu = np.full(x.shape, 40.0)
    col = (np.abs(x - 60) <= 10) & (y >= 58) & (y <= 84) & (z >= 36)
    hu[col] = 800.0                                               # cortex ...
    hu[col & (np.abs(x - 60) <= 8) & (y >= 60) & (y <= 82)] = 300.0   # ... around cancellous bone
    bar = (np.abs(x - 95) <= 5) & (y >= 58) & (y <= 70) & (z >= 36)
    hu[bar] = 700.0                                               # a bone 35 mm lateral
    loop = (x - 60) ** 2 + (y - 49) ** 2 / 0.5 + (z - 150) ** 2 / 4.0 < 7.0 ** 2
    hu[loop & ~col] = 420.0                                       # contrast in a lumen, no cortex
    dense = (x - 60) ** 2 + (y - 96) ** 2 + (z - 120) ** 2 / 4.0 < 7.0 ** 2
    hu[dense] = 1100.0                                            # tagged stool, denser than cortex
    hu = ndi.gaussian_filter(hu, [0.5, 1.0, 1.0])
    vol = Volume(np.clip(hu, -1024, 3071).astype(np.int16), sp)
    return vol, col, bar, loop, dense


def _seeded(vol, col):
    """The bone mask, its pieces and the sacral marker on the column's core 30-90 mm above the heads."""
    bone = vol.hu >= 226
    pieces = A.core_pieces(bone)
    z = np.arange(vol.shape[0])[:, None, None] * 3.0
    mk = np.zeros(bone.shape, np.uint8)
    seed = col & (pieces[0] > 0) & (z > MID[2] + 30.0) & (z < MID[2] + 90.0)
    mk[seed] = A.SACRUM
    return bone, pieces, mk, seed


def test_column_marker_marks_the_vertebral_column_only():
    vol, col, bar, loop, dense = _scene()
    assert not (dense & col).any()
    bone, pieces, mk, seed = _seeded(vol, col)
    n = A._column_marker(vol, bone, vol.hu, mk, pieces, MID, LAT)
    marked = mk == A.SACRUM
    assert n == int((marked & ~seed).sum()) > 0
    z = np.arange(vol.shape[0])[:, None, None] * 3.0
    # the column's bone in the band (within 15 mm of the plane, 10 mm behind the heads, 30 mm above
    # them), up to the top of the volume; seeds in the eroded core (its two-voxel rim is left to
    # the watershed)
    core = pieces[0] > 0
    band = col & core & (z > MID[2] + 30.0)
    assert marked[band].mean() > 0.95
    assert not (marked & ~col).any()
    assert marked[vol.shape[0] - 3].any()       # the erosion takes the two border slices
    assert not marked[(z <= MID[2] + 30.0) & np.ones_like(marked)].any()
    assert not (marked & bar).any()                 # outside the band
    assert not (marked & loop & ~col).any()         # contrast, not bone
    assert not (marked & dense).any()               # denser than cortex, but joined to no bone


def test_column_marker_needs_the_sacral_marker_and_room_above_the_heads():
    vol, col, bar, loop, dense = _scene()
    bone, pieces, mk, seed = _seeded(vol, col)
    high = MID + np.array([0.0, 0.0, 200.0])        # heads above the whole volume
    assert A._column_marker(vol, bone, vol.hu, mk, pieces, high, LAT) == 0
    assert (mk == A.SACRUM).sum() == seed.sum()
    # no sacral marker: nothing is joined to it
    empty = np.zeros(bone.shape, np.uint8)
    assert A._column_marker(vol, bone, vol.hu, empty, pieces, MID, LAT) == 0
    assert not empty.any()
