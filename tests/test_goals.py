"""The reproduction's goals on made-up rate-accuracy curves whose answers are known."""

from __future__ import annotations

import pytest

from facekit.goals import (
    FULL_LFW_PAIRS,
    check_goals,
    goals_table,
    joint_gain_table,
    margin_at_equal_rate,
    not_judged,
    psnr_difference_table,
    rate_term_gain_table,
    saving_at_equal_accuracy,
)


def pts(*xy, psnr=30.0, setting=None):  # type: ignore[no-untyped-def]
    return [{"setting": setting[i] if setting else i, "bpp": b, "acc_mean": a, "acc_std": 0.01, "psnr": psnr + i}
            for i, (b, a) in enumerate(xy)]


def test_margin_is_the_smallest_difference_over_the_common_range():
    test = pts((0.05, 0.80), (0.1, 0.90), (0.2, 0.95), (0.4, 0.99))
    ref = pts((0.1, 0.85), (0.2, 0.96), (0.8, 0.99))
    m = margin_at_equal_rate(test, ref)
    assert m["range"] == (0.1, 0.4)
    assert m["rates"] == [0.1, 0.2, 0.4]
    assert m["min_margin"] == pytest.approx(-0.01) and m["at_bpp"] == 0.2
    assert margin_at_equal_rate(test, ref, max_bpp=0.15)["min_margin"] == pytest.approx(0.05)
    assert margin_at_equal_rate(test, pts((1.0, 0.99), (2.0, 0.995)))["min_margin"] is None


def results(n_pairs=FULL_LFW_PAIRS, **codecs):  # type: ignore[no-untyped-def]
    return {"codecs": codecs, "protocol": {"n_pairs": n_pairs}}


def test_goals_met_and_not_met():
    strong = pts((0.05, 0.95), (0.1, 0.985), (0.2, 0.99), (0.4, 0.995))
    weak = pts((0.05, 0.70), (0.1, 0.86), (0.2, 0.93), (0.4, 0.97))
    classic = dict(
        jpeg2000=pts((0.05, 0.70), (0.1, 0.87), (0.2, 0.96), (0.4, 0.98)),
        jpeg=pts((0.13, 0.69), (0.19, 0.89), (0.29, 0.96), (0.44, 0.98)),
        avif=pts((0.13, 0.91), (0.2, 0.968), (0.26, 0.977), (0.48, 0.986)),
        webp=pts((0.13, 0.914), (0.21, 0.957), (0.32, 0.977), (0.45, 0.985)),
    )
    good = {g["goal"]: g for g in check_goals(results(**{"facekit-joint": strong}, **classic), "facekit-joint")}
    assert all(g["met"] for g in good.values()), good
    bad = {g["goal"]: g for g in check_goals(results(**{"facekit-joint": weak}, **classic), "facekit-joint")}
    assert not any(g["met"] for g in bad.values()), bad
    assert "-3.00 points at 0.200 bpp" in bad["above JPEG 2000 wherever both are measured"]["detail"]
    assert "86.00 % at 0.1 bpp" in bad["at least 98.25 % at 0.1 bpp"]["detail"]
    missing = {g["goal"]: g for g in check_goals(results(**{"facekit-joint": strong}), "facekit-joint")}
    assert missing.pop("at least 98.25 % at 0.1 bpp")["met"]  # needs no other codec
    assert all(g["met"] is None for g in missing.values())


def test_a_curve_that_ends_below_0_1_bpp_meets_the_0_1_goal_only_with_a_point_that_reaches_it():
    goal = "at least 98.25 % at 0.1 bpp"

    def at_0_1(*xy):  # type: ignore[no-untyped-def]
        return {g["goal"]: g for g in check_goals(results(c=pts(*xy)), "c")}[goal]

    reached = at_0_1((0.03, 0.90), (0.06, 0.97), (0.095, 0.9835))
    assert reached["met"] is True and "98.35 % at 0.095 bpp, under 0.1 bpp" in reached["detail"]
    short = at_0_1((0.03, 0.90), (0.06, 0.97), (0.095, 0.98))  # higher rates might reach it: cannot tell
    assert short["met"] is None and "98.00 % at 0.095 bpp" in short["detail"]
    assert at_0_1((0.2, 0.99), (0.4, 0.995))["met"] is None  # starts above 0.1 bpp
    assert at_0_1((0.05, 0.97), (0.2, 0.99))["detail"].endswith("(interpolated)")  # spans 0.1: read there


def test_tables():
    r = results(**{
        "paper-mse": pts((0.06, 0.80), (0.11, 0.90), setting=["q1", "q2"]),
        "paper": pts((0.06, 0.82), (0.12, 0.93), psnr=29.5, setting=["q1", "q2"]),
        "jpeg2000": pts((0.05, 0.70), (0.1, 0.87)),
    })
    t = goals_table(r)
    assert t.splitlines()[0] == "| goal | paper-mse | paper |" and "**met**" in t
    g = joint_gain_table(r)
    assert "| q1 |" in g and "+2.00 | 0.50 |" in g and "+3.00 | 0.50 |" in g
    assert joint_gain_table(results(jpeg=[])) == "" and goals_table(results(jpeg=[])) == ""


