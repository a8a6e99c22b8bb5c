"""Issue 28's goals for facekit-hyperprior (:func:`facekit.hyperprior_goals.hyperprior_goals`) on made-up curves whose
answers are known: a curve at 0.3x another's bpp at equal accuracy saves 70 %, one 1 dB above it at equal
bpp is +1 dB."""

from __future__ import annotations

import math

import pytest

from facekit.codecs.names import HYPERPRIOR
from facekit.goals import FULL_LFW_PAIRS
from facekit.hyperprior_goals import hyperprior_goals, hyperprior_goals_table

RATES = (0.1, 0.2, 0.3, 0.5)
ACCS = (0.95, 0.97, 0.98, 0.99)


def psnr_at(bpp: float) -> float:
    """The made-up classical PSNR curve: linear in log bpp."""
    return 30 + 5 * math.log2(bpp / 0.1)


def curve(scale: float, dpsnr: float = 0.0, sha: str | None = None) -> list[dict]:
    """AVIF's made-up accuracy curve at ``scale`` x its bpp; PSNR ``dpsnr`` above the classical curve at equal bpp."""
    pts = [{"setting": i / 4, "bpp": scale * b, "acc_mean": a, "acc_std": 0.01, "psnr": psnr_at(scale * b) + dpsnr}
           for i, (b, a) in enumerate(zip(RATES, ACCS, strict=True))]
    for p in pts:
        if sha:
            p["weights"] = {"sha256": sha, "phase": "rd"}
    return pts


def results(recognizer: str = "dlib-resnet", n_pairs: int = FULL_LFW_PAIRS, hyper: float = 0.3, **codecs) -> dict:  # type: ignore[no-untyped-def]
    base = {"avif": curve(1.0), "avif-speed6": curve(1.1, -0.5), "facekit": curve(0.5)}
    if hyper:
        base[HYPERPRIOR] = curve(hyper, 1.0, sha="ab" * 32)
    return {"codecs": {**base, **codecs}, "protocol": {"n_pairs": n_pairs}, "recognizer": {"name": recognizer}}


def by_goal(goals: list[dict]) -> dict[str, dict]:
    return {g["goal"]: g for g in goals}


def find(goals: dict[str, dict], *words: str) -> dict:
    hits = [g for k, g in goals.items() if all(w in k for w in words)]
    assert len(hits) == 1, (words, list(goals))
    return hits[0]


def test_the_goals_computed_on_known_curves():
    g = by_goal(hyperprior_goals(results(), results("sface", hyper=0.5)))
    psnr = find(g, "PSNR", "AVIF (best effort)")
    assert psnr["met"] is True and psnr["detail"].startswith("+1.00 dB over 0.10–0.15 bpp")
    assert find(g, "PSNR", "AVIF (speed 6)")["detail"].startswith("+1.50 dB")
    hevc = find(g, "PSNR", "HEVC")
    assert hevc["met"] is None and "hevc not measured" in hevc["detail"]
    acc = find(g, "98.33 %")
    # at 0.1 bpp: between 0.09 (98 %) and 0.15 (99 %) bpp, linear in log bpp
    assert acc["met"] is False and f"{100 * (0.98 + 0.01 * math.log(0.1 / 0.09) / math.log(0.15 / 0.09)):.2f} %" in acc["detail"]
    dlib = find(g, "(dlib-resnet)", "60 %", "AVIF")
    assert dlib["met"] is True and dlib["detail"].startswith("70 %")
    assert "envelope of avif, avif-speed6" in dlib["detail"]
    sface = find(g, "(sface)", "60 %", "AVIF")
    assert sface["met"] is False and sface["detail"].startswith("50 %")
    vs_facekit = find(g, "(dlib-resnet)", "saving against facekit")
    assert vs_facekit["met"] is True and vs_facekit["detail"].startswith("40 %")
    switch = find(g, "(dlib-resnet)", "catalogue switch")
    assert switch["met"] is True and "+" in switch["detail"]
    assert find(g, "(dlib-resnet)", "WebP")["met"] is None  # not measured: reported as such
    same = find(g, "(sface)", "saving against facekit")  # under SFace both sit at 0.5x AVIF's bpp
    assert same["met"] is False and same["detail"].startswith("0 %")


