"""A run's held-out curve: PSNR and bpp of real coding against training steps (issue 28).

Every ``val_every`` steps a run codes its held-out faces at a few rates ``t`` (the loop's
``history.jsonl``); the manifest entry of shipped weights keeps that curve for each phase. Three
questions are asked of it:

* does another run of the recipe reproduce it (:func:`compare_curves`, within
  :data:`REPRODUCE_PSNR_DB` and :data:`REPRODUCE_BPP_REL`)?
* how far from convergence is it (:func:`bd_psnr_by_step`)? A single rate's PSNR can rise
  merely because its bits rose too; Bjøntegaard's delta PSNR of each step's rate-PSNR curve
  against the last step's (Bjøntegaard, VCEG-M33) measures the curve itself: a flat end means
  more steps at the schedule's final learning rate do not pay;
* what would a longer schedule give? Whole runs of the recipe at other lengths
  (:func:`differs_only_in_steps`) give the gain per doubling of the steps, fitted
  (:func:`gain_per_doubling`) and step by step (:func:`doubling_gains`, which shows where the
  gains stop), which the last steps of one schedule cannot: its learning rate is decaying there.

Example::

    from facekit.training.curve import bd_psnr_by_step, training_curve

    for row in bd_psnr_by_step(training_curve("runs/hp/rd")):
        print(row["step"], row["bd_psnr_db"])
"""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path
from typing import Any

from ..bdrate import bd_quality
from ..errors import TrainingError
from ..fileio import PathLike


def training_curve(run_dir: PathLike) -> list[dict[str, Any]]:
    """The held-out rows of a run's history: step, training time and ``val_*`` figures."""
    rows = []
    path = Path(run_dir) / "history.jsonl"
    for line in path.read_text().splitlines() if path.exists() else []:
        r = json.loads(line)
        if any(k.startswith("val_") for k in r):
            rows.append({"step": r["step"], "elapsed_s": round(r["elapsed_s"], 1),
                         **{k: round(v, 4) for k, v in r.items() if k.startswith("val_")}})
    return rows


#: how close a rerun of a recipe must come to the shipped weights' held-out figures (issue 28)
REPRODUCE_PSNR_DB = 0.2
REPRODUCE_BPP_REL = 0.02


def compare_curves(
    shipped: list[dict[str, Any]], rerun: list[dict[str, Any]], *,
    psnr_db: float = REPRODUCE_PSNR_DB, bpp_rel: float = REPRODUCE_BPP_REL,
) -> list[dict[str, Any]]:
    """Held-out figures of a rerun against the shipped ones, at every step both curves have.

    Args:
        shipped: a manifest's training curve (rows of :func:`training_curve`).
        rerun: the same recipe's curve from another run (the whole run, or its first steps).
        psnr_db: the largest PSNR difference that counts as reproduced, in dB.
        bpp_rel: the largest relative bpp difference that counts as reproduced.

    Returns:
        one row per step and rate ``t``: the two PSNRs and bpps, their differences and
        ``ok``. A step and ``t`` that either curve lacks a figure of is left out; a shipped bpp of 0
        gives ``ok`` False and ``d_bpp_rel`` None. A TrainingError when the curves share no step.

    Example:
        >>> rows = compare_curves([{"step": 1000, "val_psnr_t1": 24.0, "val_bpp_t1": 0.5}],
        ...                       [{"step": 1000, "val_psnr_t1": 24.1, "val_bpp_t1": 0.505}])
        >>> rows[0]["ok"], round(rows[0]["d_psnr_db"], 2)
        (True, 0.1)
    """
    by_step = {r["step"]: r for r in rerun}
    rows = []
    for ship in shipped:
        other = by_step.get(ship["step"])
        if other is None:
            continue
        for key in sorted(k for k in ship if k.startswith("val_psnr_t") and k in other):
            t = key.removeprefix("val_psnr_t")
            bpp_key = f"val_bpp_t{t}"
            if any(r.get(k) is None for r in (ship, other) for k in (key, bpp_key)):
                continue  # a figure missing from either curve: nothing to compare at this t
            d_psnr = other[key] - ship[key]
            d_bpp = (other[bpp_key] - ship[bpp_key]) / ship[bpp_key] if ship[bpp_key] else None
            rows.append({"step": ship["step"], "t": t, "psnr": ship[key], "psnr_rerun": other[key],
                         "bpp": ship[bpp_key], "bpp_rerun": other[bpp_key], "d_psnr_db": d_psnr, "d_bpp_rel": d_bpp,
                         "ok": d_bpp is not None and abs(d_psnr) <= psnr_db and abs(d_bpp) <= bpp_rel})
    if not rows:
        raise TrainingError("the two training curves share no held-out step")
    return rows


