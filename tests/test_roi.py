"""Region-of-interest coding: masks with known answers, the learned and classical ROI codecs."""

from __future__ import annotations

import numpy as np
import pytest

from facekit.codecs import get_codec
from facekit.codecs import payload as payload_layout
from facekit.codecs.roi import (
    FaceRegion,
    FaceRegionFinder,
    RegionCodec,
    flatten_background,
    mask_codes,
    pack_region,
    region_geometry,
    region_mask,
    unpack_region,
)


def chip_at(x0: float, y0: float, scale: float = 1.0, angle: float = 0.0, chip: int = 150) -> FaceRegion:
    """A chip whose pixel (0, 0) lies at image (x0, y0), ``scale`` image pixels per chip pixel."""
    c, s = np.cos(angle) * scale, np.sin(angle) * scale
    return FaceRegion(np.array([[c, -s, x0], [s, c, y0]]), "hog", chip)


class FixedFinder(FaceRegionFinder):
    """A finder that returns one region for every image (no detector), counting its calls."""

    def __init__(self, region: FaceRegion, margin: float = 0.0) -> None:
        super().__init__(margin)
        self.region = region
        self.calls = 0

    def find(self, image: np.ndarray) -> FaceRegion:
        self.calls += 1
        return self.region


def test_mask_of_an_axis_aligned_chip_is_its_square():
    # pixels are cells of side 1: kept when they overlap the chip's square (x 49.5..149.5),
    # tested conservatively by their centre within half a diagonal of it
    keep = region_mask(chip_at(50, 60, chip=100), (250, 250), cell=1, margin=0)
    ys, xs = np.nonzero(keep)
    assert (xs.min(), xs.max(), ys.min(), ys.max()) == (49, 150, 59, 160)
    assert keep.sum() == 102 * 102


def test_margin_widens_the_mask_and_cells_cover_every_touched_pixel():
    region = chip_at(50, 60, chip=100)
    ys, xs = np.nonzero(region_mask(region, (250, 250), cell=1, margin=5))
    assert (xs.min(), xs.max(), ys.min(), ys.max()) == (44, 155, 54, 165)
    cells = region_mask(region, (250, 250), cell=8, margin=0)
    assert cells.shape == (32, 32)  # ceil(250 / 8)
    pixels = np.kron(cells, np.ones((8, 8), bool))[:250, :250]
    assert pixels[60:160, 50:150].all()  # every chip pixel lies in a kept cell
    assert not pixels[:40].any() and not pixels[:, 170:].any()  # and far-away cells are dropped


def test_rotated_chip_drops_the_corners_of_its_bounding_box():
    region = chip_at(125, 20, angle=np.pi / 4, chip=100)  # a diamond standing on its corner
    keep = region_mask(region, (250, 250), cell=1, margin=0)
    hull = (100 * np.sqrt(2)) ** 2  # the bounding box of the diamond
    assert keep.sum() == pytest.approx(100 * 100, rel=0.06)
    assert keep.sum() < 0.6 * hull
    assert keep[20 + 71, 125] and not keep[25, 60]


def test_no_face_or_a_degenerate_matrix_keeps_everything():
    assert region_mask(FaceRegion(None, "none"), (30, 41), cell=4).all()
    assert region_mask(FaceRegion(None, "none"), (30, 41), cell=4).shape == (8, 11)
    flat = FaceRegion(np.zeros((2, 3)), "hog")
    assert region_mask(flat, (10, 10)).all()
    with pytest.raises(ValueError):
        region_mask(FaceRegion(None, "none"), (10, 10), cell=0)


def test_mask_codes_flattens_each_channel_to_its_background_mean():
    rng = np.random.default_rng(0)
    q = rng.integers(0, 16, (3, 6, 7)).astype(np.uint8)
    keep = np.zeros((6, 7), bool)
    keep[1:4, 2:5] = True
    out = mask_codes(q, keep)
    assert np.array_equal(out[:, keep], q[:, keep])
    for c in range(3):
        assert (out[c][~keep] == round(float(q[c][~keep].mean()))).all()
    assert mask_codes(q, np.ones((6, 7), bool)) is q
    with pytest.raises(ValueError, match="do not match"):
        mask_codes(q, keep[:5])


