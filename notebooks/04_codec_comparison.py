# ---
# jupyter:
#   jupytext:
#     notebook_metadata_filter: -jupytext.text_representation.jupytext_version
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 4 · Rate and accuracy: facekit against JPEG, JPEG 2000, WebP and AVIF
#
# [![Open in Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/facekit-dev/facekit/blob/main/notebooks/04_codec_comparison.ipynb) [![Binder](https://mybinder.org/badge_logo.svg)](https://mybinder.org/v2/gh/facekit-dev/facekit/HEAD?labpath=notebooks/04_codec_comparison.ipynb)
#
# The paper's measure: LFW face verification accuracy (the 10-fold protocol of
# `pairs.txt`) on compressed images, against the bits per pixel that made them. For every
# codec and setting, each image is encoded (rate from the real bytes, headers included),
# decoded, aligned with the transform found on its original, embedded by the recogniser,
# and the pairs are scored with thresholds chosen on the other folds.
# `facekit.evaluate.evaluate` does all of it, caching embeddings so reruns are quick.
#
# The result is the committed measurement on all 6,000 pairs (`results/rate_accuracy.json`),
# drawn as curves. The quick setting measures 4 pairs per fold (40 pairs: the accuracies
# are rough, several points either way) at two or three settings per codec, so that it runs
# in a few minutes on a laptop CPU, and draws those points over the curves as a check; the
# full preset measures all 6,000 pairs and every codec's sweep. With `use_saved=True` the
# notebook reads the committed results instead of computing.

# %%
# On Google Colab only: install facekit (and OpenJPEG for JPEG 2000). Elsewhere this does nothing.
import subprocess
import sys

if "google.colab" in sys.modules:
    subprocess.run("apt-get -qq install -y libopenjp2-7 > /dev/null", shell=True, check=True)
    subprocess.run(f'{sys.executable} -m pip install -q "facekit @ git+https://github.com/facekit-dev/facekit"',
                   shell=True, check=True)

# %% tags=["parameters"]
# Parameters (papermill and `facekit reproduce` set these)
lfw_root = None         # LFW folder or archive; None: $FACEKIT_LFW
device = "auto"
per_fold = 4            # pairs per fold (half matched): 40 pairs in all; None: all 600 of each fold
sweep = None            # codec -> settings, e.g. {"jpeg": [5, 20]}; None: the quick sweep below
                        # (quick=True), else every available codec with its default sweep
use_saved = False       # read saved_results instead of evaluating
saved_results = None    # None: results/rate_accuracy.json of the checkout
crop_rate_point = "q3"  # side-by-side crops at the bpp of the learned codec at this rate point
target_bpp = None       # ... or at this bpp
quick = True
out_dir = "nb_out"

# %% [markdown]
# **Data.** The notebooks read LFW from `lfw_root` or the environment variable
# `FACEKIT_LFW`: a folder holding `lfw-deepfunneled.tgz` (or the extracted
# `lfw-deepfunneled/`) and `pairs.txt` (see `data/README.md`; on Colab, upload or mount
# them and set `lfw_root`). `device="auto"` uses a GPU when there is one.

# %%
# %matplotlib inline
import facekit  # first: it makes torch's idle CPU threads sleep (facekit.threads)

# isort: split
import matplotlib.pyplot as plt
import numpy as np
import torch
from IPython.display import Markdown, display

from facekit.reproduce import Record, resolve_device

device = resolve_device(device)
rec = Record(out_dir)  # figures and summary.json of this notebook go to out_dir
print(f"facekit {facekit.__version__}, torch {torch.__version__}, device {device}, output in {rec.dir}")

# %% [markdown]
# ## The codecs
#
# The quick sweep measures the three codecs of the headline (the recommended one, the
# recognition-first one and the paper's; their names are `RECOMMENDED`,
# `RECOGNITION_FIRST` and `PAPER` in `facekit.goals`) at a few rate points, and the
# classical codecs at two settings each.

# %%
from facekit.codecs import PAPER, RECOGNITION_FIRST, RECOMMENDED
from facekit.codecs.names import is_learned
from facekit.codecs.registry import available_codecs

if sweep is None and quick:
    sweep = {
        "uncompressed": [None],
        RECOMMENDED: ["q1", "q3", "q5"],
        RECOGNITION_FIRST: ["q2", "q4"],
        PAPER: ["q1", "q3", "q5"],
        "jpeg": [3, 20],
        "jpeg2000": [0.05, 0.25],
        "webp": [0, 40],
        "avif": [0, 40],
        "facekit-joint-roi": ["q3"],  # region of interest: only the face is coded (section below)
        "avif-roi": [10],
    }
