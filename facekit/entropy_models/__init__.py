"""Entropy models: how the quantised integer codes become bytes, and what they cost.

The compression network's code is quantised to integers (:mod:`facekit.models.quantizer`);
this package turns those integers into a payload and back, losslessly.

* :mod:`~facekit.entropy_models.png` is the paper's coding (Bian et al., "A Deep Image
  Compression Framework for Face Recognition", arXiv:1907.01714, Sec. 3): the codes are
  stored as the smallest valid PNG found (:func:`pack_png`, :func:`unpack_png`), and the
  rate is that PNG's size. Nothing is fitted.
* The range-coded priors go beyond the paper. A prior gives each code position a
  probability distribution computed from positions the decoder already knows, and a
  range coder spends about ``-log2 p`` bits on the symbol.
  :class:`RangeCodedPrior` (:mod:`~facekit.entropy_models.range_coded`) holds what they
  share: the coding order, the coder and the length check on decoding.
  :class:`ContextPrior` (:mod:`~facekit.entropy_models.context`) counts symbols per
  context of a few binned neighbours (``facekit-prior/1`` to ``/3``);
  :class:`NeuralPrior` (:mod:`~facekit.entropy_models.neural`) computes the
  distribution with a small integer network over a wider window (``facekit-prior/4``).
* :class:`ContextRate` (:mod:`~facekit.entropy_models.rate`) turns a fitted
  :class:`ContextPrior` into a differentiable rate term (the ``likelihoods`` of the
  CompressAI contract), so training can trade rate against distortion.
"""

from .context import ContextPrior
from .neural import NeuralPrior
from .png import pack_png, tile_shape, unpack_png
from .range_coded import RangeCodedPrior
from .rate import ContextRate

__all__ = [
    "ContextPrior",
    "ContextRate",
    "NeuralPrior",
    "RangeCodedPrior",
    "pack_png",
    "tile_shape",
    "unpack_png",
]
