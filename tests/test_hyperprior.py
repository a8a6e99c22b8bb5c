"""The second-generation codec (facekit.models.hyperprior): contract, exact coding, errors, training."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from facekit.entropy_models import gaussian
from facekit.errors import BitstreamError, CodecError
from facekit.models.cache import SIZE_CACHE
from facekit.models.coding_transforms import GDN, Inference
from facekit.models.hyperprior import (
    INDEX_GAIN,
    PRESETS,
    RATE_STEPS,
    FaceHyperprior,
    HyperpriorArch,
    quantise_rate,
    rate_parameter,
)
from facekit.models.integer import (
    ACT_BITS,
    FLOAT32_EXACT,
    FPMATH_ENV,
    WEIGHT_BITS,
    IntConv,
    WeightMatrix,
    bound,
    float32_probe,
    ieee_float32_matmul,
    old_non_x86_torch,
    patch_index,
    patch_rows,
)

pytest.importorskip("constriction")

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "corpus"))

from fkh1 import tiny_arch, tiny_hyperprior  # noqa: E402

TINY = tiny_arch()


def face_like(h: int = 250, w: int = 250, seed: int = 0) -> torch.Tensor:
    """A smooth image with some texture, (1, 3, h, w) in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
    base = torch.stack([0.5 + 0.3 * torch.cos(3 * xx + k) * torch.sin(2 * yy - k) for k in range(3)])
    return (base + 0.05 * torch.rand(3, h, w, generator=g)).clamp(0, 1)[None]


def tiny_model(seed: int = 0, arch: HyperpriorArch = TINY) -> FaceHyperprior:
    """A (tiny) model with weights spread out, so that symbols, means and indices vary."""
    return tiny_hyperprior(seed, arch)


def test_forward_contract_and_random_rate_per_batch() -> None:
    m = FaceHyperprior(TINY).train()
    x = face_like(64, 64).repeat(2, 1, 1, 1)
    out = m(x)
    assert out["x_hat"].shape == x.shape
    assert set(out["likelihoods"]) == {"y", "z"}
    assert out["likelihoods"]["y"].shape == (2, 8, 4, 4) and out["likelihoods"]["z"].shape == (2, 4, 1, 1)
    assert all(float(v.detach().min()) > 0 and float(v.detach().max()) <= 1 for v in out["likelihoods"].values())
    t = out["rate"]
    assert t.shape == (2,) and float(t[0]) == float(t[1]) and 0 <= float(t[0]) <= 1
    assert float(m(x)["rate"][0]) != float(t[0])  # a new draw each batch
    out["x_hat"].mean().backward()
    assert m.g_a[0].weight.grad is not None and m.ep[1].weight.grad is not None


def test_gains_interpolate_between_levels() -> None:
    m = FaceHyperprior(TINY)
    with torch.no_grad():
        m.log_gain.copy_(torch.tensor([[0.0], [1.0], [3.0]]).expand(3, 8))
    g = m.gains(torch.tensor([0.0, 0.25, 0.5, 1.0]))[:, 0, 0, 0]
    assert torch.allclose(torch.log(g), torch.tensor([0.0, 0.5, 1.0, 3.0]), atol=1e-6)


def test_rate_parameter_presets_and_out_of_range() -> None:
    assert quantise_rate(0.0) == 0 and quantise_rate(1.0) == 65535 and quantise_rate("q3") == round(0.5 * 65535)
    assert rate_parameter("q2") == 0.25 and rate_parameter(torch.tensor(0.3)) == pytest.approx(0.3)
    assert list(PRESETS) == ["q1", "q2", "q3", "q4", "q5"]
    m = tiny_model()
    for bad in (-0.01, 1.5, float("nan"), float("inf"), "q9"):
        with pytest.raises(CodecError, match=r"\[0, 1\]"):
            rate_parameter(bad)
        with pytest.raises(CodecError):
            m.compress(face_like(64, 64), bad)


def test_per_size_caches_keep_the_last_few_sizes() -> None:
    """The checkerboards and the integer layers' patch indices are kept for SIZE_CACHE sizes, most recent first."""
    m = tiny_model().freeze()
    sizes = [(4 + i, 4) for i in range(SIZE_CACHE + 3)]
    for hy, wy in sizes:
        m._checkerboard(hy, wy)
        m.h_s[0].forward_int(torch.zeros(1, TINY.hyper_latent, hy, wy, dtype=torch.float64))
    assert list(m._grids) == sizes[-SIZE_CACHE:] and list(m.h_s[0]._index) == sizes[-SIZE_CACHE:]
    first = m._checkerboard(*sizes[-SIZE_CACHE])  # a hit moves it to the end, and is the same object
    assert list(m._grids)[-1] == sizes[-SIZE_CACHE] and first is m._checkerboard(*sizes[-SIZE_CACHE])
    assert len(m._grids) == SIZE_CACHE


