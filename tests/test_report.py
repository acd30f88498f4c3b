"""The QA report: pictures, tables, no identifiers, renders in headless Chromium with no broken image."""

from __future__ import annotations

import base64
import re
import shutil
import subprocess

import numpy as np
import pytest
import trimesh

from printpipe.export import part_color
from printpipe.report import _canonical, write_report
from printpipe.volume import Volume

SPACING = (2.5, 0.8, 0.8)  # anisotropic on purpose: pictures must keep the mm aspect ratio
CENTRES = {1: ((50.0, 25.0, 20.0), 15.0), 2: ((40.0, 30.0, 45.0), 10.0)}  # (z, y, x) grid mm, radius
NAMES = {1: "hip_left", 2: "fragment_1"}


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    nz, ny, nx = 40, 64, 80
    k, j, i = np.mgrid[:nz, :ny, :nx]
    grid = np.stack([k * SPACING[0], j * SPACING[1], i * SPACING[2]], axis=-1)
    hu = np.full((nz, ny, nx), -1000, np.int16)
    hu[:, 5:60, 5:75] = 20
    labels = np.zeros(hu.shape, np.uint8)
    for lab, (c, r) in CENTRES.items():
        labels[(((grid - c) ** 2).sum(-1) < r * r) & (labels == 0)] = lab
    hu[labels > 0] = 900
    # slice index running towards the feet, as many scanners store it
    vol = Volume(hu, SPACING, origin=(-30.0, -20.0, 60.0), direction=np.diag([1.0, 1.0, -1.0]),
                 meta={"PatientName": "DOE^JANE", "series_uid_hash": "0123456789abcdef"})
    parts = {}
    for lab, (c, r) in CENTRES.items():
        m = trimesh.creation.icosphere(3, radius=r)
        v = vol.mm_to_patient(np.asarray(m.vertices)[:, ::-1] + np.asarray(c))
        f = np.asarray(m.faces)[:, ::-1] if vol.handedness < 0 else np.asarray(m.faces)
        parts[NAMES[lab]] = trimesh.Trimesh(v, f, process=False)
    manifest = {
        "printpipe_version": "0.1.0", "created": "2026-11-22T17:00:00+00:00", "status": "ok",
        "parameters": {"segment": {"threshold_hu": 250}},
        "input": {"series_uid_hash": "0123456789abcdef", "modality": "CT", "slice_count": nz,
                  "shape": [nz, ny, nx], "spacing_mm": list(SPACING), "tilt_deg": 0.0, "corrections": [],
                  "skipped": {"2": "scout"}, "choice_reason": "only axial CT stack", "warnings": []},
        "segmentation": {"preset": "bone", "hu_range": [250, None], "metal": []},
        "parts": [{"name": n, "triangles": len(m.faces), "vertices": len(m.vertices), "watertight": True,
                   "volume_mm3": float(m.volume), "area_mm2": float(m.area),
                   "bbox_mm": {"min": m.bounds[0].tolist(), "max": m.bounds[1].tolist(),
                               "size": np.ptp(m.bounds, axis=0).tolist()},
                   "color": list(part_color(n)), "report": {"shells": 1, "self_intersections": 0},
                   "fidelity": {"mean_mm": 0.1, "p95_mm": 0.2, "max_mm": 0.4, "volume_change_pct": -0.5},
                   "decimation": None} for n, m in parts.items()],
        "outputs": [],
        "print": {"printer": "test-printer", "material": "PLA", "time_s": 5400.0, "filament_mm": 3000.0,
                  "filament_g": 9.0, "layer_count": 300, "plates": 1},
        "warnings": ["a <warning> with markup"], "timings_s": {"read": 0.5},
    }
    outdir = tmp_path_factory.mktemp("report")
    extra = outdir / "toolpaths_src.png"
    from PIL import Image

    Image.new("RGB", (40, 30), (10, 200, 30)).save(extra)
    written = write_report(outdir, manifest=manifest, volume=vol, labels=labels, names=NAMES, parts=parts,
                           extra_images={"G-code toolpaths": extra})
    return outdir, written, vol, labels


def test_files_written(case):
    outdir, written, _, _ = case
    paths = {w["path"] for w in written}
    assert {"report.html", "pictures/axial.png", "pictures/coronal.png", "pictures/sagittal.png",
            "pictures/3d_all.png", "pictures/3d_hip_left.png", "pictures/3d_fragment_1.png"} == paths
    for w in written:
        assert (outdir / w["path"]).stat().st_size > 1000
    assert {w["kind"] for w in written} == {"png", "report"}


