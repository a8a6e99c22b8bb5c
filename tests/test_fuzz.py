"""Hostile input: damaged, foreign, empty, random and bomb-shaped bytes given to every decoder.

Every case must end in facekit's own exception (a :class:`~facekit.errors.FacekitError`
subclass whose message names the problem) in bounded time and memory, or in a correct
image; nothing may crash the interpreter. Inputs start from the real files of
``tests/corpus`` (made by ``tests/corpus/make_corpus.py``) and are mutated with
:func:`facekit.safety.apply_ops`. The bounded run here is ~200 hypothesis examples a
target; ``benchmarks/fuzz_report.py --seconds N`` runs the same targets for longer.

Known bugs in other modules are shown by ``xfail(strict=True)`` tests (so a fix turns
them into failures that ask for the marker to go); the fuzz tests tolerate exactly those
failure signatures and nothing else.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import hashlib
import io
import json
import random
import shutil
import struct
import sys
import tempfile
import warnings
import zlib
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from facekit import container
from facekit.cli import main
from facekit.codecs import get_codec
from facekit.codecs import payload as payload_layout
from facekit.codecs.learned import LearnedCodec
from facekit.entropy_models import pack_png
from facekit.errors import BitstreamError, CodecError, FacekitError, ImageError
from facekit.imageio import open_image
from facekit.safety import OPS, apply_ops, reseal, run_isolated
from facekit.zoo import install_weights

CORPUS = Path(__file__).resolve().parent / "corpus"
sys.path.insert(0, str(CORPUS))

from fkh1 import hyperprior_targets  # noqa: E402
from make_corpus import face_image, tiny_model  # noqa: E402
from targets import (  # noqa: E402
    CLASSIC_FILES,
    FKC,
    FKC_ENTROPY,
    MODERN_FILES,
    WEIGHTS,
    build_targets,
    entropy_codec,
)

pytestmark = pytest.mark.usefixtures("one_thread")  # torch on one thread: fast and steady under load

#: failure signatures of known bugs in other modules, tolerated by the fuzz tests only;
#: each is pinned by a strict xfail test below
KNOWN_BUGS = {
}
#: the -entropy decoder decodes any declared size from any payload (test_entropy_decoder_bomb...):
#: the fuzz tests leave such inputs to that test rather than spend seconds each on them
ENTROPY_PIXELS = 512 * 512
MEMORY_MB = 1536  # address space a bomb-case decode may add


@functools.lru_cache(maxsize=1)
def targets():
    workdir = tempfile.mkdtemp(prefix="facekit-test-fuzz-")
    atexit.register(shutil.rmtree, workdir, ignore_errors=True)
    return hyperprior_targets(Path(workdir), into=build_targets(workdir=Path(workdir)))


#: the second generation's FKH1 files (tests/corpus/fkh1.py): as mutated, and with their CRC32 repaired
HYPERPRIOR_TARGETS = ["hyperprior.decode", "hyperprior-resealed.decode"]
TARGET_NAMES = [
    "container.parse", "learned.decode", "learned-entropy.decode", *[f"{c}.decode" for c in CLASSIC_FILES],
    *[f"{c}.decode" for c in MODERN_FILES], *HYPERPRIOR_TARGETS, "cli.compress",
]


def target(name: str):  # type: ignore[no-untyped-def]
    """A built target, or a skip where this facekit lacks it (the -entropy variant is optional)."""
    t = targets().get(name)
    if t is None:
        pytest.skip(f"target {name} is not available in this facekit")
    return t


def expect_safe(name: str, data: bytes) -> None:
    """Run target ``name`` on ``data``: a result, or the target's FacekitError with a real message."""
    t = target(name)
    if name == "learned-entropy.decode":
        try:
            c = container.parse(data)
            if c.height * c.width > ENTROPY_PIXELS:
                return
        except FacekitError:
            pass
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            t.run(data)
    except FacekitError as e:
        assert isinstance(e, t.expected), f"{name}: {type(e).__name__} is not a {t.expected.__name__}: {e}"
        assert len(str(e)) >= 10, f"{name}: uninformative message {str(e)!r}"
    except Exception as e:
        for bug_name, bug_type, bug_text in KNOWN_BUGS:
            if (bug_name, bug_type) == (name, type(e).__name__) and bug_text in str(e):
                return
        raise


