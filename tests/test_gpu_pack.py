"""The LFW split folder that a lent GPU machine trains phase one on (scripts/gpu_hyperprior.sh pack):
the same identity-disjoint split and held-out images as the full LFW, byte for byte, carried in
parts that each fit beside the working tree, and joined there exactly."""

from __future__ import annotations

import os
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
    done = subprocess.run(["git", "-C", str(ROOT), "check-ignore", "-q", "gpu/1/pack.part"], capture_output=True)
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


SCRIPT = ROOT / "scripts" / "gpu_hyperprior.sh"
#: what a device call carries at most, the working tree included (the device tool's limit)
CARRY_LIMIT = 64 * 1024 * 1024


def pack_script(*args: str, part_bytes: int | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **({"PART_BYTES": str(part_bytes)} if part_bytes else {})}
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, env=env, check=False)


def fake_pack(folder: Path) -> Path:
    rng = np.random.default_rng(1)
    (folder / "lfw" / "lfw-deepfunneled" / "Cid").mkdir(parents=True)
    (folder / "lfw" / "split.json").write_text("{}\n")
    (folder / "lfw" / "lfw-deepfunneled" / "Cid" / "Cid_0001.jpg").write_bytes(rng.bytes(5000))
    (folder / "wheels").mkdir()
    (folder / "wheels" / "tqdm.whl").write_bytes(rng.bytes(3000))
    return folder


def files_of(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_the_pack_is_cut_into_parts_that_join_exactly(tmp_path):
    pack = fake_pack(tmp_path / "gpu")
    done = pack_script("split", str(pack), part_bytes=3000)
    assert done.returncode == 0, done.stderr
    parts = sorted(p for p in pack.iterdir() if p.name.isdigit())
    assert [p.name for p in parts] == ["1", "2", "3"]
    assert all(sorted(q.name for q in p.iterdir()) == ["PACK", "pack.part"] for p in parts)
    assert all((p / "pack.part").stat().st_size <= 3000 for p in parts)
    done = pack_script("join", str(pack), str(tmp_path / "joined"))
    assert done.returncode == 0, done.stderr
    assert files_of(tmp_path / "joined") == {k: v for k, v in files_of(pack).items() if not k[0].isdigit()}


def test_a_missing_damaged_or_foreign_part_is_one_clear_error(tmp_path):
    pack, other = fake_pack(tmp_path / "gpu"), fake_pack(tmp_path / "other")
    (other / "wheels" / "tqdm.whl").write_bytes(b"another wheel")
    for folder in (pack, other):
        assert pack_script("split", str(folder), part_bytes=3000).returncode == 0

    def refused(message: str) -> None:
        done = pack_script("join", str(pack), str(tmp_path / "joined"))
        assert done.returncode == 1 and message in done.stderr and done.stderr.count("\n") == 1, done.stderr

    part = pack / "2" / "pack.part"
    good = part.read_bytes()
    part.unlink()
    refused("part 2 of 3 is missing: carry")
    part.write_bytes(good[:-1] + bytes([good[-1] ^ 1]))
    refused("a part is damaged")
    part.write_bytes(good)
    (other / "1" / "PACK").replace(pack / "1" / "PACK")
    refused("is a part of another pack")


def test_the_working_tree_leaves_room_for_a_part_of_the_pack():
    """Every device call carries the tracked tree; ``pack`` cuts the 14 MB pack into parts of what is left."""
    done = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                          capture_output=True, check=False)
    if done.returncode:
        pytest.skip("not a git checkout")
    tree = sum((ROOT / f).stat().st_size for f in done.stdout.decode().split("\0") if f and (ROOT / f).is_file())
    room = CARRY_LIMIT - tree - 1024 * 1024
    assert room >= 4 * 1024 * 1024, f"the working tree is {tree} bytes: a device call carries {CARRY_LIMIT} in all"
