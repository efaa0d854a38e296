"""``revgan serve``: the local web page, driven in a real headless Chromium, plus its request
logic (volumes, errors) and the install hint without the ``[app]`` extra.

The browser test needs Chromium and chromedriver on ``PATH`` (Debian/Ubuntu: ``apt-get
install chromium chromium-driver``), selenium and gradio (both in ``[test]``). Without them it
skips, saying how to install them; with ``REVGAN_STRICT=1`` (CI) it fails.
"""

from __future__ import annotations

import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import tifffile
import torch
from helpers import cli_error, run_cli, tiny_unpaired_run

from revgan.config import RunConfig

INSTALL_HINT = "apt-get install chromium chromium-driver"
CHROME_FLAGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage", "--window-size=1280,1000",
]
AFFINE = np.array([[0.0, -1.2, 0.0, 40.0],
                   [1.5, 0.0, 0.0, -22.0],
                   [0.0, 0.0, 2.0, 7.5],
                   [0.0, 0.0, 0.0, 1.0]])


@pytest.fixture(scope="module")
def run_2d(tmp_path_factory) -> Path:
    """A tiny unpaired RevGAN run on RGB images (both directions)."""
    return tiny_unpaired_run(tmp_path_factory.mktemp("app_run"))


def _rgb16(path: Path, h: int = 40, w: int = 56) -> Path:
    """A 16-bit RGB TIFF larger than the training crop (so sliding windows run too)."""
    rng = np.random.default_rng(0)
    tifffile.imwrite(path, rng.integers(0, 65535, size=(h, w, 3), dtype=np.uint16))
    return path


class Negate(torch.nn.Module):
    """A stand-in 3D generator: BtoA negates (so its picture is the input's negative)."""

    size_divisor = 2

    def forward(self, x, direction="AtoB"):
        return -x if direction == "BtoA" else x


@pytest.fixture()
def volume_run(monkeypatch, tmp_path) -> Path:
    """A 3D "run" whose generator is :class:`Negate` (for the API and revgan translate)."""
    import revgan.api
    from revgan.infer import translate as translate_module

    opt = RunConfig(model="unpaired_revgan3d", dims=3, patch_size=(8, 8, 8), direction="AtoB",
                    intensity="minmax", input_nc=1, output_nc=1)
    fake = lambda *a, **k: (Negate().eval(), opt)  # noqa: E731
    monkeypatch.setattr(revgan.api, "load_generator", fake)
    monkeypatch.setattr(translate_module, "load_generator", fake)
    (tmp_path / "run").mkdir()
    return tmp_path / "run"


def test_volume_upload_gives_the_nifti_revgan_translate_writes(volume_run, tmp_path):
    from revgan.api import Translator
    from revgan.app.server import translate_upload

    volume = np.random.default_rng(1).normal(100, 40, size=(12, 10, 14)).astype(np.float32)
    src = tmp_path / "ct.nii.gz"
    nib.save(nib.Nifti1Image(volume, AFFINE), src)
    work = tmp_path / "work"
    work.mkdir()
    shown_in, shown_out, result = translate_upload(Translator(volume_run), [src], "BtoA", work,
                                                   2**20)
    assert result.name == "ct_BtoA.nii.gz"
    run_cli("translate", "--model_dir", volume_run, "--input", src, "--output",
            tmp_path / "cli.nii.gz", "--direction", "BtoA", "--no_progress", "--gpu_ids", "-1")
    expected = nib.load(tmp_path / "cli.nii.gz")
    written = nib.load(result)
    np.testing.assert_array_equal(written.get_fdata(), expected.get_fdata())
    np.testing.assert_allclose(written.affine, AFFINE)
    # axial (10×14), coronal (12×14) and sagittal (12×10) side by side, 2-pixel gaps
    assert shown_in.shape == shown_out.shape == (12, 14 + 14 + 10 + 4, 3)
    assert shown_out.dtype == np.uint8
    axial_in, axial_out = shown_in[:10, :14].astype(int), shown_out[:10, :14].astype(int)
    assert np.abs(axial_out - (255 - axial_in)).max() <= 1  # the negative, as translated


