"""The learned face codec (Bian et al., arXiv:1907.01714): networks, quantiser, rate points.

The coding of the quantised codes into bytes lives in :mod:`facekit.entropy_models`.
"""

from .autoencoder import (
    RATE_POINTS,
    Decoder,
    Encoder,
    FaceCodecNet,
    RatePoint,
    build_model,
    deterministic_kernels,
    get_rate_point,
    load_weights,
    save_weights,
)
from .quantizer import Quantizer, levels

__all__ = [
    "RATE_POINTS",
    "Decoder",
    "Encoder",
    "FaceCodecNet",
    "Quantizer",
    "RatePoint",
    "build_model",
    "deterministic_kernels",
    "get_rate_point",
    "levels",
    "load_weights",
    "save_weights",
]
