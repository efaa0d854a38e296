"""HTML pages: structure, resume, escaping, and a real headless-Chromium load of every image.

The browser tests need a Chromium browser and its chromedriver on ``PATH`` (Debian/Ubuntu:
``apt-get install chromium chromium-driver``) and the ``selenium`` package (in ``[test]``).
Without them they skip, saying how to install them; with ``REVGAN_STRICT=1`` (CI) they fail,
so CI cannot pass without really rendering the pages.
"""

from __future__ import annotations

import functools
import shutil
import tempfile
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch

from revgan.reporting.results_page import ResultsPage, TrainingPage
from revgan.reporting.visuals import save_display_png

BROWSER_NAMES = ("chromium", "chromium-browser")  # Debian, Ubuntu
DRIVER_NAME = "chromedriver"
INSTALL_HINT = "apt-get install chromium chromium-driver"
CHROME_FLAGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage", "--window-size=1280,900",
]
IMAGES_JS = """
return Array.from(document.images).map(
    i => [i.getAttribute('src'), i.complete, i.naturalWidth, i.naturalHeight]);
"""


def _ramp(channels: int = 1, h: int = 16, w: int = 24) -> torch.Tensor:
    x = torch.linspace(-1, 1, w).expand(channels, h, w).clone()
    return x.unsqueeze(0)


def _training_page(web: Path) -> Path:
    page = TrainingPage(web, "run <demo>")
    page.add_visuals(1, 100, {"real_A": _ramp(), "fake_B": _ramp(3), "rec_A": -_ramp()})
    page.save()
    # a restart: a new object must keep the first step
    page = TrainingPage(web, "run <demo>")
    vol = torch.rand(1, 1, 6, 10, 12) * 2 - 1
    page.add_visuals(2, 50, {"real_A": vol, "fake_B": vol.flip(-1)})
    from revgan.reporting.plots import plot_curves

    curve = plot_curves({"G_A": [(0.5, 1.0), (1.0, 0.8), (1.5, 0.6)]}, web / "losses.png",
                        "losses", "loss")
    page.set_plots([curve])
    return page.save()


def _results_page(root: Path, broken: bool = False) -> Path:
    labels = ("real_A", "fake_B", "rec_A")
    page = ResultsPage(root, "test results & <more>", aspect_ratio=1.5)
    per_item = {}
    for i, name in enumerate(["img 1", "img_2"]):
        images = {}
        for label in labels:
            rel = Path("images") / label / f"{name}.png"
            save_display_png(_ramp(1 + 2 * (i % 2)) * (0.5 + 0.2 * i), root / rel)
            images[label] = rel
        per_item[name] = {"fake_B_vs_real_B/PSNR_file": 20.0 + i, "SSIM": 0.7}
        page.add_item(name, images)
    if broken:
        page.add_item("missing", {"fake_B": Path("images/fake_B/does_not_exist.png")})
    page.set_metrics(per_item, {"fake_B_vs_real_B/PSNR_file": 20.5,
                                "fake_B_vs_real_B/SSIM_file": 0.7, "PSNR": float("inf")})
    return page.save()


# --- structure (no browser) --------------------------------------------------------------


def test_training_page_resume_order_and_sidecar(tmp_path) -> None:
    index = _training_page(tmp_path / "web")
    text = index.read_text()
    assert (tmp_path / "web" / "steps.json").is_file()
    assert (tmp_path / "web/images/epoch001_iter100_real_A.png").is_file()
    assert (tmp_path / "web/images/epoch002_iter50_fake_B.png").is_file()
    assert text.index("epoch 2, iteration 50") < text.index("epoch 1, iteration 100")
    assert text.index("losses.png") < text.index("epoch 2, iteration 50")  # curves on top
    assert "run &lt;demo&gt;" in text and "run <demo>" not in text
    # the same step logged again replaces, not duplicates
    page = TrainingPage(tmp_path / "web", "run")
    page.add_visuals(2, 50, {"real_A": _ramp()})
    assert page.save().read_text().count("epoch 2, iteration 50") == 1


