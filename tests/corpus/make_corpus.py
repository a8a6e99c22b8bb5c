"""Build the fuzzing corpus: real files of every format facekit decodes, from one small face.

Run ``python tests/corpus/make_corpus.py`` (single thread, a few seconds) to rebuild it;
the files are committed so that tests and ``benchmarks/fuzz_report.py`` start from the
same bytes everywhere. What it writes here:

* ``face.png``: the synthetic 80x64 face-like image every other file encodes (lossless);
* ``face.tif`` (LZW), ``face.gif``: more formats ``facekit compress`` reads;
* ``face.jpg``, ``face.j2k`` (raw codestream, glymur), ``face-pillow.j2k`` (Pillow),
  ``face.webp``, ``face.avif`` (speed 6): the classical codecs at mid rates;
* ``face.heic`` (HEVC-intra), ``face.jxl`` (JPEG XL), ``face.webp.rz`` (WebP at half size,
  resize-then-code): issue 29's codecs, where pillow-heif and pillow-jxl-plugin are installed;
* ``weights/``: a weights folder like :mod:`facekit.weights` (manifest + ``.pt``) with
  *tiny* random models for the ``mse`` variant at rate points ``q1`` and ``q3`` (8
  channels a layer; the real ones are 100x larger and not needed to fuzz the format);
* ``face.q1.fkc``, ``face.q3.fkc``: containers the learned codec made with those weights;
* ``face.q1.format1.fkc``: the payload of ``face.q1.fkc`` in a format-1 container (what
  facekit wrote before container format 2, still read);
* ``face.q1-ctx.fkc``: the same face through the ``-entropy`` variant (a context prior
  fitted on the codes of four synthetic faces, range coding), when this facekit has it;
* ``face.q1.decoded.png``, ``face.q3.decoded.png``: what they decode to on the CPU that
  built the corpus (the reference for "decodes the same everywhere, within 1/255");
* ``corpus.json``: every file with its sha256, size and what made it.

The total stays well under 300 KB.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
HEIGHT, WIDTH = 80, 64
RATES = ("q1", "q3")


def face_image(height: int = HEIGHT, width: int = WIDTH, seed: int = 0) -> np.ndarray:
    """A small synthetic face: hair, skin ellipse, eyes, brows, nose shadow, mouth, noise."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    cy, cx = height * 0.52, width * 0.5
    img = np.empty((height, width, 3))
    img[:] = (60 + 80 * y / height)[..., None] * np.array([0.6, 0.7, 1.0])  # background
    face = ((x - cx) / (width * 0.34)) ** 2 + ((y - cy) / (height * 0.38)) ** 2 <= 1
    shade = 1.0 - 0.25 * ((x - cx) / (width * 0.34)) ** 2
    img[face] = (np.array([224, 172, 140]) * shade[face][:, None])
    hair = (((x - cx) / (width * 0.38)) ** 2 + ((y - cy + height * 0.08) / (height * 0.42)) ** 2 <= 1) & (
        y < cy - height * 0.22
    )
    img[hair] = [70, 45, 30]
    for ex in (cx - width * 0.14, cx + width * 0.14):
        eye = ((x - ex) / (width * 0.07)) ** 2 + ((y - (cy - height * 0.08)) / (height * 0.03)) ** 2 <= 1
        img[eye] = [245, 245, 245]
        iris = (x - ex) ** 2 + (y - (cy - height * 0.08)) ** 2 <= (width * 0.025) ** 2
        img[iris] = [60, 40, 30]
        brow = (np.abs(x - ex) < width * 0.08) & (np.abs(y - (cy - height * 0.15)) < height * 0.012)
        img[brow] = [60, 40, 30]
    nose = (np.abs(x - cx - width * 0.02) < width * 0.03) & (y > cy - height * 0.04) & (y < cy + height * 0.08)
    img[nose] *= 0.85
    mouth = (((x - cx) / (width * 0.12)) ** 2 + ((y - (cy + height * 0.18)) / (height * 0.025)) ** 2) <= 1
    img[mouth] = [170, 70, 70]
    img += np.random.default_rng(seed).normal(0, 3, img.shape)
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


def tiny_model(rate: str, seed: int):
    """A random model with the real rate point's code geometry and 8 channels a layer."""
    import torch

    from facekit.models import RATE_POINTS, build_model

    torch.manual_seed(seed)
    k = RATE_POINTS[rate].stages
    return build_model(rate, enc_widths=(8,) * k, dec_widths=(8,) * k, dec_blocks=1)


