"""Rate-accuracy evaluation: compress, decode, align, embed, run the 10-fold protocol.

The paper's measure (Bian et al. 2019, Sec. 4): LFW verification accuracy on
compressed images against the bits per pixel that made them. For each codec and
setting, every image of the pairs file is encoded (bpp from the real bytes), decoded,
aligned with the transform found on its *original* (so the codec is judged, not the
detector), embedded, and the pairs are scored with the 10-fold protocol of
:mod:`facekit.protocol`. ``end_to_end=True`` instead detects and aligns on the decoded
image itself and reports detection failures.

Images are streamed in batches, so peak memory stays small whatever the data set; the
embeddings of each (recogniser, codec, setting) are cached on disk, so a sweep that is
stopped resumes where it was.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .codecs import get_codec
from .codecs.base import Codec, bits_per_pixel
from .codecs.names import LearnedSpec, canonical_name, is_learned, writes_container
from .config import cache_dir
from .container import VERSION as CONTAINER_FORMAT
from .data.lfw import LFW, Pair, open_lfw
from .errors import DataError, RecognizerError
from .fileio import atomic_path, sha256_file, write_json
from .metrics import psnr
from .protocol import evaluate_pairs, pair_distances
from .provenance import code_commit, peak_memory_mib, provenance

#: default sweep: every codec, settings spanning ~0.05 to ~1.5 bpp on 250x250 LFW
DEFAULT_SWEEP: dict[str, tuple[Any, ...]] = {
    "uncompressed": (None,),
    "jpeg": (1, 3, 5, 8, 12, 20, 30, 50),
    "jpeg2000": (0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.6, 1.0, 1.5),
    "webp": (0, 5, 10, 20, 30, 50, 70, 90),
    "avif": (0, 5, 10, 20, 30, 40, 50, 70),
    "paper-mse": (),  # () means: the codec's own settings
    "paper": (),
    "facekit-jointrate-entropy": (),  # rate term, range-coded
    "facekit": (),  # the recommended whole-image codec (face-weighted distortion, rate term, range-coded)
    "facekit-joint-roi": (),
    "facekit-jointrate-entropy-roi": (),  # the face region only, range-coded
    "facekit-roi": (),  # ... and the background at q1 (its settings: the rate points above q1)
    "jpeg2000-roi": (0.03, 0.05, 0.1, 0.2, 0.4),
    "avif-roi": (0, 10, 20, 30, 50),
}


def subset_pairs(pairs: Sequence[Pair], per_fold: int | None) -> list[Pair]:
    """The first ``per_fold/2`` matched and mismatched pairs of each fold (all if None)."""
    if per_fold is None:
        return list(pairs)
    if per_fold < 2:
        raise ValueError("per_fold must be at least 2")
    out, counts = [], {}
    for p in pairs:
        key = (p.fold, p.same)
        if counts.get(key, 0) < per_fold // 2:
            out.append(p)
            counts[key] = counts.get(key, 0) + 1
    return out


def _batched(items: Sequence[str], n: int) -> Iterable[list[str]]:
    for i in range(0, len(items), n):
        yield list(items[i : i + n])


@dataclass
class Context:
    """What every codec run of one evaluation shares."""

    lfw: LFW
    pairs: list[Pair]
    names: list[str]
    recognizer: Any
    device: Any
    thetas: dict[str, np.ndarray]
    batch_size: int
    data_key: str
    progress: bool
    end_to_end: bool = False
    use_cache: bool = True


def _embed_batch(ctx: Context, images: list[np.ndarray], thetas: list[np.ndarray]) -> np.ndarray:
    import torch

    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float().div(255.0).to(ctx.device)
    th = torch.from_numpy(np.stack(thetas).astype(np.float32)).to(ctx.device)
    with torch.inference_mode():
        return ctx.recognizer.embed(x, th).float().cpu().numpy()


def _cache_path(ctx: Context, codec_id: str, setting: Any) -> Path:
    """Where the embeddings of one codec setting are cached: the key names the recogniser by
    :meth:`~facekit.recognition.base.Recognizer.cache_id` (name, code version, alignment, weights digest: stale
    embeddings are never served), the codec by its description, and the data by the digest of the pairs and images."""
    cache_id = getattr(ctx.recognizer, "cache_id", None)
    rec_id = cache_id() if callable(cache_id) else ctx.recognizer.name
    key = json.dumps([rec_id, codec_id, repr(setting), ctx.data_key, ctx.end_to_end])
    digest = hashlib.sha256(key.encode()).hexdigest()[:24]
    return cache_dir() / "embeddings" / f"{digest}.npz"


def run_setting(ctx: Context, codec: Codec | None, setting: Any, codec_id: str) -> dict[str, Any]:
    """Embed every image after ``codec`` at ``setting`` (None: the original files)."""
    path = _cache_path(ctx, codec_id, setting)
    if ctx.use_cache and path.exists():
        with np.load(path, allow_pickle=False) as z:
            if list(z["names"]) == ctx.names and np.isfinite(z["embeddings"]).all():
                return {k: z[k] for k in z.files}
            # other names (another subset) or non-finite embeddings: computed again below
    from tqdm.auto import tqdm

    embs, bpps, psnrs, failed = [], [], [], []
    label = f"{codec.name}@{setting}" if codec is not None else "uncompressed"
    bar = tqdm(total=len(ctx.names), desc=label, disable=not ctx.progress, leave=False)
    for names in _batched(ctx.names, ctx.batch_size):
        origs = [_load_original(ctx, n) for n in names]
        if codec is None:
            decoded = origs
            datas = [ctx.lfw.path(n).read_bytes() for n in names]
        else:
            # one batch through the codec: the learned codec runs it as one network batch
            datas = codec.encode_batch(origs, setting)
            decoded = codec.decode_batch(datas)
        thetas = []
        for n, orig, data, dec in zip(names, origs, datas, decoded, strict=True):
            if dec.shape != orig.shape:
                raise DataError(f"{label} decoded {n} to {dec.shape}, expected {orig.shape}")
            bpps.append(bits_per_pixel(data, *orig.shape[:2]))
            psnrs.append(np.inf if codec is None else psnr(orig, dec))
            if ctx.end_to_end:
                theta, method = _detect(ctx.recognizer, dec, ctx.thetas[n])
                if method != "hog":
                    failed.append(f"{n}:{method}")
            else:
                theta = ctx.thetas[n]
            thetas.append(theta)
        embs.append(_embed_batch(ctx, decoded, thetas))
        bar.update(len(names))
    bar.close()
    embeddings = np.concatenate(embs)
    bad = ~np.isfinite(embeddings).all(axis=1)
    if bad.any():  # a recogniser fault: never scored, never cached
        examples = [ctx.names[i] for i in np.flatnonzero(bad)[:3]]
        raise RecognizerError(
            f"{ctx.recognizer.name} gave non-finite embeddings for {int(bad.sum())} images after {label}, "
            f"e.g. {examples}; nothing was cached"
        )
    result = {"names": np.array(ctx.names), "embeddings": embeddings, "bpp": np.array(bpps), "psnr": np.array(psnrs),
              "failed": np.array(failed, dtype=str)}
    if ctx.use_cache:
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.savez(f, **result)
    return result


def _load_original(ctx: Context, name: str) -> np.ndarray:
    """An original image, decoded the way the recogniser's reference pipeline decodes it."""
    reader = getattr(ctx.recognizer, "read_original", None)
    if reader is None:
        return ctx.lfw.load(name)
    path = ctx.lfw.path(name)
    if not path.exists():
        raise DataError(f"image {name} is missing from {ctx.lfw.images}")
    return reader(path)


