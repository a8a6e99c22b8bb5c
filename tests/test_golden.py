"""Bitstream golden tests: every payload kind of the shipped models, byte for byte.

For two LFW faces, each learned codec below must write exactly the bytes recorded in
``tests/golden/bitstreams.json`` (sha256 and length), and decode them to exactly the
recorded pixels. The kinds covered: the paper's PNG payload (with and without a face
region), the context prior's range-coded payload (count tables and integer networks), the
PNG-inside-entropy fallback, the range-coded face region, the face region with its
q1 background, and the second generation's FKH1 stream (hyperprior, checkerboard, integer
networks) at three rates. A codec name ``facekit-hyperprior@<fingerprint>`` stands for weights
that ``facekit-hyperprior`` shipped before (kept in the store as ``hyperprior@<fingerprint>``):
files made by them must still decode, through today's codec, to the same pixels. Only hashes are
stored, never LFW pixels.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

GOLDEN = json.loads((Path(__file__).parent / "golden" / "bitstreams.json").read_text())
CASES = sorted({tuple(key.split("/", 2)[:2]) for key in GOLDEN})


@pytest.mark.lfw
@pytest.mark.parametrize("codec_name,rate", CASES)
def test_bitstreams_and_decodes_are_unchanged(lfw, codec_name, rate):
    from facekit.codecs import get_codec
    from facekit.codecs.hyperprior import HyperpriorCodec
    from facekit.codecs.names import HYPERPRIOR_WEIGHTS
    from facekit.zoo import retired_name

    current, _, retired = codec_name.partition("@")
    codec = get_codec(current)
    encoder = HyperpriorCodec.from_store(name=retired_name(HYPERPRIOR_WEIGHTS, retired)) if retired else codec
    for key, want in GOLDEN.items():
        name, r, image = key.split("/", 2)
        if (name, r) != (codec_name, rate):
            continue
        data = encoder.encode(lfw.load(image), rate)
        assert (len(data), hashlib.sha256(data).hexdigest()) == (want["bytes"], want["sha256"]), key
        decoded = codec.decode(data)
        assert hashlib.sha256(decoded.tobytes()).hexdigest() == want["decoded_sha256"], key