def test_flatten_background_keeps_the_face_pixels(smooth_image):
    keep = np.zeros(smooth_image.shape[:2], bool)
    keep[20:70, 30:90] = True
    out = flatten_background(smooth_image, keep)
    assert np.array_equal(out[keep], smooth_image[keep])
    assert len(np.unique(out[~keep].reshape(-1, 3), axis=0)) == 1
    assert np.array_equal(smooth_image, smooth_image.copy())  # the input is not changed
    with pytest.raises(ValueError):
        flatten_background(smooth_image, keep[1:])


def test_region_codec_codes_fewer_bytes_that_the_base_decoder_reads(smooth_image):
    base = get_codec("webp")
    roi = RegionCodec(base, finder=FixedFinder(chip_at(30, 20, chip=50), margin=4.0))
    assert roi.name == "webp-roi" and tuple(roi.settings) == tuple(base.settings)
    a, b = roi.encode(smooth_image, 50), base.encode(smooth_image, 50)
    assert len(a) < 0.7 * len(b)
    dec = base.decode(a)
    assert dec.shape == smooth_image.shape
    face = (slice(24, 66), slice(34, 76))
    err_roi = np.abs(dec[face].astype(int) - smooth_image[face]).mean()
    err_base = np.abs(base.decode(b)[face].astype(int) - smooth_image[face]).mean()
    assert err_roi < err_base + 2.0  # the face is coded about as well as without ROI
    assert roi.describe()["roi"]["margin_px"] == 4.0


def test_mask_is_the_one_a_general_solver_finds():
    # region_mask inverts the chip's 2x2 matrix by hand (so every machine rounds alike);
    # on random chips it keeps the cells np.linalg.solve's chip coordinates keep
    rng = np.random.default_rng(5)
    for _ in range(50):
        region = chip_at(*rng.uniform(-20, 120, 2), scale=rng.uniform(0.3, 1.5), angle=rng.uniform(-1, 1), chip=150)
        cell = int(rng.choice([1, 4, 8, 16]))
        keep = region_mask(region, (250, 250), cell=cell, margin=4.0)
        rows, cols = keep.shape
        gx, gy = np.meshgrid(np.arange(cols) * cell + (cell - 1) / 2, np.arange(rows) * cell + (cell - 1) / 2)
        m = region.matrix
        u = np.linalg.solve(m[:, :2], np.stack([gx.ravel() - m[0, 2], gy.ravel() - m[1, 2]]))
        slack = (4.0 + cell * np.sqrt(2) / 2) / np.sqrt(abs(np.linalg.det(m[:, :2])))
        ref = ((u >= -0.5 - slack) & (u <= 149.5 + slack)).all(axis=0).reshape(rows, cols)
        assert np.array_equal(keep, ref)


def test_region_geometry_rebuilds_the_mask_exactly_and_refuses_garbage():
    rng = np.random.default_rng(6)
    widths = set()
    for _ in range(200):
        region = chip_at(*rng.uniform(0, 100, 2), scale=rng.uniform(0.5, 1.2), angle=rng.uniform(-0.5, 0.5))
        keep = region_mask(region, (250, 250), cell=4, margin=4.0)
        data = region_geometry(region, keep, (250, 250), 4, 4.0)
        back, margin, used = unpack_region(data + b"trailing")
        assert used == len(data) and margin == 4.0 and back.chip == 150
        assert np.array_equal(region_mask(back, (250, 250), cell=4, margin=margin), keep)
        widths.add(data[0])
    assert 4 in widths and len(pack_region(chip_at(1, 2), 4.0)) == 31  # float32 where that suffices
    exact = pack_region(chip_at(0.1, 0.2, scale=0.7, angle=0.3), 4.0, width=8)
    assert np.array_equal(unpack_region(exact)[0].matrix, chip_at(0.1, 0.2, scale=0.7, angle=0.3).matrix)
    good = pack_region(chip_at(10, 10), 4.0)
    nan = bytearray(good)
    nan[1:5] = np.float32(np.nan).tobytes()
    flat = bytes([4]) + np.zeros(7, "<f4").tobytes() + (150).to_bytes(2, "little")
    for bad in (b"", good[:20], b"\x05" + good[1:], bytes(nan), flat):
        with pytest.raises(ValueError, match="geometry"):
            unpack_region(bad)
    with pytest.raises(ValueError, match="no face"):
        pack_region(FaceRegion(None, "none"), 4.0)


