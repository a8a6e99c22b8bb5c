"""The layout rules anyone can check: small library files, no private imports across modules,
and the one-home helpers (atomic writes, PSNR, the image reader) behaving as documented."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest
import torch

from facekit.errors import ImageError
from facekit.fileio import atomic_path, atomic_write, sha256_file
from facekit.imageio import open_image
from facekit.metrics import MAX_PSNR, psnr, psnr_from_mse, psnr_torch

ROOT = Path(__file__).resolve().parent.parent
LIBRARY = sorted((ROOT / "facekit").rglob("*.py"))
MAX_LINES = 500


def test_no_library_file_is_longer_than_about_500_lines():
    long = {str(p.relative_to(ROOT)): n for p in LIBRARY if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"split these files (one idea per file): {long}"


@pytest.mark.parametrize("folder", ["facekit", "benchmarks", "tests", "notebooks"])
def test_no_module_imports_a_private_name_from_another(folder):
    found = []
    for p in sorted((ROOT / folder).rglob("*.py")):
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module != "__future__":
                found += [f"{p.relative_to(ROOT)}:{node.lineno} {a.name}" for a in node.names
                          if a.name.startswith("_") and not a.name.startswith("__")]
    assert not found, f"private names imported across modules: {found}"


def test_atomic_write_replaces_whole_or_leaves_the_old_file(tmp_path):
    target = tmp_path / "sub" / "out.json"
    atomic_write(target, "one\n")
    assert target.read_text() == "one\n"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert target.read_text() == "one\n"
    assert [p.name for p in target.parent.iterdir()] == ["out.json"]  # no temporary file left
    atomic_write(target, b"two")
    assert target.read_bytes() == b"two" and len(sha256_file(target)) == 64


def test_one_psnr_convention():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    assert psnr(a, a) == MAX_PSNR == psnr_from_mse(0.0)
    b = np.clip(a.astype(int) + 3, 0, 255).astype(np.uint8)
    mse = np.mean((a.astype(float) - b) ** 2)
    assert psnr(a, b) == pytest.approx(10 * np.log10(255**2 / mse))
    x = torch.from_numpy(a).permute(2, 0, 1)[None].float() / 255
    y = torch.from_numpy(b).permute(2, 0, 1)[None].float() / 255
    assert float(psnr_torch(x, y)[0]) == pytest.approx(psnr(a, b), abs=1e-3)
    assert float(psnr_torch(x, x)[0]) == pytest.approx(MAX_PSNR)
    with pytest.raises(ValueError, match="different shapes"):
        psnr(a, a[:8])


def test_the_image_reader_enforces_the_pixel_budget(tmp_path):
    from PIL import Image

    path = tmp_path / "face.png"
    Image.fromarray(np.zeros((40, 30, 3), np.uint8)).save(path)
    assert open_image(path).shape == (40, 30, 3)
    with pytest.raises(ImageError, match="exceeds the limit"):
        open_image(path, max_pixels=100)


@pytest.mark.parametrize("doc", ["README.md", "results/README.md"])
def test_every_image_a_readme_shows_is_in_the_repository(doc):
    import re
    import subprocess

    tracked = set(subprocess.run(["git", "-C", str(ROOT), "ls-files"], capture_output=True, text=True).stdout.split())
    if not tracked:
        pytest.skip("not a git checkout")
    base = (ROOT / doc).parent
    images = re.findall(r"!\[[^\]]*\]\(([^)\s]+)\)", (ROOT / doc).read_text())
    missing = [i for i in images if "://" not in i and str((base / i).resolve().relative_to(ROOT)) not in tracked]
    assert images and not missing, f"{doc} shows images git does not track: {missing}"
