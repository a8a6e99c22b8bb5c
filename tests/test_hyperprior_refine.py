"""The refining encoder of the second generation (facekit.models.refine, ``facekit-hyperprior-refined``):
it lowers the training objective, writes ordinary files that the plain codec decodes, gives the
same file twice, and refuses bad settings with one clear error.

A tiny seeded model (``tests/corpus/fkh1.py``) stands in for trained weights.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("constriction")

import torch  # noqa: E402

from facekit import zoo  # noqa: E402
from facekit.cli import main  # noqa: E402
from facekit.codecs import get_codec  # noqa: E402
from facekit.codecs.hyperprior import HyperpriorCodec, training_lambdas  # noqa: E402
from facekit.codecs.names import HYPERPRIOR, HYPERPRIOR_REFINED, HYPERPRIOR_WEIGHTS, is_learned  # noqa: E402
from facekit.errors import CodecError  # noqa: E402
from facekit.models.hyperprior import RATE_STEPS, quantise_rate  # noqa: E402
from facekit.models.refine import STEPS, rate_lambda, refine_latent  # noqa: E402
from facekit.training.rd import RDConfig  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent / "corpus"))

from fkh1 import tiny_hyperprior  # noqa: E402
from make_corpus import face_image  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

LAMBDAS = (1e-3, 0.1)


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    """A weights folder with a tiny model as ``hyperprior``, its entry recording a training lambda range."""
    folder = tmp_path_factory.mktemp("hp-refine")
    phases = [{"phase": "rate-distortion", "config": {"lambda_min": LAMBDAS[0], "lambda_max": LAMBDAS[1]}}]
    zoo.install_hyperprior(tiny_hyperprior(), HYPERPRIOR_WEIGHTS, folder=folder, info={"phases": phases})
    return folder


def face() -> torch.Tensor:
    return torch.from_numpy(face_image().copy()).permute(2, 0, 1)[None].float() / 255


def relaxed_objective(model, x: torch.Tensor, y: torch.Tensor, t: float) -> float:  # type: ignore[no-untyped-def]
    """The objective refinement minimises, with the noise of one fixed seed (a paired comparison)."""
    with torch.no_grad():
        out = model.from_latent(y, torch.full((1,), t), x.shape[-2:], torch.Generator().manual_seed(7))
        bits = sum(-torch.log2(v).sum() for v in out["likelihoods"].values())
        mse = torch.mean((out["x_hat"] - x) ** 2)
    return float(rate_lambda(t, *LAMBDAS) * 255**2 * mse + bits / (x.shape[-2] * x.shape[-1]))


def test_rate_lambda_is_the_training_lambda():
    cfg = RDConfig(lambda_min=2e-5, lambda_max=0.3)
    for t in (0.0, 0.3, 1.0):
        assert cfg.lmbda(t) == rate_lambda(t, 2e-5, 0.3)
    assert rate_lambda(0.5, 1e-4, 1e-2) == pytest.approx(1e-3)


def test_refinement_lowers_the_objective_and_keeps_the_weights():
    model, x = tiny_hyperprior(), face()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        y0 = model.analysis(x, torch.full((1,), quantise_rate(0.5) / RATE_STEPS))  # the rate a file stores
    y = refine_latent(model, x, 0.5, rate_lambda(0.5, *LAMBDAS))
    assert y.shape == y0.shape and not y.requires_grad
    assert relaxed_objective(model, x, y, 0.5) < relaxed_objective(model, x, y0, 0.5)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert all(p.requires_grad for p in model.parameters()) and not model.training
    assert torch.equal(refine_latent(model, x, 0.5, 1e-3, steps=0), y0)


def test_refined_files_are_ordinary_files_and_the_same_twice(store):
    refined, plain = get_codec(HYPERPRIOR_REFINED, folder=store), get_codec(HYPERPRIOR, folder=store)
    assert (refined.name, refined.refine_steps, refined.lambda_range) == (HYPERPRIOR_REFINED, STEPS, LAMBDAS)
    assert refined.describe()["refine_steps"] == STEPS and plain.describe()["refine_steps"] == 0
    assert is_learned(HYPERPRIOR_REFINED)
    data = refined.encode(face_image(), 0.6)
    assert data == refined.encode(face_image(), 0.6) != plain.encode(face_image(), 0.6)
    assert np.array_equal(plain.decode(data), refined.decode(data))


def test_the_cli_writes_refined_files(store, tmp_path):
    src = tmp_path / "face.png"
    Image.fromarray(face_image()).save(src)
    assert main(["compress", str(src), "-o", str(tmp_path / "f.fkc"), "--codec", HYPERPRIOR_REFINED, "--rate", "0.6",
                 "--weights", str(store), "--quiet"]) == 0
    data = (tmp_path / "f.fkc").read_bytes()
    assert data == get_codec(HYPERPRIOR_REFINED, folder=store).encode(face_image(), 0.6)
    assert main(["decompress", str(tmp_path / "f.fkc"), "-o", str(tmp_path / "f.png"), "--weights", str(store),
                 "--quiet"]) == 0


@pytest.mark.parametrize("steps", [-1, True, 1.5, "10"])
def test_bad_refine_steps_are_one_error(steps):
    with pytest.raises(CodecError, match="refine_steps"):
        HyperpriorCodec(tiny_hyperprior(), refine_steps=steps, lambda_range=LAMBDAS)


def test_refining_without_a_lambda_range_is_one_error():
    assert training_lambdas({}) is None and training_lambdas({"phases": [{"config": {}}]}) is None
    with pytest.raises(CodecError, match="lambda range"):
        HyperpriorCodec(tiny_hyperprior(), refine_steps=3)
    assert HyperpriorCodec(tiny_hyperprior()).refine_steps == 0  # the plain codec needs none


def test_a_latent_of_another_size_is_one_error():
    model, x = tiny_hyperprior(), face()
    y = refine_latent(model, x, 0.5, 1e-3, steps=1)
    with pytest.raises(CodecError, match="does not code 1 image"):
        model.compress(x, 0.5, latent=y[..., :-1, :])