def test_html_self_contained_without_identifiers(case):
    outdir, written, _, _ = case
    doc = (outdir / "report.html").read_text()
    n_png = sum(1 for w in written if w["kind"] == "png")
    assert doc.count('src="data:image/png;base64,') == n_png + 1  # + the toolpath picture
    assert not re.search(r'src="(?!data:)', doc)  # nothing loaded from outside the file
    # identifiers neither in the text nor inside the embedded pictures (the base64 payloads are
    # checked decoded: their encoded form can spell any three letters by chance)
    payloads = re.findall(r'data:image/png;base64,([A-Za-z0-9+/=]+)', doc)
    text = re.sub(r'data:image/png;base64,[A-Za-z0-9+/=]+', "", doc)
    assert "DOE" not in text and "JANE" not in text
    assert not any(b"DOE" in base64.b64decode(p) or b"JANE" in base64.b64decode(p) for p in payloads)
    assert "&lt;warning&gt;" in doc and "<warning>" not in doc  # text is escaped
    assert "test-printer" in doc and "1 h 30 min" in doc


def test_slice_aspect_ratio(case):
    from PIL import Image

    outdir, _, vol, _ = case
    # coronal: 100 mm (z) tall and 64 mm (x) wide, so taller than wide despite 40 x 80 voxels
    w, h = Image.open(outdir / "pictures" / "coronal.png").size
    assert h > w


def test_canonical_orientation(case):
    _, _, vol, labels = case
    hu, lab, spacing = _canonical(vol, labels)
    assert spacing == SPACING
    # direction z = -1: the canonical array runs superior-wards, so it is the flipped grid
    assert np.array_equal(lab, labels[::-1])
    # part 1 (grid z 50 mm) lies below part 2 (grid z 40 mm) in the patient: smaller canonical z
    z1 = np.argwhere(lab == 1)[:, 0].mean()
    z2 = np.argwhere(lab == 2)[:, 0].mean()
    assert z1 < z2


def _chromium():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


@pytest.mark.slow
def test_renders_in_headless_chromium_without_broken_images(case, tmp_path):
    browser = _chromium()
    if browser is None:
        pytest.skip("chromium not installed (Debian: apt-get install chromium)")
    outdir, _, _, _ = case
    probe = ("<script>window.addEventListener('load', () => {"
             "const imgs = Array.from(document.images);"
             "const broken = imgs.filter(i => !i.complete || i.naturalWidth === 0).length;"
             "document.body.setAttribute('data-images', imgs.length);"
             "document.body.setAttribute('data-broken', broken);});</script>")
    page = tmp_path / "probe.html"
    page.write_text((outdir / "report.html").read_text().replace("</body>", probe + "</body>"))
    cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000", "--dump-dom",
           page.as_uri()]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    m = re.search(r'data-images="(\d+)"[^>]*data-broken="(\d+)"', res.stdout)
    assert m, f"no probe result in the DOM dump (rc {res.returncode}): {res.stderr[-500:]}"
    images, broken = int(m.group(1)), int(m.group(2))
    assert images == 7 and broken == 0


def test_each_3d_picture_shows_its_own_parts(case):
    # the pictures share one plotter and one actor per part: each must show exactly its parts
    # (a stale frame or an actor left visible from the previous picture would fail this)
    from PIL import Image

    outdir, _, _, _ = case
    pics = outdir / "pictures"

    def share_of(png, name):
        img = np.asarray(Image.open(pics / png).convert("RGB")).astype(int)
        rgb = np.asarray(part_color(name))
        # shaded surfaces are the part colour scaled by the lighting: hue matches within a tolerance
        lum = img.sum(axis=2, keepdims=True)
        ok = lum[..., 0] > 60
        ref = rgb / rgb.sum()
        close = (np.abs(img / np.maximum(lum, 1) - ref).max(axis=2) < 0.04) & ok
        return close.mean()

    assert share_of("3d_all.png", "hip_left") > 0.01 and share_of("3d_all.png", "fragment_1") > 0.005
    assert share_of("3d_hip_left.png", "hip_left") > 0.01 and share_of("3d_hip_left.png", "fragment_1") < 1e-4
    assert share_of("3d_fragment_1.png", "fragment_1") > 0.01 and share_of("3d_fragment_1.png", "hip_left") < 1e-4


