"""The learned face codec (Bian et al., arXiv:1907.01714): networks, quantiser, rate points."""

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
from .neural_prior import NeuralPrior
from .quantizer import (
    ContextPrior,
    Quantizer,
    RangeCodedPrior,
    pack_png,
    read_png_header,
    unpack_png,
)

__all__ = [
    "RATE_POINTS",
    "ContextPrior",
    "Decoder",
    "Encoder",
    "FaceCodecNet",
    "NeuralPrior",
    "Quantizer",
    "RangeCodedPrior",
    "RatePoint",
    "build_model",
    "deterministic_kernels",
    "get_rate_point",
    "load_weights",
    "pack_png",
    "read_png_header",
    "save_weights",
    "unpack_png",
]
