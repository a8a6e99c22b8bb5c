"""A reader for dlib's binary serialization of DNNs (``*.dat`` from ``dlib::serialize``).

No dlib is needed: this module parses the bytes itself, following dlib's
``serialize.h`` (integers, booleans, strings), ``float_details.h`` (portable floats),
``dnn/tensor.h`` (tensors and alias tensors), ``dnn/core.h`` (``add_layer``,
``add_tag_layer``, ``add_skip_layer``, ``add_loss_layer``) and the layers'
``serialize()`` in ``dnn/layers.h``, ``dnn/input.h`` and ``dnn/loss.h``.

The format, as far as this reader needs it:

* **integers** are variable length: a control byte whose low 4 bits give the number
  of bytes that follow and whose bit 7 marks a negative value, then the magnitude,
  little endian (``01 02`` is 2, ``81 1c`` is -28, ``02 80 12`` is 4736).
* **bool** is one byte, the character ``'1'`` or ``'0'``.
* **string**: its length as an integer, then the raw bytes.
* **float/double** (``float_details``): an integer mantissa then an integer exponent;
  the value is ``mantissa * 2**exponent``; exponents 32000/32001/32002 encode
  +inf/-inf/nan.
* **tensor** (version 2): version, ``num_samples, k, nr, nc``, then the values as raw
  little-endian IEEE float32 in ``n, k, r, c`` order.
* **alias_tensor** (version 1): version and the four dimensions, no data.
* A network is serialized top-down but every ``add_layer`` writes its sub-network
  *before* its own layer: ``[loss version][loss details][add_layer version]...
  [input add_layer version 3][input layer][bottom layer details]...``. Tag and skip
  layers write only a version (1) and their sub-network. So the file is a run of
  version numbers (2 for a computational layer, 1 for a tag/skip, 3 for the layer on
  the input), then the layers' details bottom-up, each followed by the ``add_layer``
  bookkeeping (three bools and the cached tensors).

:func:`read_dnn` returns that structure as plain numpy data; converting it to a PyTorch
module is :mod:`facekit.recognition.dlib_resnet`'s job.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import WeightsError

__all__ = ["DatReader", "DlibFormatError", "DlibLayer", "DlibNet", "read_dnn"]

# float_details' codes for non-finite values
_IS_INF, _IS_NINF, _IS_NAN = 32000, 32001, 32002


class DlibFormatError(WeightsError):
    """A ``.dat`` file is truncated, damaged, or holds something this reader does not know."""


@dataclass
class DlibLayer:
    """One computational layer: its dlib type name, scalar fields and parameter tensors."""

    kind: str
    """dlib's version tag without the version suffix: ``con``, ``affine``, ``relu``, ``fc`` ..."""
    version: str
    """the full version string found in the file, e.g. ``con_4``"""
    fields: dict[str, Any] = field(default_factory=dict)
    tensors: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass
class DlibNet:
    """A parsed dlib network.

    ``layers`` are the computational layers bottom-up (the one on the input first);
    ``structure`` is the top-down run of ``add_layer`` markers as written in the file:
    ``"layer"`` for a computational layer, ``"tag"`` for a tag or skip layer, ``"input"``
    for the layer that sits on the input.
    """

    loss: DlibLayer
    input: DlibLayer
    layers: list[DlibLayer]
    structure: list[str]