def _detect(recognizer: Any, image: np.ndarray, fallback: np.ndarray) -> tuple[np.ndarray, str]:
    """Detect and align on a decoded image; returns the transform and how it was found: the recogniser's method
    (``"hog"`` for dlib's detector; ``"mtcnn"`` or ``"centre"`` are fallbacks and count as detection failures). A
    recogniser without ``locate`` uses ``find_transform``; an exception there is reported as ``"failed"`` and the
    original's transform is used, so the pair is still scored."""
    locate = getattr(recognizer, "locate", None)
    try:
        if locate is not None:
            loc = locate(image)
            return np.asarray(loc.theta), str(getattr(loc, "method", "hog"))
        return np.asarray(recognizer.find_transform(image)), "hog"
    except Exception:  # any detection failure counts as one, and is reported
        return fallback, "failed"


def score(ctx: Context, run: dict[str, Any]) -> dict[str, Any]:
    """Protocol figures for one run's embeddings."""
    index = {n: i for i, n in enumerate(ctx.names)}
    emb = run["embeddings"]
    a = emb[[index[p.a] for p in ctx.pairs]]
    b = emb[[index[p.b] for p in ctx.pairs]]
    d = pair_distances(a, b, ctx.recognizer.distance)
    same = np.array([p.same for p in ctx.pairs])
    folds = np.array([p.fold for p in ctx.pairs])
    r = evaluate_pairs(d, same, folds)
    finite = np.isfinite(run["psnr"])
    r.update(
        bpp=float(np.mean(run["bpp"])),
        psnr=float(np.mean(run["psnr"][finite])) if finite.any() else None,
        n_images=len(ctx.names),
    )
    if ctx.end_to_end:
        r["detection_failures"] = len(run["failed"])
        r["detection_failure_examples"] = [str(f) for f in run["failed"][:10]]
    return r