def curve_points(row: dict[str, Any]) -> tuple[list[float], list[float], list[str]]:
    """``(bpps, psnrs, rates)`` of one held-out row (``val_bpp_t<t>``, ``val_psnr_t<t>``), by rising ``t``;
    a rate missing either figure is left out."""
    rates = sorted((k.removeprefix("val_psnr_t") for k in row if k.startswith("val_psnr_t")), key=float)
    rates = [t for t in rates if row.get(f"val_bpp_t{t}") is not None and row.get(f"val_psnr_t{t}") is not None]
    return [row[f"val_bpp_t{t}"] for t in rates], [row[f"val_psnr_t{t}"] for t in rates], rates


def bd_psnr(row: dict[str, Any], ref: dict[str, Any], lo: float = 0.1, hi: float = 0.5) -> float | None:
    """Bjøntegaard's delta PSNR of one held-out row's rate-PSNR curve against another's over ``lo``-``hi``
    bpp (:func:`curve_points` of each); None where they share no rate in the range."""
    return bd_quality(*curve_points(row)[:2], *curve_points(ref)[:2], lo=lo, hi=hi)["delta"]


def bd_psnr_by_step(
    curve: list[dict[str, Any]], lo: float = 0.1, hi: float = 0.5, end: dict[str, Any] | None = None
) -> list[dict[str, Any]]:
    """Bjøntegaard's delta PSNR of each held-out step against the curve's last step, over ``lo``-``hi`` bpp.

    Args:
        curve: rows of :func:`training_curve` (or a manifest phase's ``curve``), each with
            ``val_psnr_t<t>`` and ``val_bpp_t<t>`` at two rates or more.
        lo, hi: the bpp range compared, where both curves reach (the issue's 0.1-0.5 bpp).
        end: the row to compare with instead of the last (e.g. the shipped phase's end, for the
            curve of a run that trained it further).

    Returns:
        ``[{"step", "bd_psnr_db"}, ...]``, one per row, ``bd_psnr_db`` None where the two curves
        share no rate in the range (0 at the last step when ``end`` is not given). A TrainingError
        for an empty curve.

    Example:
        >>> rows = bd_psnr_by_step([{"step": 1, "val_psnr_t0": 27.0, "val_bpp_t0": 0.1, "val_psnr_t1": 31.0, "val_bpp_t1": 0.4},
        ...                         {"step": 2, "val_psnr_t0": 28.0, "val_bpp_t0": 0.1, "val_psnr_t1": 32.0, "val_bpp_t1": 0.4}])
        >>> [round(r["bd_psnr_db"], 2) for r in rows]
        [-1.0, 0.0]
    """
    if not curve:
        raise TrainingError("an empty training curve has no last step to compare with")
    ref = curve[-1] if end is None else end
    return [{"step": row["step"], "bd_psnr_db": bd_psnr(row, ref, lo, hi)} for row in curve]


def training_pixels_per_step(config: dict[str, Any]) -> int:
    """The pixels one training step of a phase sees: ``batch_size * crop**2`` of its config."""
    return int(config["batch_size"]) * int(config["crop"]) ** 2


def bd_psnr_at_equal_training(
    curve: list[dict[str, Any]], reference: list[dict[str, Any]], lo: float = 0.1, hi: float = 0.5,
    scale: float = 1.0,
) -> list[dict[str, Any]]:
    """Bjøntegaard's delta PSNR of each held-out step of ``curve`` against ``reference`` after as much training.

    Two runs that differ in one setting are compared where they have trained as long: the same step,
    or, when their steps see different pixels (another batch or crop), the same pixels seen.

    Args:
        curve: rows of :func:`training_curve` of the run compared.
        reference: rows of the run it is compared with (e.g. a shipped phase's ``curve``).
        lo, hi: the bpp range compared.
        scale: the run's training pixels per step over the reference's
            (:func:`training_pixels_per_step`); 1 for the same batch and crop.

    Returns:
        ``[{"step", "reference_step", "bd_psnr_db"}, ...]``: each row of ``curve`` against the reference
        row nearest ``step * scale``. Rows farther than half the reference's held-out spacing from any
        reference row (beyond its end, say) are left out; ``bd_psnr_db`` is None where the curves share
        no rate in the range. A TrainingError for an empty reference.

    Example:
        >>> ref = [{"step": s, "val_psnr_t0": 27.0 + s / 1000, "val_bpp_t0": 0.1,
        ...         "val_psnr_t1": 31.0 + s / 1000, "val_bpp_t1": 0.4} for s in (1000, 2000, 3000, 4000)]
        >>> run = [{**ref[0], "step": 500}, {**ref[3], "step": 1000}, {**ref[3], "step": 1500}]  # 4x the pixels a step
        >>> [(r["step"], r["reference_step"], round(r["bd_psnr_db"], 2)) for r in bd_psnr_at_equal_training(run, ref, scale=4)]
        [(500, 2000, -1.0), (1000, 4000, 0.0)]
    """
    if not reference:
        raise TrainingError("an empty reference curve has no step to compare with")
    steps = sorted(r["step"] for r in reference)
    slack = (steps[-1] - steps[0]) / (len(steps) - 1) / 2 if len(steps) > 1 else 0
    rows = []
    for row in curve:
        want = row["step"] * scale
        ref = min(reference, key=lambda r: abs(r["step"] - want))
        if abs(ref["step"] - want) > slack:
            continue
        rows.append({"step": row["step"], "reference_step": ref["step"], "bd_psnr_db": bd_psnr(row, ref, lo, hi)})
    return rows