print(f"recommended: {RECOMMENDED}; recognition-first: {RECOGNITION_FIRST}; the paper's: {PAPER}")
avail = available_codecs(hidden=True)  # the catalogue and the measured variants it does not list
if sweep is not None:
    missing = {k: avail.get(k, {}).get("reason") for k in sweep if k != "uncompressed" and not avail.get(k, {}).get("available")}
    for k, why in missing.items():
        print(f"left out: {k} ({why})")
    sweep = {k: v for k, v in sweep.items() if k not in missing}
    for k, v in sweep.items():  # the learned codecs: only the rate points this installation ships
        if is_learned(k) and v:
            have = avail[k]["settings"]
            sweep[k] = [s for s in v if s in have] or have
for k, d in avail.items():
    if d["available"] and not d["role"].startswith(("alias", "unlisted")):
        print(f"{k:14s} {d['role']:20s} {d.get('library', '')}")

# %% [markdown]
# ## Evaluate (or read the saved results)

# %%
from pathlib import Path

from facekit.evaluate import evaluate, load_results, save_results
from facekit.reproduce import repo_root

saved = Path(saved_results) if saved_results else repo_root() / "results" / "rate_accuracy.json"
if use_saved and saved.exists():
    results = load_results(saved)
    print(f"read {saved}")
else:
    if use_saved:
        print(f"{saved} does not exist: evaluating instead")

    def show(name, p):
        ps = f", {p['psnr']:.2f} dB" if p.get("psnr") is not None else ""
        print(f"{name:16s} {str(p['setting']):>6s}: {p['bpp']:.4f} bpp, "
              f"accuracy {100 * p['acc_mean']:.2f} ± {100 * p['acc_std']:.2f} %{ps}")

    results = evaluate(lfw_root, codecs=sweep, per_fold=per_fold, device=device, progress=False, on_point=show)
save_results(results, rec.dir / "rate_accuracy.json")
prot = results["protocol"]
print(f"{prot['n_pairs']} pairs ({prot['n_images']} images), {prot['folds']} folds, "
      f"recogniser {results['recognizer']['name']}, alignment {prot['alignment']}")

# %% [markdown]
# ## The result: rate and accuracy on all of LFW
#
# The curves are the committed results on all 6,000 pairs of LFW
# (`results/rate_accuracy.json`; error bars: one standard deviation over the 10 folds).
# When this run measured fewer pairs (the quick setting: 40), its points are drawn over the
# curves as hollow markers with their own error bars: a small-sample check that this
# installation reproduces the curves, not a result. With 40 pairs one pair is 2.5 points,
# and most codecs above 0.2 bpp score 100 %. The goals of the reproduction are judged on
# all 6,000 pairs only.

# %%
from facekit.goals import FULL_LFW_PAIRS, goals_table
from facekit.plots import rate_accuracy_figure, summary_table

small = prot["n_pairs"] < FULL_LFW_PAIRS
full = load_results(saved) if small and saved.exists() else None
if full is not None:
    fig = rate_accuracy_figure(full, check=results)  # the full curves, this run's points over them
    display(Markdown(f"**All 6,000 pairs** (`{saved.name}`): the goals, checked\n\n"
                     + goals_table(full, [c for c in (RECOMMENDED, RECOGNITION_FIRST, PAPER) if c in full["codecs"]])))
else:
    fig = rate_accuracy_figure(results)
rec.figure(fig, "rate_accuracy.png")
plt.show()
display(Markdown(f"**This run** ({prot['n_pairs']:,} pairs)\n\n" + summary_table(results)))

# %% [markdown]
# ## Verification at a low false-accept rate
#
# LFW accuracy saturates near 99 %: most codecs above 0.2 bpp look alike. A deployment sets its
# threshold so that one impostor in a thousand is accepted (FAR = 1e-3) and asks how many
# genuine pairs still pass: the true-accept rate, TAR. It separates codecs that accuracy does
# not. The curves are again all 6,000 pairs; each point's TAR is in the results JSON beside
# its accuracy, and `results/README.md` gives each codec's saving at equal TAR against the
# classical envelope.

# %%
from facekit.plots import rate_tar_figure

fig = rate_tar_figure(full if full is not None else results)
rec.figure(fig, "rate_tar.png")
plt.show()
rec.update(n_pairs=prot["n_pairs"], per_fold=prot["per_fold"], source="saved" if use_saved and saved.exists() else "evaluated",
           full_results=None if full is None else str(saved),
           codecs={name: [{"setting": p["setting"], "bpp": p["bpp"], "acc_mean": p["acc_mean"], "psnr": p.get("psnr")}
                          for p in pts] for name, pts in results["codecs"].items()})

# %% [markdown]
# ## Region of interest: code only the face
#
# The recogniser never sees the whole image, only the 150x150 chip its alignment cuts out
# around the eyes, nose and mouth: about a quarter of a 250x250 LFW image. Whatever a codec
# spends on the background is lost to recognition. `facekit.codecs.roi` finds the chip on the image
# being compressed (dlib's detector and landmarks, as the recogniser does). The
# recognition-first codec (`RECOGNITION_FIRST`) range-codes the learned code inside the chip
# at the chosen rate point and the background at the lowest one (q1), so the picture stays
# whole; `facekit-joint-roi` flattens the learned code outside the chip; `avif-roi`,
# `jpeg2000-roi`, ... flatten the background before the classical encoder: the fair
# baseline. The rate is still counted over the whole image. As above, the curves are all
# 6,000 pairs and the hollow points this run's check.