def make_context(
    root: str | os.PathLike[str] | None = None,
    pairs: str = "pairs.txt",
    recognizer: str | Any = "dlib-resnet",
    device: Any = None,
    per_fold: int | None = None,
    batch_size: int = 64,
    progress: bool = True,
    end_to_end: bool = False,
    use_cache: bool = True,
) -> Context:
    """Open the data, build the recogniser, find (or load cached) transforms on the originals."""
    import itertools

    import torch

    from .recognition import find_alignments, get_recognizer

    lfw = open_lfw(root)
    pair_list = subset_pairs(lfw.pairs(pairs), per_fold)
    names = sorted({p.a for p in pair_list} | {p.b for p in pair_list})
    missing = [n for n in names if not lfw.path(n).exists()]
    if missing:
        raise DataError(f"{len(missing)} images named in {pairs} are missing, e.g. {missing[:3]}")
    rec = get_recognizer(recognizer, device=device) if isinstance(recognizer, str) else recognizer
    # the device the recogniser's weights are on (CPU for one without any)
    dev = next((t.device for t in itertools.chain(rec.parameters(), rec.buffers())), torch.device("cpu"))
    thetas = {n: loc.theta for n, loc in find_alignments(rec, lfw, names, progress=progress).items()}
    pairs_sha = sha256_file(lfw.pairs_file(pairs))
    data_key = hashlib.sha256(f"{pairs_sha}|{images_digest(lfw, names)}".encode()).hexdigest()
    return Context(lfw, pair_list, names, rec, dev, thetas, batch_size, data_key, progress, end_to_end, use_cache)


def images_digest(lfw: LFW, names: Sequence[str]) -> str:
    """sha256 over the sorted names and the sha256 of each image file: the data's identity. It keys the embedding
    cache (an edited image is never served from it) and is recorded in the results (other image sets never merge)."""
    h = hashlib.sha256()
    for n in sorted(names):
        h.update(n.encode())
        h.update(bytes.fromhex(sha256_file(lfw.path(n))))
    return h.hexdigest()


def data_sha256(lfw: LFW, pairs: str, names: Sequence[str]) -> dict[str, str]:
    """The results' ``data_sha256``: the archive's sha256 (if any), the pairs file's, and :func:`images_digest`."""
    arch = {lfw.archive.name: sha256_file(lfw.archive)} if lfw.archive is not None else {}
    return {**arch, pairs: sha256_file(lfw.pairs_file(pairs)), "images": images_digest(lfw, names)}


def _codec_id(codec: Codec) -> str:
    """What identifies a codec's output: its description (library versions, weights fingerprints).

    A learned codec is named in it spelled out (``facekit-jointface-entropy``, not ``facekit``),
    so that the key says what made the bytes whatever the catalogue calls it.
    """
    d = codec.describe()
    spec = LearnedSpec.parse(str(d.get("name", "")))
    if spec is not None:
        d = {**d, "name": spec.long_name}
    return json.dumps({k: d[k] for k in sorted(d) if k != "settings"}, sort_keys=True, default=str)


