"""The dataset scripts keep upstream's names and fail in one line without a network."""

import subprocess
from pathlib import Path

import pytest

DATASETS = Path(__file__).resolve().parents[1] / "datasets"


@pytest.mark.parametrize("script,name", [("download_cyclegan_dataset.sh", "horse2zebra"),
                                         ("download_pix2pix_dataset.sh", "facades")])
def test_no_network_is_one_clear_line(script, name, tmp_path):
    # an unresolvable proxy makes the download fail quickly whatever the machine's network
    env = {"PATH": "/usr/bin:/bin", "http_proxy": "http://127.0.0.1:9", "HOME": str(tmp_path)}
    done = subprocess.run(["bash", str(DATASETS / script), name], capture_output=True,
                          text=True, env=env, timeout=120)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "could not download" in lines[0] and name in lines[0]
    assert not list(DATASETS.glob(f"{name}*"))


@pytest.mark.parametrize("script", ["download_cyclegan_dataset.sh",
                                    "download_pix2pix_dataset.sh"])
def test_unknown_name_lists_the_valid_ones(script):
    done = subprocess.run(["bash", str(DATASETS / script), "nope"], capture_output=True,
                          text=True, timeout=30)
    assert done.returncode == 2
    assert "facades" in done.stderr and len(done.stderr.strip().splitlines()) == 1