class DatReader:
    """Reads dlib's primitive serialized types from bytes, with offsets in its errors."""

    def __init__(self, data: bytes, source: str = "<bytes>") -> None:
        self.data = memoryview(data)
        self.pos = 0
        self.source = source

    # -- low level -----------------------------------------------------------------
    def _fail(self, what: str) -> DlibFormatError:
        return DlibFormatError(f"{self.source}: {what} at byte {self.pos} of {len(self.data)}")

    def _take(self, n: int, what: str) -> memoryview:
        if n < 0 or self.pos + n > len(self.data):
            raise self._fail(
                f"file ends while reading {what} (needs {n} more bytes; truncated or not a dlib .dat)"
            )
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    @property
    def remaining(self) -> int:
        return len(self.data) - self.pos

    def read_int(self, what: str = "an integer") -> int:
        """dlib's variable-length integer (``pack_int``/``unpack_int``)."""
        control = self._take(1, what)[0]
        size = control & 0x0F
        if size > 8 or control & 0x70:
            self.pos -= 1
            raise self._fail(f"bad integer control byte 0x{control:02x} while reading {what}")
        value = int.from_bytes(self._take(size, what), "little")
        return -value if control & 0x80 else value

    def read_bool(self, what: str = "a bool") -> bool:
        ch = self._take(1, what)[0]
        if ch == ord("1"):
            return True
        if ch == ord("0"):
            return False
        self.pos -= 1
        raise self._fail(f"bad bool byte 0x{ch:02x} while reading {what}")

    def read_string(self, what: str = "a string", max_len: int = 1 << 16) -> str:
        n = self.read_int(f"the length of {what}")
        if not 0 <= n <= max_len:
            raise self._fail(f"implausible length {n} of {what}")
        raw = bytes(self._take(n, what))
        try:
            return raw.decode("ascii")
        except UnicodeDecodeError as e:
            raise self._fail(f"{what} is not ASCII: {raw[:32]!r}") from e

    def read_float(self, what: str = "a float") -> float:
        """dlib's portable ``float_details`` encoding (used for float and double)."""
        mantissa = self.read_int(f"the mantissa of {what}")
        exponent = self.read_int(f"the exponent of {what}")
        if exponent == _IS_INF:
            return math.inf
        if exponent == _IS_NINF:
            return -math.inf
        if exponent == _IS_NAN:
            return math.nan
        return math.ldexp(float(mantissa), exponent)

    def read_tensor(self, what: str = "a tensor") -> np.ndarray:
        """A ``resizable_tensor`` (version 2): dims then raw little-endian float32."""
        version = self.read_int(f"the version of {what}")
        if version != 2:
            raise self._fail(f"unsupported tensor version {version} in {what}")
        dims = tuple(self.read_int(f"a dimension of {what}") for _ in range(4))
        if any(d < 0 for d in dims):
            raise self._fail(f"negative dimension {dims} in {what}")
        count = int(np.prod(dims, dtype=np.int64))
        raw = self._take(4 * count, f"the {count} values of {what} {dims}")
        return np.frombuffer(raw, dtype="<f4").astype(np.float32).reshape(dims)

    def read_alias_tensor(self, what: str = "an alias tensor") -> tuple[int, int, int, int]:
        version = self.read_int(f"the version of {what}")
        if version != 1:
            raise self._fail(f"unsupported alias_tensor version {version} in {what}")
        return tuple(self.read_int(f"a dimension of {what}") for _ in range(4))  # type: ignore[return-value]

    # -- layers ----------------------------------------------------------------------
    def read_layer_details(self) -> DlibLayer:
        """One layer's ``serialize()`` output: a version string and its fields."""
        start = self.pos
        version = self.read_string("a layer's version string", max_len=256)
        reader = _LAYER_READERS.get(version)
        if reader is None:
            self.pos = start
            raise self._fail(f"unknown or unsupported dlib layer {version!r}")
        kind, fields, tensors = reader(self)
        return DlibLayer(kind=kind, version=version, fields=fields, tensors=tensors)


# -- per-layer field readers ---------------------------------------------------------------


