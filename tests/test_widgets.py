"""The explorer's logic and widgets, without a browser (the browser test drives the real thing)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("ipywidgets")
torch = pytest.importorskip("torch")

from facekit.errors import FacekitError  # noqa: E402
from facekit.widgets import Explorer, View, identity_text, pick_images, setting_label  # noqa: E402


class FakeRecognizer(torch.nn.Module):
    """Embeds an image as its mean colour: enough to see distances grow with distortion."""

    name = "fake"
    distance = "euclidean"
    threshold = 0.02

    def find_transform(self, image):
        if image.mean() < 1:
            raise ValueError("no face")
        return np.array([[1, 0, 0], [0, 1, 0]], np.float32)

    def embed(self, x, theta):
        return x.mean(dim=(2, 3))


@pytest.fixture
def images(smooth_image):
    return {"a": smooth_image, "b": smooth_image[::-1, ::-1].copy(), "black": np.zeros_like(smooth_image)}


def test_view_measures_real_bytes(images):
    ex = Explorer(images, codecs=["jpeg"], recognizer=None)
    v = ex.view("jpeg", 20, "a")
    data = ex.codecs["jpeg"].encode(images["a"], 20)
    assert v.nbytes == len(data)
    assert v.bpp == pytest.approx(8 * len(data) / (96 * 128))
    assert v.reconstruction.shape == images["a"].shape and v.reconstruction.dtype == np.uint8
    assert 15 < v.psnr < 60
    assert v.distance is None and v.same is None and "no recogniser" in v.identity_note
    assert ex.view("jpeg", 20, "a") is v  # cached


def test_sweep_rate_grows_along_the_slider(images):
    ex = Explorer(images, codecs=["jpeg", "webp"], recognizer=None)
    for codec in ("jpeg", "webp"):
        bpps = [v.bpp for v in ex.sweep(codec, "a")]
        assert bpps == sorted(bpps), f"{codec}: settings must be ordered by rate, got {bpps}"


def test_identity_distance_and_verdict(images):
    ex = Explorer(images, codecs=["jpeg"], recognizer=FakeRecognizer())
    low, high = ex.view("jpeg", 1, "a"), ex.view("jpeg", 90, "a")
    assert low.distance is not None and high.distance is not None
    assert high.distance < low.distance
    assert high.threshold == 0.02 and high.same is True
    assert "same person" in identity_text(high)
    v = ex.view("jpeg", 50, "black")
    assert v.distance is None and "no face found" in v.identity_note
    assert "no face found" in identity_text(v)


def test_widgets_follow_the_controls(images):
    ex = Explorer(images, codecs=["jpeg", "jpeg2000"], recognizer=FakeRecognizer(), codec="jpeg", setting=5)
    ui = ex.ui
    assert ui is not None and "fk-explorer" in ui._dom_classes
    for w, cls in ((ex.bpp_html, "fk-bpp"), (ex.rate_slider, "fk-rate"), (ex.reconstruction_image, "fk-reconstruction")):
        assert cls in w._dom_classes
    bpp0, img0, orig0 = ex.bpp_html.value, ex.reconstruction_image.value, ex.original_image.value
    assert "bpp" in bpp0 and "PSNR" in ex.psnr_html.value and "identity distance" in ex.identity_html.value
    ex.rate_slider.value = 50
    assert ex.bpp_html.value != bpp0 and ex.reconstruction_image.value != img0
    assert ex.current.setting == 50
    # a codec change swaps the slider's options and shows that codec
    ex.codec_dropdown.value = "jpeg2000"
    assert [s for _, s in ex.rate_slider.options] == list(ex.codecs["jpeg2000"].settings)
    assert ex.current.codec == "jpeg2000" and ex.rate_slider.description == "target bpp"
    assert "bpp)" in ex.bpp_html.value
    # an image change shows the new original
    ex.image_dropdown.value = "b"
    assert ex.original_image.value != orig0 and ex.current.image == "b"


def test_errors_show_in_the_status_line(images):
    class Broken:
        name = "broken"
        settings = (1, 2)

        def encode(self, image, setting):
            raise ValueError("boom")

    ex = Explorer(images, codecs={"broken": Broken(), "jpeg": None}, recognizer=None, codec="broken")
    ex.ui  # noqa: B018 - builds and refreshes
    assert "boom" in ex.status_html.value
    ex.codec_dropdown.value = "jpeg"
    assert ex.status_html.value == "" and "bpp" in ex.bpp_html.value


def test_unavailable_codecs_are_listed_not_fatal(images):
    ex = Explorer(images, codecs=["jpeg", "no-such-codec"], recognizer=None)
    assert list(ex.codecs) == ["jpeg"]
    assert "no-such-codec" in ex.unavailable
    with pytest.raises(FacekitError):
        Explorer(images, codecs=["no-such-codec"], recognizer=None)
    with pytest.raises(FacekitError):
        Explorer({}, codecs=["jpeg"], recognizer=None)


def test_setting_labels():
    assert setting_label("jpeg2000", 0.1) == "0.1 bpp"
    assert setting_label("jpeg", 20) == "20"
    assert setting_label("paper-mse", "q3") == "q3"
    v = View("jpeg", 5, "a", np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8, 3), np.uint8), 10, 1.25, 30.0,
             distance=0.7, threshold=0.6)
    assert v.same is False and "different person" in identity_text(v)
    assert v.as_dict()["same"] is False


@pytest.mark.lfw
def test_pick_images_are_distinct_people(lfw):
    names = pick_images(lfw, 5)
    assert len(names) == 5 and len({n.split("/")[0] for n in names}) == 5
    pair_images = set(lfw.pair_images())
    assert all(n in pair_images for n in names)


@pytest.mark.lfw
@pytest.mark.slow
def test_explorer_on_lfw_with_learned_codec_and_dlib(lfw_root):
    from facekit.codecs.registry import available_codecs

    info = available_codecs()
    if not info.get("paper-mse", {}).get("available"):
        pytest.skip(f"paper-mse unavailable: {info.get('paper-mse', {}).get('reason')}")
    try:
        ex = Explorer(lfw_root=lfw_root, n_images=2, codecs=["paper-mse", "jpeg"], device="cpu")
    except FacekitError as e:
        pytest.skip(f"explorer cannot start here: {e}")
    if ex.recognizer is None:
        pytest.skip(ex.recognizer_note)
    image = ex.image_names[0]
    views = ex.sweep("paper-mse", image)
    bpps = [v.bpp for v in views]
    assert bpps == sorted(bpps)
    assert all(v.distance is not None for v in views)
    # the highest rate point keeps the identity better than the lowest
    assert views[-1].distance < views[0].distance
    assert views[-1].psnr > views[0].psnr
    assert views[-1].same is True


def test_explorer_opens_on_the_recommended_codec(images):
    from facekit.codecs.registry import RECOMMENDED
    from facekit.widgets import DEFAULT_CODECS

    assert DEFAULT_CODECS[0] == RECOMMENDED == "facekit" and "png" not in DEFAULT_CODECS
    ex = Explorer(images, recognizer=None, device="cpu")
    if RECOMMENDED in ex.unavailable:
        pytest.skip(f"facekit unavailable: {ex.unavailable[RECOMMENDED]}")
    assert list(ex.codecs)[0] == RECOMMENDED
    ex.ui  # noqa: B018 - builds the widgets
    assert ex.codec_dropdown.value == RECOMMENDED
    assert [s for _, s in ex.rate_slider.options] == list(ex.codecs[RECOMMENDED].settings)
