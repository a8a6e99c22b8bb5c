"""The interactive explorer of notebook 05: one face, one codec, one rate, live.

:class:`Explorer` puts the library's calls behind a small ipywidgets 8 interface:

* a codec dropdown (the catalogue's codecs that are available here),
* a slider over that codec's settings (lowest rate on the left): a continuous slider over
  the range of a normalised rate parameter (``facekit-hyperprior``'s ``t`` in ``[0, 1]``,
  :func:`slider_range`), a slider over the sweep otherwise (the learned codecs' rate points,
  the classical codecs' qualities, JPEG 2000's log-spaced target bpp),
* an image picker over a few LFW faces (from ``pairs.txt``: people the learned codec
  was not trained on),
* the original and the reconstruction side by side, with the bits per pixel of the
  real bytes, the PSNR, and the recogniser's distance between the reconstruction and
  its original, judged against the recogniser's same-person threshold.

Every number comes from the same calls the evaluation uses
(:meth:`facekit.codecs.Codec.encode`/``decode``, :func:`facekit.codecs.bits_per_pixel`,
:func:`facekit.metrics.psnr`, the recogniser's ``find_transform`` on the original and
``embed``), so what the explorer shows is what the rate-accuracy curves measure.

The logic lives in :meth:`Explorer.view` (pure: codec, setting, image -> numbers and
pixels) and :meth:`Explorer.refresh` (writes a view into the widgets); both run without
a browser, which is how ``tests/test_widgets.py`` checks them. The widgets carry stable
CSS classes (``fk-bpp``, ``fk-psnr``, ``fk-identity``, ``fk-original``,
``fk-reconstruction``, ``fk-rate``, ``fk-codec``, ``fk-image``, ``fk-status``) for
the browser test; ``fk-rate`` is on whichever slider is shown.
"""

from __future__ import annotations

import io
import os
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .codecs import bits_per_pixel, check_image, codec_names, get_codec
from .codecs.names import HYPERPRIOR, is_learned
from .codecs.rate import continuous_range
from .errors import FacekitError
from .reproduce import resolve_device

#: codecs offered by default, in this order, when available: the catalogue (``facekit codecs``);
#: the explorer opens on the first, the recommended codec
DEFAULT_CODECS = tuple(codec_names())

#: a short description of each codec's setting, for the slider's label
SETTING_LABELS = {
    "jpeg": "quality",
    "webp": "quality",
    "avif": "quality",
    "jpeg2000": "target bpp",
    HYPERPRIOR: "rate t",
}
#: steps of the continuous slider across its range
SLIDER_STEPS = 100


def slider_range(codec: Any) -> tuple[float, float] | None:
    """The range of a continuous slider for ``codec``, or None for a slider over its sweep.

    A codec whose setting is a normalised rate parameter with named presets (``presets``, as
    ``facekit-hyperprior``'s ``t``) slides continuously over :func:`~facekit.codecs.rate.continuous_range`;
    JPEG 2000's target bpp spans two decades, so it keeps its log-spaced sweep.
    Example: ``slider_range(get_codec("jpeg"))`` -> None.
    """
    return continuous_range(codec) if getattr(codec, "presets", None) else None


@dataclass
class View:
    """What the explorer shows for one (codec, setting, image)."""

    codec: str
    setting: Any
    image: str
    original: np.ndarray
    reconstruction: np.ndarray
    nbytes: int
    bpp: float
    psnr: float
    #: recogniser distance between the reconstruction and its original (None: no recogniser)
    distance: float | None = None
    threshold: float | None = None
    #: why there is no distance, when there is none
    identity_note: str = ""

    @property
    def same(self) -> bool | None:
        """The recogniser's verdict: still the same person at its usual threshold?"""
        if self.distance is None or self.threshold is None:
            return None
        return bool(self.distance <= self.threshold)

    def as_dict(self) -> dict[str, Any]:
        return {
            "codec": self.codec, "setting": self.setting, "image": self.image, "nbytes": self.nbytes,
            "bpp": self.bpp, "psnr": self.psnr, "distance": self.distance, "threshold": self.threshold,
            "same": self.same,
        }