def test_pictures_drawn_in_a_worker_process_match(case, tmp_path):
    # the pipeline draws the pictures in a child process (CT slices at once, 3-D views once the
    # meshes are sent); the report built from them names the same pictures, and the pictures are
    # the same images as those drawn in this process (PNG bytes may differ in metadata only)
    from PIL import Image

    from printpipe._report_worker import ReportWorker

    import printpipe.report as report

    outdir, written, vol, labels = case
    parts = {}
    for lab, (c, r) in CENTRES.items():
        m = trimesh.creation.icosphere(3, radius=r)
        v = vol.mm_to_patient(np.asarray(m.vertices)[:, ::-1] + np.asarray(c))
        f = np.asarray(m.faces)[:, ::-1] if vol.handedness < 0 else np.asarray(m.faces)
        parts[NAMES[lab]] = trimesh.Trimesh(v, f, process=False)
    worker = ReportWorker(tmp_path, "en")  # started before the data exist, as in the pipeline
    worker.prepare()  # imports and probe before the data arrive (the other tests: on arrival)
    worker.send_slices(vol, labels, NAMES)
    worker.send_parts(parts)
    pictures = worker.result(timeout=120)
    assert pictures is not None
    got = report.write_report(tmp_path, manifest={"parts": [], "warnings": [], "timings_s": {}, "input": {}},
                              volume=vol, labels=labels, names=NAMES, parts=parts, pictures=pictures)
    assert {w["path"] for w in got} == {w["path"] for w in written}
    for w in written:
        if w["kind"] == "png":
            a = np.asarray(Image.open(outdir / w["path"]).convert("RGB")).astype(int)
            b = np.asarray(Image.open(tmp_path / w["path"]).convert("RGB")).astype(int)
            assert a.shape == b.shape and np.abs(a - b).max() <= 2, w["path"]


def test_worker_that_gets_no_meshes_gives_none_and_stops(case, tmp_path):
    from printpipe._report_worker import ReportWorker

    _, _, vol, labels = case
    worker = ReportWorker(tmp_path, "en")
    worker.send_slices(vol, labels, NAMES)
    assert worker.result(timeout=5) is None  # meshes never sent: the caller draws the pictures
    assert not worker._proc.is_alive()


def test_worker_sent_nothing_is_stopped_at_once(tmp_path):
    """A case that fails before segmentation ends closes a worker that is still getting ready
    (imports, rendering probe): it is stopped at once and writes nothing."""
    import signal

    from printpipe._report_worker import ReportWorker

    worker = ReportWorker(tmp_path, "en")
    worker.close()
    assert not worker._proc.is_alive()
    assert worker._proc.exitcode == -signal.SIGTERM  # stopped, not asked to leave and waited for
    assert not (tmp_path / "pictures").exists()


def test_slice_planes_are_all_the_slice_pictures_need(case, tmp_path):
    """The slice pictures drawn from the planes cut by ``slice_planes`` (what the report worker is
    sent) are those drawn from the volume and labels themselves."""
    from PIL import Image

    import printpipe.report as report

    outdir, written, vol, labels = case
    planes = report.slice_planes(vol, labels)
    assert set(planes) == {"axial", "coronal", "sagittal"}
    assert sum(p[0].nbytes + p[1].nbytes for p in planes.values()) < labels.nbytes + vol.hu.nbytes
    got = report.draw_pictures(tmp_path, planes=planes, names=NAMES, lang="en")
    assert set(got["slices"]) == {"axial", "coronal", "sagittal"} and not got["views"]
    for title, png in got["slices"].items():
        a = np.asarray(Image.open(outdir / "pictures" / f"{title}.png").convert("RGB"))
        b = np.asarray(Image.open(png).convert("RGB"))
        assert a.shape == b.shape and np.array_equal(a, b), title


def test_rendering_probed_in_this_process_gives_the_probes_answer(monkeypatch):
    """``probe_rendering_here`` runs the probe's code in the calling process (no child: the report
    worker saves an interpreter start and a VTK import) and reads its exit status as the child's."""
    import subprocess

    import printpipe.report as report

    monkeypatch.delenv("PRINTPIPE_RENDERER", raising=False)
    monkeypatch.setattr(subprocess, "Popen", lambda *a, **k: pytest.fail("a probe child was started"))
    for code, expected in (("import sys; sys.exit(0)", "pyvista"), ("import sys; sys.exit(3)", "matplotlib"),
                           ("raise RuntimeError('no EGL')", "matplotlib"), ("pass", "pyvista")):
        monkeypatch.setattr(report, "_RENDER_BACKEND", None)
        monkeypatch.setattr(report, "_PROBE_CODE", code)
        assert report.probe_rendering_here() == expected, code
        assert report.render_backend() == expected  # remembered for the pictures drawn next


def _prepare_with_a_stuck_probe():  # runs in a forked child
    import printpipe._report_worker as worker
    import printpipe.report as report

    report._RENDER_BACKEND = None
    report._PROBE_CODE = "import time; time.sleep(60)"
    worker._PROBE_LIMIT_S = 1
    worker._prepare()


def test_report_worker_with_a_stuck_rendering_probe_ends(monkeypatch):
    """A probe stuck in the graphics driver ends the worker (SIGALRM's default action) instead of
    holding the case up; the parent then draws the pictures itself."""
    import multiprocessing
    import signal

    monkeypatch.delenv("PRINTPIPE_RENDERER", raising=False)
    proc = multiprocessing.get_context("fork").Process(target=_prepare_with_a_stuck_probe)
    proc.start()
    proc.join(30)
    assert proc.exitcode == -signal.SIGALRM