# %%
from facekit.codecs import bits_per_pixel, get_codec
from facekit.codecs.roi import FaceRegionFinder, region_mask
from facekit.data import open_lfw
from facekit.plots import roi_figure

fig = roi_figure(full, check=results) if full is not None else roi_figure(results)  # None: no ROI codec
if fig is not None:
    rec.figure(fig, "rate_accuracy_roi.png")
    plt.show()

lfw_ = open_lfw(lfw_root)
face_roi = lfw_.load(lfw_.pairs()[0].a)
keep = region_mask(FaceRegionFinder().find(face_roi), face_roi.shape[:2], cell=1, margin=4)
shown = {"original (coded region bright)": np.where(keep[..., None], face_roi, face_roi // 3)}
for name, setting in ((RECOMMENDED, crop_rate_point), (RECOGNITION_FIRST, crop_rate_point),
                      ("facekit-joint-roi", crop_rate_point), ("avif-roi", 10)):
    if avail.get(name, {}).get("available") and (not is_learned(name) or setting in avail[name]["settings"]):
        codec = get_codec(name, **({"device": device} if is_learned(name) else {}))
        data = codec.encode(face_roi, setting)
        shown[f"{name} {setting}: {bits_per_pixel(data, *face_roi.shape[:2]):.3f} bpp"] = codec.decode(data)
fig, axes = plt.subplots(1, len(shown), figsize=(3.2 * len(shown), 3.4))
for ax, (title, im) in zip(np.atleast_1d(axes), shown.items(), strict=True):
    ax.imshow(im)
    ax.set_title(title, fontsize=8)
    ax.set_axis_off()
fig.tight_layout()
rec.figure(fig, "roi_example.png")
plt.show()

# %% [markdown]
# ## Side by side at equal bits per pixel
#
# One face; the target is the paper's codec's rate at `crop_rate_point` on this face (or
# `target_bpp`), and each other codec's setting is searched so that its rate lands at, or
# just under, the target on *this* image (`facekit.codecs.search_setting`); a crop around
# the eyes and mouth, enlarged.

# %%
from facekit.codecs import get_codec, search_setting
from facekit.data import open_lfw
from facekit.metrics import psnr

lfw = open_lfw(lfw_root)
face_name = lfw.pairs()[0].a
face = lfw.load(face_name)
names = [k for k in results["codecs"] if k != "uncompressed" and avail.get(k, {}).get("available")]
codecs_ = {k: get_codec(k, **({"device": device} if is_learned(k) else {})) for k in names}
# the target rate comes from the paper's codec (whole image, PNG-coded): a ROI codec's rate is
# far lower, and a range-coded one's can be below what JPEG reaches
learned = [k for k in (PAPER,) if k in codecs_ and crop_rate_point in codecs_[k].settings]
if target_bpp is None and learned:
    data = codecs_[learned[-1]].encode(face, crop_rate_point)
    target_bpp = 8 * len(data) / (face.shape[0] * face.shape[1])
    print(f"target: {learned[-1]} at {crop_rate_point} on this face, {target_bpp:.4f} bpp")
target_bpp = target_bpp or 0.2
crops = {}
for name, codec in codecs_.items():
    setting, bpp = search_setting(codec, face, target_bpp)
    out = codec.decode(codec.encode(face, setting))
    setting = round(setting, 4) if isinstance(setting, float) else setting
    crops[name] = (out, setting, bpp, psnr(face, out))
    print(f"{name:16s} setting {setting!s:>6s}: {bpp:.4f} bpp, {crops[name][3]:.2f} dB")
y0, x0, s = 70, 65, 120  # the face's centre on deep-funneled LFW
fig, axes = plt.subplots(1, len(crops) + 1, figsize=(2.7 * (len(crops) + 1), 3.2))
axes[0].imshow(face[y0:y0 + s, x0:x0 + s])
axes[0].set_title(f"original\n{face_name.split('/')[0]}", fontsize=9)
for ax, (name, (out, setting, bpp, p)) in zip(axes[1:], crops.items(), strict=True):
    ax.imshow(out[y0:y0 + s, x0:x0 + s])
    ax.set_title(f"{name} ({setting})\n{bpp:.3f} bpp, {p:.1f} dB", fontsize=9)
for ax in axes:
    ax.set_axis_off()
fig.tight_layout()
rec.figure(fig, "equal_bpp.png")
plt.show()
rec.update(target_bpp=target_bpp, equal_bpp={k: {"setting": v[1], "bpp": v[2], "psnr": v[3]} for k, v in crops.items()})