def test_the_files_of_a_dicom_series_upload_as_one_volume(volume_run, tmp_path):
    from test_dicom import stored_volume, write_series

    from revgan.api import Translator
    from revgan.app.server import translate_upload
    from revgan.data.volumes import read_volume

    write_series(tmp_path / "series", stored_volume(shape=(6, 8, 5)))
    work = tmp_path / "work"
    work.mkdir()
    files = sorted((tmp_path / "series").iterdir())
    _, _, result = translate_upload(Translator(volume_run), files, "AtoB", work, 2**20)
    assert result.name == "series_AtoB.nii.gz"
    _, meta = read_volume(tmp_path / "series")
    written = nib.load(result)
    assert written.shape == (6, 8, 5)
    np.testing.assert_allclose(written.affine, meta.affine, atol=1e-5)


def test_bad_uploads_are_one_line(volume_run, tmp_path):
    from revgan.api import Translator
    from revgan.app.server import friendly_error, translate_upload

    t = Translator(volume_run)
    work = tmp_path / "work"
    work.mkdir()
    broken = tmp_path / "broken.nii.gz"
    broken.write_bytes(b"not a NIfTI volume at all")
    picture = tmp_path / "photo.png"
    picture.write_bytes(b"\x89PNG")
    big = tmp_path / "big.npy"
    np.save(big, np.zeros((64, 64, 64), np.float32))
    cases = [([broken], "cannot read NIfTI volume"),
             ([picture], "this run translates volumes"),
             ([big], "accepts at most"),
             ([], "upload an image")]
    for files, expected in cases:
        with pytest.raises(Exception) as info:
            translate_upload(t, files, "AtoB", work, max_bytes=2**19)
        line = friendly_error(info.value)
        assert expected in line and "\n" not in line and "Traceback" not in line


def test_serve_without_the_app_extra_says_how_to_install(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "gradio", None)  # import gradio fails as if missing
    line = cli_error(capsys, "serve", "--model_dir", tmp_path)
    assert "pip install 'revgan[app]'" in line


def test_serve_refuses_a_bad_port_in_one_line(tmp_path, capsys, require):
    try:
        import gradio  # noqa: F401
    except ImportError:
        gradio = None
    require(gradio is not None, "needs gradio: pip install -e \".[test]\"")
    line = cli_error(capsys, "serve", "--model_dir", tmp_path, "--port", "70000")
    assert "--port must be in 1..65535" in line


# --- the page in a real browser ----------------------------------------------------------


@pytest.fixture(scope="module")
def browser(require, tmp_path_factory):
    chromium = next(filter(None, map(shutil.which, ("chromium", "chromium-browser"))), None)
    driver_path = shutil.which("chromedriver")
    missing = [n for n, p in (("chromium", chromium), ("chromedriver", driver_path)) if not p]
    require(not missing, f"the web app test needs {' and '.join(missing)} on PATH: "
                         f"{INSTALL_HINT}")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        webdriver = None
    require(webdriver is not None, 'the web app test needs selenium: pip install -e ".[test]"')
    downloads = tmp_path_factory.mktemp("downloads")
    profile = tempfile.mkdtemp(prefix="revgan-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in [*CHROME_FLAGS, f"--user-data-dir={profile}"]:
        options.add_argument(flag)
    options.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                              "download.prompt_for_download": False})
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    driver.set_page_load_timeout(60)
    driver.downloads = downloads
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def page_url(run_2d, require):
    try:
        import gradio  # noqa: F401
    except ImportError:
        gradio = None
    require(gradio is not None, "the web app test needs gradio: pip install -e \".[test]\"")
    from revgan.api import Translator
    from revgan.app.server import build_app, launch

    page = build_app(Translator(run_2d), max_upload_mb=1)
    port = _free_port()
    launch(page, "127.0.0.1", port, max_upload_mb=1, block=False)
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        page.close()
        shutil.rmtree(page.revgan_work, ignore_errors=True)


