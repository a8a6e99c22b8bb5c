"""The decoder's synthesis arithmetic (facekit.models.coding_transforms.SYNTHESIS): bfloat16
convolutions read the same files as float32 and give nearly the same pixels; an unknown
arithmetic is one clear error; the uint8 pixels a decoder returns are the float images' exactly.
Bit-exactness across thread counts and processes, for both:
tests/test_hyperprior.py; the codec and ``facekit decompress --synthesis``: tests/test_hyperprior_codec.py."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("constriction")

from facekit.errors import CodecError  # noqa: E402
from facekit.models.coding_transforms import SYNTHESIS, Inference, shuffled_pixels, synthesis_dtype  # noqa: E402
from facekit.models.hyperprior import HyperpriorArch  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "corpus"))

from fkh1 import tiny_hyperprior  # noqa: E402
from make_corpus import face_image  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


def face() -> torch.Tensor:
    return torch.from_numpy(face_image()).permute(2, 0, 1)[None].float() / 255


def test_names_and_unknown_names() -> None:
    assert synthesis_dtype("float32") is torch.float32 and synthesis_dtype("bfloat16") is torch.bfloat16
    assert list(SYNTHESIS) == ["float32", "bfloat16"]
    for bad in ("int8", "fp16", "", "Float32"):
        with pytest.raises(CodecError, match="unknown synthesis arithmetic"):
            synthesis_dtype(bad)


@pytest.mark.parametrize("arch", [None, HyperpriorArch()], ids=["tiny", "default"])
def test_bfloat16_convolutions_compute_nearly_the_float32_function(arch: HyperpriorArch | None) -> None:
    m = tiny_hyperprior(1, arch) if arch else tiny_hyperprior(1)
    y = torch.randn(1, m.arch.latent, 6, 5) * 4
    ref, got = Inference(m.g_s)(y), Inference(m.g_s, torch.bfloat16)(y)
    fast = Inference(m.g_s, torch.bfloat16)
    assert all(op[1].dtype == torch.bfloat16 for op in fast.ops if op[0] in ("conv", "tconv"))
    assert got.dtype == torch.float32 and got.is_contiguous(memory_format=torch.channels_last)
    assert got.shape == ref.shape and not torch.equal(got, ref)  # another arithmetic: other floats
    assert float((got - ref).abs().max()) <= 0.03 * float(ref.abs().max())


def test_decoder_reads_the_same_files_with_nearly_the_same_pixels() -> None:
    m = tiny_hyperprior(2)
    enc = m.compress(face(), 0.6)
    f32 = m.decompress(enc["strings"], enc["shape"])["x_hat"]
    bf16 = m.decompress(enc["strings"], enc["shape"], "bfloat16")["x_hat"]
    assert bf16.shape == f32.shape and bf16.dtype == torch.float32
    diff = (bf16 - f32).abs()
    assert float(diff.max()) <= 8 / 255 and float(diff.mean()) <= 1 / 255
    assert torch.equal(m.decompress(enc["strings"], enc["shape"], "float32")["x_hat"], f32)  # float32 untouched
    with pytest.raises(CodecError, match="unknown synthesis arithmetic"):
        m.decompress(enc["strings"], enc["shape"], "int8")


def test_the_benchmark_prints_both_decodes(tmp_path: Path) -> None:
    out = tmp_path / "arithmetic.json"
    env = {k: v for k, v in os.environ.items() if k != "FACEKIT_LFW"} | {"OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, str(REPO / "benchmarks" / "synthesis_arithmetic.py"), "--n", "2", "--rates", "0", "1",
                        "--json", str(out)], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    result = json.loads(out.read_text())
    rows = result["rows"]
    assert [row["t"] for row in rows] == [0, 1] and "bfloat16 dB" in r.stdout
    assert result["weights"]["source"] == "untrained" and len(result["weights"]["fingerprint"]) == 64
    assert all(abs(row["psnr_bfloat16"] - row["psnr_float32"]) < 0.1 and row["max_pixel_difference"] <= 8 for row in rows)


@pytest.mark.parametrize("synthesis", list(SYNTHESIS))
@pytest.mark.parametrize("shape", [(1, 3, 250, 250), (2, 3, 37, 70), (1, 3, 1, 1), (1, 3, 65, 63)])
def test_pixels_are_the_float_images_rounded(synthesis: str, shape: tuple[int, ...]) -> None:
    m = tiny_hyperprior(3)
    x = torch.rand(shape, generator=torch.Generator().manual_seed(sum(shape)))
    enc = m.compress(x, 0.8)
    x_hat = m.decompress(enc["strings"], enc["shape"], synthesis)["x_hat"]
    got = m.decompress_pixels(enc["strings"], enc["shape"], synthesis)
    assert got.dtype == torch.uint8 and got.shape == (shape[0], shape[2], shape[3], 3)
    assert torch.equal(got, (x_hat * 255).round().to(torch.uint8).permute(0, 2, 3, 1))
    with pytest.raises(CodecError, match="unknown synthesis arithmetic"):
        m.decompress_pixels(enc["strings"], enc["shape"], "int8")


def test_shuffled_pixels_shuffles_crops_and_refuses_a_larger_crop() -> None:
    x = torch.arange(2 * 12 * 3 * 4, dtype=torch.float32).reshape(2, 3, 4, 12).permute(0, 3, 1, 2) / 400 - 0.25
    out = shuffled_pixels(x, 2, 0.25, 5, 7)  # channels (i, j, c) of 3 colours: a 6x8 image, cropped to 5x7
    full = x.permute(0, 2, 3, 1).reshape(2, 3, 4, 2, 2, 3).permute(0, 1, 3, 2, 4, 5).reshape(2, 6, 8, 3)
    assert torch.equal(out, ((full + 0.25).clamp(0, 1) * 255).round().to(torch.uint8)[:, :5, :7])
    with pytest.raises(ValueError, match="crop"):
        shuffled_pixels(x, 2, 0.0, 7, 8)


def test_the_complexity_benchmark_times_every_codec_side_by_side(tmp_path: Path) -> None:
    out = tmp_path / "complexity.json"
    env = {k: v for k, v in os.environ.items() if k != "FACEKIT_LFW"} | {"OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, str(REPO / "benchmarks" / "model_complexity.py"), "--n", "1", "--rounds", "2",
                        "--json", str(out)], env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    result = json.loads(out.read_text())
    rows = result["rows"]
    assert list(rows) == ["facekit-hyperprior", "facekit-hyperprior+bf16", "jpeg2000", "avif"]
    assert all(row[k] > 0 for row in rows.values() for k in ("encode_ms", "decode_ms", "decode_cpu_ms", "bpp"))
    assert rows["facekit-hyperprior+bf16"]["bpp"] == rows["facekit-hyperprior"]["bpp"]  # the same files
    assert 1000 < result["macs_per_pixel"]["decoder"] <= 6000 and "dec ratio" in r.stdout
    assert result["weights"] == {"source": "untrained", "sha256": None, "fingerprint": result["weights"]["fingerprint"]}


def test_a_synthesis_cut_to_its_own_widths_is_the_same_function() -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("synthesis_width", REPO / "benchmarks" / "synthesis_width.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    m = tiny_hyperprior(4, HyperpriorArch(gdn_offdiag_init=0.01))
    y = torch.randn(1, m.arch.latent, 4, 5)
    same = bench.narrower(m, m.arch.dec_widths)
    with torch.no_grad():
        assert torch.equal(same.g_s(y), m.g_s(y))
    cut = bench.narrower(m, (16, 8, 8))
    assert cut.arch.dec_widths == (16, 8, 8) and cut.g_s(y).shape == m.g_s(y).shape
    kept = {k: v for k, v in cut.state_dict().items() if not k.startswith("g_s.")}
    assert all(torch.equal(v, m.state_dict()[k]) for k, v in kept.items())  # everything else is the model's own


def test_the_width_benchmark_fine_tunes_on_the_same_bits(tmp_path: Path) -> None:
    from PIL import Image

    folder = tmp_path / "faces"
    folder.mkdir()
    for i in range(5):
        Image.fromarray(face_image(seed=i)).save(folder / f"face{i}.png")
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, str(REPO / "benchmarks" / "synthesis_width.py"), "--widths", "48", "32", "16",
                        "--steps", "3", "--crop", "64", "--batch", "2", "--held-out", "2", "--images", str(folder),
                        "--out", str(tmp_path / "out")], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    result = json.loads((tmp_path / "out" / "result.json").read_text())
    assert result["steps"] == 3 and result["held_out"] == 2 and (tmp_path / "out" / "model.pt").exists()
    for t, row in result["stored"].items():  # the same encoder and entropy model: the same bits
        assert result["tuned"][t]["bpp"] == row["bpp"] and math.isfinite(result["tuned"][t]["psnr"])
