"""The learned codec's container: layout, and strict refusal of damaged or foreign bytes."""

from __future__ import annotations

import struct
import zlib

import pytest

from facekit import container
from facekit.errors import BitstreamError

FP = "ab" * 32
PAYLOAD = b"\x89PNG\r\n\x1a\n" + bytes(range(40))


def make(**kw) -> bytes:
    args = {"model": "mse-q3", "fingerprint": FP, "height": 250, "width": 250, "payload": PAYLOAD}
    args.update(kw)
    return container.pack(**args)


def recrc(body: bytes) -> bytes:
    """Re-seal edited bytes with a valid CRC (to reach the checks behind it)."""
    body = body[:-4]
    return body + struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF)


def test_roundtrip_and_overhead():
    data = make()
    c = container.parse(data)
    assert (c.model, c.height, c.width, c.payload, c.version) == ("mse-q3", 250, 250, PAYLOAD, 1)
    assert c.model_hash == bytes.fromhex(FP)[: container.HASH_BYTES]
    assert len(data) == len(PAYLOAD) + c.overhead
    assert c.overhead == 24 + len("mse-q3")
    container.check_model(c, "mse-q3", FP)


@pytest.mark.parametrize("cut", [0, 1, 3, 5, 9, 20, 30, -5, -1])
def test_truncated(cut):
    data = make()
    with pytest.raises(BitstreamError, match="truncated|magic|CRC"):
        container.parse(data[:cut])


def test_every_truncation_is_refused():
    data = make()
    for n in range(len(data)):
        with pytest.raises(BitstreamError):
            container.parse(data[:n])


def test_every_bit_flip_is_refused():
    data = make()
    for i in range(len(data)):
        for bit in (0, 7):
            bad = bytearray(data)
            bad[i] ^= 1 << bit
            with pytest.raises(BitstreamError):
                container.parse(bytes(bad))


def test_bit_flip_in_payload_names_crc():
    bad = bytearray(make())
    bad[40] ^= 0x10
    with pytest.raises(BitstreamError, match="CRC32 mismatch"):
        container.parse(bytes(bad))


def test_wrong_magic():
    with pytest.raises(BitstreamError, match="magic"):
        container.parse(b"\x89PNG" + make()[4:])
    with pytest.raises(BitstreamError, match="magic"):
        container.parse(b"")


def test_unknown_version():
    data = bytearray(make())
    data[4] = 9
    with pytest.raises(BitstreamError, match="version 9"):
        container.parse(recrc(bytes(data)))


def test_trailing_bytes():
    with pytest.raises(BitstreamError, match="trailing"):
        container.parse(make() + b"\x00")


def test_absurd_dimensions_refused():
    data = bytearray(make())
    off = 6 + len("mse-q3") + container.HASH_BYTES
    data[off : off + 4] = struct.pack(">HH", 60000, 60000)
    with pytest.raises(BitstreamError, match="absurd image size"):
        container.parse(recrc(bytes(data)))
    data[off : off + 4] = struct.pack(">HH", 0, 10)
    with pytest.raises(BitstreamError, match="absurd image size"):
        container.parse(recrc(bytes(data)))
    with pytest.raises(ValueError):
        make(height=9000)


def test_wrong_model_and_weights():
    c = container.parse(make())
    with pytest.raises(BitstreamError, match="made by model 'mse-q3'"):
        container.check_model(c, "mse-q4", FP)
    with pytest.raises(BitstreamError, match="other weights"):
        container.check_model(c, "mse-q3", "cd" * 32)


def test_not_bytes():
    with pytest.raises(BitstreamError):
        container.parse("FKC")  # type: ignore[arg-type]
