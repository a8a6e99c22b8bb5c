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
# # 1 · The autoencoder: compact representation, PNG, reconstruction
#
# [![Open in Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/facekit-dev/facekit/blob/main/notebooks/01_build_autoencoder.ipynb) [![Binder](https://mybinder.org/badge_logo.svg)](https://mybinder.org/v2/gh/facekit-dev/facekit/HEAD?labpath=notebooks/01_build_autoencoder.ipynb)
#
# Bian et al., *A Deep Image Compression Framework for Face Recognition*
# ([arXiv:1907.01714](https://arxiv.org/abs/1907.01714)), compress a face in three steps:
#
# 1. a convolutional **compression network** maps the face to a small, image-like
#    **compact representation** (a few channels at 1/4 to 1/16 of the resolution);
# 2. the representation is **quantised to 8 bits or fewer** and stored **losslessly as a
#    PNG**: the rate is the size of that PNG file;
# 3. a deeper **reconstruction network** rebuilds the face from the decoded PNG.
#
# Both networks are trained first for distortion (notebook 2), then jointly with a face
# recogniser so that the reconstruction keeps its identity (notebook 3); notebook 4
# measures LFW verification accuracy against bits per pixel, notebook 5 lets you explore.
# This notebook builds the networks, shows the quantiser and the compact representation,
# and makes a first reconstruction with the weights facekit ships.

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
lfw_root = None      # LFW folder or archive; None: $FACEKIT_LFW
device = "auto"      # "auto": CUDA when available, else CPU
rate_point = "q3"    # one of the shipped rate points q1 (lowest rate) .. q5
image_name = None    # an LFW image such as "Aaron_Peirsol/Aaron_Peirsol_0001.jpg"; None: the first of pairs.txt
quick = True         # nothing slow happens here either way
out_dir = "nb_out"   # figures and summary.json go here

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
# ## The method at a glance
#
# The encoder side ends in an ordinary PNG file; everything after it can run anywhere a PNG
# decoder and the reconstruction network are. At evaluation, the reconstruction goes through
# the face recogniser with the alignment found on the *original* image, so the codec alone
# is judged.

# %%
from matplotlib.patches import FancyBboxPatch

fig, ax = plt.subplots(figsize=(13, 3.0))
ax.set_axis_off()
ax.set_xlim(0, 13)
ax.set_ylim(0, 3.0)
stages = [
    ("face $x$\n250×250×3", "#e6e6e6"),
    ("compression\nnetwork\n(strided convs)", "#cfe2ff"),
    ("quantiser\n$q=\\mathrm{round}(y\\cdot(2^b-1))$", "#ffe8a3"),
    ("compact\nrepresentation\n→ PNG (lossless)", "#ffd3b6"),
    ("reconstruction\nnetwork (residual,\n×2 upsampling)", "#cfe2ff"),
    ("$\\hat{x}$ → face\nrecogniser\n(dlib ResNet)", "#d4f4dd"),
]
w, gap = 1.8, 0.4
for i, (text, colour) in enumerate(stages):
    x0 = 0.1 + i * (w + gap)
    ax.add_patch(FancyBboxPatch((x0, 0.9), w, 1.4, boxstyle="round,pad=0.06", fc=colour, ec="#444"))
    ax.text(x0 + w / 2, 1.6, text, ha="center", va="center", fontsize=9)
    if i:
        ax.annotate("", xy=(x0 - 0.06, 1.6), xytext=(x0 - gap + 0.06, 1.6),
                    arrowprops=dict(arrowstyle="-|>", lw=1.5, color="#333"))
ax.text(0.1 + 3 * (w + gap) + w / 2, 0.45, "rate = 8 × PNG bytes / pixels", ha="center", fontsize=9, style="italic")
ax.text(0.1 + 1.5 * (w + gap) + w / 2, 2.65, "encoder (sender)", ha="center", fontsize=10, color="#555")
ax.text(0.1 + 4.5 * (w + gap) + w / 2, 2.65, "decoder (receiver) and evaluation", ha="center", fontsize=10, color="#555")
ax.set_title("Deep image compression for face recognition (Bian et al. 2019)", fontsize=11)
rec.figure(fig, "pipeline.png")
plt.show()

# %% [markdown]
# ## Rate points
#
# The rate is set by the shape of the compact representation: downsampling factor $f$,
# channels $C$ and bit depth $b$ give $C \cdot \lceil H/f\rceil \cdot \lceil W/f\rceil \cdot b$ bits
# before PNG's lossless compression squeezes them further. facekit ships five rate points:

# %%
from facekit.models import RATE_POINTS

rows = ["| rate point | downsample | channels | bits | code at 250×250 | bpp before PNG | |",
        "| --- | --- | --- | --- | --- | --- | --- |"]
for rp in RATE_POINTS.values():
    c, h, w = rp.code_shape(250, 250)
    rows.append(f"| {rp.name} | 1/{rp.downsample} | {rp.channels} | {rp.bits} | {c}×{h}×{w} "
                f"| {rp.raw_bits(250, 250) / 250**2:.3f} | {rp.description} |")
display(Markdown("\n".join(rows)))

# %% [markdown]
# ## The compression and reconstruction networks
#
# A shallow strided encoder (like Jiang et al.'s ComCNN) and a deeper residual decoder with
# sub-pixel upsampling (like RecCNN), with no normalisation layers, so an image's
# reconstruction never depends on the rest of its batch.

