"""RTSTRUCT rasterisation (printpipe.labels.rtstruct_masks): analytic rings and the real structure sets."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from printpipe.errors import InputError
from printpipe.labels import rtstruct_masks
from printpipe.volume import Volume

sys.path.insert(0, str(Path(__file__).resolve().parent))  # works with any pytest import mode
from test_labels_support import write_rtstruct  # noqa: E402


def _grid(nz=20, ny=64, nx=64, spacing=(2.0, 0.5, 0.5), origin=(-16.0, -16.0, 100.0)):
    return Volume(hu=np.zeros((nz, ny, nx), np.int16), spacing=spacing, origin=origin)


def _circle(cx, cy, r, z, n=400, reverse=False):
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    if reverse:
        t = t[::-1]
    return np.c_[cx + r * np.cos(t), cy + r * np.sin(t), np.full(n, z)]


def test_annulus_even_odd_area(tmp_path):
    """A disc with a hole drawn as two rings (same winding): the hole is empty by even-odd, and the
    filled area matches pi (R^2 - r^2). Pixel-centre sampling of a smooth boundary errs by about
    perimeter x pixel / 1000 at random phase; 2 % of this 0.25 mm^2-pixel ring is well above that."""
    vol = _grid()
    z = 100.0 + 2.0 * 7
    rs = write_rtstruct(tmp_path / "RS.dcm", {"ring": [_circle(0.17, 0.29, 10, z), _circle(0.17, 0.29, 5, z)]})
    mask = rtstruct_masks(rs, vol)["ring"]
    assert mask.sum(axis=(1, 2)).nonzero()[0].tolist() == [7]
    area = mask.sum() * 0.25
    assert area == pytest.approx(np.pi * (100 - 25), rel=0.02)
    centre = vol.patient_to_index([[0, 0, z]])[0].round().astype(int)
    assert not mask[tuple(centre)]                       # the hole
    ring_pt = vol.patient_to_index([[7.5, 0, z]])[0].round().astype(int)
    assert mask[tuple(ring_pt)]


def test_disjoint_islands_and_winding(tmp_path):
    """Two disjoint discs on one slice, one wound each way: both filled (union). The centres are off
    the pixel lattice (a circle centred on a pixel centre is the worst case of lattice counting)."""
    vol = _grid()
    z = 100.0 + 2.0 * 3
    rs = write_rtstruct(tmp_path / "RS.dcm",
                        {"two": [_circle(-8.13, 0.31, 4, z), _circle(8.37, -0.19, 4, z, reverse=True)]})
    mask = rtstruct_masks(rs, vol)["two"]
    assert mask.sum() * 0.25 == pytest.approx(2 * np.pi * 16, rel=0.03)


def test_nearest_slice_within_half_spacing(tmp_path):
    """A contour 0.9 mm off a slice (spacing 2 mm) lands on the nearest slice; one more than half a
    spacing below the first slice is outside the CT."""
    vol = _grid()
    rs = write_rtstruct(tmp_path / "RS.dcm", {"a": [_circle(0, 0, 5, 100.0 + 2 * 4 + 0.9)],
                                             "b": [_circle(0, 0, 5, 100.0 - 1.2)]})
    masks = rtstruct_masks(rs, vol)          # survey: outside contours dropped
    assert masks["a"].sum(axis=(1, 2)).nonzero()[0].tolist() == [4]
    assert not masks["b"].any()
    with pytest.raises(InputError, match="outside the CT's slices.*give the CT series"):
        rtstruct_masks(rs, vol, names=["b"])


def test_outside_field_of_view_refused(tmp_path):
    """A requested ROI that crosses the edge of the image (16 mm half-width) is outside the CT."""
    vol = _grid()
    rs = write_rtstruct(tmp_path / "RS.dcm", {"wide": [_circle(0, 0, 20, 110.0)]})
    assert rtstruct_masks(rs, vol)["wide"].any()          # survey: clipped to the image
    with pytest.raises(InputError, match="reaches outside the CT's field of view on slice 5"):
        rtstruct_masks(rs, vol, names=["wide"])


def test_names_case_and_unknown(tmp_path):
    vol = _grid()
    rs = write_rtstruct(tmp_path / "RS.dcm", {"FemoreSin": [_circle(0, 0, 5, 110.0)]})
    assert set(rtstruct_masks(rs, vol, names=["femoresin"])) == {"FemoreSin"}
    with pytest.raises(InputError, match="no structure named 'femur'.*'FemoreSin'"):
        rtstruct_masks(rs, vol, names=["femur"])


def test_oblique_contour_refused(tmp_path):
    vol = _grid()
    pts = _circle(0, 0, 5, 110.0)
    pts[:, 2] += pts[:, 0] * 0.5                          # tilted plane: spans 5 mm in z
    rs = write_rtstruct(tmp_path / "RS.dcm", {"tilted": [pts]})
    with pytest.raises(InputError, match="not in an axial plane"):
        rtstruct_masks(rs, vol, names=["tilted"])


def test_not_an_rtstruct(tmp_path):
    bad = tmp_path / "x.dcm"
    bad.write_bytes(b"not dicom at all")
    with pytest.raises(InputError, match="not a readable DICOM file"):
        rtstruct_masks(bad, _grid())


@pytest.mark.realdata
@pytest.mark.parametrize("ct, rs, rois", [
    ("pelvic-ref003-ct", "pelvic-ref003-rtstruct/RS.dcm", ("femoreSin", "femoreDes")),
    ("pelvic-ref002-ct", "pelvic-ref002-labels/RS.dcm", ("FemoreSinistro", "FemoreDestro")),
])
def test_real_femur_contours(ct, rs, rois, realdata):
    """On the real structure sets every contour slice's filled area matches the polygon area (shapely,
    even-odd over the slice's rings) within 2 % (pixel-centre sampling of a ~150 mm perimeter on
    1 mm pixels), and the left femur lies at patient left (+x in LPS)."""
    import pydicom
    import shapely

    from printpipe.dicom import read_series

    ct_dir = realdata(ct)
    rs_path = realdata(rs.split("/")[0]) / rs.split("/")[1]
    vol = read_series(ct_dir)
    masks = rtstruct_masks(rs_path, vol, names=rois)
    ds = pydicom.dcmread(rs_path)
    number = {str(r.ROIName): int(r.ROINumber) for r in ds.StructureSetROISequence}
    px_area = vol.spacing[1] * vol.spacing[2]
    for name in rois:
        rc = next(r for r in ds.ROIContourSequence if int(r.ReferencedROINumber) == number[name])
        by_k: dict[int, object] = {}
        for c in rc.ContourSequence:
            pts = np.asarray(c.ContourData, float).reshape(-1, 3)
            k = int(round(vol.patient_to_index(pts)[:, 0].mean()))
            poly = shapely.Polygon(pts[:, :2]).buffer(0)
            by_k[k] = shapely.symmetric_difference(by_k[k], poly) if k in by_k else poly
        for k, poly in by_k.items():
            assert masks[name][k].sum() * px_area == pytest.approx(poly.area, rel=0.02), (name, k)
        assert set(np.flatnonzero(masks[name].any(axis=(1, 2)))) == set(by_k)
    left, right = (vol.index_to_patient(np.argwhere(masks[n]).mean(0))[0, 0] for n in rois)
    assert left > 40 and right < -40