def build(out: Path = HERE) -> dict:
    import io

    import torch
    from PIL import Image

    from facekit.codecs import get_codec
    from facekit.codecs.learned import LearnedCodec
    from facekit.zoo import install_weights

    torch.set_num_threads(1)
    out.mkdir(parents=True, exist_ok=True)
    image = face_image()
    files: dict[str, dict] = {}

    def put(name: str, data: bytes, made_by: str) -> None:
        (out / name).write_bytes(data)
        files[name] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data), "made_by": made_by}

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, "PNG", optimize=True)
    put("face.png", buf.getvalue(), "make_corpus.face_image(), PNG via Pillow")
    for name, kw in (("face.tif", {"compression": "tiff_lzw"}), ("face.gif", {})):
        buf = io.BytesIO()
        Image.fromarray(image).save(buf, name.rsplit(".", 1)[1].replace("tif", "TIFF").upper(), **kw)
        put(name, buf.getvalue(), f"Pillow {name.rsplit('.', 1)[1].upper()} {kw} (inputs of facekit compress)")
    classic = {
        "face.jpg": ("jpeg", {}, 50),
        "face.j2k": ("jpeg2000", {}, 1.0),
        "face-pillow.j2k": ("jpeg2000", {"backend": "pillow"}, 1.0),
        "face.webp": ("webp", {}, 50),
        "face.avif": ("avif-speed6", {}, 50),
    }
    # issue 29's decoders, where their packages are installed (targets.MODERN_FILES)
    modern = {
        "face.heic": ("hevc", {}, 50),
        "face.jxl": ("jpegxl", {}, 50),
        "face.webp.rz": ("webp-resized", {}, "0.5:50"),
    }
    from facekit.errors import CodecError

    for name, (codec_name, kw, setting) in modern.items():
        try:
            codec = get_codec(codec_name, **kw)
        except CodecError:
            continue
        classic[name] = (codec_name, kw, setting)
    for name, (codec_name, kw, setting) in classic.items():
        codec = get_codec(codec_name, **kw)
        put(name, codec.encode(image, setting), f"get_codec({codec_name!r}, **{kw}).encode(face, {setting!r})")

    weights = out / "weights"
    for old in weights.glob("*"):
        old.unlink()
    for i, rate in enumerate(RATES):
        install_weights(tiny_model(rate, seed=i), "mse", folder=weights, info={"note": "tiny random test model"})
    entropy = _install_priors(weights)
    codec = LearnedCodec("mse", folder=weights)
    for rate in RATES:
        data = codec.encode(image, rate)
        put(f"face.{rate}.fkc", data, f"LearnedCodec('mse', folder=weights).encode(face, {rate!r})")
        dec = codec.decode(data)
        buf = io.BytesIO()
        Image.fromarray(dec).save(buf, "PNG", optimize=True)
        put(f"face.{rate}.decoded.png", buf.getvalue(), f"CPU decode of face.{rate}.fkc (reference)")
    from facekit import container

    first = container.parse((out / f"face.{RATES[0]}.fkc").read_bytes())
    put(f"face.{RATES[0]}.format1.fkc",
        container.pack_format1(first.model, codec.fingerprint(RATES[0]), first.height, first.width, first.payload),
        f"face.{RATES[0]}.fkc's payload in a format-1 container (container.pack_format1), as facekit wrote them before format 2")
    if entropy:
        ecodec = LearnedCodec("mse", folder=weights, entropy=True)
        put("face.q1-ctx.fkc", ecodec.encode(image, "q1"),
            "LearnedCodec('mse', folder=weights, entropy=True).encode(face, 'q1')")
    for p in sorted(q for q in weights.iterdir() if not q.name.startswith(".")):
        files[f"weights/{p.name}"] = {
            "sha256": hashlib.sha256(p.read_bytes()).hexdigest(),
            "bytes": p.stat().st_size,
            "made_by": "install_weights(tiny_model(rate), 'mse')",
        }
    meta = {
        "image": {"height": HEIGHT, "width": WIDTH, "generator": "make_corpus.face_image(seed=0)"},
        "torch": torch.__version__,
        "files": files,
    }
    (out / "corpus.json").write_text(json.dumps(meta, indent=1) + "\n")
    return meta


def _install_priors(weights: Path) -> bool:
    """Fit and install a context prior per rate point (the ``-entropy`` variant), if available."""
    try:
        from facekit.codecs.learned import LearnedCodec
        from facekit.entropy_models import ContextPrior
        from facekit.zoo import install_prior
    except ImportError:
        return False
    import torch

    codec = LearnedCodec("mse", folder=weights)
    for rate in RATES[:1]:  # q1 only, with coarse contexts: the tables stay a few KB
        model = codec.model(rate)
        xs = [torch.from_numpy(face_image(seed=s)).permute(2, 0, 1)[None].float() / 255 for s in range(4)]
        codes = [model.codes(x)[0].numpy() for x in xs]
        install_prior(ContextPrior.fit(codes, model.rate_point.bits, bins=2), "mse", rate, folder=weights,
                      info={"note": "fitted on 4 synthetic faces"})
    return True


if __name__ == "__main__":
    meta = build(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE)
    total = sum(f["bytes"] for f in meta["files"].values())
    for name, f in meta["files"].items():
        print(f"{f['bytes']:8d}  {name}")
    print(f"{total:8d}  total")