def png_bytes(image: np.ndarray) -> bytes:
    """An RGB uint8 image as PNG bytes (for ``ipywidgets.Image``)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(check_image(image)).save(buf, "PNG")
    return buf.getvalue()


def setting_label(codec: str, setting: Any) -> str:
    """How a setting reads on the slider: ``q3``, ``quality 20``, ``0.1 bpp``."""
    if codec == "jpeg2000":
        return f"{setting:g} bpp"
    if isinstance(setting, float):
        return f"{setting:g}"
    return str(setting)


def pick_images(lfw: Any, n: int = 6, pairs: str = "pairs.txt") -> list[str]:
    """``n`` distinct people's images from the first matched pairs of each fold of ``pairs``.

    These people are in the evaluation protocol, so the learned codec (trained on the
    identity-disjoint split) has never seen them.
    """
    out: list[str] = []
    people: set[str] = set()
    by_fold: dict[int, list[str]] = {}
    for p in lfw.pairs(pairs):
        if p.same:
            by_fold.setdefault(p.fold, []).append(p.a)
    # round-robin over folds so the faces vary
    queues = [iter(v) for _, v in sorted(by_fold.items())]
    while len(out) < n and queues:
        for q in list(queues):
            name = next(q, None)
            if name is None:
                queues.remove(q)
                continue
            person = name.split("/")[0]
            if person not in people:
                people.add(person)
                out.append(name)
            if len(out) >= n:
                break
    return out


class Explorer:
    """Codec x rate x image explorer (see the module docstring).

    ``images``: LFW image names (``Person/Person_0001.jpg``), or ``{label: RGB uint8
    array}``, or None for ``n_images`` faces from ``pairs.txt`` of ``lfw_root`` (default
    ``$FACEKIT_LFW``). ``codecs``: names (those unavailable here are left out with the
    reason in :attr:`unavailable`) or ``{name: Codec}``. ``settings``: optional
    ``{codec name: [settings]}`` overriding a codec's default sweep. ``recognizer``: a
    registered name, a :class:`facekit.recognition.base.Recognizer`, or None for no
    identity panel. ``device``: where the learned codec and the recogniser run
    (``"auto"``: CUDA when available).
    """

    def __init__(
        self,
        images: Sequence[str] | Mapping[str, np.ndarray] | None = None,
        *,
        lfw_root: str | os.PathLike[str] | None = None,
        n_images: int = 6,
        codecs: Sequence[str] | Mapping[str, Any] = DEFAULT_CODECS,
        settings: Mapping[str, Sequence[Any]] | None = None,
        recognizer: str | Any | None = "dlib-resnet",
        device: str = "auto",
        codec: str | None = None,
        setting: Any = None,
        cache_size: int = 64,
    ) -> None:
        self.device = resolve_device(device)
        self._lfw = None
        if isinstance(images, Mapping):
            self._images = {k: check_image(v) for k, v in images.items()}
        else:
            from .data.lfw import open_lfw

            self._lfw = open_lfw(lfw_root)
            names = list(images) if images is not None else pick_images(self._lfw, n_images)
            self._images = {n: None for n in names}
        if not self._images:
            raise FacekitError("the explorer needs at least one image")
        self.unavailable: dict[str, str] = {}
        self.codecs: dict[str, Any] = {}
        items = codecs.items() if isinstance(codecs, Mapping) else ((n, None) for n in codecs)
        for name, obj in items:
            if obj is not None:
                self.codecs[name] = obj
                continue
            try:
                kw = {"device": self.device} if is_learned(name) else {}
                self.codecs[name] = get_codec(name, **kw)
            except Exception as e:  # shown to the user, never hidden
                self.unavailable[name] = f"{type(e).__name__}: {e}"
        if not self.codecs:
            raise FacekitError(f"none of the codecs is available here: {self.unavailable}")
        self.settings = {n: list((settings or {}).get(n) or c.settings) for n, c in self.codecs.items()}
        self.recognizer, self.recognizer_note = self._make_recognizer(recognizer)
        self._cache: OrderedDict[tuple, View] = OrderedDict()
        self._cache_size = cache_size
        self._embeddings: dict[str, Any] = {}
        self._ui = None
        self._initial = (codec if codec in self.codecs else next(iter(self.codecs)), setting)

    # ------------------------------------------------------------------ data
    @property
    def image_names(self) -> list[str]:
        return list(self._images)

    def load(self, name: str) -> np.ndarray:
        """The original image ``name`` (RGB uint8)."""
        img = self._images[name]
        if img is None:
            img = self._images[name] = self._lfw.load(name)
        return img

    def _make_recognizer(self, recognizer: Any) -> tuple[Any, str]:
        if recognizer is None:
            return None, "no recogniser"
        if not isinstance(recognizer, str):
            return recognizer, ""
        try:
            from .recognition import get_recognizer

            return get_recognizer(recognizer, device=self.device), ""
        except Exception as e:  # e.g. weights unavailable offline: the rest still works
            return None, f"recogniser {recognizer!r} unavailable ({type(e).__name__}: {e})"

    def _embedding(self, name: str, image: np.ndarray, theta: np.ndarray):
        import torch

        x = torch.from_numpy(np.array(image, np.uint8)).permute(2, 0, 1)[None].float().div(255.0).to(self.device)
        th = torch.from_numpy(np.asarray(theta, np.float32)[None]).to(self.device)
        with torch.inference_mode():
            return self.recognizer.embed(x, th).float().cpu().numpy()

    def _original_identity(self, name: str) -> tuple[np.ndarray, np.ndarray] | str:
        """(transform, embedding) of the original, or why there is none."""
        if name not in self._embeddings:
            image = self.load(name)
            try:
                if self._lfw is not None:
                    # as the evaluation does: located once on the original file, cached on disk
                    from .recognition import find_transforms

                    theta = find_transforms(self.recognizer, self._lfw, [name])[name]
                else:
                    theta = self.recognizer.find_transform(image)
                if theta is None:
                    raise FacekitError("no face found")
                theta = np.asarray(theta, np.float32)
                self._embeddings[name] = (theta, self._embedding(name, image, theta))
            except Exception as e:
                self._embeddings[name] = f"no face found on the original ({type(e).__name__}: {e})"
        return self._embeddings[name]

    # ------------------------------------------------------------------ logic
    def view(self, codec: str, setting: Any, image: str) -> View:
        """Encode ``image`` with ``codec`` at ``setting``, decode, and measure it."""
        key = (codec, repr(setting), image)
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        from .metrics import psnr

        original = self.load(image)
        c = self.codecs[codec]
        data = c.encode(original, setting)
        rec = c.decode(data)
        h, w = original.shape[:2]
        v = View(codec, setting, image, original, rec, len(data), bits_per_pixel(data, h, w), psnr(original, rec))
        if self.recognizer is None:
            v.identity_note = self.recognizer_note
        else:
            ident = self._original_identity(image)
            if isinstance(ident, str):
                v.identity_note = ident
            else:
                from .protocol import pair_distances

                theta, e0 = ident
                e1 = self._embedding(image, rec, theta)
                v.distance = float(pair_distances(e0, e1, self.recognizer.distance)[0])
                v.threshold = float(self.recognizer.threshold)
        self._cache[key] = v
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return v

    def sweep(self, codec: str, image: str) -> list[View]:
        """:meth:`view` at every setting of ``codec`` (lowest rate first)."""
        return [self.view(codec, s, image) for s in self.settings[codec]]

    # ------------------------------------------------------------------ widgets
    @property
    def ui(self):
        """The ipywidgets box (built on first use)."""
        if self._ui is None:
            self._build()
        return self._ui

    def _repr_mimebundle_(self, **kwargs: Any):
        return self.ui._repr_mimebundle_(**kwargs)

    def _options(self, codec: str) -> list[tuple[str, Any]]:
        return [(setting_label(codec, s), s) for s in self.settings[codec]]

    @property
    def rate_slider(self) -> Any:
        """The slider shown: the continuous one for a codec with :func:`slider_range`, else the one over the sweep."""
        continuous = slider_range(self.codecs[self.codec_dropdown.value]) is not None
        return self.float_slider if continuous else self.step_slider

    def _start(self, codec: str, setting: Any) -> Any:
        """The setting a slider starts at: ``setting`` when the codec has it, else the middle one."""
        span = slider_range(self.codecs[codec])
        if span is not None:
            presets = getattr(self.codecs[codec], "presets", {})
            value = presets.get(setting, setting) if isinstance(setting, str) else setting
            ok = isinstance(value, int | float) and span[0] <= value <= span[1]
            return float(value) if ok else 0.5 * (span[0] + span[1])
        values = [s for _, s in self._options(codec)]
        return setting if setting in values else values[len(values) // 2]

    def _show_slider(self, codec: str, setting: Any) -> None:
        """Point the sliders at ``codec``: show the right one (with the ``fk-rate`` class), set its range and value."""
        span = slider_range(self.codecs[codec])
        shown, hidden = (self.float_slider, self.step_slider) if span is not None else (self.step_slider, self.float_slider)
        if span is not None:
            self.float_slider.max = max(span[1], self.float_slider.min)
            self.float_slider.min, self.float_slider.max = span
            self.float_slider.step = (span[1] - span[0]) / SLIDER_STEPS
        else:
            self.step_slider.options = self._options(codec)
        shown.value = setting
        shown.description = SETTING_LABELS.get(codec, "rate point")
        shown.layout.display, hidden.layout.display = None, "none"
        hidden.remove_class("fk-rate")
        shown.add_class("fk-rate")

    def _build(self) -> None:
        import ipywidgets as W

        codec0, setting0 = self._initial
        self.codec_dropdown = W.Dropdown(
            options=[(n, n) for n in self.codecs], value=codec0, description="codec",
        )
        opts = self._options(codec0)
        self.step_slider = W.SelectionSlider(
            options=opts, value=opts[len(opts) // 2][1], continuous_update=False,
            layout=W.Layout(width="420px"), style={"description_width": "80px"},
        )
        self.float_slider = W.FloatSlider(
            value=0.5, min=0.0, max=1.0, step=1.0 / SLIDER_STEPS, readout_format=".2f", continuous_update=False,
            layout=W.Layout(width="420px"), style={"description_width": "80px"},
        )
        self._updating = True
        self._show_slider(codec0, self._start(codec0, setting0))
        self._updating = False
        self.image_dropdown = W.Dropdown(
            options=self.image_names, value=self.image_names[0], description="image",
            layout=W.Layout(width="420px"),
        )
        self.original_image = W.Image(format="png", layout=W.Layout(width="250px"))
        self.reconstruction_image = W.Image(format="png", layout=W.Layout(width="250px"))
        self.bpp_html = W.HTML()
        self.psnr_html = W.HTML()
        self.identity_html = W.HTML()
        self.status_html = W.HTML()
        for w, cls in (
            (self.codec_dropdown, "fk-codec"),
            (self.image_dropdown, "fk-image"), (self.original_image, "fk-original"),
            (self.reconstruction_image, "fk-reconstruction"), (self.bpp_html, "fk-bpp"),
            (self.psnr_html, "fk-psnr"), (self.identity_html, "fk-identity"),
            (self.status_html, "fk-status"),
        ):
            w.add_class(cls)
        left = W.VBox([W.HTML("<b>original</b>"), self.original_image])
        right = W.VBox([W.HTML("<b>reconstruction</b>"), self.reconstruction_image])
        numbers = W.VBox([self.bpp_html, self.psnr_html, self.identity_html],
                         layout=W.Layout(padding="0 0 0 16px"))
        notes = []
        if self.unavailable:
            notes.append("not available here: " + "; ".join(f"{k} ({v})" for k, v in self.unavailable.items()))
        if self.recognizer is None:
            notes.append(self.recognizer_note)
        note = W.HTML("<small>" + "<br>".join(_escape(n) for n in notes) + "</small>") if notes else W.HTML()
        self._ui = W.VBox([
            W.HBox([self.codec_dropdown, self.image_dropdown]),
            self.step_slider,
            self.float_slider,
            W.HBox([left, right, numbers]),
            self.status_html,
            note,
        ])
        self._ui.add_class("fk-explorer")
        self.codec_dropdown.observe(self._on_codec, names="value")
        self.step_slider.observe(self._on_change, names="value")
        self.float_slider.observe(self._on_change, names="value")
        self.image_dropdown.observe(self._on_change, names="value")
        self._shown_original: str | None = None
        self.refresh()

    def _on_codec(self, change: dict) -> None:
        codec = change["new"]
        self._updating = True  # one refresh for the whole change, not one per trait
        try:
            self._show_slider(codec, self._start(codec, None))
        finally:
            self._updating = False
        self.refresh()

    def _on_change(self, change: dict) -> None:
        if not getattr(self, "_updating", False):
            self.refresh()

    def refresh(self) -> View | None:
        """Compute the view of the widgets' current values and show it."""
        ui = self.ui
        assert ui is not None
        codec = self.codec_dropdown.value
        setting = self.rate_slider.value
        if isinstance(setting, float) and slider_range(self.codecs[codec]) is not None:
            setting = round(setting, 6)  # the slider's steps, without float noise (0.35000000000000003)
        image = self.image_dropdown.value
        self.status_html.value = ""
        try:
            v = self.view(codec, setting, image)
        except Exception as e:  # shown in the UI: a bad setting must not kill the explorer
            self.status_html.value = f"<span style='color:#b00'>{_escape(f'{type(e).__name__}: {e}')}</span>"
            return None
        if self._shown_original != image:
            self.original_image.value = png_bytes(v.original)
            self._shown_original = image
        self.reconstruction_image.value = png_bytes(v.reconstruction)
        self.bpp_html.value = (
            f"<span class='fk-value'>{v.bpp:.4f}</span> bpp "
            f"<small>({v.nbytes} bytes, {setting_label(codec, setting)})</small>"
        )
        self.psnr_html.value = f"PSNR <span class='fk-value'>{v.psnr:.2f}</span> dB"
        self.identity_html.value = identity_text(v)
        self.current = v
        return v


def identity_text(v: View) -> str:
    """HTML of the identity panel: distance, threshold and verdict."""
    if v.distance is None:
        return f"identity: <i>{_escape(v.identity_note or 'n/a')}</i>"
    colour, verdict = ("#070", "same person") if v.same else ("#b00", "different person")
    return (
        f"identity distance <span class='fk-value'>{v.distance:.3f}</span> "
        f"(threshold {v.threshold:.2f}): "
        f"<b style='color:{colour}' class='fk-verdict'>{verdict}</b>"
    )


def _escape(s: str) -> str:
    import html

    return html.escape(str(s))