# %%
from facekit.models import build_model

model = build_model(rate_point)
print(model.encoder)
print(model.decoder)
n_enc = sum(p.numel() for p in model.encoder.parameters())
n_dec = sum(p.numel() for p in model.decoder.parameters())
print(f"compression network: {n_enc:,} parameters; reconstruction network: {n_dec:,} parameters")
rec.update(rate_point=rate_point, params_encoder=n_enc, params_decoder=n_dec)

# %% [markdown]
# ## The quantiser
#
# The encoder ends in a sigmoid, so its output $y$ lies in $(0, 1)$. The quantiser stores
# the integers $q = \mathrm{round}(y (2^b - 1))$ and the decoder sees $\hat y = q / (2^b - 1)$.
# Rounding has no useful gradient, so in training the gradient passes *straight through*
# (the decoder still sees exactly the values it will see at inference):

# %%
quantizer = model.quantizer
y = torch.linspace(0.05, 0.95, 7, requires_grad=True)
quantizer.train()
y_hat = quantizer(y)
y_hat.sum().backward()
quantizer.eval()
print("y      ", np.round(y.detach().numpy(), 3))
print("q      ", quantizer.quantize(y).numpy(), f"({quantizer.bits} bits)")
print("y_hat  ", np.round(y_hat.detach().numpy(), 3))
print("dy_hat/dy", y.grad.numpy(), "(straight-through)")

# %% [markdown]
# ## A face, its compact representation, and the PNG that stores it
#
# We load the weights facekit ships for this rate point (trained for distortion on the
# identity-disjoint split of LFW: people who appear in no test pair), and take a face
# from `pairs.txt`, so the codec has never seen this person.

# %%
from facekit.codecs import get_codec
from facekit.data import open_lfw

codec = get_codec("paper-mse", device=device)
model = codec.model(rate_point)  # the shipped weights of this rate point
model.eval()

lfw = open_lfw(lfw_root)
image_name = image_name or lfw.pairs()[0].a
image = lfw.load(image_name)
x = torch.from_numpy(image.copy()).permute(2, 0, 1)[None].float().div(255).to(device)
with torch.no_grad():
    y = model.encode_latent(x)
codes = model.quantizer.quantize(y)[0].cpu().numpy()  # (C, h, w) integers
print(f"{image_name}: {image.shape} -> code {codes.shape}, values 0..{codes.max()} ({model.rate_point.bits} bits)")

fig, axes = plt.subplots(1, codes.shape[0] + 1, figsize=(2.6 * (codes.shape[0] + 1), 2.8))
axes[0].imshow(image)
axes[0].set_title("original")
for c, ax in enumerate(axes[1:]):
    ax.imshow(codes[c], cmap="gray", vmin=0, vmax=2**model.rate_point.bits - 1, interpolation="nearest")
    ax.set_title(f"code channel {c}")
for ax in axes:
    ax.set_axis_off()
rec.figure(fig, "code.png")
plt.show()

# %% [markdown]
# The integers are written as the smallest valid PNG facekit can find (layouts, bit depths,
# row filters and zlib strategies are tried). It is an ordinary PNG file: any viewer opens
# it. The codec's file adds a small container around it (magic, version, model hash,
# image size, CRC), and the rate counts those bytes too.

# %%
import io

from PIL import Image

from facekit.codecs import bits_per_pixel

png = model.compress(x)["strings"][0]
png_path = rec.dir / f"code_{rate_point}.png"
png_path.write_bytes(png)
with Image.open(io.BytesIO(png)) as im:
    print(f"{png_path.name}: a {im.format} image, mode {im.mode}, {im.size[0]}x{im.size[1]} pixels, {len(png)} bytes")
data = codec.encode(image, rate_point)  # the codec's file: container + the same PNG
h, w = image.shape[:2]
raw_bpp = model.rate_point.raw_bits(h, w) / (h * w)
png_bpp = bits_per_pixel(png, h, w)
bpp = bits_per_pixel(data, h, w)
print(f"raw code {raw_bpp:.3f} bpp -> PNG {png_bpp:.4f} bpp -> codec file {bpp:.4f} bpp "
      f"({len(data)} bytes, of which {len(data) - len(png)} container)")
rec.update(image=image_name, code_shape=list(codes.shape), png_bytes=len(png), png_bpp=png_bpp,
           file_bytes=len(data), bpp=bpp, raw_bpp=raw_bpp)

# %% [markdown]
# ## The first reconstruction
#
# The decoder reads the PNG back, dequantises, and runs the reconstruction network.

# %%
from facekit.metrics import psnr

recon = codec.decode(data)
p = psnr(image, recon)
fig, axes = plt.subplots(1, 3, figsize=(11, 4))
axes[0].imshow(image)
axes[0].set_title("original")
axes[1].imshow(recon)
axes[1].set_title(f"reconstruction, {bpp:.3f} bpp, {p:.2f} dB")
axes[2].imshow(np.abs(image.astype(int) - recon.astype(int)).sum(-1), cmap="magma")
axes[2].set_title("|error|")
for ax in axes:
    ax.set_axis_off()
rec.figure(fig, "reconstruction.png")
plt.show()
rec.update(psnr=p)

# %% [markdown]
# Next: notebook 2 trains such a model for distortion, on a GPU when there is one.
