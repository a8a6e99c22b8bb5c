"""The weights store: the one place that reads, checks, writes and lists facekit's models.

The learned codec of Bian et al. (arXiv:1907.01714) ships as one network per rate point
and training recipe (variant): ``mse`` (phase one, distortion only), ``joint`` (phase
two, jointly with a face recogniser) and the ``jointrate``/``jointface`` recipes beyond
the paper. Each lives in a weights folder, by default ``facekit/weights/``:

* ``<variant>-<rate>.pt``: the networks (float16), in :func:`facekit.models.autoencoder.save_weights`'s format;
* ``<variant>-<rate>-ctx.pt``: optionally, the context prior that range-codes its codes
  (:func:`facekit.training.prior.fit_prior` fits it);
* ``<name>.pt``: a model trained from a recipe (``recipes/<name>.toml``, e.g. the ``hyperprior``
  codec), float32, by :func:`install_hyperprior`;
* ``manifest.json``: one entry per model with both files' sha256, the model's fingerprint,
  how the weights were made and what they measure.

Every file is checked against its sha256 before ``torch.load(..., weights_only=True)``
reads it; the manifest is rewritten atomically under a lock, so concurrent installs do
not lose entries. Example::

    from facekit import zoo

    model, entry = zoo.load_model("mse", "q3")          # sha256-checked, eval mode
    prior = zoo.load_prior(entry, zoo.weights_dir(), model.fingerprint())
    for row in zoo.list_models():
        print(row["name"], row["bytes"], row["sha256"][:12])
    assert not zoo.verify()                             # every file matches its hash

The command line is ``facekit weights {list,verify,install,export,fit-prior}``.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from .codecs.names import VARIANTS, model_name
from .entropy_models import ContextPrior, NeuralPrior, RangeCodedPrior
from .errors import TrainingError, WeightsError
from .fileio import PathLike, atomic_write, write_json
from .metrics import rate_and_psnr
from .models.autoencoder import FaceCodecNet, RatePoint, load_weights, save_weights

MANIFEST = "manifest.json"



def weights_dir() -> Path:
    """The folder of the shipped weights (``facekit/weights``)."""
    return Path(__file__).resolve().parent / "weights"


# --------------------------------------------------------------------------- manifest


def read_manifest(folder: PathLike | None = None) -> dict[str, Any]:
    """The manifest of a weights folder (``{"models": {}}`` when it has none)."""
    path = Path(folder or weights_dir()) / MANIFEST
    if not path.exists():
        return {"models": {}}
    try:
        manifest = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise WeightsError(f"weights manifest {path} cannot be read: {e}") from e
    if not isinstance(manifest, dict) or not isinstance(manifest.get("models"), dict):
        raise WeightsError(f"weights manifest {path} has no 'models' table")
    return manifest


@contextlib.contextmanager
def manifest_lock(folder: PathLike | None = None) -> Iterator[None]:
    """Hold an exclusive lock on a weights folder's manifest (POSIX ``flock``) while updating it."""
    folder = Path(folder or weights_dir())
    folder.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no concurrent installs expected
        yield
        return
    with open(folder / f".{MANIFEST}.lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _write_manifest(folder: Path, manifest: dict[str, Any]) -> None:
    """Rewrite the manifest (models sorted by name); call with :func:`manifest_lock` held."""
    manifest["models"] = dict(sorted(manifest["models"].items()))
    write_json(folder / MANIFEST, manifest, indent=2)


def update_manifest(variant: str, rate: str, fields: dict[str, Any], *, folder: PathLike | None = None) -> None:
    """Merge ``fields`` into a model's entry (dicts merged one level deep); atomic rewrite."""
    folder = Path(folder or weights_dir())
    with manifest_lock(folder):
        manifest = read_manifest(folder)
        entry = manifest["models"][model_name(variant, rate)]
        for k, v in fields.items():
            entry[k] = {**entry[k], **v} if isinstance(v, dict) and isinstance(entry.get(k), dict) else v
        _write_manifest(folder, manifest)


# --------------------------------------------------------------------------- reading


def load_model(
    variant: str, rate: str, *, folder: PathLike | None = None, device: str | torch.device | None = None
) -> tuple[FaceCodecNet, dict[str, Any]]:
    """Load a model's weights (sha256-verified) as an eval-mode network, plus its manifest entry."""
    folder = Path(folder or weights_dir())
    manifest = read_manifest(folder)
    name = model_name(variant, rate)
    entry = manifest["models"].get(name)
    if entry is None:
        have = ", ".join(sorted(manifest["models"])) or "none"
        raise WeightsError(f"no weights for {name!r} in {folder / MANIFEST} (available: {have})")
    path = folder / entry["file"]
    if not path.exists():
        raise WeightsError(f"weights file {path} listed in the manifest is missing")
    model = load_weights(path, sha256=entry["sha256"], map_location=device or "cpu")
    if model.rate_point.name != rate:
        raise WeightsError(f"weights file {path} holds rate point {model.rate_point.name!r}, not {rate!r}")
    fp = model.fingerprint()
    if entry.get("fingerprint") and entry["fingerprint"] != fp:
        raise WeightsError(f"weights file {path} builds a model whose fingerprint differs from the manifest")
    return model, entry


def prior_from_state(state: dict[str, Any]) -> RangeCodedPrior:
    """A prior file's state as its prior: count tables (``facekit-prior/1`` to ``/3``) or networks (``/4``)."""
    if state.get("format") == NeuralPrior.FORMAT:
        return NeuralPrior.from_state(state)
    return ContextPrior.from_state(state)


def load_prior(entry: dict[str, Any], folder: PathLike, fingerprint: str) -> RangeCodedPrior:
    """A model's context prior, sha256-checked, and made for exactly the weights of ``fingerprint``."""
    meta = entry.get("prior")
    if not meta:
        raise WeightsError(f"no context prior for {entry.get('file')} in the manifest")
    path = Path(folder) / meta["file"]
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise WeightsError(f"prior file {path} cannot be read: {e}") from e
    if hashlib.sha256(raw).hexdigest() != meta["sha256"]:
        raise WeightsError(f"prior file {path} does not match its sha256 in the manifest: modified or damaged")
    try:
        state = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
        prior = prior_from_state(state)
    except Exception as e:  # noqa: BLE001 - any unpickling failure means a bad file
        raise WeightsError(f"prior file {path} cannot be loaded: {e}") from e
    if state.get("model_fingerprint") != fingerprint:
        raise WeightsError(f"prior file {path} was fitted for other weights")
    return prior


def list_models(folder: PathLike | None = None) -> list[dict[str, Any]]:
    """One row per model of a weights folder: name, variant, rate point, file, bytes, sha256, prior, metrics.

    ``metrics`` are the entry's measured numbers: the shipped weights' bpp and PSNR on the
    held-out images (``metrics``), or the training run's held-out metrics.
    """
    rows = []
    for name, e in read_manifest(folder)["models"].items():
        prior = e.get("prior") or None
        rows.append({
            "name": name, "variant": e.get("variant"), "rate_point": e.get("rate_point"), "file": e.get("file"),
            "bytes": e.get("bytes"), "sha256": e.get("sha256", ""),
            "prior": None if prior is None else {k: prior.get(k) for k in ("file", "format", "bytes", "sha256")},
            "metrics": e.get("metrics") or (e.get("training") or {}).get("held_out_metrics") or {},
        })
    return rows


def verify(folder: PathLike | None = None) -> list[str]:
    """Hash-check every file the manifest lists; returns one line per problem (empty: all good)."""
    folder = Path(folder or weights_dir())
    problems = []
    for name, e in read_manifest(folder)["models"].items():
        for meta in (e, e.get("prior") or None):
            if meta is None:
                continue
            path = folder / meta["file"]
            try:
                digest = hashlib.sha256(path.read_bytes()).hexdigest()
            except OSError as err:
                problems.append(f"{name}: {meta['file']} cannot be read ({err.strerror or err})")
                continue
            if digest != meta["sha256"]:
                problems.append(f"{name}: {meta['file']} has sha256 {digest[:12]}..., the manifest says {meta['sha256'][:12]}...")
    return problems


# --------------------------------------------------------------------------- installing


def install_weights(
    model: FaceCodecNet,
    variant: str,
    *,
    folder: PathLike | None = None,
    info: dict[str, Any] | None = None,
    half: bool = True,
) -> dict[str, Any]:
    """Save a model as ``<variant>-<rate>.pt`` in a weights folder and list it in the manifest.

    ``info`` (how the weights were made, measured metrics) is stored in the entry beside
    the file's sha256 and the model's fingerprint. Returns the entry.
    """
    if variant not in VARIANTS:
        raise WeightsError(f"unknown variant {variant!r}")
    folder = Path(folder or weights_dir())
    name = model_name(variant, model.rate_point.name)
    saved = save_weights(model, folder / f"{name}.pt", half=half)
    with manifest_lock(folder):
        manifest = read_manifest(folder)
        manifest.setdefault("format", 1)
        entry = {
            "file": f"{name}.pt", "variant": variant, "rate_point": model.rate_point.name,
            "sha256": saved["sha256"], "fingerprint": saved["fingerprint"], "bytes": saved["bytes"],
            "dtype": "float16" if half else "float32", **(info or {}),
        }
        manifest["models"][name] = entry
        _write_manifest(folder, manifest)
    return entry


def install_prior(
    prior: RangeCodedPrior, variant: str, rate: str, *, folder: PathLike | None = None, info: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Save a fitted context prior as ``<variant>-<rate>-ctx.pt`` and list it under the model's entry."""
    folder = Path(folder or weights_dir())
    with manifest_lock(folder):
        manifest = read_manifest(folder)
        name = model_name(variant, rate)
        if name not in manifest["models"]:
            raise WeightsError(f"install the weights of {name!r} before its prior")
        entry = manifest["models"][name]
        file = f"{model_name(variant, rate, entropy=True)}.pt"
        buf = io.BytesIO()
        torch.save({**prior.state(), "model_fingerprint": entry["fingerprint"]}, buf)
        atomic_write(folder / file, buf.getvalue())
        entry["prior"] = {
            "file": file, "sha256": hashlib.sha256(buf.getvalue()).hexdigest(), "digest": prior.digest(),
            "bytes": len(buf.getvalue()), "context": prior.describe(), "format": prior.format, **(info or {}),
        }
        _write_manifest(folder, manifest)
    return entry["prior"]


def read_run_model(run_dir: PathLike) -> tuple[FaceCodecNet, dict[str, Any]]:
    """A finished training run's network (``model.pt``) and summary; refuses an unfinished run."""
    run = Path(run_dir)
    try:
        summary = json.loads((run / "summary.json").read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise TrainingError(f"{run} is not a training run folder (summary.json: {e})") from e
    if not summary.get("finished"):
        raise TrainingError(f"run {run} has not finished ({summary.get('steps_done')}/{summary.get('steps')} steps)")
    blob = torch.load(run / "model.pt", map_location="cpu", weights_only=True)
    model = FaceCodecNet(RatePoint.from_dict(blob["rate_point"]))
    model.load_state_dict(blob["state_dict"])
    return model, summary


def export_weights(model_file: PathLike, dest: PathLike, *, half: bool = True) -> dict[str, Any]:
    """Turn a run's ``model.pt`` into the small file facekit ships (float16 by default).

    Returns ``{"sha256", "fingerprint", "bytes"}`` of the written file.
    """
    blob = torch.load(model_file, map_location="cpu", weights_only=True)
    model = FaceCodecNet(RatePoint.from_dict(blob["rate_point"]))
    model.load_state_dict(blob["state_dict"])
    return save_weights(model, Path(dest), half=half)


def is_joint_run(summary: dict[str, Any]) -> bool:
    """Whether a run's summary is one of joint fine-tuning (phase two) rather than distortion training."""
    return summary.get("phase", "joint" if "lambda_id" in summary.get("config", {}) else "distortion") == "joint"


def install_run(
    run_dir: PathLike,
    variant: str = "mse",
    *,
    folder: PathLike | None = None,
    root: PathLike | None = None,
    data_note: str | None = None,
) -> dict[str, Any]:
    """Ship a finished distortion run: float16 weights plus a manifest entry saying how they were made.

    The entry records the training data, steps, batch, crop, seed, hardware and time,
    and the bpp (whole containers) and PSNR of the shipped weights on the run's
    held-out validation images (re-loaded from LFW under ``root``).
    """
    from .codecs.learned import LearnedCodec
    from .data.lfw import open_lfw
    from .training.record import distortion_record

    model, summary = read_run_model(run_dir)
    training = distortion_record(summary, data_note)
    entry = install_weights(model, variant, folder=folder, info={"training": training})
    # measure the shipped (float16) weights through the codec: whole container bytes
    codec = LearnedCodec(variant, folder=folder)
    lfw = open_lfw(root)
    imgs = [lfw.load(n) for n in summary["val_images"]]
    rate = model.rate_point.name
    m = rate_and_psnr(codec, imgs, rate)
    metrics = {"held_out_split": {"images": len(imgs), "bpp": round(m["bpp"], 5), "psnr": round(m["psnr"], 3)}}
    update_manifest(variant, rate, {"metrics": metrics}, folder=folder)
    entry["metrics"] = metrics
    return entry


def install_joint(
    run_dir: PathLike,
    *,
    folder: PathLike | None = None,
    base_entry: dict[str, Any] | None = None,
    variant: str | None = None,
) -> dict[str, Any]:
    """Ship a finished joint fine-tuning run, with the record of how it was made.

    The run's config decides the variant (:meth:`facekit.training.config.JointConfig.variant`):
    ``jointface`` with a face-weighted distortion (``background_weight < 1``), else
    ``jointrate`` with the rate term (``lambda_rate > 0``), else ``joint`` (the paper's
    phase two). ``variant`` may only confirm that choice, so weights trained for one recipe
    never replace another's. ``base_entry`` is the manifest entry of the starting weights.
    """
    from .training.record import joint_record, joint_variant

    run = Path(run_dir)
    model, summary = read_run_model(run)
    made_as = joint_variant(summary["config"])
    if variant is not None and variant != made_as:
        raise TrainingError(
            f"joint run {run} was trained with lambda_rate {summary['config'].get('lambda_rate', 0.0)} and background "
            f"weight {summary['config'].get('background_weight', 1.0)}: it ships as the {made_as!r} variant, not {variant!r}"
        )
    training = joint_record(summary, base_entry)
    return install_weights(model, made_as, folder=folder, info={"training": training})


def install(
    run_dir: PathLike, *, variant: str | None = None, folder: PathLike | None = None, root: PathLike | None = None
) -> dict[str, Any]:
    """Ship a finished run of either phase: :func:`install_joint` for a joint fine-tuning run
    (its starting weights are the ``mse`` entry of the same rate point), else
    :func:`install_run` (as ``variant``, default ``mse``). Returns the manifest entry."""
    _, summary = read_run_model(run_dir)
    if is_joint_run(summary):
        base = read_manifest(folder)["models"].get(model_name("mse", summary["rate_point"]))
        return install_joint(run_dir, folder=folder, base_entry=base, variant=variant)
    return install_run(run_dir, variant or "mse", folder=folder, root=root)


def retired_name(name: str, fingerprint: str) -> str:
    """The store name of earlier weights of ``name``: ``<name>@<the first 8 hex digits of their fingerprint>``,
    the tag their files record (:func:`install_hyperprior` keeps them under it).

    Example: ``retired_name("hyperprior", "0cec36fc9a…")`` is ``"hyperprior@0cec36fc"``."""
    return f"{name}@{fingerprint[:8]}"


def install_hyperprior(model: Any, name: str, *, folder: PathLike | None = None, info: dict[str, Any] | None = None) -> dict[str, Any]:
    """Save a :class:`~facekit.models.hyperprior.FaceHyperprior` as ``<name>.pt`` (float32: its integer
    networks are rounded from these weights) and list it in the manifest with ``info``. Returns the entry.

    Weights of another fingerprint already installed as ``name`` are kept as :func:`retired_name`
    (``"retired": true``), so that the files they made still decode
    (:meth:`~facekit.codecs.hyperprior.HyperpriorCodec.decode` finds them by fingerprint)."""
    from .codecs.hyperprior import model_fingerprint

    folder = Path(folder or weights_dir())
    folder.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    torch.save({"format": "facekit-hyperprior/1", "arch": model.arch.to_dict(),
                "state_dict": {k: v.detach().cpu().float() for k, v in model.state_dict().items()}}, buf)
    raw = buf.getvalue()
    with manifest_lock(folder):
        manifest = read_manifest(folder)
        manifest.setdefault("format", 1)
        entry = {"file": f"{name}.pt", "variant": name, "rate_point": None, "sha256": hashlib.sha256(raw).hexdigest(),
                 "fingerprint": model_fingerprint(model), "bytes": len(raw), "dtype": "float32", **(info or {})}
        old = manifest["models"].get(name)
        if old and old.get("fingerprint") not in (None, entry["fingerprint"]) and (folder / old["file"]).exists():
            keep = retired_name(name, old["fingerprint"])
            atomic_write(folder / f"{keep}.pt", (folder / old["file"]).read_bytes())
            manifest["models"][keep] = {**old, "file": f"{keep}.pt", "retired": True}
        atomic_write(folder / f"{name}.pt", raw)
        manifest["models"][name] = entry
        _write_manifest(folder, manifest)
    return entry


def load_hyperprior(name: str, *, folder: PathLike | None = None, hint: str | None = None) -> tuple[Any, dict[str, Any]]:
    """A stored hyperprior model (sha256- and fingerprint-checked, eval mode) and its manifest entry.

    Without the entry ``name``: a WeightsError, ending with ``hint`` (how to make the weights) when given.
    """
    from .codecs.hyperprior import model_fingerprint
    from .models.hyperprior import FaceHyperprior, HyperpriorArch

    folder = Path(folder or weights_dir())
    entry = read_manifest(folder)["models"].get(name)
    if entry is None:
        raise WeightsError(f"no weights for {name!r} in {folder / MANIFEST}" + (f": {hint}" if hint else ""))
    raw = (folder / entry["file"]).read_bytes() if (folder / entry["file"]).exists() else b""
    if hashlib.sha256(raw).hexdigest() != entry["sha256"]:
        raise WeightsError(f"weights file {folder / entry['file']} is missing or does not match its sha256")
    blob = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    model = FaceHyperprior(HyperpriorArch.from_dict(blob["arch"]))
    model.load_state_dict(blob["state_dict"])
    if model_fingerprint(model) != entry["fingerprint"]:
        raise WeightsError(f"weights file {folder / entry['file']} builds a model whose fingerprint differs from the manifest")
    return model.eval(), entry