def test_scale_table_is_pinned_and_normalised() -> None:
    tables = gaussian.tables()
    assert len(tables) == gaussian.N_SCALES
    assert all(int(c.sum()) == 1 << gaussian.PRECISION and int(c.min()) >= 1 for c in tables)
    assert all(len(c) == 2 * gaussian.support(s) + 1 for s, c in enumerate(tables))


def test_symbols_round_trip_in_whole_array_calls() -> None:
    import constriction

    rng = np.random.default_rng(1)
    idx = rng.integers(0, gaussian.N_SCALES, (5, 7, 9))
    sym = gaussian.clip_symbols(np.round(rng.normal(0, 1, idx.shape) * gaussian.SCALES[idx] * 12).astype(np.int64), idx)
    sym[0, 0, :4] = [10**6, -(10**6), 40, -41]  # escapes, two beyond what a stream holds
    sym = gaussian.clip_symbols(sym, idx)
    assert sym[0, 0, 0] == gaussian.support(int(idx[0, 0, 0])) + 2**16 - 2
    assert (np.abs(sym) >= np.vectorize(gaussian.support)(idx)).sum() > 20
    enc = constriction.stream.queue.RangeEncoder()
    gaussian.encode_symbols(enc, sym, idx)
    gaussian.encode_symbols(enc, sym[:2], idx[:2])
    dec = constriction.stream.queue.RangeDecoder(enc.get_compressed())
    assert np.array_equal(gaussian.decode_symbols(dec, idx), sym)
    assert np.array_equal(gaussian.decode_symbols(dec, idx[:2]), sym[:2])


