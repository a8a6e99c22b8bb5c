"""The decoder's synthesis arithmetic (facekit.models.coding_transforms.SYNTHESIS): bfloat16
convolutions read the same files as float32 and give nearly the same pixels; an unknown
arithmetic is one clear error. Bit-exactness across thread counts and processes, for both:
tests/test_hyperprior.py; the codec and ``facekit decompress --synthesis``: tests/test_hyperprior_codec.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("constriction")

from facekit.errors import CodecError  # noqa: E402
from facekit.models.coding_transforms import SYNTHESIS, Inference, synthesis_dtype  # noqa: E402
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
    rows = json.loads(out.read_text())["rows"]
    assert [row["t"] for row in rows] == [0, 1] and "bfloat16 dB" in r.stdout
    assert all(abs(row["psnr_bfloat16"] - row["psnr_float32"]) < 0.1 and row["max_pixel_difference"] <= 8 for row in rows)