def test_every_roi_codec_is_registered():
    from facekit.codecs.names import canonical_name

    for name in ("facekit-roi", "jpeg2000-roi", "webp-roi", "avif-roi", "facekit-joint-roi", "facekit-jointrate-roi",
                 "facekit-jointrate-entropy-roi", "facekit-jointrate-entropy-roi-bg"):
        try:
            codec = get_codec(name)
        except Exception as e:  # noqa: BLE001 - AVIF or the weights may be missing here
            pytest.skip(f"{name}: {e}")
        assert codec.name == canonical_name(name)
    assert get_codec("facekit-jointrate-entropy-roi-bg").name == "facekit-roi"


def test_roi_combinations_no_result_measured_are_not_codec_names():
    from facekit.errors import CodecError

    for name in ("jpeg-roi", "facekit-mse-roi", "facekit-mse-entropy-roi", "facekit-joint-entropy-roi",
                 "facekit-jointface-entropy-roi-bg"):
        with pytest.raises(CodecError, match="unknown codec"):
            get_codec(name)


def _learned(name: str):  # type: ignore[no-untyped-def]
    """The learned codec a (short or spelled-out) name describes, listed or not."""
    from facekit.codecs.learned import LearnedCodec
    from facekit.codecs.names import LearnedSpec
    from facekit.errors import FacekitError

    spec = LearnedSpec.parse(name)
    assert spec is not None, name
    try:
        return LearnedCodec.from_spec(spec)
    except FacekitError as e:
        pytest.skip(f"{name} unavailable: {e}")


def _wavy_image(height: int, width: int) -> np.ndarray:
    """A noisy synthetic RGB image with structure everywhere (so the background costs bits)."""
    rng = np.random.default_rng(1)
    y, x = np.mgrid[0:height, 0:width]
    return np.clip(np.stack([128 + 60 * np.sin(x / 7 + c) * np.cos(y / 11) for c in range(3)], -1)
                   + rng.normal(0, 4, (height, width, 3)), 0, 255).astype(np.uint8)


def test_learned_roi_bitstreams_are_ordinary_and_smaller():
    img = _wavy_image(128, 128)
    plain, roi = _learned("facekit-mse"), _learned("facekit-mse-roi")
    roi.roi = FixedFinder(chip_at(40, 40, chip=48))
    a, b = roi.encode(img, "q4"), plain.encode(img, "q4")
    assert len(a) < 0.6 * len(b)
    # the same decoder reads both, and the face area survives
    dec_roi, dec_plain = plain.decode(a), plain.decode(b)
    assert np.array_equal(roi.decode(a), dec_roi)
    face = (slice(48, 80), slice(48, 80))
    assert np.abs(dec_roi[face].astype(int) - dec_plain[face]).mean() < 3.0
    assert "roi" in roi.describe() and "roi" not in plain.describe()
    # with no face found the whole image is coded: the same bytes as without ROI
    roi.roi = FixedFinder(FaceRegion(None, "none"))
    assert roi.encode(img, "q4") == b


def test_range_coded_roi_codes_the_face_only_and_decodes_like_the_png_roi_codec():
    from facekit.container import pack, parse
    from facekit.errors import BitstreamError

    img = _wavy_image(160, 144)
    png_roi, ent_roi = _learned("facekit-mse-roi"), _learned("facekit-mse-entropy-roi")
    ent = _learned("facekit-mse-entropy")
    assert ent_roi.name == "facekit-mse-entropy-roi"
    finder = FixedFinder(chip_at(40, 50, scale=0.5, angle=0.2), margin=4.0)
    png_roi.roi = ent_roi.roi = finder
    for rate in ("q2", "q4"):
        a, b = ent_roi.encode(img, rate), png_roi.encode(img, rate)
        c = parse(a)
        assert c.model == f"mse-{rate}-ctx" and c.payload[0] == payload_layout.MASKED
        assert len(a) < 0.8 * len(b)  # the background costs nothing but its geometry and fills
        same = png_roi.decode(b)
        assert np.array_equal(ent_roi.decode(a), same) and np.array_equal(ent.decode(a), same)
    fp = ent.fingerprint(rate)
    for cut, why in ((3, "face-region payload"), (30, "face-region payload"), (33, "fill values"), (35, "ran out")):
        # inside the geometry (tag + 31 bytes), inside the two fill values, inside the codes
        with pytest.raises(BitstreamError, match=why):
            ent.decode(pack(c.model, fp, c.height, c.width, c.payload[:cut]))
    forged = bytearray(c.payload)
    forged[2:6] = np.float32(np.inf).tobytes()
    with pytest.raises(BitstreamError, match="face-region payload"):
        ent.decode(pack(c.model, fp, c.height, c.width, bytes(forged)))
    # no face: the whole image is coded, byte for byte as without ROI
    ent_roi.roi = FixedFinder(FaceRegion(None, "none"))
    assert ent_roi.encode(img, "q4") == ent.encode(img, "q4")


