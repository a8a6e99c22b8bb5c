"""LFW access on the real data (skips without it) and on small made-up folders."""

from __future__ import annotations

import io
import shutil
import subprocess
import tarfile

import numpy as np
import pytest
from PIL import Image

from facekit.commands.lfw import verify_report
from facekit.data import identity_disjoint_split, locate, open_lfw, read_pairs
from facekit.data.lfw import extract_archive
from facekit.errors import ChecksumError, DataError


def make_lfw(root, people=("Ann_A", "Bob_B", "Cy_C"), n=3):
    for person in people:
        (root / person).mkdir(parents=True)
        for i in range(1, n + 1):
            img = np.full((250, 250, 3), 40 * i, np.uint8)
            Image.fromarray(img).save(root / person / f"{person}_{i:04d}.jpg")
    (root / "pairs.txt").write_text("1\t1\nAnn_A\t1\t2\nAnn_A\t1\tBob_B\t3\n")
    return root


def test_real_lfw_counts(lfw_root):
    r = verify_report(str(lfw_root))
    assert r["identities"] == 5749 and r["images"] == 13233
    assert r["pairs"] == 6000 and r["pairs_present"] == 6000
    assert r["checksums_ok"] is True
    assert (r["split_identities"], r["split_images"]) == (1468, 1549)


def test_real_pairs_structure(lfw):
    pairs = lfw.pairs()
    assert len(pairs) == 6000
    assert [sum(p.fold == k for p in pairs) for k in range(10)] == [600] * 10
    assert sum(p.same for p in pairs) == 3000
    img = lfw.load(pairs[0].a)
    assert img.shape == (250, 250, 3) and img.dtype == np.uint8


def test_split_is_identity_disjoint(lfw):
    split = identity_disjoint_split(lfw)
    used = {n.split("/")[0] for p in lfw.pairs() for n in (p.a, p.b)}
    assert not used & set(split)


def test_small_folder_and_missing_image(tmp_path, monkeypatch):
    monkeypatch.setenv("FACEKIT_CACHE", str(tmp_path / "cache"))
    root = make_lfw(tmp_path / "lfw")
    lfw = open_lfw(root)
    assert len(lfw.pairs()) == 2 and lfw.missing() == []
    assert set(identity_disjoint_split(lfw)) == {"Cy_C"}
    (root / "Bob_B" / "Bob_B_0003.jpg").unlink()
    assert lfw.missing() == ["Bob_B/Bob_B_0003.jpg"]
    with pytest.raises(DataError, match="Bob_B_0003.jpg is missing"):
        lfw.load("Bob_B/Bob_B_0003.jpg")


def test_archive_is_read_and_checked(tmp_path, monkeypatch):
    monkeypatch.setenv("FACEKIT_CACHE", str(tmp_path / "cache"))
    src = make_lfw(tmp_path / "src" / "lfw-deepfunneled")
    data = tmp_path / "data"
    data.mkdir()
    with tarfile.open(data / "lfw-deepfunneled.tgz", "w:gz") as tar:
        tar.add(src, arcname="lfw-deepfunneled")
    (data / "pairs.txt").write_text((src / "pairs.txt").read_text())
    lfw = open_lfw(data)
    assert lfw.load("Ann_A/Ann_A_0002.jpg").shape == (250, 250, 3)
    # a second open reuses the extraction
    assert open_lfw(data).images == lfw.images
    # a SHA256SUMS that disagrees is refused
    (data / "SHA256SUMS").write_text("0" * 64 + "  lfw-deepfunneled.tgz\n")
    with pytest.raises(ChecksumError, match="differs"):
        open_lfw(data)


def test_concurrent_extraction_keeps_the_first_complete_folder(tmp_path, monkeypatch):
    """Two processes extracting at once: the later one must not delete the folder the first is reading."""
    monkeypatch.setenv("FACEKIT_CACHE", str(tmp_path / "cache"))
    src = make_lfw(tmp_path / "src" / "lfw-deepfunneled")
    arch = tmp_path / "lfw-deepfunneled.tgz"
    with tarfile.open(arch, "w:gz") as tar:
        tar.add(src, arcname="lfw-deepfunneled")
    first = extract_archive(arch)
    marker = first / "Ann_A" / "in-use"
    marker.write_text("open elsewhere")
    done = first.parent / ".complete"
    real_exists = type(done).exists
    calls = {"n": 0}

    def exists_late(self):  # the first check sees no extraction; the first process finishes meanwhile
        if self == done:
            calls["n"] += 1
            if calls["n"] == 1:
                return False
        return real_exists(self)

    monkeypatch.setattr(type(done), "exists", exists_late)
    assert extract_archive(arch) == first
    assert marker.read_text() == "open elsewhere"  # the folder in use was kept
    assert not list((tmp_path / "cache" / "lfw").glob(".extract-*"))  # and the second copy removed


