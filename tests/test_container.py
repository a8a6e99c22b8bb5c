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
    assert (c.model, c.height, c.width, c.payload, c.version) == ("mse-q3", 250, 250, PAYLOAD, 2)
    assert c.model_hash == bytes.fromhex(FP)[: container.HASH_BYTES]
    assert len(data) == len(PAYLOAD) + c.overhead == len(PAYLOAD) + 16
    assert data[:4] == b"FK\x02\x02"  # magic, version, the id of mse-q3
    container.check_model(c, "mse-q3", FP)


@pytest.mark.parametrize(
    ("name", "ident"),
    [("mse-q1", 0), ("mse-q3", 2), ("joint-q5", 36), ("jointrate-q2-ctx", 81), ("jointrate-q16-ctx", 95),
     ("jointface-q3", 98), ("jointface-q4-ctx", 115)],
)
def test_model_ids(name, ident):
    assert container.model_id(name) == ident
    assert container.model_from_id(ident) == name
    c = container.parse(make(model=name))
    assert (c.model, c.overhead) == (name, 16)


@pytest.mark.parametrize("name", ["custom-q3", "mse-q17", "mse-q0", "mse-q03", "mse-hi", "joint-q2-xyz"])
def test_other_names_are_spelled_out(name):
    assert container.model_id(name) is None
    data = make(model=name)
    assert data[3] == container.NAMED
    c = container.parse(data)
    assert c.model == name
    assert c.overhead == 16 + 1 + len(name) == len(data) - len(PAYLOAD)


def test_unknown_model_id():
    data = bytearray(make())
    data[3] = len(container.ID_VARIANTS) << 5  # a variant number no facekit has (yet)
    with pytest.raises(BitstreamError, match=f"unknown model id {len(container.ID_VARIANTS) * 32}"):
        container.parse(recrc(bytes(data)))


def test_reads_format_1():
    data = container.pack_format1("joint-q2-ctx", FP, 250, 240, PAYLOAD)
    c = container.parse(data)
    assert (c.model, c.height, c.width, c.payload, c.version) == ("joint-q2-ctx", 250, 240, PAYLOAD, 1)
    assert c.overhead == 24 + len("joint-q2-ctx") == len(data) - len(PAYLOAD)
    container.check_model(c, "joint-q2-ctx", FP)
    with pytest.raises(BitstreamError, match="other weights"):
        container.check_model(c, "joint-q2-ctx", "cd" * 32)
    for n in range(len(data)):
        with pytest.raises(BitstreamError):
            container.parse(data[:n])
    with pytest.raises(BitstreamError, match="trailing"):
        container.parse(data + b"\x00")
    bad = bytearray(data)
    bad[4] = 7
    with pytest.raises(BitstreamError, match="version 7"):
        container.parse(recrc(bytes(bad)))


def test_format_2_is_smaller_by_the_name_and_length():
    for name in ("mse-q3", "jointrate-q2-ctx"):
        assert len(container.pack_format1(name, FP, 250, 250, PAYLOAD)) - len(make(model=name)) == 8 + len(name)


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
    bad[20] ^= 0x10
    with pytest.raises(BitstreamError, match="CRC32 mismatch"):
        container.parse(bytes(bad))


def test_wrong_magic():
    with pytest.raises(BitstreamError, match="magic"):
        container.parse(b"\x89PNG" + make()[4:])
    with pytest.raises(BitstreamError, match="magic"):
        container.parse(b"")


def test_unknown_version():
    data = bytearray(make())
    data[2] = 9
    with pytest.raises(BitstreamError, match="version 9"):
        container.parse(recrc(bytes(data)))


def test_trailing_bytes():
    with pytest.raises(BitstreamError, match="CRC32 mismatch.*trailing"):
        container.parse(make() + b"\x00")


def test_absurd_dimensions_refused():
    data = bytearray(make())
    off = 4 + container.HASH_BYTES
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


def test_format_1_files_written_before_format_2_still_decode_and_repack_byte_for_byte():
    from pathlib import Path

    corpus = Path(__file__).parent / "corpus"
    for name in ("face.q1.format1.fkc",):
        data = (corpus / name).read_bytes()
        assert data[:4] == container.MAGIC_V1
        c = container.parse(data)
        assert c.version == 1 and len(c.model_hash) == container.HASH_BYTES_V1
        assert container.pack_format1(c.model, c.model_hash, c.height, c.width, c.payload) == data
        now = (corpus / "face.q1.fkc").read_bytes()  # the same payload, written by this facekit
        assert container.parse(now).payload == c.payload and len(now) == len(data) - 8 - len(c.model)


def test_hyperprior_model_string_round_trip_and_damage():
    import numpy as np

    words = np.array([0x12345678, 0x9ABC, 0, 0], dtype=np.uint32)
    data = container.pack_hyperprior_stream(40000, words, 250, 250)
    assert len(data) == 4 + 2 + 6  # the trailing zero bytes are left out
    t16, back = container.parse_hyperprior_stream(data, 250, 250)
    assert t16 == 40000 and list(back[:4]) == list(words) and not back[4:].any()
    flipped = data[:-1] + bytes([data[-1] ^ 1])
    for bad, shape in ((flipped, (250, 250)), (data[:-1], (250, 250)), (data, (250, 251)), (data[:5], (250, 250))):
        with pytest.raises(BitstreamError):
            container.parse_hyperprior_stream(bad, *shape)
