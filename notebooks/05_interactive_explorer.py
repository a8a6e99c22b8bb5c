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
# # 5 · Interactive explorer
#
# [![Open in Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/facekit-dev/facekit/blob/main/notebooks/05_interactive_explorer.ipynb) [![Binder](https://mybinder.org/badge_logo.svg)](https://mybinder.org/v2/gh/facekit-dev/facekit/HEAD?labpath=notebooks/05_interactive_explorer.ipynb)
#
# It opens on the recommended codec. Pick a codec, move the rate slider, pick a face: the
# original and the reconstruction, the real bits per pixel, the PSNR, and the recogniser's
# distance between the reconstruction and its original, judged against the recogniser's
# same-person threshold.
# The faces come from `pairs.txt`, so the learned codec has never seen these people.
#
# For `facekit-hyperprior` the rate slider is continuous: one model codes every rate `t`
# from 0 (fewest bits) to 1. The other codecs step through their fixed settings. Until its
# weights are installed (`make weights`), it is listed under "not available here".
#
# Every number comes from the same library calls as the rate-accuracy curves of notebook 4
# (`facekit.widgets.Explorer`). Run all cells, then use the controls (they need a live
# kernel: in a static view of the notebook they do nothing).

# %%
# On Google Colab only: install facekit (and OpenJPEG for JPEG 2000). Elsewhere this does nothing.
import subprocess
import sys

if "google.colab" in sys.modules:
    subprocess.run("apt-get -qq install -y libopenjp2-7 > /dev/null", shell=True, check=True)
    subprocess.run(f'{sys.executable} -m pip install -q "facekit @ git+https://github.com/facekit-dev/facekit"',
                   shell=True, check=True)
    from google.colab import output
    output.enable_custom_widget_manager()  # ipywidgets in Colab

# %% tags=["parameters"]
# Parameters (papermill and `facekit reproduce` set these)
lfw_root = None        # LFW folder or archive; None: $FACEKIT_LFW
device = "auto"
n_images = 4           # faces in the image picker
codecs = None          # None: the recommended codec first, then facekit.widgets.DEFAULT_CODECS
recognizer = "dlib-resnet"
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
import torch
from IPython.display import Markdown, display

from facekit.reproduce import Record, resolve_device

device = resolve_device(device)
rec = Record(out_dir)  # figures and summary.json of this notebook go to out_dir
print(f"facekit {facekit.__version__}, torch {torch.__version__}, device {device}, output in {rec.dir}")

# %%
from facekit.codecs import RECOMMENDED
from facekit.widgets import DEFAULT_CODECS, Explorer

codecs = codecs or [RECOMMENDED, *(c for c in DEFAULT_CODECS if c != RECOMMENDED)]
explorer = Explorer(lfw_root=lfw_root, n_images=n_images, codecs=codecs, recognizer=recognizer,
                    device=device, codec=RECOMMENDED)
for name, why in explorer.unavailable.items():
    print(f"not available here: {name} ({why})")
display(explorer.ui)

# %% [markdown]
# ## The same numbers, for every rate point
#
# The explorer's `sweep` runs one codec over all its settings for one face: here the
# recommended codec (or the first codec available) on the first face.

# %%
codec_name = next(iter(explorer.codecs))
face = explorer.image_names[0]
views = explorer.sweep(codec_name, face)
rows = ["| setting | bytes | bpp | PSNR (dB) | identity distance | verdict |", "| --- | --- | --- | --- | --- | --- |"]
for v in views:
    d = "—" if v.distance is None else f"{v.distance:.3f}"
    verdict = "—" if v.same is None else ("same person" if v.same else "different person")
    rows.append(f"| {v.setting} | {v.nbytes} | {v.bpp:.4f} | {v.psnr:.2f} | {d} | {verdict} |")
display(Markdown(f"**{codec_name}** on `{face}`\n\n" + "\n".join(rows)))

fig, axes = plt.subplots(1, len(views) + 1, figsize=(2.4 * (len(views) + 1), 2.9))
axes[0].imshow(explorer.load(face))
axes[0].set_title("original", fontsize=9)
for ax, v in zip(axes[1:], views, strict=True):
    ax.imshow(v.reconstruction)
    d = "" if v.distance is None else f", d={v.distance:.2f}"
    ax.set_title(f"{v.setting}: {v.bpp:.3f} bpp\n{v.psnr:.1f} dB{d}", fontsize=9)
for ax in axes:
    ax.set_axis_off()
fig.tight_layout()
rec.figure(fig, "sweep.png")
plt.show()
rec.update(codec=codec_name, image=face, codecs=list(explorer.codecs), unavailable=explorer.unavailable,
           recognizer=None if explorer.recognizer is None else explorer.recognizer.name,
           threshold=views[0].threshold, views=[v.as_dict() for v in views])
