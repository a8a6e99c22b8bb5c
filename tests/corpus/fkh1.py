"""The second generation's FKH1 files for the fuzz harness, made at run time by a tiny seeded model.

No trained weights are needed: :func:`tiny_hyperprior` is a small randomly initialised
:class:`~facekit.models.hyperprior.FaceHyperprior` (``torch.manual_seed``, weights spread out
so that symbols, means and scale indices vary), installed into a temporary weights folder
under the store's name ``hyperprior`` (:func:`install_tiny`). Its files of the corpus face
(:func:`face_files`) are the seeds of two targets (:func:`hyperprior_targets`, which also
has every target splice from them as well as from the corpus files):

* ``hyperprior.decode``: the mutated bytes as they are (the magic, header and CRC32 checks);
* ``hyperprior-resealed.decode``: the same after :func:`reseal_fkh1` repairs the model
  string's CRC32, so that a mutation reaches the range decoder and the networks.

Import it with the corpus folder on ``sys.path`` (``from fkh1 import hyperprior_targets``).
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable
from pathlib import Path

from make_corpus import face_image
from targets import Target, UnexpectedResult, check_image_result, corpus_files

from facekit import container
from facekit.errors import BitstreamError

#: the pixels a fuzzed file may declare (a decode of garbage at the format's 16 MP takes seconds)
FUZZ_PIXELS = 512 * 512
#: the rates of the seed files: the lowest preset, a point between presets, the highest
SEED_RATES = ("q1", 0.6, "q5")


def tiny_arch():  # type: ignore[no-untyped-def]
    """Widths small enough that building, coding and decoding take milliseconds."""
    from facekit.models.hyperprior import HyperpriorArch

    return HyperpriorArch(latent=8, enc_widths=(8, 8, 8), dec_widths=(8, 8, 8), hyper=8, hyper_latent=4,
                          context=8, params_hidden=8, gain_levels=3)


def tiny_hyperprior(seed: int = 0, arch=None):  # type: ignore[no-untyped-def]
    """A model (tiny unless ``arch`` is given), the same for the same ``seed``, with weights spread
    out so that symbols, means and scale indices vary (bpp grows with ``t``)."""
    import torch

    from facekit.models.hyperprior import FaceHyperprior

    torch.manual_seed(seed)
    m = FaceHyperprior(arch or tiny_arch())
    with torch.no_grad():
        m.log_gain.add_(2.0)
        m.log_inv_gain.sub_(2.0)
        for layer in (*m.h_s, m.ctx, *m.ep):
            layer.weight.mul_(3.0)
    return m.eval()


def install_tiny(folder: Path, seed: int = 0) -> Path:
    """Install :func:`tiny_hyperprior` as the store's ``hyperprior`` entry of ``folder``; returns the folder."""
    from facekit.codecs.names import HYPERPRIOR_WEIGHTS
    from facekit.zoo import install_hyperprior

    install_hyperprior(tiny_hyperprior(seed), HYPERPRIOR_WEIGHTS, folder=folder, info={"made_by": "tests/corpus/fkh1.py"})
    return Path(folder)


def reseal_fkh1(data: bytes) -> bytes:
    """An FKH1 file with its model string's CRC32 recomputed (over the declared size and the string); other bytes as they are."""
    head, at = container.HYPERPRIOR_HEADER, len(container.HYPERPRIOR_MAGIC)
    if not data.startswith(container.HYPERPRIOR_MAGIC) or len(data) < head + 4:
        return data
    h, w = struct.unpack("<HH", data[at : at + 4])
    body = data[head + 4 :]
    return data[:head] + struct.pack("<I", zlib.crc32(struct.pack("<II", h, w) + body)) + body


def face_files(codec) -> list[bytes]:  # type: ignore[no-untyped-def]
    """The corpus face coded at :data:`SEED_RATES`."""
    return [codec.encode(face_image(), r) for r in SEED_RATES]


def _run(codec, reseal: bool) -> Callable[[bytes], object]:  # type: ignore[no-untyped-def]
    def run(data: bytes) -> object:
        data = reseal_fkh1(data) if reseal else data
        out = check_image_result(codec.decode(data))
        f = container.parse_hyperprior(data)
        if out.shape != (f.height, f.width, 3):
            raise UnexpectedResult(f"decoded {out.shape}, the file declares {f.height}x{f.width}")
        return out

    return run


def hyperprior_targets(workdir: Path, want: Callable[[str], bool] = lambda name: True,
                       into: dict[str, Target] | None = None) -> dict[str, Target]:
    """``hyperprior.decode`` and ``hyperprior-resealed.decode`` (those ``want`` asks for) on a tiny model in
    ``workdir``, added to ``into`` (the other targets, e.g. ``build_targets``'s) when given; returns that dict.

    Every target in it then splices from the corpus files and the FKH1 seed files. Example:
    ``hyperprior_targets(work, into=build_targets(workdir=work))``.
    """
    from facekit.codecs.hyperprior import HyperpriorCodec

    targets = {} if into is None else into
    names = [n for n in ("hyperprior.decode", "hyperprior-resealed.decode") if want(n)]
    if not names:
        return targets
    folder = install_tiny(Path(workdir) / "hyperprior-weights")
    codec = HyperpriorCodec.from_store(folder=folder, max_pixels=FUZZ_PIXELS)
    seeds = face_files(codec)
    for n in names:
        targets[n] = Target(n, _run(codec, n.startswith("hyperprior-resealed")), seeds, BitstreamError,
                            notes="FKH1 files of a tiny seeded model")
    every = [*corpus_files().values(), *seeds]
    for t in targets.values():
        t.others = every
    return targets