def evaluate(
    root: str | os.PathLike[str] | None = None,
    *,
    pairs: str = "pairs.txt",
    codecs: Sequence[str] | dict[str, Sequence[Any]] | None = None,
    recognizer: str | Any = "dlib-resnet",
    device: Any = None,
    per_fold: int | None = None,
    batch_size: int = 64,
    end_to_end: bool = False,
    progress: bool = True,
    use_cache: bool = True,
    seed: int = 0,
    on_point: Callable[[str, dict], None] | None = None,
    codec_options: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Sweep codecs over their settings and return the results dict (see :func:`save_results`).

    ``codecs`` is a list of names (each with its default sweep) or ``{name: settings}``;
    ``None`` sweeps every available codec. ``per_fold`` limits each fold to that many
    pairs (half matched, half mismatched) for quick runs. ``codec_options`` gives a codec's
    keyword arguments by name (``{"facekit-hyperprior": {"folder": weights_folder}}``).

    A codec with a continuous setting stores it as a float, a preset name as its value
    (:meth:`~facekit.codecs.base.Codec.normalise_setting`: ``facekit-hyperprior``'s ``q2``, ``0.25`` and ``"0.25"``
    are one point; a bad one fails before LFW is read), and a codec with stored weights records them in each point
    (:meth:`~facekit.codecs.base.Codec.weights_record`), so that :func:`merge_results` never mixes two sets of weights.
    """
    import torch

    code_commit()  # the commit this process started with, whatever the checkout holds at the end
    torch.manual_seed(seed)
    np.random.seed(seed)
    built: dict[str, Codec] = {}
    sweep = resolve_sweep(codecs, codec_options, built=built)
    t0 = time.time()
    ctx = make_context(root, pairs, recognizer, device, per_fold, batch_size, progress, end_to_end, use_cache)
    results: dict[str, list[dict]] = {}
    for name, settings in sweep.items():
        points = []
        if name == "uncompressed":
            pts, weights = [(None, run_setting(ctx, None, None, "uncompressed"))], None
        else:
            codec = built.get(name)  # the default sweep builds none early; a learned one goes on the recogniser's device
            if codec is None or (is_learned(name) and ctx.device.type != "cpu"):
                codec = build_codec(name, codec_options, device=ctx.device if is_learned(name) else None)
            cid = _codec_id(codec)
            wanted = dict.fromkeys(codec.normalise_setting(s) for s in (settings or codec.settings))
            pts = [(s, run_setting(ctx, codec, s, cid)) for s in wanted]
            weights = codec.weights_record()
        for s, run in pts:
            p = {"setting": s, **score(ctx, run)}
            if weights is not None:
                p["weights"] = weights
            if writes_container(name):  # bpp measured on files of this container format
                p["container"] = {"format": CONTAINER_FORMAT, "measured": True}
            points.append(p)
            if on_point:
                on_point(name, p)
        results[name] = points
    data_sha = data_sha256(ctx.lfw, pairs, ctx.names)
    return {
        "codecs": results,
        "recognizer": {
            "name": ctx.recognizer.name,
            "distance": ctx.recognizer.distance,
            "threshold": ctx.recognizer.threshold,
        },
        "protocol": {
            "pairs_file": pairs,
            "n_pairs": len(ctx.pairs),
            "n_images": len(ctx.names),
            "folds": len({p.fold for p in ctx.pairs}),
            "per_fold": per_fold,
            "threshold": "chosen on the other folds",
            "alignment": "detected on the decoded image" if end_to_end else "found on the original image",
            "accuracy": "fraction; mean and population std over folds",
            "bpp": "8 * len(bytes) / (H * W), whole files",
        },
        "data_sha256": data_sha,
        "provenance": provenance(ctx.device, seed, seconds=round(time.time() - t0, 1), peak_rss_mib=peak_memory_mib()),
    }


def resolve_sweep(
    codecs: Sequence[str] | dict[str, Sequence[Any]] | None, codec_options: dict[str, dict[str, Any]] | None = None,
    *, built: dict[str, Codec] | None = None,
) -> dict[str, Sequence[Any]]:
    """``{name: settings}`` to sweep, under the names results are stored by (:func:`canonical_name`). Each codec is
    built here (a learned one on the CPU) and its settings normalised, so an unknown name, missing weights or a bad
    setting fail before any work; ``built``, if given, receives the codecs by those names."""
    if codecs is None:
        from .codecs.registry import available_codecs

        avail = available_codecs(hidden=True)
        return {k: v for k, v in DEFAULT_SWEEP.items() if k == "uncompressed" or avail.get(k, {}).get("available")}
    pairs = codecs.items() if isinstance(codecs, dict) else ((n, None) for n in codecs)
    out = {}
    for name, settings in pairs:
        key = canonical_name(name)
        settings = settings if settings is not None else DEFAULT_SWEEP.get(key, ())
        if name != "uncompressed":
            codec = build_codec(name, codec_options, device="cpu" if is_learned(name) else None)  # unknown names fail here
            settings = tuple(codec.normalise_setting(s) for s in settings)  # ... and bad settings
            if built is not None:
                built[key] = codec
        out[key] = settings
    return out


def build_codec(name: str, codec_options: dict[str, dict[str, Any]] | None = None, *, device: Any = None) -> Codec:
    """The codec ``name`` with its keyword arguments from ``codec_options`` (by name), on ``device`` if given."""
    return get_codec(name, **{**({"device": device} if device is not None else {}), **(codec_options or {}).get(name, {})})


def save_results(results: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write a results JSON atomically."""
    return write_json(path, results)


def load_results(path: str | os.PathLike[str]) -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise DataError(f"results file {path} does not exist")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise DataError(f"{path} is not valid JSON: {e}") from e
    if "codecs" not in data:
        raise DataError(f"{path} is not a facekit results file (no 'codecs')")
    return canonical_results(data)


def canonical_results(results: dict[str, Any]) -> dict[str, Any]:
    """``results`` with its codecs under their catalogue names (``facekit-jointface-entropy`` -> ``facekit``).

    Results written before the catalogue's short names load as if written after it; two
    entries that name the same codec are a DataError.
    """
    codecs: dict[str, Any] = {}
    for name, points in results["codecs"].items():
        key = canonical_name(name)
        if key in codecs:
            raise DataError(f"results hold the codec {key!r} twice (as {name!r} too)")
        codecs[key] = points
    return {**results, "codecs": codecs}


def codec_points(results: dict[str, Any], name: str) -> list[dict[str, Any]]:
    """The points of codec ``name`` (its catalogue name or its spelled-out one); DataError when absent."""
    key = canonical_name(name)
    for stored, points in results["codecs"].items():
        if canonical_name(stored) == key:
            return points
    raise DataError(f"results hold no codec {name!r} (they hold {', '.join(results['codecs'])})")


def merge_results(old: dict[str, Any], new: dict[str, Any], *, by_point: bool = False) -> dict[str, Any]:
    """Add ``new``'s codecs to ``old`` (a codec's spelled-out name and its catalogue name are one codec).

    By default a codec of the same name is replaced whole; ``by_point=True`` merges its
    points instead (a point of ``new`` replaces one of ``old`` with the same setting,
    the others are kept), ordered by bpp, so a sweep can be run one setting at a time. Both must come from
    one protocol, recogniser and data (:func:`check_same_run`), a codec's points merged by point from the
    same weights (:func:`check_one_weights`); otherwise a DataError.
    """
    check_same_run(old, new)
    old, new = canonical_results(old), canonical_results(new)
    merged = dict(old)
    codecs = dict(old["codecs"])
    for name, points in new["codecs"].items():
        if by_point and name in codecs:
            fresh = {repr(p["setting"]) for p in points}
            kept = [p for p in codecs[name] if repr(p["setting"]) not in fresh]
            check_one_weights(name, kept, points)
            codecs[name] = sorted(kept + list(points), key=lambda p: p["bpp"])
        else:
            codecs[name] = list(points)
    merged["codecs"] = codecs
    runs = list(old.get("runs", [old.get("provenance")]))
    merged["runs"] = [r for r in runs if r] + [new["provenance"]]
    merged["provenance"] = new["provenance"]
    return merged


def check_same_run(old: dict[str, Any], new: dict[str, Any]) -> None:
    """DataError unless two results dicts share their recogniser, data (sha256) and protocol (pairs file, subset,
    alignment): what makes their points one set of measurements."""
    for key in ("recognizer", "data_sha256"):
        if old.get(key) != new.get(key):
            raise DataError(f"cannot merge results with a different {key}: {old.get(key)} vs {new.get(key)}")
    keep = ("pairs_file", "n_pairs", "per_fold", "alignment")
    if any((old.get("protocol") or {}).get(k) != (new.get("protocol") or {}).get(k) for k in keep):
        raise DataError("cannot merge results of different protocols (pairs file, subset or alignment)")


def check_one_weights(name: str, kept: Sequence[dict[str, Any]], new: Sequence[dict[str, Any]]) -> None:
    """DataError when the points ``new`` of codec ``name`` record other weights (sha256) than the points
    ``kept`` beside them: one results name is one series, made by one set of weights (phase-1 and
    joint weights are never mixed in a curve). Points that record no weights are not compared."""
    old_sha = {p["weights"]["sha256"] for p in kept if (p.get("weights") or {}).get("sha256")}
    new_sha = {p["weights"]["sha256"] for p in new if (p.get("weights") or {}).get("sha256")}
    if old_sha and new_sha and old_sha != new_sha:
        raise DataError(
            f"{name}: the new points were measured with weights sha256 {', '.join(s[:12] for s in sorted(new_sha))}, "
            f"the {len(kept)} kept points with {', '.join(s[:12] for s in sorted(old_sha))}; one curve is one set of "
            "weights. Measure into another results file, or replace the codec's points whole "
            "(benchmarks/rate_accuracy.py --replace, facekit evaluate --merge --replace-codecs)"
        )
