"""The second generation wired into the kit: catalogue, compress/decompress, --rate numbers, --target-bpp,
the explorer's continuous slider, and one clear error for each kind of bad input.

No trained weights are needed: a tiny seeded FaceHyperprior is installed into a temporary
weights folder (``tests/corpus/fkh1.py``) that the commands read through ``--weights``.
"""

from __future__ import annotations

import contextlib
import io
import math
import struct
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("constriction")

from facekit import container, zoo  # noqa: E402
from facekit.cli import main  # noqa: E402
from facekit.codecs import bits_per_pixel, get_codec  # noqa: E402
from facekit.codecs.hyperprior import HyperpriorCodec, rate_value  # noqa: E402
from facekit.codecs.names import HYPERPRIOR, HYPERPRIOR_WEIGHTS  # noqa: E402
from facekit.codecs.rate import continuous_range, setting_for_budget  # noqa: E402
from facekit.errors import BitstreamError, CodecError, FacekitError, WeightsError  # noqa: E402

CORPUS = Path(__file__).resolve().parent / "corpus"
sys.path.insert(0, str(CORPUS))

from fkh1 import install_tiny, reseal_fkh1, tiny_hyperprior  # noqa: E402
from make_corpus import face_image  # noqa: E402
from targets import WEIGHTS as MSE_WEIGHTS  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    """A weights folder holding a tiny seeded model as ``hyperprior``."""
    return install_tiny(tmp_path_factory.mktemp("hp-weights"))


@pytest.fixture(scope="module")
def codec(store) -> HyperpriorCodec:
    return get_codec(HYPERPRIOR, folder=store)