#: training settings that do not change what a run learns: how often it logs, checks and saves
BOOKKEEPING = frozenset({"log_every", "val_every", "checkpoint_every"})


def config_changes(config: dict[str, Any], reference: dict[str, Any]) -> dict[str, list[Any]]:
    """What a run's training config changes from a reference's: ``{key: [reference's, run's]}``, with
    nested settings as dotted keys (``"arch.latent"``), a key one of them lacks as None, and
    :data:`BOOKKEEPING` left out.

    Example:
        >>> config_changes({"steps": 40000, "arch": {"latent": 192}}, {"steps": 40000, "arch": {}})
        {'arch.latent': [None, 192]}
    """

    def flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
        return out

    run, ref = flat(config), flat(reference)
    keys = sorted((set(run) | set(ref)) - BOOKKEEPING)
    return {k: [ref.get(k), run.get(k)] for k in keys if run.get(k) != ref.get(k)}


def differs_only_in_steps(config: dict[str, Any], reference: dict[str, Any]) -> bool:
    """Whether two training configs are one schedule at another length: equal but for ``steps``
    (and :data:`BOOKKEEPING`). The learning rate's warm-up and cosine decay follow ``steps``, so such a
    run is a whole schedule of its own, not a prefix of the reference."""
    return set(config_changes(config, reference)) <= {"steps"}


def gain_per_doubling(ends: list[tuple[int, float]]) -> float | None:
    """The least-squares slope of a figure against ``log2(steps)``: what each doubling of a schedule's
    length gained, from the ends of whole schedules of different lengths.

    Args:
        ends: ``(steps, figure)`` pairs, e.g. each run's Bjøntegaard PSNR at its end against one reference.

    Returns:
        dB (or the figure's unit) per doubling of the steps; None with fewer than two lengths.

    Example:
        >>> round(gain_per_doubling([(10_000, -0.6), (20_000, -0.3), (40_000, 0.0)]), 3)
        0.3
    """
    xs = [math.log2(s) for s, _ in ends]
    if len(set(xs)) < 2:
        return None
    mx, my = sum(xs) / len(xs), sum(v for _, v in ends) / len(ends)
    return sum((x - mx) * (v - my) for x, (_, v) in zip(xs, ends, strict=True)) / sum((x - mx) ** 2 for x in xs)


def doubling_gains(ends: list[tuple[int, float]]) -> list[dict[str, Any]]:
    """What each step up in a schedule's length gained, per doubling: a least-squares slope
    (:func:`gain_per_doubling`) draws one straight line in ``log2(steps)`` and hides where the gains stop.

    Args:
        ends: ``(steps, figure)`` pairs, in any order; lengths that repeat are left out after the first.

    Returns:
        ``{"from": steps, "to": steps, "per_doubling": figure}`` for each neighbouring pair of lengths, shortest first.

    Example:
        >>> [round(g["per_doubling"], 2) for g in doubling_gains([(40_000, 0.0), (10_000, -1.0), (20_000, -0.4), (80_000, -0.1)])]
        [0.6, 0.4, -0.1]
    """
    first: dict[int, float] = {}
    for steps, figure in ends:
        first.setdefault(steps, figure)
    lengths = sorted(first)
    return [{"from": a, "to": b, "per_doubling": (first[b] - first[a]) / math.log2(b / a)}
            for a, b in itertools.pairwise(lengths)]