def test_roi_with_background_keeps_the_roi_codecs_face_and_codes_a_background():
    """-entropy-roi-bg: the face region decodes as with -entropy-roi, the rest from q1's codes, not flat."""
    from facekit.codecs.learned import LearnedCodec
    from facekit.codecs.payload import leb128, read_leb128
    from facekit.container import pack, parse
    from facekit.errors import BitstreamError, CodecError

    img = _wavy_image(160, 144)
    roi, bg = _learned("facekit-mse-entropy-roi"), _learned("facekit-mse-entropy-roi-bg")
    ent = _learned("facekit-mse-entropy")
    assert bg.name == "facekit-mse-entropy-roi-bg" and bg.background == "q1"
    region = chip_at(40, 50, scale=0.5, angle=0.2)
    roi.roi = bg.roi = FixedFinder(region, margin=4.0)
    inside = region_mask(region, img.shape[:2], cell=1, margin=4.0)
    q1 = ent.decode(ent.encode(img, "q1"))
    for rate in ("q2", "q4"):
        a, b = bg.encode(img, rate), roi.encode(img, rate)
        c = parse(a)
        assert c.model == f"mse-{rate}-ctx" and c.payload[0] == payload_layout.MASKED_BG
        assert len(b) < len(a) < len(b) + len(ent.encode(img, "q1"))  # the background costs less than a q1 image
        face_only, both = roi.decode(b), bg.decode(a)
        assert np.array_equal(ent.decode(a), both)  # the plain -entropy codec reads it too
        assert np.array_equal(both[inside], face_only[inside])  # what the recogniser sees is unchanged
        outside = ~inside
        err = np.abs(both[outside].astype(int) - img[outside]).mean()
        assert err < np.abs(face_only[outside].astype(int) - img[outside]).mean() - 2  # a background, not a flat colour
        assert np.abs(both[outside].astype(int) - q1[outside]).mean() < 8  # ... at about q1's quality
    # the batch path gives the same bytes and images
    assert bg.encode_batch([img, img], "q4") == [a, a] and all(np.array_equal(x, both) for x in bg.decode_batch([a, a]))
    flipped, at_q2 = bg.encode(np.ascontiguousarray(img[::-1]), "q4"), bg.encode(img, "q2")
    # damaged or foreign type-3 payloads end in BitstreamError
    fp = ent.fingerprint("q4")
    used = unpack_region(c.payload[1:])[2]
    n = 1 + used + ent.model("q4").rate_point.channels  # tag, geometry, q4's fill values: the rate byte
    for cut in (3, n, n + 3, n + 6, len(c.payload) - 40):
        with pytest.raises(BitstreamError):
            ent.decode(pack(c.model, fp, c.height, c.width, c.payload[:cut]))
    for pos, value, why in ((n, 9, "background rate point 'q9'"), (n + 1, c.payload[n + 1] ^ 0xFF, "other mse-q1")):
        forged = bytearray(c.payload)
        forged[pos] = value
        with pytest.raises(BitstreamError, match=why):
            ent.decode(pack(c.model, fp, c.height, c.width, bytes(forged)))
    # no face: the whole image at the face's rate, byte for byte as without ROI
    bg.roi = FixedFinder(FaceRegion(None, "none"))
    plain = bg.encode(img, "q4")
    assert plain == ent.encode(img, "q4")
    # one batch mixing streams with and without a background, of two rate points, decodes as one by one
    mixed = [a, plain, flipped, at_q2, flipped]
    assert all(np.array_equal(x, bg.decode(d)) for x, d in zip(bg.decode_batch(mixed), mixed, strict=True))
    with pytest.raises(CodecError, match="roi=True and entropy=True"):
        LearnedCodec("mse", roi=True, background="q1")
    with pytest.raises(CodecError, match="no rate point 'q9'"):
        LearnedCodec("mse", roi=True, entropy=True, background="q9")
    for value in (0, 1, 127, 128, 300, 2**21, 2**28 - 1):
        assert read_leb128(b"x" + leb128(value) + b"y", 1) == (value, 1 + len(leb128(value)))
    with pytest.raises(BitstreamError, match="truncated"):
        read_leb128(leb128(300)[:1], 0)
    with pytest.raises(BitstreamError, match="more than 5 bytes"):
        read_leb128(b"\xff" * 6, 0)