def test_roi_codecs_are_also_judged_against_roi_baselines():
    roi = pts((0.05, 0.95), (0.1, 0.985), (0.2, 0.99))
    r = results(**{
        "facekit-joint": pts((0.05, 0.80), (0.1, 0.90), (0.2, 0.95)),
        "facekit-joint-roi": roi,
        "jpeg2000": pts((0.05, 0.70), (0.1, 0.87), (0.2, 0.96)),
        "jpeg2000-roi": pts((0.05, 0.80), (0.1, 0.96), (0.2, 0.99)),  # ties facekit at 0.2 bpp
        "avif-roi": pts((0.05, 0.90), (0.1, 0.95), (0.2, 0.98)),
    })
    goals = {g["goal"]: g for g in check_goals(r, "facekit-joint-roi")}
    assert goals["above JPEG 2000 wherever both are measured"]["met"]
    assert goals["ROI baselines: above AVIF with ROI below 0.3 bpp"]["met"]
    fair = goals["ROI baselines: above JPEG 2000 with ROI wherever both are measured"]
    assert fair["met"] is False and "+0.00 points at 0.200 bpp" in fair["detail"]
    assert goals["ROI baselines: bitrate saving against AVIF with ROI (reported, no target)"]["met"]
    assert not any(g.startswith("ROI") for g in (x["goal"] for x in check_goals(r, "facekit-joint")))
    table = goals_table(r, ["facekit-joint", "facekit-joint-roi"])
    row = next(line for line in table.splitlines() if "above AVIF with ROI" in line)
    assert row.split(" | ")[1] == "—" and "**met**" in row  # the plain codec has no ROI goals


def test_rate_term_gain_is_read_at_equal_bpp():
    r = results(**{
        "facekit-joint-entropy": pts((0.1, 0.90), (0.2, 0.95), setting=["q2", "q3"]),
        "facekit-jointrate-entropy": pts((0.08, 0.89), (0.15, 0.94), psnr=29.0, setting=["q2", "q3"]),
    })
    rows = rate_term_gain_table(r).splitlines()
    assert rows[0].startswith("| rate point | facekit-jointrate-entropy: bpp")
    # q2 lies below the base curve's range: nothing to compare at equal bpp, only the PSNR cost
    assert rows[2] == "| q2 | 0.080, 89.00 ± 1.00, 29.00 | — | — | — | 1.00 |"
    # q3: the base at 0.15 bpp is 90 + 5 * log(1.5) / log(2) = 92.92 %; it reaches 94 % at 0.1741 bpp
    assert rows[3] == "| q3 | 0.150, 94.00 ± 1.00, 30.00 | 92.92 | +1.08 | 14 % | 1.00 |"
    assert rate_term_gain_table(results(jpeg=[])) == ""


STRONG = pts((0.05, 0.95), (0.1, 0.985), (0.2, 0.99), (0.4, 0.995))
CLASSIC = dict(
    jpeg2000=pts((0.05, 0.70), (0.1, 0.87), (0.2, 0.96), (0.4, 0.98)),
    jpeg=pts((0.13, 0.69), (0.19, 0.89), (0.29, 0.96), (0.44, 0.98)),
    avif=pts((0.13, 0.91), (0.2, 0.968), (0.26, 0.977), (0.48, 0.986)),
    webp=pts((0.13, 0.914), (0.21, 0.957), (0.32, 0.977), (0.45, 0.985)),
)


def test_no_goal_is_judged_on_fewer_than_all_pairs():
    small = check_goals(results(n_pairs=40, **{"facekit-joint": STRONG}, **CLASSIC), "facekit-joint")
    assert len(small) == 8 and all(g["met"] is None for g in small)
    assert all(g["detail"].startswith("not judged: 40 pairs (a goal needs all 6,000)") for g in small)
    assert "smallest margin" in small[0]["detail"]  # what was measured is still said, but no saving
    assert small[-1]["goal"].startswith("bitrate saving") and "%" not in small[-1]["detail"].split(";")[-1]
    assert small[-1]["detail"] == "not judged: 40 pairs (a goal needs all 6,000)"
    table = goals_table(results(n_pairs=40, **{"facekit-joint": STRONG}, **CLASSIC))
    assert "**met**" not in table and "| not judged: 40 pairs" in table
    # one point measured on fewer pairs than the protocol says is enough to hold the verdict back
    few = {**results(**{"facekit-joint": STRONG}, **CLASSIC)}
    few["codecs"]["jpeg"] = [{**p, "n_pairs": 600} for p in CLASSIC["jpeg"]]
    assert not_judged(few) == "not judged: 600 pairs (a goal needs all 6,000)"
    assert not_judged({"codecs": {"jpeg": CLASSIC["jpeg"]}}) == "not judged: the number of pairs is not recorded"
    assert not_judged(results(**CLASSIC)) is None