def test_corrupted_archive_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("FACEKIT_CACHE", str(tmp_path / "cache"))
    bad = tmp_path / "lfw-deepfunneled.tgz"
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        info = tarfile.TarInfo("lfw-deepfunneled/A_B/A_B_0001.jpg")
        info.size = 5000
        tar.addfile(info, io.BytesIO(np.random.default_rng(0).bytes(5000)))
    bad.write_bytes(buf.getvalue()[:2000])
    with pytest.raises(DataError, match="corrupted or truncated"):
        extract_archive(bad)
    assert not any((tmp_path / "cache" / "lfw").glob("*/.complete"))


def test_missing_dataset_says_where_to_get_it(monkeypatch, tmp_path):
    monkeypatch.delenv("FACEKIT_LFW", raising=False)
    repo = tmp_path / "repo"
    monkeypatch.setattr(locate, "repo_root", lambda: repo)
    with pytest.raises(DataError, match="FACEKIT_LFW") as err:
        open_lfw()
    message = str(err.value)
    for place in ("--root", "$FACEKIT_LFW (not set)", str(repo / "data" / "lfw"),
                  str(tmp_path / "shared" / "data" / "lfw"), "Set FACEKIT_LFW=PATH", "lfw download"):
        assert place in message
    monkeypatch.setenv("FACEKIT_LFW", str(tmp_path / "gone"))
    with pytest.raises(DataError, match="FACEKIT_LFW=.*gone does not exist"):
        open_lfw()
    with pytest.raises(DataError, match="does not exist"):
        open_lfw(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="holds neither"):
        open_lfw(tmp_path / "empty")


def test_lfw_is_found_in_the_repositorys_data_folder(monkeypatch, tmp_path):
    """Order: the argument, then $FACEKIT_LFW, then <repo>/data/lfw, then <repo>/../shared/data/lfw."""
    monkeypatch.setenv("FACEKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("FACEKIT_LFW", raising=False)
    repo = tmp_path / "work" / "repo"
    monkeypatch.setattr(locate, "repo_root", lambda: repo)
    shared = make_lfw(tmp_path / "work" / "shared" / "data" / "lfw", people=("Sam_S", "Bob_B", "Cy_C"))
    assert open_lfw().images == shared
    in_repo = make_lfw(repo / "data" / "lfw")
    assert open_lfw().images == in_repo
    env = make_lfw(tmp_path / "env", people=("Ann_A", "Bob_B", "Dee_D"))
    monkeypatch.setenv("FACEKIT_LFW", str(env))
    assert open_lfw().images == env
    assert open_lfw(in_repo).images == in_repo


def test_real_repository_root_and_lfw_is_ignored_by_git():
    root = locate.repo_root()
    assert root is not None and (root / "facekit" / "data" / "locate.py").is_file()
    if shutil.which("git") is None or not (root / ".git").exists():
        pytest.skip("not a git checkout")
    probe = subprocess.run(["git", "-C", str(root), "check-ignore", "-q", "data/lfw/Ann_A/Ann_A_0001.jpg"])
    assert probe.returncode == 0, "data/lfw/ must be in .gitignore: LFW is never committed"


def test_pairs_file_errors(tmp_path):
    p = tmp_path / "pairs.txt"
    p.write_text("1\t2\nAnn\t1\t2\n")
    with pytest.raises(DataError, match="expected 5"):
        read_pairs(p)
    p.write_text("1\t1\nAnn\tone\t2\nAnn\t1\tBob\t1\n")
    with pytest.raises(DataError, match="expected numbers"):
        read_pairs(p)
    with pytest.raises(DataError, match="does not exist"):
        read_pairs(tmp_path / "nope.txt")