def _wait(condition, timeout: float, what: str):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = condition()
        if value:
            return value
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


@pytest.mark.browser
def test_upload_translate_download_in_chromium(browser, page_url, run_2d, tmp_path):
    from selenium.webdriver.common.by import By

    src = _rgb16(tmp_path / "scan.tif")
    browser.get(page_url)
    file_input = _wait(lambda: browser.find_elements(By.CSS_SELECTOR, "#upload input[type=file]"),
                       60, "the upload field")[0]
    file_input.send_keys(str(src))
    _wait(lambda: browser.find_elements(By.CSS_SELECTOR,
                                        "#upload td.filename[aria-label='scan.tif']"),
          60, "the upload to finish")
    browser.find_element(By.XPATH, "//*[@id='direction']//label[contains(., 'BtoA')]").click()
    browser.find_element(By.ID, "translate").click()
    link = _wait(lambda: browser.find_elements(By.CSS_SELECTOR, "#result a[href]"), 120,
                 "the result link")[0]
    assert "Error" not in browser.find_element(By.ID, "status").text
    for preview in ("preview_in", "preview_out"):  # both pictures are on the page
        width = _wait(lambda p=preview: browser.execute_script(
            f"const i = document.querySelector('#{p} img'); return i && i.naturalWidth;"),
            30, f"the {preview} picture")
        assert width == 56
    link.click()
    downloaded = _wait(lambda: [p for p in browser.downloads.iterdir()
                                if p.name == "scan_BtoA.tif"], 60, "the download")[0]
    run_cli("translate", "--model_dir", run_2d, "--input", src, "--output",
            tmp_path / "cli.tif", "--direction", "BtoA", "--no_progress", "--gpu_ids", "-1")
    expected = tifffile.imread(tmp_path / "cli.tif")
    got = tifffile.imread(downloaded)
    assert got.dtype == np.uint16 and got.shape == (40, 56, 3)  # the input's bit depth
    np.testing.assert_array_equal(got, expected)


@pytest.mark.browser
def test_unreadable_upload_shows_a_line_in_the_page(browser, page_url, tmp_path):
    from selenium.webdriver.common.by import By

    bad = tmp_path / "broken.png"
    bad.write_bytes(b"this is not a PNG")
    browser.get(page_url)
    file_input = _wait(lambda: browser.find_elements(By.CSS_SELECTOR, "#upload input[type=file]"),
                       60, "the upload field")[0]
    file_input.send_keys(str(bad))
    _wait(lambda: browser.find_elements(By.CSS_SELECTOR,
                                        "#upload td.filename[aria-label='broken.png']"),
          60, "the upload to finish")
    browser.find_element(By.ID, "translate").click()
    text = _wait(lambda: browser.find_element(By.ID, "status").text, 60, "the status line")
    assert text.startswith("Error:") and "broken.png" in text
    assert "Traceback" not in browser.page_source


@pytest.mark.browser
def test_oversized_upload_is_refused_in_the_page(browser, page_url, tmp_path):
    from selenium.webdriver.common.by import By

    big = tmp_path / "big.png"
    big.write_bytes(bytes(2 * 2**20))  # the page fixture accepts 1 MB
    browser.get(page_url)
    file_input = _wait(lambda: browser.find_elements(By.CSS_SELECTOR, "#upload input[type=file]"),
                       60, "the upload field")[0]
    file_input.send_keys(str(big))
    body = _wait(lambda: (lambda t: t if "maximum allowed size" in t else "")(
        browser.find_element(By.TAG_NAME, "body").text), 30, "the size message")
    assert "big.png" in body and "Traceback" not in browser.page_source