# --------------------------------------------------------------------------- corpus


def test_corpus_is_small_intact_and_decodes():
    meta = json.loads((CORPUS / "corpus.json").read_text())
    total = 0
    for name, entry in meta["files"].items():
        data = (CORPUS / name).read_bytes()
        assert hashlib.sha256(data).hexdigest() == entry["sha256"], f"{name} changed: rerun make_corpus.py"
        total += len(data)
    assert total < 300_000
    face = np.asarray(open_image(CORPUS / "face.png"))
    assert np.array_equal(face, face_image())
    for codec_name, fname in CLASSIC_FILES.items():
        out = get_codec(codec_name).decode((CORPUS / fname).read_bytes())
        assert out.shape == face.shape, codec_name
        assert np.abs(out.astype(int) - face.astype(int)).mean() < 20, codec_name
    for codec_name, fname in MODERN_FILES.items():
        try:
            codec = get_codec(codec_name)
        except CodecError:  # its package is not installed
            continue
        out = codec.decode((CORPUS / fname).read_bytes())
        assert out.shape == face.shape, codec_name
        assert np.abs(out.astype(int) - face.astype(int)).mean() < 20, codec_name
    codec = LearnedCodec("mse", folder=WEIGHTS)
    for fname in FKC:
        assert codec.decode((CORPUS / fname).read_bytes()).shape == face.shape
    entropy = entropy_codec()
    if entropy is not None:
        assert entropy.decode((CORPUS / FKC_ENTROPY).read_bytes()).shape == face.shape


# --------------------------------------------------------------------------- fuzzing

OPERATIONS = st.lists(
    st.tuples(st.sampled_from(OPS[:-1]), st.integers(0, 2**24), st.integers(0, 2**24)), min_size=1, max_size=4
)


FUZZ_SETTINGS = {
    "deadline": timedelta(seconds=5),
    "derandomize": True,
    "database": None,
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large],
}


def _fuzz_one(name: str, data: st.DataObject) -> None:
    t = target(name)
    seed = data.draw(st.sampled_from(t.seeds), label="seed file")
    ops = data.draw(OPERATIONS, label="mutations")
    mutated = apply_ops(seed, ops, t.others)
    if t.reseal and data.draw(st.booleans(), label="reseal"):
        mutated = reseal(mutated)
    expect_safe(name, mutated)


@pytest.mark.parametrize("name", [n for n in TARGET_NAMES if n != "cli.compress"])
@settings(max_examples=200, **FUZZ_SETTINGS)
@given(data=st.data())
def test_mutated_corpus_is_refused_or_decoded(name, data):
    _fuzz_one(name, data)


@settings(max_examples=60, **FUZZ_SETTINGS)
@given(data=st.data())
def test_mutated_files_given_to_facekit_compress(data):
    _fuzz_one("cli.compress", data)