def _read_con(r: DatReader) -> tuple[str, dict, dict]:
    params = r.read_tensor("con_ params")
    f: dict[str, Any] = {}
    for name in ("num_filters", "nr", "nc", "stride_y", "stride_x", "padding_y", "padding_x"):
        f[name] = r.read_int(f"con_ {name}")
    filters = r.read_alias_tensor("con_ filters")
    biases = r.read_alias_tensor("con_ biases")
    for name in (
        "learning_rate_multiplier",
        "weight_decay_multiplier",
        "bias_learning_rate_multiplier",
        "bias_weight_decay_multiplier",
    ):
        f[name] = r.read_float(f"con_ {name}")
    flat = params.reshape(-1)
    nf, nb = int(np.prod(filters)), int(np.prod(biases))
    if nf + nb != flat.size:
        raise r._fail(
            f"con_ params hold {flat.size} values, filters {filters} + biases {biases} need {nf + nb}"
        )
    return "con", f, {"weight": flat[:nf].reshape(filters), "bias": flat[nf : nf + nb].copy()}


def _read_affine(r: DatReader) -> tuple[str, dict, dict]:
    params = r.read_tensor("affine_ params")
    gamma = r.read_alias_tensor("affine_ gamma")
    beta = r.read_alias_tensor("affine_ beta")
    mode = r.read_int("affine_ mode")
    flat = params.reshape(-1)
    ng, nb = int(np.prod(gamma)), int(np.prod(beta))
    if ng + nb != flat.size:
        raise r._fail(
            f"affine_ params hold {flat.size} values, gamma {gamma} + beta {beta} need {ng + nb}"
        )
    # mode 0 = CONV_MODE (one scale per channel), 1 = FC_MODE (one per value)
    return (
        "affine",
        {"mode": mode},
        {"gamma": flat[:ng].reshape(gamma), "beta": flat[ng:].reshape(beta)},
    )


def _read_pool(kind: str) -> Any:
    def read(r: DatReader) -> tuple[str, dict, dict]:
        f = {
            n: r.read_int(f"{kind}_ {n}")
            for n in ("nr", "nc", "stride_y", "stride_x", "padding_y", "padding_x")
        }
        return kind, f, {}

    return read


def _read_fc(r: DatReader) -> tuple[str, dict, dict]:
    f: dict[str, Any] = {
        "num_outputs": r.read_int("fc_ num_outputs"),
        "num_inputs": r.read_int("fc_ num_inputs"),
    }
    params = r.read_tensor("fc_ params")
    weights = r.read_alias_tensor("fc_ weights")
    biases = r.read_alias_tensor("fc_ biases")
    f["bias_mode"] = r.read_int("fc_ bias_mode")  # 0 = has bias, 1 = no bias
    for name in (
        "learning_rate_multiplier",
        "weight_decay_multiplier",
        "bias_learning_rate_multiplier",
        "bias_weight_decay_multiplier",
    ):
        f[name] = r.read_float(f"fc_ {name}")
    flat = params.reshape(-1)
    nw = int(np.prod(weights))
    tensors = {"weight": flat[:nw].reshape(weights[0], weights[1])}  # (num_inputs, num_outputs)
    if f["bias_mode"] == 0:
        nb = int(np.prod(biases))
        tensors["bias"] = flat[nw : nw + nb].copy()
    return "fc", f, tensors


def _read_nothing(kind: str) -> Any:
    return lambda r: (kind, {}, {})


def _read_input_rgb_sized(r: DatReader) -> tuple[str, dict, dict]:
    f = {
        "avg_red": r.read_float("input avg_red"),
        "avg_green": r.read_float("input avg_green"),
        "avg_blue": r.read_float("input avg_blue"),
        "nr": r.read_int("input NR"),
        "nc": r.read_int("input NC"),
    }
    return "input_rgb_image_sized", f, {}


def _read_input_rgb(r: DatReader) -> tuple[str, dict, dict]:
    f = {
        "avg_red": r.read_float("input avg_red"),
        "avg_green": r.read_float("input avg_green"),
        "avg_blue": r.read_float("input avg_blue"),
    }
    return "input_rgb_image", f, {}


