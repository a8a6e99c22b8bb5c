"""Write the five notebooks of facekit from this one file (no outputs, no execution counts).

    python notebooks/_make_notebooks.py          # (re)write notebooks/NN_*.ipynb
    python notebooks/_make_notebooks.py --check  # exit 1 if a committed notebook differs

Each notebook narrates one step of Bian et al. (arXiv:1907.01714) and calls the library:
no protocol or training logic lives here. Each has a Colab-only install cell, a cell
tagged ``parameters`` (papermill; ``facekit reproduce`` sets them per preset), and writes
what it shows (PNG figures and ``summary.json``) into ``out_dir`` through
:class:`facekit.reproduce.Record`.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent
REPO = "facekit-dev/facekit"
BRANCH = "main"


def md(text: str):
    return new_markdown_cell(text.strip("\n"))


def code(text: str, tags: list[str] | None = None):
    cell = new_code_cell(text.strip("\n"))
    if tags:
        cell.metadata["tags"] = tags
    return cell


def badges(name: str) -> str:
    colab = f"https://colab.research.google.com/github/{REPO}/blob/{BRANCH}/notebooks/{name}.ipynb"
    binder = f"https://mybinder.org/v2/gh/{REPO}/HEAD?labpath=notebooks/{name}.ipynb"
    return (
        f"[![Open in Colab](https://colab.research.google.com/assets/colab-badge.svg)]({colab}) "
        f"[![Binder](https://mybinder.org/badge_logo.svg)]({binder})"
    )


def colab_cell(widgets: bool = False) -> object:
    extra = ""
    if widgets:
        extra = (
            "\n    from google.colab import output\n"
            "    output.enable_custom_widget_manager()  # ipywidgets in Colab"
        )
    return code(
        f"""
# On Google Colab only: install facekit (and OpenJPEG for JPEG 2000). Elsewhere this does nothing.
import sys

if "google.colab" in sys.modules:
    !apt-get -qq install -y libopenjp2-7 > /dev/null
    !pip install -q "facekit @ git+https://github.com/{REPO}"{extra}
"""
    )


DATA_NOTE = """
**Data.** The notebooks read LFW from `lfw_root` or the environment variable
`FACEKIT_LFW`: a folder holding `lfw-deepfunneled.tgz` (or the extracted
`lfw-deepfunneled/`) and `pairs.txt` (see `data/README.md`; on Colab, upload or mount
them and set `lfw_root`). `device="auto"` uses a GPU when there is one.
"""

SETUP = """
%matplotlib inline
import matplotlib.pyplot as plt
import numpy as np
import torch
from IPython.display import Markdown, display

import facekit
from facekit.reproduce import Record, resolve_device

device = resolve_device(device)
rec = Record(out_dir)  # figures and summary.json of this notebook go to out_dir
print(f"facekit {facekit.__version__}, torch {torch.__version__}, device {device}, output in {rec.dir}")
"""


def header(name: str, title: str, text: str, widgets: bool = False) -> list:
    return [
        md(f"# {title}\n\n{badges(name)}\n\n{text.strip()}"),
        colab_cell(widgets),
    ]


# --------------------------------------------------------------------------- 01


def nb01() -> list:
    name = "01_build_autoencoder"
    return [
        *header(name, "1 · The autoencoder: compact representation, PNG, reconstruction", """
