"""Names of the learned codecs and ids of their models: the one place that spells and parses them.

Two kinds of name meet here.

* A **model id** names one set of trained weights: ``<variant>-q<N>`` (``"jointface-q3"``),
  and ``<variant>-q<N>-ctx`` when the codes are range-coded with the model's fitted context
  prior. :class:`ModelId` is its typed form; the weights store files weights under it, the
  learned codec asks the store for it, and the container (:mod:`facekit.container`) records
  it in every file.
* A **codec name** names what ``facekit compress --codec`` and ``facekit evaluate --codecs``
  take: a variant plus how its codes are stored (PNG or range-coded, whole image or only the
  face region, with or without a low-rate background). :class:`LearnedSpec` is its typed
  form. Four learned codecs have short names (:data:`SHORT_NAMES`: ``facekit``,
  ``facekit-roi``, ``paper``, ``paper-mse``); every other combination is spelled
  ``facekit-<variant>[-entropy][-roi][-bg]`` (:attr:`LearnedSpec.long_name`).

The second-generation codec is one name, :data:`HYPERPRIOR` (``facekit-hyperprior``): one model
for every rate, stored in the weights store as :data:`HYPERPRIOR_WEIGHTS` (the name of its
recipe, ``recipes/hyperprior.toml``). :data:`HYPERPRIOR_REFINED` is its slower encoder, which
refines each latent before coding; it writes the same files.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import CodecError

#: the trained variants of the learned codec (weights ``<variant>-q<N>``): mse: distortion only
#: (the paper's phase one); joint: + identity term (phase two); jointrate: + identity term +
#: the rate term of the context prior; jointface: as jointrate, with the squared error outside
#: the recogniser's face chip weighted down. A variant's place in this tuple is part of the
#: container's one-byte model id, so it is only ever appended to.
VARIANTS = ("mse", "joint", "jointrate", "jointface")

#: the suffix of a range-coded model id (``"jointface-q3-ctx"``)
ENTROPY_SUFFIX = "ctx"

_RATE = re.compile(r"^q([1-9][0-9]*)$")
_VARIANT = re.compile(r"^[a-z][a-z0-9]*$")


def rate_number(rate: str) -> int:
    """``N`` of a rate point ``"qN"`` (N >= 1, no leading zero); CodecError for anything else."""
    m = _RATE.match(rate) if isinstance(rate, str) else None
    if m is None:
        raise CodecError(f"{rate!r} is not a rate point (q1 lowest rate .. q5 highest)")
    return int(m.group(1))


@dataclass(frozen=True)
class ModelId:
    """One trained model: ``variant``, rate point ``rate`` (``"q3"``) and whether its codes are range-coded."""

    variant: str
    rate: str
    entropy: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.variant, str) or not _VARIANT.match(self.variant):
            raise CodecError(f"{self.variant!r} is not a variant name")
        rate_number(self.rate)

    @property
    def number(self) -> int:
        """``N`` of the rate point ``qN``."""
        return rate_number(self.rate)

    @property
    def name(self) -> str:
        """``"mse-q3"``, or ``"mse-q3-ctx"`` when range-coded: what a file records."""
        return f"{self.variant}-{self.rate}-{ENTROPY_SUFFIX}" if self.entropy else f"{self.variant}-{self.rate}"

    @property
    def weights(self) -> ModelId:
        """The id of the weights alone (the store's entry; range-coded ids add a prior to it)."""
        return ModelId(self.variant, self.rate)

    @classmethod
    def parse(cls, name: str) -> ModelId:
        """The model id a name spells (``"mse-q3-ctx"``); CodecError when it spells none."""
        parts = name.split("-") if isinstance(name, str) else []
        if len(parts) == 2 or (len(parts) == 3 and parts[2] == ENTROPY_SUFFIX):
            try:
                return cls(parts[0], parts[1], len(parts) == 3)
            except CodecError:
                pass
        raise CodecError(f"unknown model {name!r} (a model is <variant>-q<N>, or <variant>-q<N>-{ENTROPY_SUFFIX})")

    def __str__(self) -> str:
        return self.name


def model_name(variant: str, rate: str, entropy: bool = False) -> str:
    """The name of a model id: ``"mse-q3"``, or ``"mse-q3-ctx"`` for the range-coded variant."""
    return ModelId(variant, rate, entropy).name


@dataclass(frozen=True)
class LearnedSpec:
    """What a learned codec's name says: a variant and how its codes are stored.

    ``entropy``: range-coded with the fitted context prior (else PNG); ``roi``: only the face
    region is coded; ``background``: with ``roi`` and ``entropy``, the rest of the image is
    coded too, at this lower rate point.
    """

    variant: str
    entropy: bool = False
    roi: bool = False
    background: str | None = None

    @property
    def long_name(self) -> str:
        """``facekit-<variant>[-entropy][-roi][-bg]``: every part spelled out."""
        return (f"facekit-{self.variant}" + ("-entropy" if self.entropy else "") + ("-roi" if self.roi else "")
                + ("-bg" if self.background is not None else ""))

    @property
    def name(self) -> str:
        """The short name when the catalogue has one (:data:`SHORT_NAMES`), else :attr:`long_name`."""
        return _SHORT_OF.get(self, self.long_name)

    @property
    def about(self) -> str:
        """One line on what the codec stores: ``"jointrate weights, range-coded, face region only"``."""
        parts = [f"{self.variant} weights", "range-coded" if self.entropy else "PNG payload"]
        if self.roi:
            parts.append("face region only" if self.background is None else f"face region, background at {self.background}")
        return ", ".join(parts)

    @classmethod
    def parse(cls, name: str) -> LearnedSpec | None:
        """The learned codec a name (short or long) spells, or None when it is not a learned codec's name.

        ``-bg`` is the q1 background; the long form ``-entropy-roi-bg`` is read too.
        """
        if name in SHORT_NAMES:
            return SHORT_NAMES[name]
        m = _LONG.match(name)
        if m is None or m.group(1) not in VARIANTS:
            return None
        entropy, roi, bg = bool(m.group(2)), bool(m.group(3)), bool(m.group(4))
        if bg and not (entropy and roi):
            return None
        return cls(m.group(1), entropy, roi, "q1" if bg else None)


_LONG = re.compile(r"^facekit-([a-z]+)(-entropy)?(-roi)?(-bg)?$")

#: the learned codecs with short names: the recommended, the recognition-first and the paper's two
SHORT_NAMES: dict[str, LearnedSpec] = {
    "facekit": LearnedSpec("jointface", entropy=True),
    "facekit-roi": LearnedSpec("jointrate", entropy=True, roi=True, background="q1"),
    "paper": LearnedSpec("joint"),
    "paper-mse": LearnedSpec("mse"),
}
_SHORT_OF = {spec: name for name, spec in SHORT_NAMES.items()}


def canonical_name(name: str) -> str:
    """The name a codec is listed and stored under: a learned codec's short name when it has one.

    ``"facekit-jointface-entropy"`` -> ``"facekit"``; any other name comes back unchanged.
    """
    spec = LearnedSpec.parse(name)
    return spec.name if spec is not None else name


#: the second-generation codec's name (:mod:`facekit.codecs.hyperprior`), and its model's name in the weights store
HYPERPRIOR, HYPERPRIOR_WEIGHTS = "facekit-hyperprior", "hyperprior"
#: the same codec with an encoder that refines each latent (:mod:`facekit.models.refine`): the same files and decoder
HYPERPRIOR_REFINED = f"{HYPERPRIOR}-refined"
#: how its weights are made
MAKE_HYPERPRIOR = "`make weights` (or `facekit train --recipe recipes/hyperprior.toml --out runs/hp --install`)"


def is_learned(name: str) -> bool:
    """Whether codec ``name`` (short or long) is learned: it runs a network (so it takes ``device=``).

    Example: ``is_learned("facekit")`` and ``is_learned("facekit-hyperprior")`` -> True;
    ``is_learned("jpeg")`` -> False.
    """
    return name in (HYPERPRIOR, HYPERPRIOR_REFINED) or LearnedSpec.parse(name) is not None


def writes_container(name: str) -> bool:
    """Whether codec ``name`` writes the learned codecs' container (:mod:`facekit.container`, format 2),
    so that its files' sizes follow the container's format; ``facekit-hyperprior`` writes FKH1 files.

    Example: ``writes_container("facekit")`` -> True; ``writes_container("facekit-hyperprior")``
    and ``writes_container("jpeg")`` -> False.
    """
    return LearnedSpec.parse(name) is not None
