"""Classical codecs: round trips, rates counted from real bytes, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from facekit.codecs import bits_per_pixel, get_codec, match_bpp, search_setting
from facekit.codecs.classic import avif_available
from facekit.errors import BitstreamError, CodecError, ImageError

THREE = {
    "jpeg": (5, 20, 75),
    "jpeg2000": (0.05, 0.2, 0.8),
    "webp": (0, 30, 80),
    "avif": (0, 30, 80),
}


@pytest.mark.parametrize("name", list(THREE))
def test_round_trip_three_settings(name, smooth_image):
    if name == "avif" and not avif_available():
        pytest.skip("this Pillow has no AVIF support")
    codec = get_codec(name)
    bpps = []
    for s in THREE[name]:
        data = codec.encode(smooth_image, s)
        out = codec.decode(data)
        assert out.shape == smooth_image.shape and out.dtype == np.uint8
        bpps.append(bits_per_pixel(data, 96, 128))
        assert bpps[-1] == 8 * len(data) / (96 * 128)
    assert bpps[0] < bpps[1] < bpps[2], f"{name}: bpp must grow with quality, got {bpps}"
    err = [np.abs(codec.decode(codec.encode(smooth_image, s)).astype(int) - smooth_image).mean() for s in THREE[name]]
    assert err[0] > err[2]


def test_jpeg2000_glymur_and_pillow_agree(face_image):
    g, p = get_codec("jpeg2000"), get_codec("jpeg2000-pillow")
    for bpp in (0.05, 0.1, 0.4):
        a, b = g.encode(face_image, bpp), p.encode(face_image, bpp)
        assert len(a) == len(b)
        assert abs(bits_per_pixel(a, 250, 250) - bpp) < 0.03 * bpp
        np.testing.assert_array_equal(g.decode(a), p.decode(b))


def test_jpeg2000_colour_transform_matters(face_image):
    """Pillow without mct=1 is several dB worse at the same size: we must not be that."""
    import io

    from PIL import Image

    def psnr(x):
        return 10 * np.log10(255**2 / np.mean((x.astype(float) - face_image) ** 2))

    buf = io.BytesIO()
    Image.fromarray(face_image).save(buf, "JPEG2000", quality_mode="rates", quality_layers=[240],
                                     irreversible=True, no_jp2=True)
    no_mct = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))
    ours = get_codec("jpeg2000")
    assert psnr(ours.decode(ours.encode(face_image, 0.1))) > psnr(no_mct) + 1.0


def test_uncompressed_png_is_lossless(smooth_image):
    c = get_codec("png")
    np.testing.assert_array_equal(c.decode(c.encode(smooth_image, 0)), smooth_image)


def test_unknown_codec_names_the_known_ones():
    with pytest.raises(CodecError, match="unknown codec 'heic'.*jpeg2000"):
        get_codec("heic")


@pytest.mark.parametrize("name", ["jpeg", "jpeg2000", "webp"])
def test_bad_images_are_clear_errors(name):
    codec = get_codec(name)
    with pytest.raises(ImageError, match="grayscale"):
        codec.encode(np.zeros((32, 32), np.uint8), codec.settings[2])
    with pytest.raises(ImageError, match="uint8"):
        codec.encode(np.zeros((32, 32, 3), np.float32), codec.settings[2])
    with pytest.raises(ImageError, match=r"\(H, W, 3\)"):
        codec.encode(np.zeros((32, 32, 4), np.uint8), codec.settings[2])
    with pytest.raises(ImageError, match="smaller"):
        codec.encode(np.zeros((4, 4, 3), np.uint8), codec.settings[2])


def test_odd_sized_images_round_trip(smooth_image):
    odd = np.ascontiguousarray(smooth_image[:77, :91])
    for name in ("jpeg", "jpeg2000", "webp"):
        c = get_codec(name)
        assert c.decode(c.encode(odd, c.settings[4])).shape == (77, 91, 3)


@pytest.mark.parametrize("name", ["jpeg", "jpeg2000", "webp", "png"])
def test_damaged_bytes_raise_bitstream_error(name, smooth_image):
    c = get_codec(name)
    data = c.encode(smooth_image, c.settings[min(3, len(c.settings) - 1)])
    for bad in (b"", data[: len(data) // 3], b"not an image at all" * 4):
        with pytest.raises(BitstreamError):
            c.decode(bad)


def test_bad_settings():
    with pytest.raises(CodecError, match="outside"):
        get_codec("jpeg").encode(np.zeros((16, 16, 3), np.uint8), 500)
    with pytest.raises(CodecError, match="target bpp"):
        get_codec("jpeg2000").encode(np.zeros((16, 16, 3), np.uint8), "high")


def test_search_reaches_target_per_image_and_over_a_set(face_image, smooth_image):
    for name, target in (("jpeg", 0.4), ("jpeg2000", 0.1), ("webp", 0.3)):
        c = get_codec(name)
        s, bpp = search_setting(c, face_image, target)
        assert bpp <= target
        assert bpp > 0.75 * target, f"{name} reached only {bpp} for {target}"
    s, mean_bpp = match_bpp(get_codec("jpeg2000"), [face_image, face_image[::-1].copy()], 0.2)
    assert 0.18 < mean_bpp <= 0.2


def test_the_command_line_offers_every_codec_without_loading_torch():
    import subprocess
    import sys

    code = (
        "import sys; from facekit.cli import build_parser; "
        "p = build_parser(); a = p.parse_args(['compress', 'x.png', '-o', 'y', '--codec', 'facekit-roi']); "
        "b = p.parse_args(['compress', 'x.png', '-o', 'y', '--variant', 'jointface']); "
        "print(a.codec, b.variant, 'torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["facekit-roi", "jointface", "False"]
    from facekit.codecs.names import VARIANTS
    from facekit.codecs.registry import VARIANTS as listed
    from facekit.container import ID_VARIANTS

    assert listed is VARIANTS is ID_VARIANTS  # one tuple: the container's ids depend on its order


def test_catalogue_has_roles_and_the_recommended_codec_first():
    from facekit.codecs.registry import CATALOGUE, HIDDEN, RECOMMENDED, codec_names

    names = codec_names()
    assert names[0] == RECOMMENDED == "facekit" and len(names) <= 13
    assert names[:4] == ["facekit", "facekit-roi", "paper", "paper-mse"]
    assert {"jpeg", "jpeg2000", "webp", "avif", "hevc", "jpegxl", "jpeg2000-roi", "avif-roi"} <= set(names)
    assert {"webp-roi", "png", "avif-speed6", "webp-resized"} <= set(codec_names(hidden=True)) - set(names)
    assert all(e.role and e.about for e in CATALOGUE)
    assert not set(HIDDEN) & set(names) and set(codec_names(hidden=True)) == set(names) | set(HIDDEN)


def test_old_names_are_hidden_aliases_of_the_new_ones():
    from facekit.codecs.names import SHORT_NAMES, LearnedSpec, canonical_name
    from facekit.codecs.registry import CODECS

    aliases = {"facekit-jointface-entropy": "facekit", "facekit-jointrate-entropy-roi-bg": "facekit-roi",
               "facekit-joint": "paper", "facekit-mse": "paper-mse"}
    for old, new in aliases.items():
        assert canonical_name(old) == new and LearnedSpec.parse(old) == SHORT_NAMES[new]
        assert SHORT_NAMES[new].long_name == old and old in CODECS
    assert canonical_name("facekit-jointrate-entropy") == "facekit-jointrate-entropy"  # hidden, no short name
    assert canonical_name("avif") == "avif"
    for name in ("facekit-mse-roi", "facekit-joint-entropy-roi", "jpeg-roi"):  # no result measures them
        assert name not in CODECS
        with pytest.raises(CodecError, match="unknown codec"):
            get_codec(name)


def test_model_ids_parse_and_spell_the_same():
    from facekit.codecs.names import ModelId, model_name

    m = ModelId.parse("jointrate-q2-ctx")
    assert (m.variant, m.rate, m.entropy, m.number, m.name) == ("jointrate", "q2", True, 2, "jointrate-q2-ctx")
    assert m.weights == ModelId("jointrate", "q2") and model_name("jointrate", "q2", True) == m.name
    for bad in ("mse", "mse-3", "mse-q0", "mse-q03", "mse-q3-png", "MSE-q3", "mse-q3-ctx-x"):
        with pytest.raises(CodecError):
            ModelId.parse(bad)
    with pytest.raises(CodecError, match="rate point"):
        ModelId("mse", "3")


def test_cli_codecs_prints_roles_recommended_first(capsys):
    import json

    from facekit.cli import main

    assert main(["codecs"]) == 0
    out = capsys.readouterr().out.splitlines()
    heads = [ln for ln in out if ln and not ln.startswith(" ")]
    assert heads[0].split()[:2] == ["facekit", "recommended"]
    assert any(ln.split()[:2] == ["facekit-roi", "recognition-first"] for ln in heads)
    assert not any(ln.startswith("facekit-jointrate-entropy ") for ln in out)
    body = [ln for ln in out if ln.startswith(" ")]
    assert all(ln.strip().startswith(("available", "UNAVAILABLE")) for ln in body)
    assert main(["codecs", "--all"]) == 0
    out = capsys.readouterr().out
    assert "facekit-jointrate-entropy " in out and "alias of facekit" in out
    assert main(["codecs", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert list(info)[0] == "facekit" and info["facekit"]["role"] == "recommended" and len(info) <= 13


def test_writes_container_is_the_learned_codecs_container_not_fkh1():
    """``is_learned``: runs a network; ``writes_container``: writes facekit.container's format (not FKH1)."""
    from facekit.codecs.names import HYPERPRIOR, is_learned, writes_container

    assert writes_container("facekit") and writes_container("facekit-jointrate-entropy-roi") and writes_container("paper")
    assert is_learned(HYPERPRIOR) and not writes_container(HYPERPRIOR)
    assert not writes_container("jpeg") and not is_learned("jpeg")