Bian et al., *A Deep Image Compression Framework for Face Recognition*
([arXiv:1907.01714](https://arxiv.org/abs/1907.01714)), compress a face in three steps:

1. a convolutional **compression network** maps the face to a small, image-like
   **compact representation** (a few channels at 1/4 to 1/16 of the resolution);
2. the representation is **quantised to 8 bits or fewer** and stored **losslessly as a
   PNG**: the rate is the size of that PNG file;
3. a deeper **reconstruction network** rebuilds the face from the decoded PNG.

Both networks are trained first for distortion (notebook 2), then jointly with a face
recogniser so that the reconstruction keeps its identity (notebook 3); notebook 4
measures LFW verification accuracy against bits per pixel, notebook 5 lets you explore.
This notebook builds the networks, shows the quantiser and the compact representation,
and makes a first reconstruction with the weights facekit ships.
"""),
        code("""
# Parameters (papermill and `facekit reproduce` set these)
lfw_root = None      # LFW folder or archive; None: $FACEKIT_LFW
device = "auto"      # "auto": CUDA when available, else CPU
rate_point = "q3"    # one of the shipped rate points q1 (lowest rate) .. q5
image_name = None    # an LFW image such as "Aaron_Peirsol/Aaron_Peirsol_0001.jpg"; None: the first of pairs.txt
quick = True         # nothing slow happens here either way
out_dir = "nb_out"   # figures and summary.json go here
""", tags=["parameters"]),
        md(DATA_NOTE),
        code(SETUP),
        md("""
## The method at a glance

The encoder side ends in an ordinary PNG file; everything after it can run anywhere a PNG
decoder and the reconstruction network are. At evaluation, the reconstruction goes through
the face recogniser with the alignment found on the *original* image, so the codec alone
is judged.
"""),
        code("""
from matplotlib.patches import FancyBboxPatch

fig, ax = plt.subplots(figsize=(13, 3.0))
ax.set_axis_off()
ax.set_xlim(0, 13)
ax.set_ylim(0, 3.0)
stages = [
    ("face $x$\\n250×250×3", "#e6e6e6"),
    ("compression\\nnetwork\\n(strided convs)", "#cfe2ff"),
    ("quantiser\\n$q=\\\\mathrm{round}(y\\\\cdot(2^b-1))$", "#ffe8a3"),
    ("compact\\nrepresentation\\n→ PNG (lossless)", "#ffd3b6"),
    ("reconstruction\\nnetwork (residual,\\n×2 upsampling)", "#cfe2ff"),
    ("$\\\\hat{x}$ → face\\nrecogniser\\n(dlib ResNet)", "#d4f4dd"),
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
"""),
        md("""
## Rate points

The rate is set by the shape of the compact representation: downsampling factor $f$,
channels $C$ and bit depth $b$ give $C \\cdot \\lceil H/f\\rceil \\cdot \\lceil W/f\\rceil \\cdot b$ bits
before PNG's lossless compression squeezes them further. facekit ships five rate points:
"""),
        code("""
from facekit.models import RATE_POINTS

rows = ["| rate point | downsample | channels | bits | code at 250×250 | bpp before PNG | |",
        "| --- | --- | --- | --- | --- | --- | --- |"]
for rp in RATE_POINTS.values():
    c, h, w = rp.code_shape(250, 250)
    rows.append(f"| {rp.name} | 1/{rp.downsample} | {rp.channels} | {rp.bits} | {c}×{h}×{w} "
                f"| {rp.raw_bits(250, 250) / 250**2:.3f} | {rp.description} |")
display(Markdown("\\n".join(rows)))
"""),
        md("""
## The compression and reconstruction networks

A shallow strided encoder (like Jiang et al.'s ComCNN) and a deeper residual decoder with
sub-pixel upsampling (like RecCNN), with no normalisation layers, so an image's
reconstruction never depends on the rest of its batch.
"""),
        code("""
from facekit.models import build_model

model = build_model(rate_point)
print(model.encoder)
print(model.decoder)
n_enc = sum(p.numel() for p in model.encoder.parameters())
n_dec = sum(p.numel() for p in model.decoder.parameters())
print(f"compression network: {n_enc:,} parameters; reconstruction network: {n_dec:,} parameters")
rec.update(rate_point=rate_point, params_encoder=n_enc, params_decoder=n_dec)
"""),
        md("""
## The quantiser

The encoder ends in a sigmoid, so its output $y$ lies in $(0, 1)$. The quantiser stores
the integers $q = \\mathrm{round}(y (2^b - 1))$ and the decoder sees $\\hat y = q / (2^b - 1)$.
Rounding has no useful gradient, so in training the gradient passes *straight through*
(the decoder still sees exactly the values it will see at inference):
"""),
        code("""
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
"""),
        md("""
## A face, its compact representation, and the PNG that stores it

We load the weights facekit ships for this rate point (trained for distortion on the
identity-disjoint split of LFW: people who appear in no test pair), and take a face
from `pairs.txt`, so the codec has never seen this person.
"""),
        code("""
from facekit.codecs import get_codec
from facekit.data import open_lfw

codec = get_codec("facekit-mse", device=device)
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
"""),
        md("""
The integers are written as the smallest valid PNG facekit can find (layouts, bit depths,
row filters and zlib strategies are tried). It is an ordinary PNG file: any viewer opens
it. The codec's file adds a small container around it (magic, version, model hash,
image size, CRC), and the rate counts those bytes too.
"""),
        code("""
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
"""),
        md("""
## The first reconstruction

The decoder reads the PNG back, dequantises, and runs the reconstruction network.
"""),
        code("""
from facekit.evaluate import psnr

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
"""),
        md("""
Next: notebook 2 trains such a model for distortion, on a GPU when there is one.
"""),
    ]


# --------------------------------------------------------------------------- 02


def nb02() -> list:
    name = "02_train_on_gpu"
    return [
        *header(name, "2 · Distortion training (on a GPU when there is one)", """
Phase one of Bian et al.: the compression and reconstruction networks of one rate point
are trained together to minimise the distortion (MSE) between a face and its
reconstruction, through the quantiser (straight-through rounding). The training faces are
LFW's **identity-disjoint split**: the people who appear in no pair of `pairs.txt`, so
the evaluation never sees a face the codec was trained on.

`facekit.training.train` does the work: random crops with flips and a little colour jitter,
Adam with warm-up and cosine decay, bf16 mixed precision on CUDA, checkpoints that resume
bit-identically, held-out validation through the real PNG bitstream. Here it runs in
chunks so that the notebook can draw the loss as it goes. The quick setting is a handful
of steps on a few images on the CPU (the result is a blur); the `full` preset of
`facekit reproduce` trains for real on a GPU, which is how the shipped weights were made.
"""),
        code("""
# Parameters (papermill and `facekit reproduce` set these)
lfw_root = None        # LFW folder or archive; None: $FACEKIT_LFW
device = "auto"        # "auto": CUDA when available (bf16 mixed precision), else CPU
rate_point = "q3"
steps = 24             # training steps (full preset: 20000)
batch_size = 4         # crops per step (full: 16 or more)
crop = 96              # training crop size in pixels (the default of facekit train is 128)
lr = 2e-3              # a high rate for a short run (full preset and facekit train: 5e-4)
n_train_images = 24    # None: the whole identity-disjoint split (1,549 faces)
chunks = 4             # the live plot is redrawn after each chunk of steps
seed = 0
quick = True
out_dir = "nb_out"
""", tags=["parameters"]),
        md(DATA_NOTE),
        code(SETUP),
        code("""
if device.startswith("cuda"):
    print(f"GPU: {torch.cuda.get_device_name(0)}; training in bf16 mixed precision")
else:
    print(f"no GPU: training on the CPU ({torch.get_num_threads()} threads)"
          + (" with the quick settings" if quick else ""))
"""),
        md("""
## The training faces

The identity-disjoint split holds 1,549 images of 1,468 people; the quick setting takes
the first few of them.
"""),
        code("""
from facekit.data import identity_disjoint_split, open_lfw

lfw = open_lfw(lfw_root)
split = identity_disjoint_split(lfw)
names = sorted(n for imgs in split.values() for n in imgs)
print(f"identity-disjoint split: {len(names)} images of {len(split)} people")
if n_train_images:
    names = names[:n_train_images]
images = [lfw.load(n) for n in names]
print(f"training on {len(images)} images")
"""),
        md("""
## Training, with a live loss plot

The configuration is a `TrainConfig`; `train(..., stop_after=k, resume=True)` trains
until step `k` and checkpoints, so the loop below is the same run as one uninterrupted
call, with a plot in between.
"""),
        code("""
from tqdm.auto import tqdm

from facekit.training import TrainConfig, train

run_dir = rec.dir / f"run_{rate_point}"
chunk = max(1, -(-steps // chunks))
cfg = TrainConfig(
    rate=rate_point, steps=steps, batch_size=batch_size, crop=crop, lr=lr, seed=seed,
    warmup=min(50, max(1, steps // 10)), log_every=max(1, min(20, steps // 24)), checkpoint_every=chunk,
    val_every=steps, val_images=2 if quick else 16,
)
print(cfg)

def read_history():
    import json

    path = run_dir / "history.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []

fig, (ax_loss, ax_psnr) = plt.subplots(1, 2, figsize=(11, 3.6))
handle = display(fig, display_id=True)
bar = tqdm(total=steps, desc=f"training {rate_point}")
done, summary = 0, {}
while done < steps:
    target = min(steps, done + chunk)
    summary = train(cfg, run_dir, images=images, names=names, device=device, resume=done > 0,
                    stop_after=target, verbose=False)
    bar.update(target - done)
    done = target
    hist = read_history()
    for ax, key, label in ((ax_loss, "loss", "loss (MSE)"), (ax_psnr, "psnr", "training PSNR (dB)")):
        ax.clear()
        x, y = [r["step"] for r in hist], np.array([r[key] for r in hist])
        ax.plot(x, y, "o", ms=3, alpha=0.4, label="batch")
        k = max(1, len(y) // 8)
        ax.plot(x[k - 1:], np.convolve(y, np.ones(k) / k, mode="valid"), "-", lw=2, label=f"mean of {k}")
        ax.set(xlabel="step", ylabel=label)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    if ax_loss.lines and min(r["loss"] for r in hist) > 0:
        ax_loss.set_yscale("log")
    fig.tight_layout()
    handle.update(fig)
bar.close()
plt.close(fig)
rec.figure(fig, "loss.png")
print({k: v for k, v in summary.items() if k not in ("config", "val_images")})
"""),
        md("""
## Checkpoint and result

The run folder holds `checkpoint.pt` (model, optimiser, schedule, RNG states: resumable),
`history.jsonl`/`.csv`, `config.json`, `summary.json` and the final `model.pt`. Below,
the trained model compresses the held-out validation faces through the real bitstream,
next to the shipped weights of the same rate point (trained for much longer).
"""),
        code("""
from facekit.codecs import bits_per_pixel, get_codec
from facekit.evaluate import psnr
from facekit.models import FaceCodecNet, RatePoint

print(sorted(p.name for p in run_dir.iterdir()))
blob = torch.load(run_dir / "model.pt", map_location="cpu", weights_only=True)
trained = FaceCodecNet(RatePoint.from_dict(blob["rate_point"]))
trained.load_state_dict(blob["state_dict"])
trained.eval().to(device)

try:
    shipped = get_codec("facekit-mse", device=device)
except facekit.FacekitError as e:  # e.g. an installation without the shipped weights
    shipped = None
    print(f"no shipped weights to compare with: {e}")
val_names = summary["val_images"] or names[:2]
cols = 3 if shipped else 2
fig, axes = plt.subplots(len(val_names), cols, figsize=(3 * cols, 3.1 * len(val_names)), squeeze=False)
results = []
for row, n in zip(axes, val_names):
    img = lfw.load(n)
    x = torch.from_numpy(img.copy()).permute(2, 0, 1)[None].float().div(255).to(device)
    enc = trained.compress(x)
    out = trained.decompress(enc["strings"], enc["shape"])["x_hat"][0]
    mine = (out.permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8)
    r = {"image": n, "trained_bpp": bits_per_pixel(enc["strings"][0], *img.shape[:2]), "trained_psnr": psnr(img, mine)}
    panels = [(img, "original"), (mine, f"{steps} steps here\\n{r['trained_bpp']:.3f} bpp, {r['trained_psnr']:.1f} dB")]
    if shipped:
        data = shipped.encode(img, rate_point)
        ref = shipped.decode(data)
        r.update(shipped_bpp=bits_per_pixel(data, *img.shape[:2]), shipped_psnr=psnr(img, ref))
        panels.append((ref, f"shipped weights\\n{r['shipped_bpp']:.3f} bpp, {r['shipped_psnr']:.1f} dB"))
    results.append(r)
    for ax, (im, title) in zip(row, panels):
        ax.imshow(im)
        ax.set_title(title, fontsize=9)
        ax.set_axis_off()
fig.tight_layout()
rec.figure(fig, "reconstructions.png")
plt.show()
hist = read_history()
q = max(1, len(hist) // 4)  # mean loss over the first and the last quarter of the logged steps
rec.update(rate_point=rate_point, steps=steps, device=device, train_time_s=summary["train_time_s"],
           loss_start=float(np.mean([r["loss"] for r in hist[:q]])),
           loss_end=float(np.mean([r["loss"] for r in hist[-q:]])), images_per_s=hist[-1]["images_per_s"],
           val_psnr=summary.get("val_psnr"), val_png_bpp=summary.get("val_png_bpp"),
           checkpoint=str(run_dir / "checkpoint.pt"), reconstructions=results)
"""),
        md("""
## Training for real

On a GPU, the same run at full length is one command (also `torchrun --nproc_per_node=N`
for several GPUs; `--resume` continues a stopped run):

```bash
facekit train --rate q3 --steps 20000 --batch-size 32 --out runs/q3
```

or `facekit reproduce --preset full`, which runs this notebook with GPU settings.
"""),
    ]


# --------------------------------------------------------------------------- 03


def nb03() -> list:
    name = "03_joint_finetune"
    return [
        *header(name, "3 · Joint fine-tuning with the face recogniser", """
Phase two of Bian et al.: starting from the distortion-trained codec, the reconstruction
is also passed through a frozen face recogniser and the loss gains an **identity term**,
the distance between the embeddings of the original and of its reconstruction:

$$L = \\lambda_{\\mathrm{mse}}\\,\\lVert x - \\hat x\\rVert^2 + \\lambda_{\\mathrm{id}}\\,
\\big\\lVert f(\\mathrm{align}(x, T)) - f(\\mathrm{align}(\\hat x, T))\\big\\rVert^2$$

Both images are aligned with the transform $T$ found on the *original* (a differentiable
`grid_sample`), so the gradient reaches the codec through the recogniser, which stays
frozen so that the evaluation judges the codec alone. The recogniser is dlib's face
ResNet, ported to PyTorch by facekit. Raising $\\lambda_{\\mathrm{id}}$ trades PSNR for
identity: the reconstruction may match the pixels of the original a little less, but
looks more like the same person to the recogniser.

`facekit.training.finetune_joint` does the work (the same loop as `facekit joint`). The quick
setting fine-tunes for a handful of steps on a few faces at a few identity weights: it
shows the mechanics, and the numbers on the test faces barely move (a few steps on eight
faces do not generalise). The effect comes from a full run: the `full` preset of
`facekit reproduce` (GPU), or the shipped `facekit-joint` weights when this installation
has them, shown beside the distortion-only codec below.
"""),
        code("""
# Parameters (papermill and `facekit reproduce` set these)
lfw_root = None        # LFW folder or archive; None: $FACEKIT_LFW
device = "auto"
rate_point = "q2"      # a low rate, where identity suffers most
recognizer = "dlib-resnet"
lambdas = [0.0, 0.5]   # identity-term weights to compare (0: distortion only, same steps)
steps = 6              # fine-tuning steps per weight (full preset: 2000)
batch_size = 2         # whole 250x250 faces per step (full: 16)
lr = 1e-4              # as facekit joint; a higher rate undoes the distortion training in a few steps
n_train_images = 10    # from the identity-disjoint split, the last 2 held out; None: all of it
n_test_images = 4      # faces from pairs.txt to show before/after
seed = 0
quick = True
out_dir = "nb_out"
""", tags=["parameters"]),
        md(DATA_NOTE),
        code(SETUP),
        md("""
## The recogniser and the test faces

The transforms (landmarks, then the similarity transform to dlib's 150×150 chip) are
found once on the originals and cached. The test faces come from `pairs.txt`: people the
codec was never trained on.
"""),
        code("""
from facekit.data import open_lfw
from facekit.recognition import find_transforms, get_recognizer
from facekit.widgets import pick_images

lfw = open_lfw(lfw_root)
rec_net = get_recognizer(recognizer, device=device)
test_names = pick_images(lfw, n_test_images)
thetas = find_transforms(rec_net, lfw, test_names)
test_images = [lfw.load(n) for n in test_names]
print(f"{rec_net.name}: {rec_net.distance} distance, same-person threshold {rec_net.threshold}")
print("test faces:", test_names)
"""),
        md("""
## The identity term on the distortion-only codec

Before any fine-tuning: how far does the recogniser's embedding of each reconstruction
move from that of its original? Distances above the threshold mean the recogniser no
longer takes the reconstruction for the same person.
"""),
        code("""
from facekit.codecs import bits_per_pixel, get_codec
from facekit.evaluate import psnr
from facekit.protocol import pair_distances


def embed(images, names):
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float().div(255).to(device)
    th = torch.from_numpy(np.stack([thetas[n] for n in names]).astype(np.float32)).to(device)
    with torch.inference_mode():
        return rec_net.embed(x, th).float().cpu().numpy()


original_embeddings = embed(test_images, test_names)


def measure(codec, setting):
    \"\"\"Mean bpp (whole files), PSNR and identity distance of the test faces through a codec.\"\"\"
    datas = [codec.encode(im, setting) for im in test_images]
    recons = [codec.decode(d) for d in datas]
    dist = pair_distances(original_embeddings, embed(recons, test_names), rec_net.distance)
    return recons, {
        "bpp": float(np.mean([bits_per_pixel(d, *im.shape[:2]) for d, im in zip(datas, test_images)])),
        "psnr": float(np.mean([psnr(a, b) for a, b in zip(test_images, recons)])),
        "identity_distance": float(dist.mean()), "distances": dist.tolist(),
    }


mse_codec = get_codec("facekit-mse", device=device)
before_recons, before = measure(mse_codec, rate_point)
print(f"facekit-mse {rate_point}: {before['bpp']:.3f} bpp, {before['psnr']:.2f} dB, "
      f"mean identity distance {before['identity_distance']:.3f}")
rec.update(rate_point=rate_point, before=before, threshold=rec_net.threshold)
"""),
        md("""
## The shipped jointly trained codec

When this installation ships `facekit-joint` weights (fine-tuned from the distortion
weights of each rate point for the full run), the same faces through them:
"""),
        code("""
try:
    joint_codec = get_codec("facekit-joint", device=device)
    if rate_point not in joint_codec.settings:
        raise facekit.FacekitError(f"no joint weights for {rate_point} (has {', '.join(joint_codec.settings)})")
    shipped_recons, shipped = measure(joint_codec, rate_point)
    print(f"facekit-joint {rate_point}: {shipped['bpp']:.3f} bpp, {shipped['psnr']:.2f} dB, "
          f"mean identity distance {shipped['identity_distance']:.3f}")
except facekit.FacekitError as e:
    joint_codec, shipped_recons, shipped = None, None, None
    print(f"no shipped joint weights here: {e}")
rec.update(shipped_joint=shipped)
"""),
        md("""
## Joint fine-tuning, live

For each identity weight, the distortion weights of the rate point are fine-tuned with the
joint loss on whole faces of the identity-disjoint split (with their transforms; flips
mirror the transform too), then installed as a `joint` model in the run folder and
measured through the codec on the same test faces. $\\lambda_{\\mathrm{id}} = 0$ is the
control: the same steps with the distortion term alone.
"""),
        code("""
import copy

from facekit.data import identity_disjoint_split
from facekit.training import AlignedImageSet, JointConfig, finetune_joint
from facekit.zoo import install_weights

split = identity_disjoint_split(lfw)
train_names = sorted(n for imgs in split.values() for n in imgs)[: n_train_images or None]
train_thetas = find_transforms(rec_net, lfw, train_names)
data = AlignedImageSet([rec_net.read_original(lfw.path(n)) for n in train_names],
                       [train_thetas[n] for n in train_names], train_names)
print(f"fine-tuning on {len(train_names)} faces (the last {min(2, len(train_names) - 1)} held out)")

runs = {}
for lam in lambdas:
    cfg = JointConfig(rate=rate_point, steps=steps, batch_size=batch_size, lr=lr, lambda_id=lam, seed=seed,
                      recognizer=recognizer, log_every=max(1, steps // 8), checkpoint_every=steps,
                      val_images=min(2, len(train_names) - 1))
    run_dir = rec.dir / f"joint_{rate_point}_lambda{lam:g}"
    model = copy.deepcopy(mse_codec.model(rate_point))  # start from the distortion weights
    summary = finetune_joint(cfg, model, run_dir, data, recognizer=rec_net, device=device, verbose=False)
    install_weights(model.cpu(), "joint", folder=run_dir / "weights")
    recons, m = measure(get_codec("facekit-joint", device=device, folder=run_dir / "weights"), rate_point)
    m["train_time_s"] = summary["train_time_s"]
    runs[lam] = (recons, m)
    print(f"λ_id {lam:g}: {m['bpp']:.3f} bpp, {m['psnr']:.2f} dB, identity distance {m['identity_distance']:.3f} "
          f"({summary['train_time_s']:.0f} s)")
rec.update(steps=steps, runs={f"{lam:g}": m for lam, (_, m) in runs.items()})
"""),
        md("""
## Before and after
"""),
        code("""
variants = [("distortion only", before_recons, before["distances"])]
if shipped:
    variants.append(("shipped joint", shipped_recons, shipped["distances"]))
variants += [(f"{steps} steps, λ_id={lam:g}", r, m["distances"]) for lam, (r, m) in runs.items()]
n = len(test_names)
fig, axes = plt.subplots(1 + len(variants), n, figsize=(2.6 * n, 2.9 * (1 + len(variants))), squeeze=False)
for i in range(n):
    axes[0, i].imshow(test_images[i])
    axes[0, i].set_title(f"{test_names[i].split('/')[0].replace('_', ' ')}\\noriginal", fontsize=8)
    for row, (title, recons, dists) in zip(axes[1:], variants):
        row[i].imshow(recons[i])
        verdict = "same" if dists[i] <= rec_net.threshold else "DIFFERENT"
        row[i].set_title(f"{title}\\nd = {dists[i]:.3f} ({verdict})", fontsize=8)
for ax in axes.flat:
    ax.set_axis_off()
fig.tight_layout()
rec.figure(fig, "before_after.png")
plt.show()
"""),
        md("""
## The trade-off: PSNR against identity distance

Each point is one codec setting. Across the rate points of the distortion-only codec
both PSNR and identity improve with the rate; at one rate point the identity weight moves
the codec along another axis: lower identity distance for some PSNR.
"""),
        code("""
def sweep_codec(codec):
    return {s: measure(codec, s)[1] for s in codec.settings}


sweeps = {"facekit-mse": sweep_codec(mse_codec)}
if joint_codec is not None:
    sweeps["facekit-joint"] = sweep_codec(joint_codec)
fig, ax = plt.subplots(figsize=(7, 4.5))
for (label, sw), style in zip(sweeps.items(), ("D--", "D-")):
    ax.plot([m["psnr"] for m in sw.values()], [m["identity_distance"] for m in sw.values()], style,
            color="tab:blue", lw=1.5 if style == "D--" else 2.5, label=f"{label}, rate points")
    for s, m in sw.items():
        ax.annotate(f"{s} ({m['bpp']:.2f} bpp)", (m["psnr"], m["identity_distance"]), fontsize=7,
                    xytext=(4, 4), textcoords="offset points")
for lam, (_, m) in runs.items():
    ax.plot(m["psnr"], m["identity_distance"], "o", ms=8, label=f"{rate_point}, {steps} steps, λ_id={lam:g}")
ax.axhline(rec_net.threshold, color="gray", ls=":", label=f"same-person threshold {rec_net.threshold}")
ax.set(xlabel="PSNR (dB)", ylabel=f"identity distance ({rec_net.distance})",
       title=f"PSNR against identity on {len(test_names)} LFW test faces")
ax.grid(alpha=0.3)
ax.legend(fontsize=7)
rec.figure(fig, "tradeoff.png")
plt.show()
rec.update(sweeps={k: {str(s): m for s, m in v.items()} for k, v in sweeps.items()})
"""),
        md("""
A real run is one command per rate point (GPU recommended; `--install` ships the result
as the `facekit-joint` weights, with how it was made recorded in the manifest):

```bash
facekit joint --rate q2 --steps 5000 --batch-size 16 --lambda-id 0.02 --out runs/joint-q2 --install
```

Beyond the paper, the loss can also carry a **rate term**, $\\lambda_{\\mathrm{rate}}$ times the
code's bits per pixel under the context prior of the starting weights (the model behind the
`-entropy` variants; exact in value, straight-through in gradient, `facekit.models.rate`):
`facekit joint ... --lambda-rate 0.1`, or `JointConfig(lambda_rate=...)` with
`finetune_joint(..., rate_prior=prior)`. With `--install` such a run ships as its own
variant, `jointrate` (codec `facekit-jointrate-entropy`), beside the `joint` weights; refit
its prior afterwards (`facekit weights fit-prior q2 --variant jointrate --layout 4`:
the shipped jointrate priors are small integer networks over a wide causal window,
`facekit-prior/4`; `--layout 3` fits count tables, which a later run's rate term can read).

The recogniser reads only the face chip, so the distortion term may weigh the background
less: `--background-weight 0.1` multiplies the squared error outside the chip (found on
the original, `facekit.training.face_weights`) by 0.1, and the run ships as the `jointface`
variant (`facekit-jointface-entropy`). Those weights were trained on a lent GPU, several rate
points side by side for a fixed time each: `facekit joint --write-pack pack.npz` writes the
training split (files and transforms, 14 MB) for a machine without LFW or dlib, and
`bash scripts/gpu_joint.sh pack.npz DLIB_WEIGHTS runs/gpu 450` runs the lines of
`scripts/gpu_joint_runs.txt` with `--time-limit 450`.
"""),
    ]


# --------------------------------------------------------------------------- 04


def nb04() -> list:
    name = "04_codec_comparison"
    return [
        *header(name, "4 · Rate and accuracy: facekit against JPEG, JPEG 2000, WebP and AVIF", """
The paper's measure: LFW face verification accuracy (the 10-fold protocol of
`pairs.txt`) on compressed images, against the bits per pixel that made them. For every
codec and setting, each image is encoded (rate from the real bytes, headers included),
decoded, aligned with the transform found on its original, embedded by the recogniser,
and the pairs are scored with thresholds chosen on the other folds.
`facekit.evaluate.evaluate` does all of it, caching embeddings so reruns are quick.

The quick setting uses 4 pairs per fold (40 pairs: the accuracies are rough, a few points
either way) and two or three settings per codec, so that it runs in a couple of minutes on
a laptop CPU; the full preset uses all 6,000 pairs and every codec's sweep. With
`use_saved=True` the notebook reads the committed full-LFW results
(`results/rate_accuracy.json`) instead of computing.
"""),
        code("""
# Parameters (papermill and `facekit reproduce` set these)
lfw_root = None         # LFW folder or archive; None: $FACEKIT_LFW
device = "auto"
per_fold = 4            # pairs per fold (half matched): 40 pairs in all; None: all 600 of each fold
sweep = {               # codec -> settings; None: every available codec with its default sweep
    "uncompressed": [None],
    "facekit-mse": ["q1", "q3", "q5"],
    "facekit-joint": ["q1", "q3", "q5"],
    "facekit-jointrate-entropy": ["q3"],  # joint training with the rate term, range-coded
    "jpeg": [3, 20],
    "jpeg2000": [0.05, 0.25],
    "webp": [0, 40],
    "avif": [0, 40],
    "facekit-joint-roi": ["q3"],  # region of interest: only the face is coded (section below)
    "avif-roi": [10],
}
use_saved = False       # read saved_results instead of evaluating
saved_results = None    # None: results/rate_accuracy.json of the checkout
crop_rate_point = "q3"  # side-by-side crops at the bpp of the learned codec at this rate point
target_bpp = None       # ... or at this bpp
quick = True
out_dir = "nb_out"
""", tags=["parameters"]),
        md(DATA_NOTE),
        code(SETUP),
        code("""
from facekit.codecs.registry import available_codecs

avail = available_codecs()
if sweep is not None:
    missing = {k: avail.get(k, {}).get("reason") for k in sweep if k != "uncompressed" and not avail.get(k, {}).get("available")}
    for k, why in missing.items():
        print(f"left out: {k} ({why})")
    sweep = {k: v for k, v in sweep.items() if k not in missing}
    for k, v in sweep.items():  # the learned codecs: only the rate points this installation ships
        if k.startswith("facekit") and v:
            have = avail[k]["settings"]
            sweep[k] = [s for s in v if s in have] or have
for k, d in avail.items():
    if d["available"] and not k.endswith("-pillow"):
        print(f"{k:24s} {d.get('library', '')}")
"""),
        md("""
## Evaluate (or read the saved results)
"""),
        code("""
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
"""),
        md("""
## Rate-accuracy and rate-PSNR curves
"""),
        code("""
from facekit.plots import rate_accuracy_figure, summary_table

fig = rate_accuracy_figure(results)
rec.figure(fig, "rate_accuracy.png")
plt.show()
display(Markdown(summary_table(results)))
rec.update(n_pairs=prot["n_pairs"], per_fold=prot["per_fold"], source="saved" if use_saved and saved.exists() else "evaluated",
           codecs={name: [{"setting": p["setting"], "bpp": p["bpp"], "acc_mean": p["acc_mean"], "psnr": p.get("psnr")}
                          for p in pts] for name, pts in results["codecs"].items()})
"""),
        md("""
## Region of interest: code only the face

The recogniser never sees the whole image, only the 150x150 chip its alignment cuts out
around the eyes, nose and mouth: about a quarter of a 250x250 LFW image. Whatever a codec
spends on the background is lost to recognition. `facekit.roi` finds the chip on the image
being compressed (dlib's detector and landmarks, as the recogniser does), and the `-roi`
codecs code only that: `facekit-joint-roi` flattens the learned code outside the chip (the
decoder is the same, the bytes are ordinary facekit bitstreams),
`facekit-jointrate-entropy-roi` range-codes only the codes inside the chip after 31 bytes of
its geometry (the same decoded image as the PNG ROI stream, about a quarter fewer bytes),
and `avif-roi`,
`jpeg2000-roi`, ... flatten the background before the classical encoder: the fair
baseline. The rate is still counted over the whole image; the whole-image PSNR of a ROI
codec is low because its background is flat.
"""),
        code("""
from facekit.codecs import bits_per_pixel, get_codec
from facekit.data import open_lfw
from facekit.plots import roi_figure
from facekit.roi import FaceRegionFinder, region_mask

fig = roi_figure(results)  # the ROI codecs beside the codecs they are made from (None: no ROI codec)
if fig is not None:
    rec.figure(fig, "rate_accuracy_roi.png")
    plt.show()

lfw_ = open_lfw(lfw_root)
face_roi = lfw_.load(lfw_.pairs()[0].a)
keep = region_mask(FaceRegionFinder().find(face_roi), face_roi.shape[:2], cell=1, margin=4)
shown = {"original (coded region bright)": np.where(keep[..., None], face_roi, face_roi // 3)}
for name, setting in (("facekit-joint", crop_rate_point), ("facekit-joint-roi", crop_rate_point),
                      ("facekit-jointrate-entropy-roi", crop_rate_point), ("avif-roi", 10)):
    if avail.get(name, {}).get("available") and (not name.startswith("facekit") or setting in avail[name]["settings"]):
        codec = get_codec(name, **({"device": device} if name.startswith("facekit") else {}))
        data = codec.encode(face_roi, setting)
        shown[f"{name} {setting}: {bits_per_pixel(data, *face_roi.shape[:2]):.3f} bpp"] = codec.decode(data)
fig, axes = plt.subplots(1, len(shown), figsize=(3.2 * len(shown), 3.4))
for ax, (title, im) in zip(np.atleast_1d(axes), shown.items()):
    ax.imshow(im)
    ax.set_title(title, fontsize=8)
    ax.set_axis_off()
fig.tight_layout()
rec.figure(fig, "roi_example.png")
plt.show()
"""),
        md("""
## Side by side at equal bits per pixel

One face; the target is the learned codec's rate at `crop_rate_point` on this face (or
`target_bpp`), and each other codec's setting is searched so that its rate lands at, or
just under, the target on *this* image (`facekit.codecs.search_setting`); a crop around
the eyes and mouth, enlarged.
"""),
        code("""
from facekit.codecs import get_codec, search_setting
from facekit.data import open_lfw
from facekit.evaluate import psnr

lfw = open_lfw(lfw_root)
face_name = lfw.pairs()[0].a
face = lfw.load(face_name)
names = [k for k in results["codecs"] if k != "uncompressed" and avail.get(k, {}).get("available")]
codecs_ = {k: get_codec(k, **({"device": device} if k.startswith("facekit") else {})) for k in names}
# the target rate comes from a whole-image, PNG-coded learned codec (a ROI codec's rate is far
# lower, and a range-coded one's can be below what JPEG reaches)
learned = [k for k in names if k.startswith("facekit") and not k.endswith(("-roi", "-entropy"))
           and crop_rate_point in codecs_[k].settings]
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
axes[0].set_title(f"original\\n{face_name.split('/')[0]}", fontsize=9)
for ax, (name, (out, setting, bpp, p)) in zip(axes[1:], crops.items()):
    ax.imshow(out[y0:y0 + s, x0:x0 + s])
    ax.set_title(f"{name} ({setting})\\n{bpp:.3f} bpp, {p:.1f} dB", fontsize=9)
for ax in axes:
    ax.set_axis_off()
fig.tight_layout()
rec.figure(fig, "equal_bpp.png")
plt.show()
rec.update(target_bpp=target_bpp, equal_bpp={k: {"setting": v[1], "bpp": v[2], "psnr": v[3]} for k, v in crops.items()})
"""),
    ]


# --------------------------------------------------------------------------- 05


def nb05() -> list:
    name = "05_interactive_explorer"
    return [
        *header(name, "5 · Interactive explorer", """
Pick a codec, move the rate slider, pick a face: the original and the reconstruction,
the real bits per pixel, the PSNR, and the recogniser's distance between the
reconstruction and its original, judged against the recogniser's same-person threshold.
The faces come from `pairs.txt`, so the learned codec has never seen these people.

Every number comes from the same library calls as the rate-accuracy curves of notebook 4
(`facekit.widgets.Explorer`). Run all cells, then use the controls (they need a live
kernel: in a static view of the notebook they do nothing).
""", widgets=True),
        code("""
# Parameters (papermill and `facekit reproduce` set these)
lfw_root = None        # LFW folder or archive; None: $FACEKIT_LFW
device = "auto"
n_images = 4           # faces in the image picker
codecs = None          # None: facekit.widgets.DEFAULT_CODECS (learned, ROI and classical; those available)
recognizer = "dlib-resnet"
quick = True
out_dir = "nb_out"
""", tags=["parameters"]),
        md(DATA_NOTE),
        code(SETUP),
        code("""
from facekit.widgets import DEFAULT_CODECS, Explorer

explorer = Explorer(lfw_root=lfw_root, n_images=n_images, codecs=codecs or DEFAULT_CODECS,
                    recognizer=recognizer, device=device)
for name, why in explorer.unavailable.items():
    print(f"not available here: {name} ({why})")
explorer.ui
"""),
        md("""
## The same numbers, for every rate point

The explorer's `sweep` runs one codec over all its settings for one face: here the
learned codec (or the first codec available) on the first face.
"""),
        code("""
codec_name = next(iter(explorer.codecs))
face = explorer.image_names[0]
views = explorer.sweep(codec_name, face)
rows = ["| setting | bytes | bpp | PSNR (dB) | identity distance | verdict |", "| --- | --- | --- | --- | --- | --- |"]
for v in views:
    d = "—" if v.distance is None else f"{v.distance:.3f}"
    verdict = "—" if v.same is None else ("same person" if v.same else "different person")
    rows.append(f"| {v.setting} | {v.nbytes} | {v.bpp:.4f} | {v.psnr:.2f} | {d} | {verdict} |")
display(Markdown(f"**{codec_name}** on `{face}`\\n\\n" + "\\n".join(rows)))

fig, axes = plt.subplots(1, len(views) + 1, figsize=(2.4 * (len(views) + 1), 2.9))
axes[0].imshow(explorer.load(face))
axes[0].set_title("original", fontsize=9)
for ax, v in zip(axes[1:], views):
    ax.imshow(v.reconstruction)
    d = "" if v.distance is None else f", d={v.distance:.2f}"
    ax.set_title(f"{v.setting}: {v.bpp:.3f} bpp\\n{v.psnr:.1f} dB{d}", fontsize=9)
for ax in axes:
    ax.set_axis_off()
fig.tight_layout()
rec.figure(fig, "sweep.png")
plt.show()
rec.update(codec=codec_name, image=face, codecs=list(explorer.codecs), unavailable=explorer.unavailable,
           recognizer=None if explorer.recognizer is None else explorer.recognizer.name,
           threshold=views[0].threshold, views=[v.as_dict() for v in views])
"""),
    ]


NOTEBOOKS = {
    "01_build_autoencoder": nb01,
    "02_train_on_gpu": nb02,
    "03_joint_finetune": nb03,
    "04_codec_comparison": nb04,
    "05_interactive_explorer": nb05,
}


def build(name: str) -> nbformat.NotebookNode:
    nb = new_notebook(cells=NOTEBOOKS[name]())
    nb.metadata = {
        "kernelspec": {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"},
        "language_info": {"name": "python"},
        "colab": {"provenance": []},
    }
    # stable cell ids, so regenerating does not churn the files
    for i, cell in enumerate(nb.cells):
        cell["id"] = f"{name[:2]}-{i:02d}"
    nbformat.validate(nb)
    return nb


def render(nb: nbformat.NotebookNode) -> str:
    return nbformat.writes(nb) + "\n"


def main(argv: list[str]) -> int:
    check = "--check" in argv
    stale = []
    for name in NOTEBOOKS:
        path = HERE / f"{name}.ipynb"
        text = render(build(name))
        if check:
            if not path.exists() or path.read_text() != text:
                stale.append(path.name)
        else:
            path.write_text(text)
            print(f"wrote {path}")
    if stale:
        print("out of date (run python notebooks/_make_notebooks.py): " + ", ".join(stale))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
