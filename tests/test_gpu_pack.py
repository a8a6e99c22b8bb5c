"""The LFW split folder that a lent GPU machine trains phase one on (scripts/gpu_hyperprior.sh pack):
the same identity-disjoint split and held-out images as the full LFW, byte for byte."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

from facekit.data.lfw import check_checksums, identity_disjoint_split, open_lfw
from facekit.data.lfw_subset import write_split_subset
from facekit.errors import DataError
from facekit.training.data import held_out

ROOT = Path(__file__).resolve().parent.parent


def split_names(lfw_root: Path) -> list[str]:
    return sorted(n for imgs in identity_disjoint_split(open_lfw(lfw_root)).values() for n in imgs)


def fake_lfw(root: Path) -> Path:
    """Four people: Ann and Bob in pairs.txt, Cid and Dee not."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for person, count in {"Ann": 2, "Bob": 1, "Cid": 2, "Dee": 1}.items():
        (root / "lfw-deepfunneled" / person).mkdir(parents=True)
        for i in range(1, count + 1):
            image = Image.fromarray(rng.integers(0, 256, (20, 20, 3), dtype=np.uint8))
            image.save(root / "lfw-deepfunneled" / person / f"{person}_{i:04d}.jpg")
    (root / "pairs.txt").write_text("1\t1\nAnn\t1\t2\nAnn\t1\tBob\t1\n")
    return root


def test_the_split_folder_holds_the_split_alone_byte_for_byte(tmp_path):
    src = fake_lfw(tmp_path / "full")
    info = write_split_subset(tmp_path / "pack" / "lfw", src)
    dest = tmp_path / "pack" / "lfw"
    assert (info["people"], info["images"], info["source"]) == (2, 3, "lfw-deepfunneled")
    assert sorted(p.name for p in dest.iterdir()) == ["SHA256SUMS", "lfw-deepfunneled", "pairs.txt", "split.json"]
    assert sorted(p.name for p in (dest / "lfw-deepfunneled").iterdir()) == ["Cid", "Dee"]
    assert identity_disjoint_split(open_lfw(dest)) == identity_disjoint_split(open_lfw(src))
    assert all(check_checksums(dest).values()) and len(check_checksums(dest)) == 4
    for name in split_names(src):
        assert (dest / "lfw-deepfunneled" / name).read_bytes() == (src / "lfw-deepfunneled" / name).read_bytes()
    write_split_subset(dest, src)  # an earlier split folder is replaced
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "keep.txt").write_text("mine")
    with pytest.raises(DataError, match="not a split folder"):
        write_split_subset(tmp_path / "other", src)
    assert (tmp_path / "other" / "keep.txt").read_text() == "mine"


@pytest.mark.lfw
def test_the_packed_lfw_gives_the_full_split_and_held_out_images(lfw_root, tmp_path):
    info = write_split_subset(tmp_path / "lfw", lfw_root)
    assert (info["people"], info["images"]) == (1468, 1549)
    full, packed = split_names(lfw_root), split_names(tmp_path / "lfw")
    assert packed == full and len(full) == 1549
    for count in (8, 32):  # the recipes' held-out images, chosen by name
        assert held_out(packed, count) == held_out(full, count)
    sums = check_checksums(tmp_path / "lfw")
    assert len(sums) == 1550 and all(sums.values())


def test_git_ignores_the_pack():
    done = subprocess.run(["git", "-C", str(ROOT), "check-ignore", "-q", "gpu/lfw/pairs.txt"], capture_output=True)
    if done.returncode == 128:
        pytest.skip("not a git checkout")
    assert done.returncode == 0, "add gpu/ to .gitignore: scripts/gpu_hyperprior.sh pack writes it"


def test_time_limit_goes_with_a_recipe(tmp_path, capsys):
    from facekit.cli import main

    assert main(["train", "--out", str(tmp_path / "run"), "--time-limit", "5"]) == 2
    assert "--time-limit go with --recipe" in capsys.readouterr().err
    recipe = str(ROOT / "recipes" / "hyperprior.toml")
    assert main(["train", "--recipe", recipe, "--out", str(tmp_path / "run"), "--time-limit", "0"]) == 2
    assert "seconds > 0" in capsys.readouterr().err