def _read_loss_metric_2(r: DatReader) -> tuple[str, dict, dict]:
    return (
        "loss_metric",
        {"margin": r.read_float("loss margin"), "dist_thresh": r.read_float("loss dist_thresh")},
        {},
    )


_LAYER_READERS = {
    "con_4": _read_con,
    "affine_": _read_affine,
    "relu_": _read_nothing("relu"),
    "max_pool_2": _read_pool("max_pool"),
    "avg_pool_2": _read_pool("avg_pool"),
    "add_prev_": _read_nothing("add_prev"),
    "fc_2": _read_fc,
    "input_rgb_image_sized": _read_input_rgb_sized,
    "input_rgb_image": _read_input_rgb,
    "loss_metric_": _read_nothing("loss_metric"),
    "loss_metric_2": _read_loss_metric_2,
}


def _read_bookkeeping(r: DatReader, name: str, input_layer: bool) -> None:
    """The fields ``add_layer`` writes after its layer (values not needed for inference)."""
    for b in (
        "this_layer_setup_called",
        "gradient_input_is_stale",
        "get_output_and_gradient_input_disabled",
    ):
        r.read_bool(f"{name} {b}")
    r.read_tensor(f"{name} x_grad")
    r.read_tensor(f"{name} cached_output")
    r.read_tensor(f"{name} {'grad_final' if input_layer else 'params_grad'}")


def read_dnn(source: str | os.PathLike[str] | bytes) -> DlibNet:
    """Parse a dlib DNN saved with ``dlib::serialize(net)`` (a ``loss_*`` layer on top).

    ``source`` is a path or the file's bytes. Raises :class:`DlibFormatError` (a
    :class:`~facekit.errors.WeightsError`) naming the byte offset when the file is
    truncated, has trailing bytes, or holds a layer type this reader does not know.
    """
    if isinstance(source, bytes | bytearray | memoryview):
        data, name = bytes(source), "<bytes>"
    else:
        path = Path(source)
        if not path.is_file():
            raise WeightsError(f"dlib model file {path} does not exist")
        data, name = path.read_bytes(), str(path)
    if not data:
        raise DlibFormatError(f"{name} is empty")
    r = DatReader(data, name)

    loss_version = r.read_int("the loss layer's version")
    if loss_version != 1:
        raise r._fail(
            f"expected a dlib network (add_loss_layer version 1), found version {loss_version}"
        )
    loss = r.read_layer_details()
    if not loss.kind.startswith("loss"):
        raise r._fail(f"expected a loss layer on top, found {loss.version!r}")

    structure: list[str] = []
    while True:
        v = r.read_int("an add_layer/tag version")
        if v == 2:
            structure.append("layer")
        elif v == 1:
            structure.append("tag")
        elif v == 3:
            structure.append("input")
            break
        else:
            raise r._fail(f"unexpected add_layer version {v}")
        if len(structure) > 100_000:
            raise r._fail("no input layer found")

    inp = r.read_layer_details()
    if not inp.kind.startswith("input"):
        raise r._fail(f"expected an input layer, found {inp.version!r}")
    layers = [r.read_layer_details()]
    _read_bookkeeping(r, "input add_layer", input_layer=True)
    r.read_int("the input add_layer's sample_expansion_factor")
    for _ in range(structure.count("layer")):
        layers.append(r.read_layer_details())
        _read_bookkeeping(r, f"add_layer<{layers[-1].version}>", input_layer=False)
    if r.remaining:
        raise r._fail(f"{r.remaining} unexpected bytes after the network")
    return DlibNet(loss=loss, input=inp, layers=layers, structure=structure)


def pack_int(value: int) -> bytes:
    """dlib's integer encoding (the inverse of :meth:`DatReader.read_int`; for tests)."""
    mag = abs(int(value))
    body = mag.to_bytes(max(1, (mag.bit_length() + 7) // 8), "little")
    return bytes([len(body) | (0x80 if value < 0 else 0)]) + body