def test_a_curve_worse_than_facekit_is_no_switch():
    res = results(hyper=0.6)  # 0.6x AVIF's bpp: 20 % more bits than facekit at equal accuracy
    g = by_goal(hyperprior_goals(res))
    assert find(g, "catalogue switch")["met"] is False
    assert find(g, "saving against facekit")["detail"].startswith("-20 %")
    assert not any(k.startswith("(sface)") for k in g)  # no SFace results: no SFace rows


def test_too_few_pairs_judge_nothing_and_absent_results_say_not_measured():
    small = hyperprior_goals(results(n_pairs=600))
    assert small and all(g["met"] is None and g["detail"].startswith("not judged") for g in small)
    assert hyperprior_goals(results(hyper=0)) == []
    assert "not measured yet" in hyperprior_goals_table(results(hyper=0))


def test_the_table_names_the_weights_of_each_curve():
    table = hyperprior_goals_table(results(), results("sface", hyper=0))
    assert "- dlib-resnet: 4 points, sha256 `abababababab` (phase rd)" in table and "- sface: not measured yet" in table
    assert "| PSNR at least +0 dB against AVIF (best effort)" in table and "**met**: +1.00 dB" in table


@pytest.mark.parametrize("hyper", [0.3, 0.5])
def test_saving_follows_the_bpp_scale(hyper):
    g = by_goal(hyperprior_goals(results(hyper=hyper)))
    assert find(g, "(dlib-resnet)", "60 %")["detail"].startswith(f"{100 * (1 - hyper):.0f} %")


def test_results_readme_shows_the_section_or_not_measured_yet(tmp_path):
    import importlib.util
    from pathlib import Path

    from facekit.evaluate import save_results

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "results_readme.py"
    spec = importlib.util.spec_from_file_location("results_readme_bench", path)
    readme = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(readme)
    sface, rd = tmp_path / "rate_accuracy_sface.json", tmp_path / "rate_accuracy_hyperprior_rd.json"
    text = "\n".join(readme.hyperprior_section(results(hyper=0), sface, rd))
    assert "(issue 28)" in text and "not measured yet" in text
    save_results(results("sface", hyper=0.5), sface)
    text = "\n".join(readme.hyperprior_section(results(), sface, rd))
    assert "| (sface) saving of at least 60 % against AVIF | not met: 50 %" in text
    assert "| (dlib-resnet) saving of at least 60 % against AVIF | **met**: 70 %" in text
    assert "What the joint phase changed" not in text
    save_results(results(hyper=0.4), rd)
    text = "\n".join(readme.hyperprior_section(results(), sface, rd))
    assert "distortion-only (phase one) weights: 4 points" in text and "What the joint phase changed" in text


def test_the_fidelity_goal_reads_the_distortion_only_weights_when_given():
    rd = {**results(), "codecs": {HYPERPRIOR: curve(0.3, -2.0, sha="cd" * 32)}}
    g = by_goal(hyperprior_goals(results(), distortion_only=rd))
    psnr = find(g, "distortion-only model", "AVIF (best effort)")
    assert psnr["met"] is False and psnr["detail"].startswith("-2.00 dB")
    assert find(g, "(dlib-resnet)", "60 %", "AVIF")["detail"].startswith("70 %")  # accuracy: the shipped weights


def test_distortion_only_results_must_be_the_same_run_and_cover_every_pair():
    from facekit.errors import DataError

    rd = results(hyper=0.3)
    with pytest.raises(DataError, match="recognizer"):  # merge_results' check: another recogniser's points
        hyperprior_goals(results(), distortion_only={**rd, "recognizer": {"name": "sface"}})
    with pytest.raises(DataError, match="data_sha256"):
        hyperprior_goals(results(), distortion_only={**rd, "data_sha256": {"images": "0" * 64}})
    g = by_goal(hyperprior_goals(results(), distortion_only=results(n_pairs=600)))
    for ref in ("AVIF (best effort)", "WebP"):
        psnr = find(g, "distortion-only", ref)
        assert psnr["met"] is None and psnr["detail"].startswith("not judged: 600 pairs (a goal needs all 6,000)")
    assert find(g, "98.33 %")["met"] is False  # the other goals read the full results as before