def test_results_page_escapes_and_sizes(tmp_path) -> None:
    text = _results_page(tmp_path).read_text()
    assert 'id="metrics-summary"' in text
    assert "&amp; &lt;more&gt;" in text
    assert 'src="images/real_A/img%201.png"' in text  # URL-quoted relative path
    assert 'width="384" height="256"' in text  # aspect ratio 1.5 at width 256
    assert "∞" in text


# --- real browser ------------------------------------------------------------------------


def find_browser() -> tuple[str | None, str | None]:
    """Paths of the Chromium binary and of chromedriver on ``PATH`` (None where missing)."""
    chromium = next(filter(None, (shutil.which(name) for name in BROWSER_NAMES)), None)
    return chromium, shutil.which(DRIVER_NAME)


@pytest.fixture(scope="module")
def browser(require):
    chromium, chromedriver = find_browser()
    missing = [name for name, path in (("chromium", chromium), (DRIVER_NAME, chromedriver))
               if path is None]
    require(not missing, f"the headless browser test needs {' and '.join(missing)} on PATH: "
                         f"{INSTALL_HINT}")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        webdriver = None
    require(webdriver is not None,
            'the headless browser test needs selenium: pip install -e ".[test]"')
    profile = tempfile.mkdtemp(prefix="revgan-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in [*CHROME_FLAGS, f"--user-data-dir={profile}"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(chromedriver), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def test_missing_browser_skips_with_install_hint_unless_strict(require, monkeypatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    assert find_browser() == (None, None)
    monkeypatch.delenv("REVGAN_STRICT", raising=False)
    with pytest.raises(pytest.skip.Exception, match="apt-get install chromium chromium-driver"):
        require(False, f"needs chromium: {INSTALL_HINT}")
    require(True, "never raised when the prerequisite is there")
    monkeypatch.setenv("REVGAN_STRICT", "1")
    with pytest.raises(pytest.fail.Exception, match="REVGAN_STRICT=1"):
        require(False, f"needs chromium: {INSTALL_HINT}")


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # keep test output clean
        pass


@pytest.fixture()
def serve(tmp_path):
    """Serve ``tmp_path`` on an ephemeral localhost port; yields the base URL."""
    handler = functools.partial(_QuietHandler, directory=str(tmp_path))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _broken_images(driver, url: str) -> tuple[list, list]:
    driver.get(url)  # returns after the load event: every image has loaded or failed
    images = driver.execute_script(IMAGES_JS)
    broken = [src for src, complete, width, _ in images if not complete or width == 0]
    return images, broken


@pytest.mark.browser
def test_pages_render_in_chromium(browser, serve, tmp_path) -> None:
    _training_page(tmp_path / "web")
    _results_page(tmp_path / "results")

    images, broken = _broken_images(browser, f"{serve}/web/index.html")
    assert broken == []
    assert len(images) == 1 + 3 + 2  # curve + two display steps
    assert browser.title == "run <demo>"
    sizes = {src.split("?")[0]: (w, h) for src, _, w, h in images}
    assert sizes["images/epoch002_iter50_real_A.png"] == (12 + 2 + 12 + 2 + 10, 10)  # montage

    images, broken = _broken_images(browser, f"{serve}/results/index.html")
    assert broken == [] and len(images) == 6
    rows = browser.execute_script(
        "const t = document.getElementById('metrics-summary');"
        "return t ? Array.from(t.rows).map(r => r.innerText) : null;")
    assert rows is not None and len(rows) == 4  # header + 3 metrics
    assert "20.5" in rows[1]
    shown = browser.execute_script(
        "const i = document.querySelector('#results img'); return [i.width, i.height];")
    assert shown == [384, 256]


@pytest.mark.browser
def test_broken_image_is_detected(browser, serve, tmp_path) -> None:
    _results_page(tmp_path / "results", broken=True)
    images, broken = _broken_images(browser, f"{serve}/results/index.html")
    assert len(images) == 7
    assert broken == ["images/fake_B/does_not_exist.png"]