def test_no_saving_where_the_curves_do_not_overlap():
    ref = pts((0.2, 0.90), (0.4, 0.96))
    assert saving_at_equal_accuracy(pts((0.1, 0.90), (0.2, 0.96)), ref)["saving"] == pytest.approx(0.5)
    # the same accuracies at rates that never meet the reference's: no saving
    apart = saving_at_equal_accuracy(pts((0.02, 0.90), (0.05, 0.96)), ref)
    assert apart["saving"] is None and "do not overlap in bpp" in apart["reason"]
    # curves that share half an accuracy point (one pair of 40 flips 2.5 points): no saving
    touch = saving_at_equal_accuracy(pts((0.1, 0.80), (0.3, 0.905)), ref)
    assert touch["saving"] is None and "less than one accuracy point" in touch["reason"]
    goals = {g["goal"]: g for g in check_goals(results(c=pts((0.01, 0.90), (0.03, 0.99)), **CLASSIC), "c")}
    assert goals["bitrate saving of at least 50 % against AVIF"]["met"] is None


def test_envelope_is_the_best_measured_form_at_each_rate():
    from facekit.bdrate import curve, quality_at
    from facekit.goals import baseline_of, envelope

    assert baseline_of("avif-speed6") == baseline_of("avif-resized") == "avif"
    assert baseline_of("avif-speed6-roi") == "avif-roi" and baseline_of("facekit-roi") == "facekit-roi"
    r = results(
        webp=pts((0.13, 0.91), (0.24, 0.967)),
        **{"webp-resized": pts((0.03, 0.64), (0.1, 0.918), (0.15, 0.95))},
        jpegxl=pts((0.146, 0.92)),  # below the resized WebP's chord there: it must not pull the envelope down
        jpeg2000=pts((0.1, 0.87), (0.2, 0.958)),
        facekit=pts((0.05, 0.9), (0.1, 0.97)),
    )
    env, members = envelope(r, ["webp", "jpegxl"])
    assert members == ["webp", "webp-resized", "jpegxl"]  # jpeg2000 and the learned codec are not pooled
    x, y = curve(env)
    for rate in (0.05, 0.12, 0.146, 0.2):
        best = max(v for v in (quality_at(*curve(r["codecs"][n]), rate) for n in members) if v is not None)
        assert quality_at(x, y, rate) == pytest.approx(best, abs=2e-3), rate
    assert all(b > a for a, b in zip(y, y[1:], strict=False))  # monotone
    goals = {g["goal"]: g for g in check_goals(r, "facekit")}
    assert "envelope of webp, webp-resized" in goals["bitrate saving of at least 50 % against WebP"]["detail"]


def test_psnr_difference_table_compares_whole_image_learned_codecs_with_the_classical_ones():
    r = results(**{
        "paper-mse": pts((0.1, 0.80), (0.4, 0.90), psnr=28.0),
        "facekit-roi": pts((0.1, 0.90), (0.2, 0.95), psnr=13.0),
        "avif-speed6": pts((0.1, 0.80), (0.2, 0.90), (0.6, 0.95), psnr=30.0),
        "jpeg": pts((0.6, 0.80), (0.9, 0.90)),
    })
    t = psnr_difference_table(r).splitlines()
    assert t[0] == "| codec | vs avif-speed6 |"  # jpeg is no PSNR reference; avif's measured form stands for it
    assert len(t) == 3 and t[2].startswith("| paper-mse | ")  # no ROI codec
    assert "(0.10–0.40)" in t[2] and "—" not in t[2]
    assert psnr_difference_table(results(jpeg=[])) == ""


def test_a_saving_target_of_zero_is_a_target_and_goals_carry_their_kind():
    from facekit.goals import mark_not_judged, saving_goal

    res = results(**{"facekit-joint": STRONG}, **CLASSIC)
    at_zero = saving_goal(res, "facekit-joint", ["jpeg"], "saving of at least 0 %", 0.0)
    reported = saving_goal(res, "facekit-joint", ["jpeg"], "saving (reported)", None)
    assert at_zero["kind"] == reported["kind"] == "saving" and at_zero["met"] == (reported["met"] is True)
    kinds = {g["goal"]: g["kind"] for g in check_goals(res, "facekit-joint")}
    assert set(kinds.values()) == {"margin", "accuracy", "saving"}
    # not judged: a saving goal loses its figure whatever its text says; another keeps what was measured
    goals = [{"goal": "a bitrate gain", "kind": "saving", "met": True, "detail": "70 %"},
             {"goal": "saving-free margin", "kind": "margin", "met": True, "detail": "smallest margin +1"}]
    small = mark_not_judged(results(n_pairs=40), goals)
    assert small[0]["detail"] == "not judged: 40 pairs (a goal needs all 6,000)"
    assert small[1]["detail"].endswith("; smallest margin +1") and all(g["met"] is None for g in small)