@pytest.fixture(scope="module")
def face_png(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("faces") / "face.png"
    Image.fromarray(face_image()).save(path)
    return path


def cli(*args: str) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(list(args))
    return code, err.getvalue()


def one_error(code: int, err: str, *words: str) -> None:
    """Exit 2 with one line, ``facekit: error: ...``, holding every word."""
    assert code == 2, err
    assert err.startswith("facekit: error:") and err.strip().count("\n") == 0, err
    for w in words:
        assert w in err, (w, err)


# --------------------------------------------------------------------------- catalogue


def test_listed_after_the_recommended_codecs_in_a_role_of_its_own():
    from facekit.codecs.registry import CATALOGUE, RECOMMENDED, codec_names, entry

    names = codec_names()
    assert names[:5] == ["facekit", "facekit-roi", "paper", "paper-mse", HYPERPRIOR] and RECOMMENDED == "facekit"
    e = entry(HYPERPRIOR)
    assert e is not None and e.role == "second generation" and e in CATALOGUE and "q1..q5" in e.about


def test_without_weights_one_error_names_the_command(tmp_path, face_png, capsys):
    with pytest.raises(WeightsError, match=r"no weights for 'hyperprior'.*not installed.*make weights.*recipes/hyperprior\.toml"):
        get_codec(HYPERPRIOR, folder=tmp_path)
    code, err = cli("compress", str(face_png), "-o", str(tmp_path / "o.fkc"), "--codec", HYPERPRIOR,
                    "--weights", str(tmp_path), "--quiet")
    one_error(code, err, "not installed", "make weights")
    assert main(["codecs"]) == 0  # the shipped store: installed or not, one line says which
    lines = capsys.readouterr().out.splitlines()
    at = next(i for i, ln in enumerate(lines) if ln.startswith(HYPERPRIOR + " "))
    assert "second generation" in lines[at]
    assert "weights installed" in lines[at + 1] or ("UNAVAILABLE" in lines[at + 1] and "make weights" in lines[at + 1])


def test_codecs_line_says_the_weights_are_installed(codec):
    from facekit.commands.codecs import availability_line

    line = availability_line({"available": True, **codec.describe()})
    assert "any number in [0, 1] or q1 (0), q2 (0.25)" in line and "weights installed: hyperprior.pt" in line


def test_settings_are_a_number_in_0_1_or_a_preset(codec):
    assert continuous_range(codec) == (0.0, 1.0) and rate_value("q2") == 0.25 and rate_value(np.float32(0.5)) == 0.5
    for bad in (1.5, -0.1, math.nan, math.inf, True, None, "q9", "1.5", "nan", "half", [0.5]):
        with pytest.raises(CodecError, match=r"^facekit-hyperprior: .*\[0, 1\]"):
            codec.encode(face_image(), bad)
        with pytest.raises(CodecError, match=r"^facekit-hyperprior: .*\[0, 1\]"):
            codec.normalise_setting(bad)  # one home: the results point's setting is checked as encode checks it
    a, b = codec.encode(face_image(), "q3"), codec.encode(face_image(), 0.5)
    assert a == b == codec.encode(face_image(), "0.5") and a[:4] == b"FKH1"  # a number as text, as the CLI's --rate
    assert codec.normalise_setting("q3") == codec.normalise_setting("0.5") == 0.5


# --------------------------------------------------------------------------- files


def test_container_dispatch_tells_fkh1_apart(codec):
    data = codec.encode(face_image(), 0.3)
    fkc = (CORPUS / "face.q1.fkc").read_bytes()
    assert container.file_kind(data) == "hyperprior" and container.file_kind(fkc) == "container"
    assert container.file_kind(b"\x89PNG") is None
    f = container.parse_any(data)
    assert (f.height, f.width, f.model_hash) == (80, 64, codec.tag)
    assert container.parse_any(fkc).model == "mse-q1"
    with pytest.raises(BitstreamError, match="facekit-hyperprior file"):
        container.parse(data)


def test_compress_and_decompress_round_trip(store, codec, face_png, tmp_path):
    outs = {}
    for rate in ("0.3", "q2", "1"):
        dest = tmp_path / f"{rate}.fkc"
        code, err = cli("compress", str(face_png), "-o", str(dest), "--codec", HYPERPRIOR, "--rate", rate,
                        "--weights", str(store))
        assert code == 0 and f"with {HYPERPRIOR} {rate}" in err, err
        outs[rate] = dest.read_bytes()
    assert outs["0.3"] == codec.encode(face_image(), 0.3) and outs["q2"] == codec.encode(face_image(), 0.25)
    assert len(outs["1"]) > len(outs["0.3"])
    code, err = cli("decompress", str(tmp_path / "0.3.fkc"), "-o", str(tmp_path / "d.png"), "--weights", str(store),
                    "--quiet")
    assert code == 0, err
    assert np.array_equal(np.asarray(Image.open(tmp_path / "d.png")), codec.decode(outs["0.3"]))


def test_bfloat16_synthesis_decodes_the_same_files_in_the_codec_and_the_cli(store, codec, tmp_path):
    """The synthesis arithmetic (tests/test_hyperprior_synthesis.py) through the codec and ``--synthesis``."""
    plain, fast = codec, get_codec(HYPERPRIOR, folder=store, synthesis="bfloat16")
    assert (plain.describe()["synthesis"], fast.describe()["synthesis"]) == ("float32", "bfloat16")
    data = plain.encode(face_image(), 0.5)
    assert fast.encode(face_image(), 0.5) == data  # the encoder does not depend on it
    assert np.abs(fast.decode(data).astype(int) - plain.decode(data).astype(int)).max() <= 8
    with pytest.raises(CodecError, match="unknown synthesis arithmetic"):
        HyperpriorCodec(tiny_hyperprior(), synthesis="half")
    (tmp_path / "f.fkc").write_bytes(data)
    for arithmetic, codec in (("bfloat16", fast), ("float32", plain)):
        code, err = cli("decompress", str(tmp_path / "f.fkc"), "-o", str(tmp_path / f"{arithmetic}.png"),
                        "--weights", str(store), "--synthesis", arithmetic, "--quiet")
        assert code == 0, err
        assert np.array_equal(np.asarray(Image.open(tmp_path / f"{arithmetic}.png")), codec.decode(data))
    one_error(*cli("decompress", str(tmp_path / "f.fkc"), "-o", str(tmp_path / "x.png"), "--weights", str(store),
                   "--synthesis", "int8"), "unknown synthesis arithmetic", "int8")
    assert not (tmp_path / "x.png").exists()


@pytest.mark.parametrize("rate", ["1.5", "-0.1", "nan", "inf", "fast", "q6", ""])
def test_rate_out_of_range_or_unparsable_is_one_error(store, face_png, tmp_path, rate):
    dest = tmp_path / "o.fkc"
    code, err = cli("compress", str(face_png), "-o", str(dest), "--codec", HYPERPRIOR, "--rate", rate,
                    "--weights", str(store), "--quiet")
    one_error(code, err, f"--rate {rate}", "[0, 1]", "q1, q2")
    assert not dest.exists()


def test_a_number_is_refused_for_a_codec_of_rate_points(face_png, tmp_path):
    code, err = cli("compress", str(face_png), "-o", str(tmp_path / "o.fkc"), "--codec", "paper-mse",
                    "--weights", str(MSE_WEIGHTS), "--rate", "0.5", "--quiet")
    one_error(code, err, "--rate 0.5", "no such rate point", "q1")


def test_decompress_refuses_another_models_truncated_and_flipped_files(store, codec, tmp_path):
    data = codec.encode(face_image(), "q4")
    other = install_tiny(tmp_path / "other", seed=1)
    cases = {"other.fkc": (HyperpriorCodec.from_store(folder=other).encode(face_image(), "q4"), "another model"),
             "cut.fkc": (data[:30], "CRC32"), "header.fkc": (data[:10], "truncated"),
             "flip.fkc": (data[:40] + bytes([data[40] ^ 8]) + data[41:], "CRC32"),
             "size.fkc": (data[:4] + b"\x50\x00\x41\x00" + data[8:], "CRC32")}
    for name, (bad, word) in cases.items():
        (tmp_path / name).write_bytes(bad)
        code, err = cli("decompress", str(tmp_path / name), "-o", str(tmp_path / f"{name}.png"),
                        "--weights", str(store), "--quiet")
        one_error(code, err, name, word)
        assert not (tmp_path / f"{name}.png").exists()
    (tmp_path / "good.fkc").write_bytes(data)
    code, err = cli("decompress", str(tmp_path / "good.fkc"), "-o", str(tmp_path / "g.png"), "--weights",
                    str(tmp_path / "none"), "--quiet")
    one_error(code, err, "good.fkc", "not installed", "make weights")


def test_files_of_replaced_weights_still_decode(tmp_path):
    folder = install_tiny(tmp_path / "w", seed=1)
    first = HyperpriorCodec.from_store(folder=folder)
    old = first.encode(face_image(), 0.6)
    install_tiny(folder, seed=2)  # new weights under the same name: the old ones are kept, retired
    install_tiny(folder, seed=2)  # the same weights again: nothing more is kept
    manifest = zoo.read_manifest(folder)["models"]
    keep = zoo.retired_name(HYPERPRIOR_WEIGHTS, first.entry["fingerprint"])
    assert sorted(manifest) == sorted([HYPERPRIOR_WEIGHTS, keep]) and manifest[keep]["retired"]
    assert manifest[keep]["sha256"] == first.entry["sha256"] and not zoo.verify(folder)
    codec = HyperpriorCodec.from_store(folder=folder)
    assert codec.tag != first.tag
    assert np.array_equal(codec.decode(old), first.decode(old))  # by the retired weights, bit for bit
    unknown = HyperpriorCodec.from_store(folder=install_tiny(tmp_path / "x", seed=3)).encode(face_image(), 0.6)
    with pytest.raises(BitstreamError, match="another model"):
        codec.decode(unknown)
    with pytest.raises(BitstreamError, match="another model"):  # a model from no store knows no earlier weights
        HyperpriorCodec(tiny_hyperprior(2)).decode(old)


def test_every_truncation_and_bit_flip_is_refused(codec):
    """The magic, the header, the fingerprint and the model string's CRC32 catch every cut and every single flip."""
    for data in (codec.encode(face_image(), "q1"), codec.encode(face_image(), 0.6)):
        for n in range(len(data)):
            with pytest.raises(BitstreamError, match="truncated|magic|CRC32|too short"):
                codec.decode(data[:n])
        for i in range(len(data)):
            for bit in range(8):
                bad = bytearray(data)
                bad[i] ^= 1 << bit
                with pytest.raises(BitstreamError, match="magic|absurd|limit|another model|CRC32"):
                    codec.decode(bytes(bad))


def test_flips_behind_a_repaired_crc_decode_or_are_refused(codec):
    """Flips that reach the rate, the range decoder and the networks: an image of the declared size, or a BitstreamError."""
    data = codec.encode(face_image(), "q5")
    assert reseal_fkh1(data) == data
    for i in range(16, len(data)):
        for bit in (0, 3, 7):
            bad = bytearray(data)
            bad[i] ^= 1 << bit
            try:
                assert codec.decode(reseal_fkh1(bytes(bad))).shape == face_image().shape
            except FacekitError as e:
                assert isinstance(e, BitstreamError), e


def test_declared_size_over_the_limit_is_refused_before_decoding(store, codec):
    data = codec.encode(face_image(), "q1")
    small = get_codec(HYPERPRIOR, folder=store, max_pixels=64 * 64)
    side = container.HYPERPRIOR_MAX_SIDE
    for c, (h, w), word in ((codec, (side + 1, 64), "absurd image size"), (codec, (8192, 8192), "absurd image size"),
                            (small, (80, 64), "exceeds this decoder's limit")):
        with pytest.raises(BitstreamError, match=word):
            c.decode(reseal_fkh1(data[:4] + struct.pack("<HH", h, w) + data[8:]))
    with pytest.raises(CodecError, match="exceeds"):
        small.encode(face_image(), "q1")


def test_one_side_limit_for_the_format_the_model_and_the_codec():
    """FKH1's side limit is the model's: pack_hyperprior, parse_hyperprior, decompress and the codec share it."""
    from facekit.codecs.hyperprior import MAX_PIXELS

    side = container.HYPERPRIOR_MAX_SIDE
    assert side == 4096 and MAX_PIXELS == side * side
    head = container.pack_hyperprior(b"\0" * 4, side, 1, b"")
    assert container.parse_hyperprior(head).height == side
    with pytest.raises(ValueError, match="4096x4096"):
        container.pack_hyperprior(b"\0" * 4, side + 1, 1, b"")
    with pytest.raises(BitstreamError, match="out of range"):  # the model refuses the same sizes
        tiny_hyperprior().decompress([b"\0" * 8], (side + 1, 1))


# --------------------------------------------------------------------------- --target-bpp


def test_target_bpp_bisects_t_and_meets_the_budget(store, codec, face_png, tmp_path):
    image = face_image()
    lo, hi = (bits_per_pixel(codec.encode(image, t), 80, 64) for t in (0.0, 1.0))
    assert hi > lo
    target = 0.5 * (lo + hi)
    t, bpp = setting_for_budget(codec, image, target)
    assert 0 < t < 1 and lo <= bpp <= target
    dest = tmp_path / "t.fkc"
    code, err = cli("compress", str(face_png), "-o", str(dest), "--codec", HYPERPRIOR, "--target-bpp", f"{target:.4f}",
                    "--weights", str(store))
    assert code == 0 and "--target-bpp" in err, err
    assert bits_per_pixel(dest.read_bytes(), 80, 64) <= target
    assert setting_for_budget(codec, image, 10 * hi) == (1.0, hi)  # above the highest rate: the highest rate
    code, err = cli("compress", str(face_png), "-o", str(dest), "--codec", HYPERPRIOR, "--target-bpp",
                    f"{0.5 * lo:.4f}", "--weights", str(store), "--quiet")
    one_error(code, err, "--target-bpp", "cannot be reached", f"nearest bpp reachable is {lo:.4f}")


def test_target_bpp_picks_among_the_rate_points_of_a_learned_codec(face_png, tmp_path):
    paper = get_codec("paper-mse", folder=MSE_WEIGHTS)
    bpps = {s: bits_per_pixel(paper.encode(face_image(), s), 80, 64) for s in paper.settings}
    ranked = sorted(bpps.values())
    target = 0.5 * (ranked[0] + ranked[1])  # only the smallest file fits
    want = min(bpps, key=bpps.__getitem__)
    dest = tmp_path / "p.fkc"
    code, err = cli("compress", str(face_png), "-o", str(dest), "--codec", "paper-mse", "--weights", str(MSE_WEIGHTS),
                    "--target-bpp", str(target))
    assert code == 0 and f"(settings {want})" in err, err
    assert container.parse(dest.read_bytes()).model == f"mse-{want}"


def test_target_bpp_reuses_the_classical_rate_search():
    jpeg = get_codec("jpeg")
    q, bpp = setting_for_budget(jpeg, face_image(), 2.0)
    assert isinstance(q, int) and bpp <= 2.0 < bits_per_pixel(jpeg.encode(face_image(), min(q + 1, 95)), 80, 64)
    with pytest.raises(CodecError, match="nearest bpp reachable"):
        setting_for_budget(jpeg, face_image(), 0.01)


@pytest.mark.parametrize("extra,words", [
    (["--rate", "q2", "--target-bpp", "0.5"], ["--rate and --target-bpp together"]),
    (["--target-bpp", "-1"], ["--target-bpp -1", "positive number"]),
    (["--target-bpp", "lots"], ["--target-bpp lots", "positive number"]),
])
def test_target_bpp_flag_errors(store, face_png, tmp_path, extra, words):
    code, err = cli("compress", str(face_png), "-o", str(tmp_path / "o.fkc"), "--codec", HYPERPRIOR,
                    "--weights", str(store), "--quiet", *extra)
    one_error(code, err, *words)


# --------------------------------------------------------------------------- explorer


def test_explorer_slider_is_continuous_for_the_second_generation(codec):
    pytest.importorskip("ipywidgets")
    from facekit.widgets import Explorer

    ex = Explorer({"face": face_image()}, codecs={HYPERPRIOR: codec, "jpeg": None}, recognizer=None, codec=HYPERPRIOR)
    ex.ui  # noqa: B018 - builds and refreshes
    slider = ex.rate_slider
    assert type(slider).__name__ == "FloatSlider" and (slider.min, slider.max) == (0.0, 1.0)
    assert "fk-rate" in slider._dom_classes and "fk-rate" not in ex.step_slider._dom_classes
    assert ex.step_slider.layout.display == "none" and ex.current.setting == 0.5
    slider.value = 0.37
    assert ex.current.setting == 0.37 and ex.current.codec == HYPERPRIOR
    assert ex.current.nbytes == len(codec.encode(face_image(), 0.37))
    ex.codec_dropdown.value = "jpeg"
    assert type(ex.rate_slider).__name__ == "SelectionSlider" and "fk-rate" in ex.rate_slider._dom_classes
    assert ex.float_slider.layout.display == "none" and ex.current.codec == "jpeg"