@pytest.mark.parametrize("name", TARGET_NAMES)
def test_empty_random_and_wrong_magic(name):
    rng = random.Random(name)
    seed = target(name).seeds[0]
    cases = [b"", b"\0", rng.randbytes(1), rng.randbytes(16), rng.randbytes(5000), b"\0" * 4096,
             b"\xff" * 64, b"XXXX" + seed[4:], seed[:4], seed[: len(seed) // 2]]
    for data in cases:
        expect_safe(name, data)
    if name != "cli.compress":
        with pytest.raises(BitstreamError, match=r"\w"):
            target(name).run(b"")


@pytest.mark.parametrize("name", [n for n in TARGET_NAMES if n != "cli.compress"])
def test_every_corpus_file_given_to_every_decoder(name):
    for _fname, data in sorted(_corpus_data().items()):
        expect_safe(name, data)
    for data in target("hyperprior.decode").seeds:  # FKH1 files too
        expect_safe(name, data)


@functools.lru_cache(maxsize=1)
def _corpus_data() -> dict[str, bytes]:
    from targets import corpus_files

    return corpus_files()


def test_every_truncation_and_bit_flip_of_a_container_is_refused():
    codec = LearnedCodec("mse", folder=WEIGHTS)
    data = (CORPUS / FKC[0]).read_bytes()
    for n in range(len(data)):
        with pytest.raises(BitstreamError, match="truncated|magic|header"):
            codec.decode(data[:n])
    for i in range(len(data)):
        for bit in range(8):
            bad = bytearray(data)
            bad[i] ^= 1 << bit
            with pytest.raises(BitstreamError):
                codec.decode(bytes(bad))


def test_every_resealed_bit_flip_is_refused_or_decoded_to_the_declared_size():
    """Flips with a repaired CRC reach the model name, hash, size and PNG payload checks."""
    for fname in FKC:
        data = (CORPUS / fname).read_bytes()
        rng = random.Random(fname)
        for i in rng.sample(range(len(data) - 4), 40):
            bad = bytearray(data)
            bad[i] ^= 1 << rng.randrange(8)
            expect_safe("learned.decode", reseal(bytes(bad)))


def test_container_declaring_huge_sizes_is_refused_before_allocation():
    payload = pack_png(np.zeros((4, 2, 2), np.uint8), 3, effort=0)
    good = container.pack("mse-q1", "ab" * 32, 20, 20, payload)
    at = 4 + container.HASH_BYTES  # format 2: magic, version, model id, hash, then the size
    for h, w in ((65535, 65535), (8193, 8), (8, 60000), (0, 10), (10, 0)):
        body = bytearray(good[:-4])
        body[at : at + 4] = struct.pack(">HH", h, w)
        bad = reseal(bytes(body) + b"\0\0\0\0")
        out = run_isolated(container.parse, bad, memory_mb=64, timeout=30)
        assert out.status == "refused" and out.error == "BitstreamError", out
        assert "absurd image size" in out.message
    # format 1 (still read): a payload length field pointing far past the end
    name = b"mse-q1"
    body = bytearray(
        container.MAGIC_V1 + bytes([1, len(name)]) + name + bytes(6) + struct.pack(">HHI", 20, 20, 0xFFFFFFF0) + payload
    )
    with pytest.raises(BitstreamError, match="truncated"):
        container.parse(bytes(body) + struct.pack(">I", zlib.crc32(bytes(body))))


def test_container_from_other_weights_or_model_is_refused(tmp_path):
    data = (CORPUS / "face.q1.fkc").read_bytes()
    other = tmp_path / "weights"
    shutil.copytree(WEIGHTS, other)
    install_weights(tiny_model("q1", seed=99), "mse", folder=other)  # same name, other weights
    with pytest.raises(BitstreamError, match="other weights of 'mse-q1'"):
        LearnedCodec("mse", folder=other).decode(data)
    # the hash field edited, CRC repaired
    c = container.parse(data)
    forged = container.pack(c.model, bytes(8), c.height, c.width, c.payload)
    with pytest.raises(BitstreamError, match="other weights"):
        LearnedCodec("mse", folder=WEIGHTS).decode(forged)
    joint = container.pack("joint-q1", bytes(8), c.height, c.width, c.payload)
    with pytest.raises(BitstreamError, match="made by model 'joint-q1'"):
        LearnedCodec("mse", folder=WEIGHTS).decode(joint)
    missing = container.pack("mse-q5", bytes(8), c.height, c.width, c.payload)
    with pytest.raises(BitstreamError, match="rate point 'q5'"):
        LearnedCodec("mse", folder=WEIGHTS).decode(missing)


# --------------------------------------------------------------------------- bombs


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def png_bomb(w: int, h: int) -> bytes:
    """A valid PNG header declaring ``w x h`` RGB, with a few rows of zeros."""
    ihdr = _chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
    idat = zlib.compress(bytes(1 + 3 * min(w, 100_000)) * 4)
    return b"\x89PNG\r\n\x1a\n" + ihdr + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


def jpeg_bomb(w: int, h: int) -> bytes:
    """The corpus JPEG with its SOF declaring ``w x h``."""
    d = bytearray((CORPUS / "face.jpg").read_bytes())
    i = 2
    while i + 4 < len(d):
        marker, length = d[i + 1], struct.unpack(">H", d[i + 2 : i + 4])[0]
        if marker in (0xC0, 0xC1, 0xC2):
            d[i + 5 : i + 9] = struct.pack(">HH", h, w)
            return bytes(d)
        i += 2 + length
    raise AssertionError("no SOF in the corpus JPEG")


def j2k_bomb(w: int, h: int) -> bytes:
    """The corpus J2K codestream with its SIZ declaring ``w x h`` in one tile."""
    d = bytearray((CORPUS / "face.j2k").read_bytes())
    i = d.index(b"\xff\x51")
    d[i + 6 : i + 14] = struct.pack(">II", w, h)
    d[i + 22 : i + 30] = struct.pack(">II", w, h)
    return bytes(d)


def webp_bomb(w: int, h: int) -> bytes:
    d = bytearray((CORPUS / "face.webp").read_bytes())
    assert d[12:16] == b"VP8 " and d[23:26] == b"\x9d\x01\x2a"
    d[26:30] = struct.pack("<HH", w & 0x3FFF, h & 0x3FFF)
    return bytes(d)


def avif_bomb(w: int, h: int) -> bytes:
    d = bytearray((CORPUS / "face.avif").read_bytes())
    i = d.index(b"ispe")
    d[i + 8 : i + 16] = struct.pack(">II", w, h)
    return bytes(d)


def hevc_bomb(w: int, h: int) -> bytes:
    """The corpus HEIF file with its image's ``ispe`` box declaring ``w x h``."""
    d = bytearray((CORPUS / "face.heic").read_bytes())
    i = d.index(b"ispe")
    d[i + 8 : i + 16] = struct.pack(">II", w, h)
    return bytes(d)


def jxl_bomb(w: int, h: int) -> bytes:
    """A JPEG XL codestream whose size header declares ``w x h`` (u32 fields of 30 bits), then the corpus file's tail."""
    bits = [0, 1, 1, *((h - 1) >> k & 1 for k in range(30)), 0, 0, 0, 1, 1, *((w - 1) >> k & 1 for k in range(30))]
    head = bytearray((len(bits) + 7) // 8)
    for k, b in enumerate(bits):
        head[k >> 3] |= b << (k & 7)
    return b"\xff\x0a" + bytes(head) + (CORPUS / "face.jxl").read_bytes()[12:]


def resized_bomb(w: int, h: int) -> bytes:
    """The corpus resize-then-code file with its header declaring ``w x h``."""
    d = (CORPUS / "face.webp.rz").read_bytes()
    return d[:2] + struct.pack(">HH", h, w) + d[6:]


def modern_codec(name: str):  # type: ignore[no-untyped-def]
    """Issue 29's codec ``name``, or a skip where its package is not installed."""
    try:
        return get_codec(name)
    except CodecError as e:
        pytest.skip(str(e))


def fkc_bomb(w: int, h: int, rate: str = "q1") -> bytes:
    """A valid container (right CRC, weights hash, PNG payload) declaring ``w x h``."""
    codec = LearnedCodec("mse", folder=WEIGHTS)
    rp = codec.model(rate).rate_point
    payload = pack_png(np.zeros(rp.code_shape(h, w), np.uint8), rp.bits, effort=0)
    return container.pack(f"mse-{rate}", codec.model(rate).fingerprint(), h, w, payload)


OVER_LIMIT = [
    ("png", png_bomb, 60000, 60000),
    ("png", png_bomb, 9000, 9000),
    ("jpeg", jpeg_bomb, 60000, 60000),
    ("jpeg", jpeg_bomb, 9000, 9000),
    ("jpeg2000", j2k_bomb, 60000, 60000),
    ("jpeg2000", j2k_bomb, 1, 2**31),
    ("jpeg2000-pillow", j2k_bomb, 60000, 60000),
    ("webp", webp_bomb, 16383, 16383),
    ("avif", avif_bomb, 10000, 10000),
    ("hevc", hevc_bomb, 10000, 10000),
    ("hevc", hevc_bomb, 65535, 65535),
    ("jpegxl", jxl_bomb, 60000, 60000),
    ("jpegxl", jxl_bomb, 1, 2**30),
    ("webp-resized", resized_bomb, 65535, 65535),
]


@pytest.mark.parametrize(("codec_name", "make", "w", "h"), OVER_LIMIT, ids=lambda v: str(v) if not callable(v) else "")
def test_declared_size_over_the_limit_is_refused_before_allocation(codec_name, make, w, h):
    data = make(w, h)
    assert len(data) < 2000
    codec = modern_codec(codec_name) if codec_name in MODERN_FILES else get_codec(codec_name)
    out = run_isolated(codec.decode, data, memory_mb=MEMORY_MB, timeout=60)
    assert out.status == "refused" and out.error == "BitstreamError", out
    assert any(k in out.message for k in ("too large", "decompression bomb", "exceeds")), out.message
    assert out.extra_vm_mb is not None and out.extra_vm_mb < 100, f"allocated {out.extra_vm_mb:.0f} MB first"


@pytest.mark.parametrize("codec_name", ["png", "jpeg"])
def test_bomb_at_the_pixel_limit_stays_in_bounded_memory(codec_name):
    """A < 1 KB file declaring 8192x8192 (the decoders' limit): refused or decoded within 1.5 GB."""
    data = {"png": png_bomb, "jpeg": jpeg_bomb}[codec_name](8192, 8192)
    out = run_isolated(get_codec(codec_name).decode, data, memory_mb=MEMORY_MB, timeout=60)
    assert out.safe, out


def test_learned_decoder_within_the_container_limit_is_bounded():
    """A 2048x2048 container (16 KB of codes, tiny model) decodes within the memory budget."""
    out = run_isolated(LearnedCodec("mse", folder=WEIGHTS).decode, fkc_bomb(1024, 1024), memory_mb=MEMORY_MB, timeout=60)
    assert out.status == "ok", out


def test_learned_decoder_bomb_is_refused_before_allocation():
    data = fkc_bomb(8192, 8192)
    assert len(data) < 2000
    out = run_isolated(LearnedCodec("mse", folder=WEIGHTS).decode, data, memory_mb=384, timeout=60)
    assert out.status == "refused", out


def test_avif_decoder_errors_are_bitstream_errors():
    data = (CORPUS / "face.avif").read_bytes()
    codec = get_codec("avif")
    escaped = []
    for i in range(len(data)):
        for bit in (0, 2, 6):
            bad = bytearray(data)
            bad[i] ^= 1 << bit
            try:
                codec.decode(bytes(bad))
            except FacekitError:
                pass
            except Exception as e:  # noqa: BLE001 - collected and reported below
                escaped.append(f"byte {i} bit {bit}: {type(e).__name__}: {e}")
    assert not escaped, f"{len(escaped)} flips escaped, e.g. {escaped[:3]}"


@pytest.mark.parametrize("codec_name", list(MODERN_FILES))
def test_modern_decoder_bit_flips_are_bitstream_errors(codec_name):
    """Every byte of the corpus file, three bits each: a facekit error or an image, never another exception."""
    codec = modern_codec(codec_name)
    data = (CORPUS / MODERN_FILES[codec_name]).read_bytes()
    escaped = []
    for i in range(len(data)):
        for bit in (0, 3, 7):
            bad = bytearray(data)
            bad[i] ^= 1 << bit
            try:
                out = codec.decode(bytes(bad))
                assert out.dtype == np.uint8 and out.ndim == 3 and out.shape[2] == 3
            except FacekitError:
                pass
            except Exception as e:  # noqa: BLE001 - collected and reported below
                escaped.append(f"byte {i} bit {bit}: {type(e).__name__}: {e}")
    assert not escaped, f"{len(escaped)} flips escaped, e.g. {escaped[:3]}"


def _entropy_container(height: int, width: int, payload: bytes) -> bytes:
    good = container.parse((CORPUS / FKC_ENTROPY).read_bytes())
    return container.pack(good.model, good.model_hash + bytes(26), height, width, payload)


def test_entropy_decoder_errors_are_bitstream_errors():
    codec = entropy_codec()
    if codec is None:
        pytest.skip("no -entropy variant in this facekit")
    try:
        codec.decode(_entropy_container(80, 64, b"\xff" * 8))
    except BitstreamError:
        pass


def test_entropy_decoder_bomb_is_refused_before_allocation():
    codec = entropy_codec()
    if codec is None:
        pytest.skip("no -entropy variant in this facekit")
    data = _entropy_container(4096, 4096, b"")
    assert len(data) < 40
    out = run_isolated(codec.decode, data, memory_mb=256, timeout=60)
    assert out.status == "refused", out


def _short_png(width: int = 64, height: int = 64, rows: int = 4) -> bytes:
    ihdr = _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
    body = b"".join(b"\0" + bytes([200]) * (3 * width) for _ in range(rows))
    return b"\x89PNG\r\n\x1a\n" + ihdr + _chunk(b"IDAT", zlib.compress(body)) + _chunk(b"IEND", b"")


def test_png_with_short_image_data_is_refused(tmp_path):
    """Pillow zero-fills the rows missing from a stream that ends early; facekit refuses it everywhere."""
    from facekit.entropy_models import pack_png, unpack_png
    from facekit.errors import ImageError
    from facekit.imageio import open_image

    data = _short_png()
    with pytest.raises(BitstreamError, match="ends early: 772 of the 12352 bytes"):
        get_codec("png").decode(data)
    with pytest.raises(ImageError, match="ends early"):
        open_image(data)
    (tmp_path / "short.png").write_bytes(data)
    with pytest.raises(ImageError, match="short.png: image data ends early"):
        open_image(tmp_path / "short.png")
    codes = np.random.default_rng(0).integers(0, 16, (3, 8, 8), dtype=np.uint8)
    good = pack_png(codes, 4, effort=0)
    assert np.array_equal(unpack_png(good, 3, 8, 8, 4), codes)
    with pytest.raises(BitstreamError, match="payload PNG: image data ends early"):
        unpack_png(_short_png(8, 8, rows=3), 3, 8, 8, 4)
    long = _short_png(8, 8, rows=9)
    with pytest.raises(BitstreamError, match="more than the 200 bytes"):
        unpack_png(long, 3, 8, 8, 4)


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L", "LA", "P", "1", "I;16"])
def test_complete_pngs_of_every_kind_pass_the_stream_check(mode, tmp_path):
    from PIL import Image

    from facekit.pngstream import check_png_stream

    arr = np.random.default_rng(1).integers(0, 255, (37, 29, 3), dtype=np.uint8)
    Image.fromarray(arr).convert(mode).save(tmp_path / "x.png", "PNG")
    check_png_stream((tmp_path / "x.png").read_bytes())


def test_interlaced_png_sizes_follow_adam7():
    """An Adam7 PNG built by hand: Pillow reads it back, the check passes it and refuses it cut short."""
    from PIL import Image

    from facekit.pngstream import ADAM7, check_png_stream

    arr = np.random.default_rng(2).integers(0, 255, (13, 11, 3), dtype=np.uint8)
    passes = [arr[y0::dy, x0::dx] for x0, y0, dx, dy in ADAM7]
    raw = b"".join(b"\0" + row.tobytes() for p in passes if p.size for row in p)
    ihdr = _chunk(b"IHDR", struct.pack(">IIBBBBB", 11, 13, 8, 2, 0, 0, 1))

    def png(body: bytes) -> bytes:
        return b"\x89PNG\r\n\x1a\n" + ihdr + _chunk(b"IDAT", zlib.compress(body)) + _chunk(b"IEND", b"")

    with Image.open(io.BytesIO(png(raw))) as im:
        assert np.array_equal(np.asarray(im.convert("RGB")), arr)
    check_png_stream(png(raw))
    with pytest.raises(BitstreamError, match="ends early"):
        check_png_stream(png(raw[:-34]))


# --------------------------------------------------------------------------- facekit compress


#: the corpus weights hold the mse variant: the codec paper-mse (PNG payload)
MSE = ("--codec", "paper-mse", "--weights", str(WEIGHTS))


def _cli(*args: str) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(list(args))
    return code, err.getvalue()


def _non_images(tmp: Path) -> dict[str, tuple[Path, str]]:
    """name -> (input path, a word the error message must contain)."""
    files = {
        "text.png": (b"hello, I am not an image\n", "not an image"),
        "empty.jpg": (b"", "not an image"),
        "json.png": ((CORPUS / "corpus.json").read_bytes(), "not an image"),
        "weights.jpg": ((WEIGHTS / "mse-q1.pt").read_bytes(), "not an image"),
        "container.png": ((CORPUS / "face.q1.fkc").read_bytes(), "not an image"),
        "truncated.png": ((CORPUS / "face.png").read_bytes()[:3000], "not an image"),
        "truncated.jpg": ((CORPUS / "face.jpg").read_bytes()[:400], "not an image"),
        "bomb.png": (png_bomb(60000, 60000), "not an image"),
        "tiny.png": (png_bomb(4, 4), "smaller than 8x8"),
        "random.webp": (random.Random(1).randbytes(3000), "not an image"),
        "riff.webp": (b"RIFF\x10\0\0\0WEBPVP8 " + bytes(20), "not an image"),
    }
    out = {}
    for name, (data, word) in files.items():
        p = tmp / name
        p.write_bytes(data)
        out[name] = (p, word)
    return out


def test_compress_refuses_non_images_with_a_clear_message(tmp_path):
    for name, (path, word) in _non_images(tmp_path).items():
        dest = tmp_path / "out" / f"{name}.fkc"
        code, err = _cli("compress", str(path), "-o", str(dest), *MSE, "--rate", "q1", "--quiet")
        assert code == 2, (name, code, err)
        assert err.startswith("facekit: error:") and word in err, (name, err)
        assert not dest.exists()
    # a folder of images with one impostor stops on the impostor, naming it
    folder = tmp_path / "mixed"
    folder.mkdir()
    (folder / "a.png").write_bytes((CORPUS / "face.png").read_bytes())
    (folder / "b.png").write_bytes(b"not a png")
    code, err = _cli("compress", str(folder), "-o", str(tmp_path / "o2"), *MSE, "--quiet")
    assert code == 2 and "b.png" in err
    for args, word in (
        ([str(tmp_path / "missing.png")], "does not exist"),
        ([str(tmp_path / "out")], "holds no"),
    ):
        (tmp_path / "out").mkdir(exist_ok=True)
        code, err = _cli("compress", *args, "-o", str(tmp_path / "o3"), *MSE, "--quiet")
        assert code == 2 and word in err, err


def test_compress_reads_odd_but_valid_images(tmp_path):
    from PIL import Image

    face = face_image()
    odd = {
        "gray.png": Image.fromarray(face[..., 0]),
        "rgba.png": Image.fromarray(np.dstack([face, np.full(face.shape[:2], 128, np.uint8)])),
        "palette.gif": Image.fromarray(face).convert("P"),
        "cmyk.jpg": Image.fromarray(face).convert("CMYK"),
        "i16.png": Image.fromarray(face[..., 0].astype(np.uint16) * 257),
        "lzw.tif": Image.fromarray(face),
    }
    for name, im in odd.items():
        path = tmp_path / name
        im.save(path, **({"compression": "tiff_lzw"} if name.endswith(".tif") else {}))
        dest = tmp_path / f"{name}.fkc"
        code, err = _cli("compress", str(path), "-o", str(dest), *MSE, "--rate", "q1", "--quiet")
        assert code == 0, (name, err)
        assert container.parse(dest.read_bytes()).height == face.shape[0]


def test_decompress_refuses_damaged_containers_naming_the_file(tmp_path):
    good = (CORPUS / "face.q3.fkc").read_bytes()
    cases = {"cut.fkc": good[:50], "flip.fkc": good[:30] + bytes([good[30] ^ 4]) + good[31:], "empty.fkc": b"",
             "png.fkc": (CORPUS / "face.png").read_bytes()}
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        code, err = _cli("decompress", str(tmp_path / name), "-o", str(tmp_path / f"{name}.png"),
                         "--weights", str(WEIGHTS), "--quiet")
        assert code == 2 and name in err and "facekit: error:" in err, (name, err)
        assert not (tmp_path / f"{name}.png").exists()


def test_compress_of_a_bomb_image_ends_in_a_clear_error(tmp_path):
    src = tmp_path / "bomb.png"
    src.write_bytes(png_bomb(8000, 8000))

    def run() -> tuple[int, str]:
        return _cli("compress", str(src), "-o", str(tmp_path / "b.fkc"), *MSE, "--rate", "q1", "--quiet")

    out = run_isolated(run, memory_mb=512, timeout=60)
    assert out.status == "ok" and out.value.startswith("(2, 'facekit: error:"), out


def test_open_image_guards():
    """facekit.imageio.open_image: the pixel cap is checked before decoding, every failure is ours."""
    face = open_image((CORPUS / "face.png").read_bytes())
    assert face.shape == (80, 64, 3)
    with pytest.raises(ImageError, match="exceeds the limit"):
        open_image(png_bomb(9000, 9000))
    with pytest.raises(ImageError, match="exceeds the limit"):
        open_image((CORPUS / "face.png").read_bytes(), max_pixels=100)
    out = run_isolated(open_image, png_bomb(60000, 60000), memory_mb=64, timeout=30)
    assert out.status == "refused" and out.error == "ImageError", out
    for bad in (b"", b"junk", (CORPUS / "face.png").read_bytes()[:2000], (CORPUS / "face.avif").read_bytes()):
        with pytest.raises(ImageError):
            open_image(bad)
    with pytest.raises(CodecError):
        open_image(b"junk", error=CodecError)


def test_range_coded_roi_stream_with_flipped_bits_is_refused_or_decodes():
    """Every single-bit flip of a face-region payload (geometry, fills, codes) decodes or raises a FacekitError."""
    codec = entropy_codec()
    if codec is None:
        pytest.skip("no -entropy variant in this facekit")
    from facekit.codecs.roi import FaceRegion, FaceRegionFinder

    class Fixed(FaceRegionFinder):
        def find(self, image: np.ndarray) -> FaceRegion:
            return FaceRegion(np.array([[0.3, -0.05, 20.0], [0.05, 0.3, 18.0]]), "hog")

    face = face_image()
    roi = LearnedCodec("mse", folder=WEIGHTS, entropy=True, roi=True)
    roi.roi = Fixed(4.0)
    good = container.parse(roi.encode(face, "q1"))
    assert good.payload[0] == payload_layout.MASKED
    fp = codec.fingerprint("q1")
    escaped = []
    for i in range(len(good.payload)):
        for bit in (0, 3, 7):
            bad = bytearray(good.payload)
            bad[i] ^= 1 << bit
            try:
                assert codec.decode(container.pack(good.model, fp, good.height, good.width, bytes(bad))).shape == face.shape
            except FacekitError:
                pass
            except Exception as e:  # noqa: BLE001 - collected and reported below
                escaped.append(f"byte {i} bit {bit}: {type(e).__name__}: {e}")
    assert not escaped, f"{len(escaped)} flips escaped, e.g. {escaped[:3]}"