def test_finder_caches_by_pixels(smooth_image):
    finder = FaceRegionFinder()
    calls = []

    class Loc:
        method, matrix = "hog", np.array([[1.0, 0, 10], [0, 1.0, 10]])

    class Aligner:
        def locate_dlib(self, image, size=150):  # type: ignore[no-untyped-def]
            calls.append(size)
            return Loc()

    finder._aligner = Aligner()
    r1 = finder.find(smooth_image)
    r2 = finder.find(smooth_image.copy())
    assert r1 is r2 and calls == [150]
    other = smooth_image.copy()
    other[0, 0] ^= 1
    finder.find(other)
    assert len(calls) == 2
    Loc.method = "centre"  # no face: keep everything
    assert finder.find(np.zeros((32, 32, 3), np.uint8)).matrix is None
    with pytest.raises(ValueError):
        FaceRegionFinder(margin=-1)


@pytest.mark.lfw
@pytest.mark.slow
def test_finder_on_a_real_face_keeps_the_chip(face_image):
    region = FaceRegionFinder().find(face_image)
    assert region.method == "hog"
    keep = region_mask(region, face_image.shape[:2], cell=1, margin=4)
    assert 0.15 < keep.mean() < 0.5  # the chip is a quarter to a third of a 250x250 LFW image
    assert keep[125, 125] and not keep[0, 0] and not keep[249, 249]


def test_figure_draws_only_the_codecs_asked_for():
    from facekit.plots import rate_accuracy_figure, style_of

    pts = [{"setting": 0, "bpp": 0.1, "acc_mean": 0.9, "acc_std": 0.01, "psnr": 30.0},
           {"setting": 1, "bpp": 0.2, "acc_mean": 0.95, "acc_std": 0.01, "psnr": 32.0}]
    res = {"codecs": {"avif": pts, "avif-roi": pts, "jpeg": pts}}
    fig = rate_accuracy_figure(res, codecs=["avif", "avif-roi", "not-there"])
    labels = [line.get_label() for line in fig.axes[0].get_lines()]
    assert labels == ["avif", "avif-roi"]
    assert [line.get_label() for line in fig.axes[1].get_lines()] == ["avif"]  # no whole-image PSNR for ROI
    assert style_of("avif-roi")["color"] == style_of("avif")["color"] and style_of("avif-roi")["ls"] == ":"
    assert len(rate_accuracy_figure(res).axes[0].get_lines()) == 3


def test_roi_codecs_with_a_background_count_as_roi_but_keep_their_psnr():
    from facekit.goals import check_goals
    from facekit.plots import is_roi, rate_accuracy_figure, roi_figure, style_of

    assert is_roi("avif-roi") and is_roi("facekit-jointrate-entropy-roi-bg") and not is_roi("facekit-jointrate-entropy")
    pts = [{"setting": s, "bpp": b, "acc_mean": a, "acc_std": 0.01, "psnr": p}
           for s, b, a, p in (("q2", 0.05, 0.93, 20.0), ("q3", 0.08, 0.97, 20.5))]
    res = {"codecs": {"facekit-jointrate-entropy": pts, "facekit-jointrate-entropy-roi-bg": pts, "avif-roi": pts}}
    fig = rate_accuracy_figure(res)
    assert [ln.get_label() for ln in fig.axes[1].get_lines()] == ["facekit-jointrate-entropy",
                                                                  "facekit-jointrate-entropy-roi-bg"]
    assert style_of("facekit-jointrate-entropy-roi-bg")["ls"] == "-."
    drawn = [ln.get_label() for ln in roi_figure(res).axes[0].get_lines()]
    assert drawn == ["facekit-jointrate-entropy", "facekit-jointrate-entropy-roi-bg", "avif-roi"]
    goals = [g["goal"] for g in check_goals(res, "facekit-jointrate-entropy-roi-bg")]
    assert any(g.startswith("ROI baselines: above AVIF with ROI") for g in goals)


def test_tiny_images_hold_no_face_and_are_coded_whole():
    """Under 20 pixels a side no detector runs (MTCNN failed on them): the mask keeps everything."""
    tiny = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    finder = FaceRegionFinder()
    region = finder.find(tiny)
    assert region.method == "none" and region.matrix is None
    assert finder.mask(tiny).all()
    codec = RegionCodec(get_codec("webp"), finder=finder)
    assert np.array_equal(codec.prepare(tiny), tiny)
    assert codec.decode(codec.encode(tiny, 90)).shape == (16, 16, 3)