def test_integer_conv_is_exact_against_int64_reference() -> None:
    torch.manual_seed(0)
    for upsample, k in ((False, 5), (True, 3)):
        layer = IntConv(6, 5, k, relu=not upsample, upsample=upsample, in_max=300.0)
        with torch.no_grad():
            layer.weight.mul_(20)
            layer.bias.uniform_(-3, 3)
        layer.freeze()
        a = torch.randint(-300 * 2**ACT_BITS, 300 * 2**ACT_BITS + 1, (2, 6, 7, 9), dtype=torch.int64)
        got = layer.forward_int(a.double())
        # reference: numpy int64 over the patches, floor shift, clamp
        w = layer.weight_int.numpy()
        pad = np.pad(a.numpy(), ((0, 0), (0, 0), (k // 2, k // 2), (k // 2, k // 2)))
        acc = np.zeros((2, w.shape[0], 7, 9), np.int64)
        for di in range(k):
            for dj in range(k):
                acc += np.einsum("bchw,oc->bohw", pad[:, :, di : di + 7, dj : dj + 9], w[:, :, di, dj])
        acc += layer.bias_int.numpy()[None, :, None, None]
        ref = torch.from_numpy(acc >> WEIGHT_BITS)
        if upsample:
            ref = torch.nn.functional.pixel_shuffle(ref.double(), 2).long()
        hi = (2.0**15 if upsample else 64.0) * 2**ACT_BITS
        ref = ref.clamp(-hi if upsample else 0, hi)
        assert torch.equal(got.long(), ref.long())
        if not upsample:  # only some positions, by one matrix product over their patches
            where = torch.rand(7, 9) < 0.5
            part = layer.forward_int(a.double(), where=where)
            assert torch.equal(part[:, :, where], got[:, :, where]) and not part[:, :, ~where].any()
        # the float twin computes the same function (up to float32 rounding at the floor)
        twin = layer(a.double().div(2**ACT_BITS).float()) * 2**ACT_BITS
        assert float((twin.double() - got).abs().le(1).double().mean()) > 0.99


def test_patches_of_some_taps_and_sources_give_the_same_integers() -> None:
    torch.manual_seed(1)
    layer = IntConv(6, 5, 5, in_max=300.0)
    with torch.no_grad():
        layer.weight.mul_(20)
        layer.bias.uniform_(-3, 3)
    layer.freeze()
    anchor = FaceHyperprior.anchors(7, 9)
    a = torch.randint(-300 * 2**ACT_BITS, 300 * 2**ACT_BITS + 1, (2, 6, 7, 9)).double() * anchor
    full = layer.forward_int(a, where=~anchor)  # every tap, on the grid
    taps = ~FaceHyperprior.anchors(5, 5)  # from a non-anchor, only these reach an anchor
    index = patch_index((7, 9), 5, ~anchor, taps, source=anchor)
    rows = patch_rows(a.flatten(2)[:, :, anchor.reshape(-1)].transpose(1, 2), index)  # (2, n, 12 * 6)
    n = int((~anchor).sum())
    part = layer.forward_int_rows(rows.view(2 * n, -1), taps).view(2, n, -1).transpose(1, 2)
    assert index.shape == (n, 12) and torch.equal(part, full[:, :, ~anchor])


def test_inputs_on_a_coarser_grid_give_the_same_integers_with_fewer_bits() -> None:
    """``in_bits=4`` (the context's latents in 1/16 steps) computes the integers of ``in_bits=8`` on
    inputs 16 times as large, from the same weights: the bias folded to the products' scale."""
    torch.manual_seed(2)
    coarse, fine = IntConv(6, 5, 5, in_max=300.0, in_bits=4), IntConv(6, 5, 5, in_max=300.0)
    with torch.no_grad():
        coarse.weight.mul_(20)
        coarse.bias.uniform_(-3, 3)
    fine.load_state_dict(coarse.state_dict())
    coarse.freeze()
    fine.freeze()
    a16 = torch.randint(-300 * 16, 300 * 16 + 1, (2, 6, 7, 9)).double()
    assert torch.equal(coarse.forward_int(a16), fine.forward_int(a16 * 16))
    assert coarse.in_limit == 300 * 16 and "in_bits=4" in repr(coarse)
    for bad in ({"in_bits": 9}, {"in_bits": -1}, {"in_max": 2.0**16}, {"relu": False, "out_max": 2.0**16}):
        with pytest.raises(ValueError, match="in_bits|2\\*\\*24"):
            IntConv(6, 5, 3, **bad)


def test_float32_products_are_the_int64_products_and_only_within_the_bound() -> None:
    """WeightMatrix.product runs in float32 when ``max |rows| * abs_sum < 2**24`` (every partial sum
    an exact float32 integer) and torch multiplies float32 in IEEE float32; the integers are
    int64's either way, at the bound itself too, and when torch is told it may use bfloat16."""
    g = torch.Generator().manual_seed(3)
    w = torch.randint(-200, 201, (300, 40), generator=g)
    mat = WeightMatrix.of(w.double())
    worst = int(w.abs().sum(0).argmax())
    assert mat.abs_sum == float(w[:, worst].abs().sum())
    a_max = int(-(-FLOAT32_EXACT // mat.abs_sum)) - 1  # a_max * abs_sum just below 2**24
    assert a_max * mat.abs_sum < FLOAT32_EXACT <= (a_max + 1) * mat.abs_sum
    for limit in (a_max, 4 * a_max):  # float32, then float64
        rows = torch.randint(-limit, limit + 1, (50, 300), generator=g)
        rows[0] = limit * w[:, worst].sign()  # this output's sum is max |rows| * abs_sum
        assert torch.equal(mat.product(rows.double()).long(), rows @ w)
    zeros = torch.zeros(5, 300, dtype=torch.float64)
    assert torch.equal(mat.product(zeros), torch.zeros(5, 40))
    # the bias counts in the bound: within it, float32; one past it, float64; the same integers
    rows = torch.randint(-a_max, a_max + 1, (50, 300), generator=g)
    rows[0] = a_max * w[:, worst].sign()
    room = FLOAT32_EXACT - a_max * mat.abs_sum
    for bias_max, dtype in ((room - 1, torch.float32), (room, torch.float64)):
        bias = torch.full((40,), -bias_max)
        with_bias = WeightMatrix.of(w.double(), bias)
        got = with_bias.product(rows.double())
        assert got.dtype == dtype and torch.equal(got.long(), rows @ w + bias.long())
    before = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision("medium")  # torch may now multiply float32 in bfloat16
        assert not ieee_float32_matmul()
        small = rows // 4  # within the bound: float32 would be taken, were it IEEE
        assert torch.equal(mat.product(small.double()).long(), small @ w)
    finally:
        torch.set_float32_matmul_precision(before)
    assert ieee_float32_matmul() == (before == "highest")


def test_per_input_bound_keeps_float32_where_few_inputs_are_large() -> None:
    """Where ``max |rows| * abs_sum`` reaches ``2**24`` but each row's ``sum |row_k| * max_j |w_kj|``
    (plus the bias) stays below it, the product still runs in float32, exactly; at that finer
    bound itself, float64. The integers are int64's either way."""
    g = torch.Generator().manual_seed(5)
    w = torch.randint(-200, 201, (300, 40), generator=g)
    w[7] = 0
    w[7, 3] = 250  # input 7's largest |w|: 250, far below any output's sum |w|
    mat = WeightMatrix.of(w.double())
    assert mat.input_abs_max[7] == 250 and mat.abs_sum > 250 * 100
    big = int((FLOAT32_EXACT - 1) // 250)  # big * 250 < 2**24 <= big * abs_sum
    rows = torch.zeros(20, 300, dtype=torch.int64)
    rows[:, 7] = torch.randint(-big, big + 1, (20,), generator=g)
    rows[0, 7] = big
    assert big * mat.abs_sum >= FLOAT32_EXACT
    given = rows.double()
    got = mat.product(given)
    assert got.dtype == torch.float32 and torch.equal(got.long(), rows @ w)
    assert torch.equal(given, rows.double())  # the bound reads the rows, never changes them
    assert mat.partial_sum_bound(given) == big * 250
    for over in (int(-(-FLOAT32_EXACT // 250)), 4 * big):  # at or past 2**24: float64
        rows[:, 7] = over
        got = mat.product(rows.double())
        assert got.dtype == torch.float64 and torch.equal(got.long(), rows @ w)
    with_bias = WeightMatrix.of(w.double(), torch.full((40,), float(FLOAT32_EXACT - big * 250)))
    rows[:, 7] = big  # the bias counts in the finer bound too: float64 once it reaches 2**24
    assert with_bias.product(rows.double()).dtype == torch.float64
    spread = torch.randint(-30_000, 30_001, (50, 300), generator=g)  # many large inputs: float64, exact
    assert torch.equal(mat.product(spread.double()).long(), spread @ w)


@pytest.mark.parametrize("name", FPMATH_ENV)
def test_onednn_fpmath_environment_forces_float64(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    """oneDNN's fpmath mode set to anything but STRICT (any case) may multiply float32 in bfloat16:
    the products then run in float64, and give the same integers."""
    for other in FPMATH_ENV:
        monkeypatch.delenv(other, raising=False)
    float32_probe.cache_clear()
    try:
        for value in ("BF16", "tf32", "any", ""):
            monkeypatch.setenv(name, value)
            assert not ieee_float32_matmul()
        monkeypatch.setenv(name, "strict")
        assert ieee_float32_matmul() == (torch.get_float32_matmul_precision() == "highest")
    finally:
        float32_probe.cache_clear()
    monkeypatch.setenv(name, "BF16")
    mat = WeightMatrix.of(torch.tensor([[3.0, -1.0], [2.0, 5.0]]))
    rows = torch.tensor([[300.0, -7.0], [1.0, 2.0]], dtype=torch.float64)
    assert torch.equal(mat.product(rows), rows @ mat.w64)


def test_float32_probe_runs_once_per_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """The probe (an integer float32 product compared with float64's) runs once; its answer,
    False included, holds until the cache is cleared."""
    for name in FPMATH_ENV:
        monkeypatch.delenv(name, raising=False)
    float32_probe.cache_clear()
    try:
        assert float32_probe() is True  # IEEE float32 on this machine
        assert float32_probe.cache_info().misses == 1
        calls: list[torch.dtype] = []

        def bfloat16_like_mm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:  # float32 off by one
            calls.append(a.dtype)
            return torch.full((1,), float(a.dtype == torch.float32), dtype=a.dtype)

        monkeypatch.setattr(torch, "mm", bfloat16_like_mm)
        assert float32_probe() is True and not calls  # cached: no product
        float32_probe.cache_clear()
        assert float32_probe() is False and calls  # a product that differs: float64 from then on
        monkeypatch.undo()
        assert float32_probe() is False and not ieee_float32_matmul()
    finally:
        float32_probe.cache_clear()


def test_old_torch_off_x86_is_not_trusted_with_float32() -> None:
    """torch before 2.5 on aarch64 multiplied float32 in bfloat16 in mkldnn (pytorch#130919)."""
    assert old_non_x86_torch("2.4.1", "aarch64") and old_non_x86_torch("1.13.0+cpu", "arm64")
    assert not old_non_x86_torch("2.5.0", "aarch64") and not old_non_x86_torch("2.10.0a0+git", "aarch64")
    assert not old_non_x86_torch("2.4.1", "x86_64") and not old_non_x86_torch("2.1.0", "AMD64")


@pytest.mark.parametrize("inverse", [False, True])
def test_gdn_coding_form_is_element_wise_while_gamma_is_diagonal(inverse: bool) -> None:
    """With a diagonal gamma (GDN's default start, which training keeps: the gradient of an
    off-diagonal g in g**2 is zero at zero) the coding form is element-wise, with the matrix
    product's floats (up to the last bit where a BLAS fuses the bias); any off-diagonal entry: the matrix product."""
    torch.manual_seed(4)
    gdn = GDN(12, inverse)
    with torch.no_grad():
        gdn.beta.uniform_(0.5, 1.5)
        gdn.gamma.mul_(torch.rand(12)[:, None, None, None] * 3)
    x = torch.randn(2, 12, 9, 7) * 3
    fast = Inference(torch.nn.Sequential(gdn))
    assert fast.ops[0][0] == "gdn_diag"
    w, b = (v.detach() for v in gdn.fused())
    slow = Inference(torch.nn.Sequential(gdn))
    slow.ops = [("gdn", w[:, :, 0, 0].t().contiguous(), b, inverse)]
    got, ref = fast(x), slow(x)
    assert got.is_contiguous(memory_format=torch.channels_last)
    assert float(((got - ref).abs() / ref.abs().clamp_min(1e-30)).max()) <= 2.0**-22
    with torch.no_grad():
        assert float((got - gdn(x)).abs().max()) <= 1e-5 * float(x.abs().max())
        gdn.gamma[0, 1] = 0.2
    general = Inference(torch.nn.Sequential(gdn))
    assert general.ops[0][0] == "gdn"
    with torch.no_grad():
        assert float((general(x) - gdn(x)).abs().max()) <= 1e-5 * float(x.abs().max())


def reference_strings(m: FaceHyperprior, x: torch.Tensor, rate: float) -> list[bytes]:
    """The strings by the plain route: the training modules' transforms, the integer networks
    over whole grids, every context tap; what :meth:`FaceHyperprior.compress` must reproduce."""
    import constriction

    m.freeze()
    t16 = quantise_rate(rate)
    with torch.no_grad():
        padded = torch.nn.functional.pad(x, (0, (-x.shape[-1]) % 64, 0, (-x.shape[-2]) % 64), mode="replicate")
        y = (m.g_a(padded - 0.5) * m.gains(torch.full((x.shape[0],), t16 / RATE_STEPS))).double()
        z_sym = torch.round(m.h_a(y.float()).double()).long()
    z_idx = m.z_index_int[None, :, None, None].expand_as(z_sym)
    z_sym = torch.from_numpy(gaussian.clip_symbols(z_sym.numpy(), z_idx.numpy()))
    h = z_sym.double() * 2**ACT_BITS
    for layer in m.h_s:
        h = layer.forward_int(h)
    one, mm = 2**ACT_BITS, m.arch.latent

    def params(c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        p = m.ep[1].forward_int(m.ep[0].forward_int(torch.cat([h, c], 1)))
        index = torch.floor((p[:, mm:] + one // (2 * INDEX_GAIN)) / (one // INDEX_GAIN)).clamp(0, gaussian.N_SCALES - 1)
        return torch.floor((p[:, :mm] + one // 32) / (one // 16)).long(), index.long()

    anchor = m.anchors(*y.shape[-2:])
    mean_a, idx_a = params(h.new_zeros((h.shape[0], m.arch.context, *h.shape[2:])))
    sym_a = torch.from_numpy(gaussian.clip_symbols(torch.round(y - mean_a.double() / 16).long().numpy(), idx_a.numpy()))
    ctx_in = torch.where(anchor, (sym_a * 16 + mean_a).double(), torch.zeros((), dtype=torch.float64))  # 1/16 steps
    mean_n, idx_n = params(m.ctx.forward_int(ctx_in, where=~anchor))
    sym_n = torch.from_numpy(gaussian.clip_symbols(torch.round(y - mean_n.double() / 16).long().numpy(), idx_n.numpy()))
    out = []
    for i in range(x.shape[0]):
        enc = constriction.stream.queue.RangeEncoder()
        gaussian.encode_symbols(enc, z_sym[i].numpy(), z_idx[i].numpy())
        gaussian.encode_symbols(enc, sym_a[i][:, anchor].numpy(), idx_a[i][:, anchor].numpy())
        gaussian.encode_symbols(enc, sym_n[i][:, ~anchor].numpy(), idx_n[i][:, ~anchor].numpy())
        body = struct.pack("<H", t16) + enc.get_compressed().astype("<u4").tobytes().rstrip(b"\x00")
        out.append(struct.pack("<I", zlib.crc32(struct.pack("<II", *x.shape[-2:]) + body)) + body)
    return out


@pytest.mark.parametrize("arch", [TINY, HyperpriorArch()], ids=["tiny", "default"])
def test_coding_path_gives_the_plain_route_bytes_and_pixels(arch: HyperpriorArch) -> None:
    m = tiny_model(2, arch)
    x = torch.cat([face_like(100, 120, seed=s) for s in range(2)])
    for rate in (0.0, 0.5, 1.0):
        enc = m.compress(x, rate)
        assert enc["strings"] == reference_strings(m, x, rate)
    # the frozen transforms compute the modules' function (other summation order: float rounding)
    y = torch.randn(1, arch.latent, 8, 8) * 4
    with torch.no_grad():
        for name, inp in (("g_a", x - 0.5), ("h_a", y), ("g_s", y)):
            ref = getattr(m, name)(inp)
            got = Inference(getattr(m, name))(inp)
            assert got.shape == ref.shape and float((got - ref).abs().max()) <= 1e-4 * max(1.0, float(ref.abs().max()))
    keys = set(m.state_dict())
    assert set(m.freeze().state_dict()) == keys


@pytest.mark.parametrize("arch", [TINY, dataclasses.replace(TINY, context=2 * TINY.hyper, params_hidden=3 * TINY.hyper)],
                         ids=["tiny", "context-wider-than-hyper"])
def test_roundtrip_agrees_with_training_twin(arch: HyperpriorArch) -> None:
    m = tiny_model(arch=arch)
    x = face_like()
    enc = m.compress(x, 0.6)
    dec = m.decompress(enc["strings"], enc["shape"])["x_hat"]
    assert dec.shape == x.shape
    with torch.no_grad():
        torch.manual_seed(0)
        twin = m(x, quantise_rate(0.6) / 65535)
    close = (twin["x_hat"].clamp(0, 1) - dec).abs().le(1e-4).float().mean()
    assert float(close) > 0.99
    bits = sum(float(-torch.log2(v).sum()) for v in twin["likelihoods"].values())
    assert 8 * len(enc["strings"][0]) == pytest.approx(bits, rel=0.1, abs=200)
    # more bits at a higher rate
    assert len(m.compress(x, 1.0)["strings"][0]) > len(m.compress(x, 0.0)["strings"][0])


def test_unquantised_is_the_transforms_alone_and_the_ceiling_benchmark_prints_it(tmp_path: Path) -> None:
    m = tiny_model()
    x = face_like()
    t = torch.full((1,), 0.7)
    with torch.no_grad():
        y = m.g_a(torch.nn.functional.pad(x, (0, (-x.shape[-1]) % 64, 0, (-x.shape[-2]) % 64), mode="replicate") - 0.5)
        want = (m.g_s(y * m.gains(t) * m.gains(t, inverse=True)) + 0.5)[..., : x.shape[-2], : x.shape[-1]]
    assert torch.allclose(m.unquantised(x, 0.7), want, atol=1e-6)
    out = tmp_path / "ceiling.json"
    env = {k: v for k, v in os.environ.items() if k != "FACEKIT_LFW"} | {"OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, str(REPO / "benchmarks" / "transform_ceiling.py"), "--n", "2", "--rates", "0", "1",
                        "--json", str(out)], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    rows = json.loads(out.read_text())
    assert [row["t"] for row in rows] == [0, 1] and all(row["bpp"] > 0 for row in rows)
    assert "ceiling dB" in r.stdout and all(math.isfinite(row["ceiling_psnr"]) for row in rows)


def test_freeze_is_forgotten_in_training_mode_and_on_load() -> None:
    m = tiny_model().freeze()
    assert m.frozen and m.ctx.frozen
    m.train()
    assert not m.frozen and not m.ctx.frozen
    assert all("_int" not in k for k in m.state_dict())
    x = face_like(64, 64)
    other = tiny_model(seed=1)
    other.compress(x, 0.5)  # frozen with its own weights
    enc = other.compress(x, 0.5)
    other.decompress(enc["strings"], enc["shape"])  # keeps the synthesis scale at this rate
    assert other._scales
    other.load_state_dict(tiny_model().state_dict())
    assert not other.frozen and not other._scales
    assert other.compress(x, 0.5)["strings"] == tiny_model().compress(x, 0.5)["strings"]
    # decoding after the load uses the new weights' gains: the same pixels as a fresh model
    enc = other.compress(x, 0.5)
    assert torch.equal(other.decompress(enc["strings"], enc["shape"])["x_hat"],
                       tiny_model().decompress(enc["strings"], enc["shape"])["x_hat"])


DECODE_SCRIPT = r"""
import json, sys, torch
torch.set_num_threads(int(sys.argv[2]))
from facekit.models.hyperprior import FaceHyperprior, HyperpriorArch
d = json.load(open(sys.argv[1] + "/meta.json"))
m = FaceHyperprior(HyperpriorArch.from_dict(d["arch"]))
m.load_state_dict(torch.load(sys.argv[1] + "/model.pt", weights_only=True))
m.eval()
x_hat = m.decompress([open(sys.argv[1] + "/stream.bin", "rb").read()], d["shape"], d["synthesis"])["x_hat"]
open(sys.argv[1] + "/pixels.bin", "wb").write((x_hat * 255).round().to(torch.uint8).numpy().tobytes())
x = torch.load(sys.argv[1] + "/x.pt", weights_only=True)
open(sys.argv[1] + "/again.bin", "wb").write(m.compress(x, d["rate"])["strings"][0])
"""


@pytest.mark.parametrize("arch,synthesis", [(TINY, "float32"), (HyperpriorArch(), "float32"), (HyperpriorArch(), "bfloat16")],
                         ids=["tiny", "default", "default-bfloat16"])
def test_bit_exact_across_thread_counts_and_processes(tmp_path: Path, arch: HyperpriorArch, synthesis: str) -> None:
    m = tiny_model(3, arch)
    x = face_like(250, 250, seed=3)
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        enc = m.compress(x, 0.7)
        x_hat = m.decompress(enc["strings"], enc["shape"], synthesis)["x_hat"]
    finally:
        torch.set_num_threads(old)
    torch.save(m.state_dict(), tmp_path / "model.pt")
    torch.save(x, tmp_path / "x.pt")
    (tmp_path / "stream.bin").write_bytes(enc["strings"][0])
    (tmp_path / "meta.json").write_text(json.dumps({"arch": arch.to_dict(), "shape": enc["shape"], "rate": 0.7, "synthesis": synthesis}))
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "2"}
    subprocess.run([sys.executable, "-c", DECODE_SCRIPT, str(tmp_path), "2"], check=True, env=env, timeout=300)
    pixels = (x_hat * 255).round().to(torch.uint8).numpy().tobytes()
    assert (tmp_path / "pixels.bin").read_bytes() == pixels
    assert (tmp_path / "again.bin").read_bytes() == enc["strings"][0]


def test_damaged_streams_give_one_clear_error() -> None:
    m = tiny_model()
    enc = m.compress(face_like(64, 64), 0.5)
    s = enc["strings"][0]
    bad = [s[: len(s) // 2], s[:5], b"", s + b"\x01"]
    for pos in (0, 4, 6, len(s) - 1):
        flipped = bytearray(s)
        flipped[pos] ^= 0x10
        bad.append(bytes(flipped))
    for b in bad:
        with pytest.raises(BitstreamError):
            m.decompress([b], enc["shape"])
    with pytest.raises(BitstreamError):
        m.decompress([s], (0, 64))
    with pytest.raises(BitstreamError, match="size"):
        m.decompress([s], (64, 128))


def test_training_start_fields_change_the_start_not_the_fingerprint() -> None:
    """``gdn_offdiag_init`` lets GDN's gamma leave the diagonal (a gradient reaches it) and
    ``z_init_gain`` scales the hyper-latents' start; a trained model's fingerprint leaves both out."""
    from facekit.codecs.hyperprior import model_fingerprint

    torch.manual_seed(0)
    plain = FaceHyperprior(TINY)
    torch.manual_seed(0)
    started = FaceHyperprior(dataclasses.replace(TINY, gdn_offdiag_init=0.01, z_init_gain=8.0))
    eye = torch.eye(TINY.enc_widths[0], dtype=torch.bool)
    g, g0 = started.g_a[1].gamma[:, :, 0, 0], plain.g_a[1].gamma[:, :, 0, 0]
    assert torch.equal(g[eye], g0[eye]) and bool((g[~eye] == 0.01).all()) and bool((g0[~eye] == 0).all())
    assert torch.equal(started.h_a[-1].weight, plain.h_a[-1].weight * 8)
    assert all(not layer.bias.any() for layer in started.h_a[::2])
    for model in (plain, started):
        model(face_like(), 0.5)["x_hat"].square().mean().backward()
    assert bool(started.g_a[1].gamma.grad[:, :, 0, 0][~eye].ne(0).any())
    assert not plain.g_a[1].gamma.grad[:, :, 0, 0][~eye].any()
    started.load_state_dict(plain.state_dict())
    assert model_fingerprint(started) == model_fingerprint(plain)


def test_default_decoder_fits_the_complexity_budget() -> None:
    m = FaceHyperprior().eval()
    x = face_like()
    enc = m.compress(x, 0.5)
    with FlopCounterMode(display=False) as counter:
        m.decompress(enc["strings"], enc["shape"])
    macs_per_pixel = counter.get_total_flops() / 2 / (250 * 250)
    assert 1000 < macs_per_pixel <= 6000


def test_rd_training_reduces_the_loss(tmp_path: Path) -> None:
    from facekit.training.rd import RateDistortionObjective, RDConfig, train_rd

    rng = np.random.default_rng(0)
    images = [(face_like(96, 96, seed=i)[0].permute(1, 2, 0).numpy() * 255).astype(np.uint8) for i in range(12)]
    images = [np.clip(im.astype(int) + rng.integers(-10, 10, im.shape), 0, 255).astype(np.uint8) for im in images]
    cfg = RDConfig(steps=60, batch_size=4, crop=64, lr=2e-3, warmup=5, arch=TINY.to_dict(), val_images=2,
                   log_every=10, checkpoint_every=1000)
    objective = RateDistortionObjective(cfg)
    batch = torch.stack([torch.from_numpy(im[:64, :64]).permute(2, 0, 1).float() / 255 for im in images[:4]])

    def loss_of(model: FaceHyperprior) -> float:
        torch.manual_seed(5)
        with torch.no_grad():
            return float(np.mean([float(objective(batch, model.train()(batch, t))["loss"]) for t in (0.0, 0.5, 1.0)]))

    torch.manual_seed(cfg.seed)
    before = loss_of(FaceHyperprior(TINY))
    summary = train_rd(cfg, tmp_path, images=images, threads=1, verbose=False)
    blob = torch.load(tmp_path / "model.pt", weights_only=True)
    trained = FaceHyperprior(HyperpriorArch.from_dict(blob["rate_point"]))
    trained.load_state_dict(blob["state_dict"])
    after = loss_of(trained)
    assert summary["finished"] and after < 0.7 * before
    assert math.isfinite(summary["val_psnr_t0.5"]) and summary["val_bpp_t1"] > summary["val_bpp_t0"] > 0


def test_codec_interface_round_trip_and_other_model() -> None:
    from facekit.codecs.hyperprior import HyperpriorCodec

    codec = HyperpriorCodec(tiny_model())
    image = (face_like(70, 90)[0].permute(1, 2, 0).numpy() * 255).astype(np.uint8)
    data = codec.encode(image, "q4")
    out = codec.decode(data)
    assert out.shape == image.shape and out.dtype == np.uint8
    assert np.array_equal(codec.decode(data), out)
    with pytest.raises(BitstreamError, match="another model"):
        HyperpriorCodec(tiny_model(seed=1)).decode(data)
    for bad in (b"", b"XXXX" + data[4:], data[:20], data[:4] + struct.pack("<HH", 70, 91) + data[8:]):
        with pytest.raises(BitstreamError):
            codec.decode(bad)
    with pytest.raises(CodecError):
        codec.encode(image, 2.0)


def test_rd_training_resumed_equals_uninterrupted(tmp_path: Path) -> None:
    from facekit.training.rd import RDConfig, train_rd

    images = [(face_like(64, 64, seed=i)[0].permute(1, 2, 0).numpy() * 255).astype(np.uint8) for i in range(6)]
    cfg = RDConfig(steps=6, batch_size=2, crop=64, warmup=2, arch=TINY.to_dict(), val_images=1, log_every=1,
                   checkpoint_every=3)
    train_rd(cfg, tmp_path / "a", images=images, threads=1, verbose=False)
    train_rd(cfg, tmp_path / "b", images=images, threads=1, verbose=False, stop_after=3)
    train_rd(cfg, tmp_path / "b", images=images, threads=1, verbose=False, resume=True)
    a = torch.load(tmp_path / "a" / "model.pt", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "b" / "model.pt", weights_only=True)["state_dict"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_bound_passes_gradients_that_lead_back_into_range() -> None:
    x = torch.tensor([-2.0, 0.5, 3.0, -2.0, 3.0], requires_grad=True)
    y = bound(x, 0.0, 1.0)
    assert y.tolist() == [0.0, 0.5, 1.0, 0.0, 1.0]
    (y * torch.tensor([-1.0, 1.0, 1.0, 1.0, -1.0])).sum().backward()
    assert x.grad.tolist() == [-1.0, 1.0, 1.0, 0.0, 0.0]
