"""Re-measure the rate of range-coded points after a new context prior; the accuracy stays.

    python benchmarks/rerate.py --results results/rate_accuracy.json --out rerate.json \\
        --only facekit-jointrate-entropy:q1 facekit-jointrate-entropy-roi:q4

A ``-entropy`` codec codes the same integer codes as its PNG twin (``facekit-<variant>``,
or ``facekit-<variant>-roi``): the prior only changes how many bytes they take. So when a
new prior is fitted (:func:`facekit.training.prior.fit_prior`), the decoded images, and with them
every embedding and the accuracy, are those already measured; only ``bpp`` moves.

This script proves that for each point rather than assuming it: it compresses every image
of the pairs file with the codec as it is now, decodes the *codes* of every stream and
checks they equal the codes the model makes for that image (with the face region applied
for ``-roi``), so each decoded image is exactly the one the earlier sweep scored. A
mismatch stops it. It then writes the point with the new ``bpp`` and the earlier
accuracy, PSNR and folds, plus a ``rate_remeasured`` record (the old bpp, the prior's
digest, the number of images checked). Merge the output with
``facekit.evaluate.merge_results(old, new, by_point=True)``.

With ``--from-twin`` the accuracy is taken from the PNG twin's point instead (for
``facekit-jointrate-entropy-roi:q2`` that is ``facekit-jointrate-roi:q2``): after new
weights are installed, one full sweep of the twin and this re-rate give the range-coded
point without scoring the same decoded images twice. The twin must have been measured
with the weights installed now; the codes check above is what ties the two together.

It needs no recogniser and no landmarks; on one CPU thread it takes about as long as the
encoder plus one range decode per image.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np


def _names(root: str | None, pairs: str) -> tuple[Any, list[str]]:
    """The data set and the images its pairs file names, in the sweep's order."""
    from facekit.data.lfw import open_lfw

    lfw = open_lfw(root)
    return lfw, lfw.pair_images(lfw.pairs(pairs))


def _point(res: dict[str, Any], name: str, setting: str) -> dict[str, Any] | None:
    """The point of codec ``name`` at ``setting`` in a results file, or None."""
    from facekit.codecs.names import canonical_name

    return next((p for p in res["codecs"].get(canonical_name(name), []) if p["setting"] == setting), None)


def twin_name(name: str) -> str:
    """The PNG codec whose decoded images a range-coded codec without a background shares."""
    from facekit.codecs.names import LearnedSpec

    spec = LearnedSpec.parse(name)
    if spec is None or not spec.entropy or spec.background is not None:
        raise ValueError(f"{name} is not a range-coded codec with a PNG twin (-entropy, no background)")
    return LearnedSpec(spec.variant, roi=spec.roi).name


def rerate_point(
    codec: Any, setting: str, lfw: Any, names: list[str], read: Any, batch: int = 32, progress: bool = True,
    check_every: int = 1,
) -> dict[str, Any]:
    """Mean bpp of ``codec`` at ``setting`` over ``names`` (each read with ``read(path)``, as the
    sweep's recogniser reads originals); the codes of every ``check_every``-th stream (every
    one by default) are decoded and checked. Every image is compressed, so the rate is exact."""
    import torch
    from tqdm.auto import tqdm

    from facekit import container
    from facekit.codecs.base import bits_per_pixel
    from facekit.errors import CodecError

    if not getattr(codec, "entropy", False):
        raise CodecError(f"{codec.name} is not range-coded: its rate does not depend on a prior")
    model, prior = codec.model(setting), codec.prior(setting)
    if check_every < 1:
        raise ValueError(f"check_every must be at least 1, got {check_every}")
    bpps: list[float] = []
    checked = 0
    kinds: dict[int, int] = {}
    bar = tqdm(total=len(names), desc=f"{codec.name}@{setting}", disable=not progress, leave=False)
    for k in range(0, len(names), batch):
        chunk = names[k : k + batch]
        origs = [read(lfw.path(n)) for n in chunk]
        datas = codec.encode_batch(origs, setting)
        if len({im.shape for im in origs}) != 1:
            raise CodecError("rerate expects images of one size (LFW's 250x250)")
        wants = model.codes(torch.from_numpy(np.stack(origs)).permute(0, 3, 1, 2).float().div(255)).numpy()
        for i, (n, im, data, want) in enumerate(zip(chunk, origs, datas, wants, strict=True)):
            h, w = im.shape[:2]
            bpps.append(bits_per_pixel(data, h, w))
            if (k + i) % check_every:
                continue
            checked += 1
            if codec.roi is not None:
                want = codec.apply_roi(want, codec.roi_region(im, want.shape, model.downsample))
            payload = container.parse(data).payload
            kinds[payload[0]] = kinds.get(payload[0], 0) + 1
            got = codec.entropy_codes(prior, payload, want.shape, model.rate_point.bits, (h, w), model.downsample)
            if not np.array_equal(got, want):
                raise CodecError(f"{codec.name}@{setting}: the stream of {n} decodes to other codes than the model makes")
        bar.update(len(chunk))
    bar.close()
    return {"bpp": float(np.mean(bpps)), "n_images": len(bpps), "n_checked": checked, "prior": prior.digest(), "prior_format": prior.format, "payload_types": kinds}


