"""The built-in labels↔photo demo dataset."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from PIL import Image

from revgan.config import RunConfig
from revgan.data import create_dataset
from revgan.demo.scenes import PALETTE, label_map_to_classes, main, make_demo_dataset, make_scene
from revgan.errors import UserError

SMALL = dict(size=32, n_train=4, n_val=2, n_test=3)


def tree_bytes(root):
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.png"))}


def pixels(path):
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.float64)


def test_layout_and_counts(tmp_path):
    info = make_demo_dataset(tmp_path / "d", seed=3, **SMALL)
    root = tmp_path / "d"
    assert info["counts"] == {"train": 4, "val": 2, "test": 3} and not info["reused"]
    for split, n in info["counts"].items():
        paired = sorted(p.name for p in (root / "paired" / split).iterdir())
        assert len(paired) == n
        for side in "AB":
            assert sorted(p.name for p in (root / "unpaired" / f"{split}{side}").iterdir()) \
                == paired
    ab = Image.open(root / "paired/train/0000.png")
    assert ab.size == (64, 32) and ab.mode == "RGB"
    manifest = json.loads((root / "demo_dataset.json").read_text())
    assert manifest["seed"] == 3 and manifest["size"] == 32

    # testA/testB are the matching halves of paired/test; trainB comes from other scenes.
    test_ab = pixels(root / "paired/test/0001.png")
    assert np.array_equal(test_ab[:, :32], pixels(root / "unpaired/testA/0001.png"))
    assert np.array_equal(test_ab[:, 32:], pixels(root / "unpaired/testB/0001.png"))
    train_ab = pixels(root / "paired/train/0000.png")
    assert np.array_equal(train_ab[:, :32], pixels(root / "unpaired/trainA/0000.png"))
    assert not np.array_equal(train_ab[:, 32:], pixels(root / "unpaired/trainB/0000.png"))

    # The datasets read it as they should.
    opt = RunConfig(dataroot=str(root / "unpaired"), phase="train", dataset_mode="unaligned",
                    preprocess="none", isTrain=True, max_dataset_size=math.inf)
    item = create_dataset(opt)[0]
    assert item["A"].shape == (3, 32, 32) and item["B"].shape == (3, 32, 32)


def test_deterministic_from_seed(tmp_path):
    make_demo_dataset(tmp_path / "a", seed=5, **SMALL)
    make_demo_dataset(tmp_path / "b", seed=5, **SMALL)
    make_demo_dataset(tmp_path / "c", seed=6, **SMALL)
    a, b, c = (tree_bytes(tmp_path / n) for n in "abc")
    assert a == b
    assert a.keys() == c.keys() and all(a[k] != c[k] for k in a if "paired/" in k)


def test_domains_differ_and_labels_are_flat():
    label, photo = make_scene(0, "test", 0, 64)
    assert np.abs(label.astype(float) - photo.astype(float)).mean() > 30
    # A uses only palette colours; B is textured (many more distinct colours).
    assert set(map(tuple, label.reshape(-1, 3))) <= set(map(tuple, PALETTE))
    assert len(np.unique(photo.reshape(-1, 3), axis=0)) > 500
    classes = label_map_to_classes(label)
    assert len(np.unique(classes)) >= 4  # sky, building, road, sidewalk at least
    assert np.array_equal(PALETTE[classes], label)
    assert np.array_equal(label_map_to_classes(label / 127.5 - 1.0), classes)


def test_reuse_and_no_silent_overwrite(tmp_path):
    root = tmp_path / "d"
    make_demo_dataset(root, **SMALL)
    marker = root / "paired/train/0000.png"
    stamp = marker.stat().st_mtime_ns
    assert make_demo_dataset(root, **SMALL)["reused"]
    assert marker.stat().st_mtime_ns == stamp
    with pytest.raises(UserError, match="other parameters"):
        make_demo_dataset(root, **{**SMALL, "seed": 1})
    info = make_demo_dataset(root, **{**SMALL, "seed": 1}, overwrite=True)
    assert not info["reused"] and json.loads(info["manifest"].read_text())["seed"] == 1

    user = tmp_path / "mine"
    user.mkdir()
    (user / "precious.txt").write_text("keep")
    with pytest.raises(UserError, match="not empty"):
        make_demo_dataset(user, **SMALL)
    assert [p.name for p in user.iterdir()] == ["precious.txt"]
    with pytest.raises(UserError):
        make_demo_dataset(tmp_path / "x", size=30)


def test_command_line(tmp_path, capsys):
    main([str(tmp_path / "cli"), "--size", "16", "--n_train", "1", "--n_val", "0",
          "--n_test", "1"])
    assert "wrote demo dataset" in capsys.readouterr().out
    assert (tmp_path / "cli/unpaired/testB/0000.png").is_file()
    with pytest.raises(SystemExit) as exc:
        main([str(tmp_path / "cli"), "--size", "16", "--n_train", "2"])
    assert exc.value.code == 2
