"""``printpipe serve`` driven end to end in Debian's headless chromium (Selenium + chromium-driver).

The server runs as the user would start it (``printpipe serve --port P --data DIR``, a subprocess
with its own worker process). Nothing is downloaded at test time: the browser is /usr/bin/chromium
and the driver /usr/bin/chromedriver (Debian packages ``chromium`` and ``chromium-driver``, which
``make sysdeps`` installs); without them the tests are skipped with a reason.

Paths covered: the sample zip to G-code (progress reaches 100 %, the G-code downloads through the
browser and passes :func:`printpipe.slicing.validate.validate_gcode`), a bad zip (one plain-words
error line, no job), the sample as a folder upload that is cancelled while it runs (the job ends
``cancelled`` and leaves no output), the language switch.

Set ``PRINTPIPE_WEB_SCREENSHOTS=DIR`` to keep screenshots of the pages, and run with ``-s`` to see
the measured page-load and upload-to-G-code times.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "sample_dicom"
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
         "--window-size=1280,1800")

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium not installed (pip install -e '.[dev]')")
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

from printpipe.web.worker import STAGES  # noqa: E402

pytestmark = pytest.mark.skipif(
    not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)),
    reason="Debian chromium and chromium-driver not installed (make sysdeps, as root)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    data = tmp_path_factory.mktemp("serve-data")
    port = _free_port()
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    log = open(data / "server.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "printpipe.cli.main", "serve", "--port", str(port),
                             "--data", str(data)], stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"printpipe serve exited with {proc.returncode}: {(data / 'server.log').read_text()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                break
        except OSError:
            time.sleep(0.2)
    else:
        proc.kill()
        pytest.fail("printpipe serve did not start listening within 60 s")
    yield {"url": url, "data": data, "proc": proc}
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


@pytest.fixture(scope="module")
def downloads(tmp_path_factory):
    return tmp_path_factory.mktemp("downloads")


@pytest.fixture(scope="module")
def browser(downloads):
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument("--lang=en-US")
    options.add_experimental_option("prefs", {
        "intl.accept_languages": "en-US,en",
        "download.default_directory": str(downloads),
        "download.prompt_for_download": False,
        "safebrowsing.enabled": False,
    })
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.execute_cdp_cmd("Page.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def sample_zip(tmp_path_factory):
    path = tmp_path_factory.mktemp("upload") / "sample_dicom.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for f in sorted(SAMPLE.glob("*.dcm")):
            zf.write(f, f"sample_dicom/{f.name}")
    return path


def _shot(driver, name: str) -> None:
    folder = os.environ.get("PRINTPIPE_WEB_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(Path(folder) / f"{name}.png"))


def _status(driver) -> str | None:
    """The job page's status class, read in one script call (the page reloads itself when the job
    ends, so an element found first and read later may be gone)."""
    return driver.execute_script("var e = document.getElementById('status'); return e ? e.className : null;")


def _page_load_ms(driver) -> float:
    return driver.execute_script(
        "var t = performance.getEntriesByType('navigation')[0]; return t.loadEventEnd - t.startTime;")


def _submit(driver, server, upload: Path, *, what: str, quality: str, supports: bool) -> float:
    driver.get(server["url"] + "/")
    # a folder goes to the folder input (webkitdirectory: the browser sends every file in it)
    driver.find_element(By.ID, "ct-folder" if upload.is_dir() else "ct-zip").send_keys(str(upload))
    driver.find_element(By.CSS_SELECTOR, f"input[name=what][value={what}]").click()
    driver.find_element(By.CSS_SELECTOR, f"#quality option[value={quality}]").click()
    box = driver.find_element(By.ID, "supports")
    if box.is_selected() != supports:
        box.click()
    t0 = time.perf_counter()
    driver.find_element(By.ID, "start").click()
    return t0


def test_sample_zip_to_validated_gcode(server, browser, downloads, sample_zip):
    from printpipe.slicing.validate import validate_gcode

    browser.get(server["url"] + "/")
    load_ms = _page_load_ms(browser)
    assert browser.find_element(By.TAG_NAME, "html").get_attribute("lang") == "en"
    _shot(browser, "index-en")

    t0 = _submit(browser, server, sample_zip, what="femur_left", quality="draft", supports=False)
    WebDriverWait(browser, 30).until(lambda d: "/jobs/" in d.current_url)
    job_id = browser.current_url.rstrip("/").rsplit("/", 1)[-1]
    assert "sample" not in browser.current_url and "sample" not in browser.title.lower()
    seen = set()
    shot_taken = False
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            status = browser.find_element(By.ID, "status").get_attribute("class")
            seen.add(int(browser.find_element(By.ID, "percent").text.rstrip("%")))
        except Exception:  # the page reloads itself when the job ends
            time.sleep(0.1)
            continue
        if status in ("status-done", "status-failed", "status-cancelled"):
            break
        if not shot_taken and 20 < max(seen) < 100:
            _shot(browser, "job-running")
            shot_taken = True
            # the stages that appear while it runs keep the pipeline's order (read in one script call,
            # so a reload in between cannot leave a stale element)
            order = browser.execute_script(
                "return Array.from(document.querySelectorAll('#stages li')).map(li => li.dataset.stage);")
            assert order == sorted(order, key=list(STAGES).index), order
        time.sleep(0.2)
    upload_to_result_s = time.perf_counter() - t0
    error = browser.find_element(By.ID, "error").text
    assert status == "status-done", f"job ended {status}: {error}"
    assert browser.find_element(By.ID, "percent").text == "100%"
    assert len(seen - {0, 100}) >= 2, f"progress should move through intermediate values; saw {sorted(seen)}"
    result_load_ms = _page_load_ms(browser)
    _shot(browser, "job-done")

    # the result page: print figures, pictures that load, and the downloads
    assert " h " in browser.find_element(By.ID, "print-time").text
    assert " g" in browser.find_element(By.ID, "filament").text
    images = browser.find_elements(By.CSS_SELECTOR, "#pictures img")
    assert len(images) >= 3
    for img in images:
        browser.execute_script("arguments[0].scrollIntoView()", img)
    WebDriverWait(browser, 20).until(lambda d: all(
        d.execute_script("return arguments[0].complete && arguments[0].naturalWidth > 0", i) for i in images))
    links = browser.find_elements(By.CSS_SELECTOR, "#downloads a.gcode")
    assert len(links) == 1
    links[0].click()
    WebDriverWait(browser, 30).until(
        lambda d: list(downloads.glob("case*-model.gcode")) and not list(downloads.glob("*.crdownload")))
    (expected,) = downloads.glob("case*-model.gcode")
    text = expected.read_text(encoding="utf-8")
    stats = validate_gcode(text, "ender3")
    assert stats["extrusion_moves"] > 1000
    assert stats["layers"] > 100
    assert (server["data"] / "jobs" / job_id / "out" / "model.gcode").read_text(encoding="utf-8") == text
    # the uploaded CT is gone once the job has ended
    assert not (server["data"] / "jobs" / job_id / "input.zip").exists()
    print(f"\nweb timings: index page load {load_ms:.0f} ms, result page load {result_load_ms:.0f} ms, "
          f"upload to G-code {upload_to_result_s:.1f} s (femur_left, draft, no supports)")


def test_bad_zip_shows_one_error_line(server, browser, tmp_path):
    bad = tmp_path / "scan.zip"
    bad.write_bytes(b"this is not a zip archive\n" * 100)
    browser.get(server["url"] + "/")
    jobs_before = len(browser.find_elements(By.CSS_SELECTOR, "#jobs tr"))
    browser.find_element(By.ID, "ct-zip").send_keys(str(bad))
    browser.find_element(By.ID, "start").click()
    error = WebDriverWait(browser, 20).until(lambda d: d.find_element(By.ID, "upload-error"))
    assert "zip" in error.text and "\n" not in error.text.strip()
    assert "scan" not in browser.page_source  # the upload's file name is never shown
    assert len(browser.find_elements(By.CSS_SELECTOR, "#jobs tr")) == jobs_before
    _shot(browser, "bad-zip")


def test_folder_upload_then_cancel_stops_the_job_and_leaves_no_output(server, browser):
    _submit(browser, server, SAMPLE, what="all", quality="standard", supports=True)
    WebDriverWait(browser, 30).until(lambda d: "/jobs/" in d.current_url)
    job_id = browser.current_url.rstrip("/").rsplit("/", 1)[-1]
    WebDriverWait(browser, 30).until(lambda d: _status(d) == "status-running")
    t0 = time.perf_counter()
    browser.find_element(By.ID, "cancel").click()
    WebDriverWait(browser, 30).until(lambda d: _status(d) == "status-cancelled")
    print(f"\nweb timings: cancel took {time.perf_counter() - t0:.1f} s")
    assert not browser.find_elements(By.ID, "result")
    assert not browser.find_elements(By.ID, "cancel")
    jdir = server["data"] / "jobs" / job_id
    assert not (jdir / "out").exists() and not (jdir / "input.zip").exists()
    _shot(browser, "cancelled")


def test_language_switch_and_chinese_page(server, browser):
    browser.get(server["url"] + "/")
    browser.find_element(By.ID, "lang-switch").click()
    WebDriverWait(browser, 10).until(lambda d: d.execute_script("return document.documentElement.lang") == "zh-CN")
    heading = browser.find_element(By.TAG_NAME, "h1").text
    assert any("\u4e00" <= ch <= "\u9fff" for ch in heading), heading
    _shot(browser, "index-zh")
    browser.find_element(By.ID, "lang-switch").click()
    WebDriverWait(browser, 10).until(lambda d: d.execute_script("return document.documentElement.lang") == "en")