def main() -> None:
    from facekit.codecs import get_codec
    from facekit.codecs.names import canonical_name
    from facekit.container import VERSION as CONTAINER_FORMAT
    from facekit.evaluate import load_results, save_results
    from facekit.provenance import code_commit, provenance

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--results", required=True, help="the results JSON whose points are re-rated")
    ap.add_argument("--only", nargs="+", required=True, metavar="CODEC:SETTING")
    ap.add_argument("--out", required=True, help="a results JSON with the re-rated points only (merge it by point)")
    ap.add_argument("--root", default=None, help="LFW (default $FACEKIT_LFW)")
    ap.add_argument("--recognizer", default=None, help="whose reader decodes the originals (default: the results' recogniser)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--check-every", type=int, default=1,
                    help="decode and check the codes of every N-th stream only (default 1: all); every image is still compressed")
    ap.add_argument("--from-twin", action="store_true",
                    help="carry the accuracy of the PNG twin's point (facekit-X-entropy -> facekit-X), not the point's own")
    a = ap.parse_args()

    import torch

    from facekit.recognition import get_recognizer

    torch.set_num_threads(a.threads)
    old = load_results(a.results)
    pairs = old["protocol"].get("pairs_file", "pairs.txt")
    lfw, names = _names(a.root, pairs)
    rec = get_recognizer(a.recognizer or old["recognizer"]["name"])
    reader = rec.read_original  # the originals, decoded as the sweep's recogniser decoded them
    out = {k: old[k] for k in ("recognizer", "protocol", "data_sha256")}
    out["codecs"] = {}
    codecs: dict[str, Any] = {}
    finder = None
    for job in a.only:
        name, setting = job.split(":", 1)
        source = twin_name(name) if a.from_twin else name
        before = _point(old, source, setting)
        if before is None:
            raise SystemExit(f"{source}:{setting}: no such point in {a.results} to re-rate")
        if before.get("n_images") not in (None, len(names)):
            raise SystemExit(f"{job}: the point was measured on {before['n_images']} images, the pairs file names {len(names)}")
        if name not in codecs:  # one codec (and its loaded models) per name
            codecs[name] = get_codec(name)
        codec = codecs[name]
        if codec.roi is not None:  # one face finder (and its cache) for every ROI point
            finder = finder or codec.roi
            codec.roi = finder
        t0 = time.time()
        r = rerate_point(codec, setting, lfw, names, reader, check_every=a.check_every)
        point = {k: v for k, v in before.items() if k not in ("rate_remeasured", "container")}
        point["bpp"] = r["bpp"]
        if a.from_twin:
            own = _point(old, name, setting)
            carried = {"bpp_before": own["bpp"] if own else None, "accuracy_from": f"{source}:{setting}",
                       "twin_bpp": before["bpp"]}
            how = (f"every image compressed again; each stream's decoded codes equal the model's, which {source} "
                   "stores losslessly, so the decoded images, embeddings and accuracy are those measured for it")
        else:
            carried = {"bpp_before": before["bpp"]}
            how = ("every image compressed again; each stream's decoded codes equal the model's, so the decoded "
                   "images, embeddings and accuracy are those of the earlier measurement")
        if a.check_every > 1:
            how = how.replace("each stream's decoded codes equal",
                              f"the decoded codes of every {a.check_every}th stream ({r['n_checked']} images) equal")
        point["container"] = {"format": CONTAINER_FORMAT, "measured": True}
        point["rate_remeasured"] = {
            **carried,
            "prior": r["prior"],
            "prior_format": r["prior_format"],
            "images_rated": r["n_images"],
            "images_checked": r["n_checked"],
            "payload_types": r["payload_types"],
            "how": how,
            "code_commit": code_commit(),
            "seconds": round(time.time() - t0, 1),
        }
        out["codecs"].setdefault(canonical_name(name), []).append(point)
        out["provenance"] = provenance(seed=old.get("provenance", {}).get("seed"))
        save_results(out, a.out)
        print(f"{job}: {before['bpp']:.4f} -> {r['bpp']:.4f} bpp ({100 * (1 - r['bpp'] / before['bpp']):.1f} % fewer), "
              f"{r['n_images']} images ({r['n_checked']} decoded and checked), {time.time() - t0:.0f} s", flush=True)


if __name__ == "__main__":
    main()
