"""`revgan demo --quick` runs the whole README job end to end on generated data."""

from __future__ import annotations

from helpers import run_cli


def test_demo_quick_2d(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run_cli("demo", "--quick", "--no_progress", "--gpu_ids", "-1")
    out = capsys.readouterr().out
    assert "unpaired_revgan" in out and "paired_revgan" in out
    for run in ("demo_unpaired_revgan", "demo_paired_revgan"):
        assert (tmp_path / "results" / run / "test_latest" / "index.html").is_file()
        assert (tmp_path / "checkpoints" / run / "web" / "index.html").is_file()
    # the demo data works with train.py directly, and a second demo reuses it
    run_cli("demo", "--quick", "--no_progress", "--gpu_ids", "-1")


def test_demo_quick_3d(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run_cli("demo", "--3d", "--quick", "--no_progress", "--gpu_ids", "-1")
    out = capsys.readouterr().out
    assert "translated" in out
    assert list((tmp_path / "results" / "demo_paired_revgan3d").glob("translated_*.nii.gz"))
    page = tmp_path / "results" / "demo_paired_revgan3d" / "test_latest" / "index.html"
    assert page.is_file()
