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
# # 2 · Distortion training (on a GPU when there is one)
#
# [![Open in Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/facekit-dev/facekit/blob/main/notebooks/02_train_on_gpu.ipynb) [![Binder](https://mybinder.org/badge_logo.svg)](https://mybinder.org/v2/gh/facekit-dev/facekit/HEAD?labpath=notebooks/02_train_on_gpu.ipynb)
#
# Phase one of Bian et al.: the compression and reconstruction networks of one rate point
# are trained together to minimise the distortion (MSE) between a face and its
# reconstruction, through the quantiser (straight-through rounding). The training faces are
# LFW's **identity-disjoint split**: the people who appear in no pair of `pairs.txt`, so
# the evaluation never sees a face the codec was trained on.
#
# `facekit.training.train` does the work: random crops with flips and a little colour jitter,
# Adam with warm-up and cosine decay, bf16 mixed precision on CUDA, checkpoints that resume
# bit-identically, held-out validation through the real PNG bitstream. Here it runs in
# chunks so that the notebook can draw the loss as it goes. The quick setting is a handful
# of steps on a few images on the CPU (the result is a blur); the `full` preset of
# `facekit reproduce` trains for real on a GPU, which is how the shipped weights were made.

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
run_root = None        # the training run (checkpoints) goes here; None: a temporary folder
quick = True
out_dir = "nb_out"     # figures and summary.json go here (no checkpoints)

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
from IPython.display import display

from facekit.reproduce import Record, resolve_device

device = resolve_device(device)
rec = Record(out_dir)  # figures and summary.json of this notebook go to out_dir
print(f"facekit {facekit.__version__}, torch {torch.__version__}, device {device}, output in {rec.dir}")

# %%
if device.startswith("cuda"):
    print(f"GPU: {torch.cuda.get_device_name(0)}; training in bf16 mixed precision")
else:
    print(f"no GPU: training on the CPU ({torch.get_num_threads()} threads)"
          + (" with the quick settings" if quick else ""))

# %% [markdown]
# ## The training faces
#
# The identity-disjoint split holds 1,549 images of 1,468 people; the quick setting takes
# the first few of them.

# %%
from facekit.data import identity_disjoint_split, open_lfw

lfw = open_lfw(lfw_root)
split = identity_disjoint_split(lfw)
names = sorted(n for imgs in split.values() for n in imgs)
print(f"identity-disjoint split: {len(names)} images of {len(split)} people")
if n_train_images:
    names = names[:n_train_images]
images = [lfw.load(n) for n in names]
print(f"training on {len(images)} images")

# %% [markdown]
# ## Training, with a live loss plot
#
# The configuration is a `TrainConfig`; `train(..., stop_after=k, resume=True)` trains
# until step `k` and checkpoints, so the loop below is the same run as one uninterrupted
# call, with a plot in between. The run folder (checkpoints, history, the trained model)
# is a working folder, not a result: it goes under `run_root`, or a temporary folder that
# is removed when the kernel stops.

# %%
import tempfile
from pathlib import Path

from tqdm.auto import tqdm

from facekit.training import TrainConfig, train

scratch = None if run_root else tempfile.TemporaryDirectory(prefix="facekit-02-")
run_dir = Path(run_root or scratch.name) / f"run_{rate_point}"
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

# %% [markdown]
# ## Checkpoint and result
#
# The run folder holds `checkpoint.pt` (model, optimiser, schedule, RNG states: resumable),
# `history.jsonl`/`.csv`, `config.json`, `summary.json` and the final `model.pt`. Below,
# the trained model compresses the held-out validation faces through the real bitstream,
# next to the shipped weights of the same rate point (trained for much longer).

# %%
from facekit.codecs import bits_per_pixel, get_codec
from facekit.metrics import psnr
from facekit.models import FaceCodecNet, RatePoint

print(sorted(p.name for p in run_dir.iterdir()))
blob = torch.load(run_dir / "model.pt", map_location="cpu", weights_only=True)
trained = FaceCodecNet(RatePoint.from_dict(blob["rate_point"]))
trained.load_state_dict(blob["state_dict"])
trained.eval().to(device)

try:
    shipped = get_codec("paper-mse", device=device)
except facekit.FacekitError as e:  # e.g. an installation without the shipped weights
    shipped = None
    print(f"no shipped weights to compare with: {e}")
val_names = summary["val_images"] or names[:2]
cols = 3 if shipped else 2
fig, axes = plt.subplots(len(val_names), cols, figsize=(3 * cols, 3.1 * len(val_names)), squeeze=False)
results = []
for row, n in zip(axes, val_names, strict=True):
    img = lfw.load(n)
    x = torch.from_numpy(img.copy()).permute(2, 0, 1)[None].float().div(255).to(device)
    enc = trained.compress(x)
    out = trained.decompress(enc["strings"], enc["shape"])["x_hat"][0]
    mine = (out.permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8)
    r = {"image": n, "trained_bpp": bits_per_pixel(enc["strings"][0], *img.shape[:2]), "trained_psnr": psnr(img, mine)}
    panels = [(img, "original"), (mine, f"{steps} steps here\n{r['trained_bpp']:.3f} bpp, {r['trained_psnr']:.1f} dB")]
    if shipped:
        data = shipped.encode(img, rate_point)
        ref = shipped.decode(data)
        r.update(shipped_bpp=bits_per_pixel(data, *img.shape[:2]), shipped_psnr=psnr(img, ref))
        panels.append((ref, f"shipped weights\n{r['shipped_bpp']:.3f} bpp, {r['shipped_psnr']:.1f} dB"))
    results.append(r)
    for ax, (im, title) in zip(row, panels, strict=True):
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
           run_dir=str(run_dir), run_files=sorted(p.name for p in run_dir.iterdir()), reconstructions=results)

# %% [markdown]
# ## Training for real
#
# On a GPU, the same run at full length is one command (also `torchrun --nproc_per_node=N`
# for several GPUs; `--resume` continues a stopped run):
#
# ```bash
# facekit train --rate q3 --steps 20000 --batch-size 32 --out runs/q3
# ```
#
# or `facekit reproduce --preset full`, which runs this notebook with GPU settings.

# %% [markdown]
# ## The second-generation codec: one model for every rate
#
# The network above is the paper's: a fixed-size code per rate point, stored as PNG. Its
# successor, `facekit.models.hyperprior.FaceHyperprior`, is trained end to end for
# `λ(t)·D + R`, the rate measured under its own entropy model:
#
# - a **hyperprior** (Ballé et al., ICLR 2018; means as well as scales, Minnen et al.,
#   NeurIPS 2018): a small side code `z` predicts a Gaussian for every latent;
# - a **checkerboard context** (He et al., CVPR 2021): half the latents are decoded from
#   the hyperprior alone, the other half with a context from the first half: two passes,
#   whatever the image size, instead of one network call per position;
# - **gain units** (Cui et al., CVPR 2021): one set of weights for every rate, chosen by a
#   continuous `t` in [0, 1]; `q1`..`q5` are points of it;
# - **integer networks** (Ballé et al., ICLR 2019) from `z` to the entropy parameters, so
#   that every machine decodes the same bits.
#
# Below, the shipped model codes one face at three rates. The contract is the paper's
# codec's: `compress` gives strings and a shape, `decompress` gives the image back.

# %%
from facekit.models.hyperprior import PRESETS
from facekit.zoo import load_hyperprior

hp, hp_entry = load_hyperprior("hyperprior")
face = torch.from_numpy(images[0].copy()).permute(2, 0, 1)[None].float().div(255)
for t in (0.0, 0.5, 1.0):
    enc = hp.compress(face, t)
    back = hp.decompress(enc["strings"], enc["shape"])["x_hat"]
    print(f"t = {t}: {len(enc['strings'][0]):,} bytes, "
          f"{bits_per_pixel(enc['strings'][0], *enc['shape']):.3f} bpp, "
          f"{psnr(images[0], (back[0].permute(1, 2, 0) * 255).round().byte().numpy()):.2f} dB")
print("presets:", PRESETS)

# %% [markdown]
# The encoder can do more than run `g_a` once. `g_a` gives a latent that is good on average
# over the training faces, not the best one for this face (the *amortisation gap*: Campos
# et al. 2019, Yang et al. 2020). `facekit.models.refine.refine_latent` takes ten Adam steps
# on the latent itself, on the objective the model was trained on, and `compress` codes the
# result: the decoder and the file format do not change (`facekit-hyperprior-refined`).

# %%
from facekit.codecs.hyperprior import training_lambdas
from facekit.models.refine import rate_lambda, refine_latent

for latent in (None, refine_latent(hp, face, 0.5, rate_lambda(0.5, *training_lambdas(hp_entry)))):
    enc = hp.compress(face, 0.5, latent)
    back = hp.decompress(enc["strings"], enc["shape"])["x_hat"]
    print(f"{'refined' if latent is not None else 'g_a    '}: {bits_per_pixel(enc['strings'][0], *enc['shape']):.3f} bpp, "
          f"{psnr(images[0], (back[0].permute(1, 2, 0) * 255).round().byte().numpy()):.2f} dB")

# %% [markdown]
# The decoder can choose its arithmetic too. Its synthesis `g_s` is most of its work;
# `synthesis="bfloat16"` multiplies in bfloat16 instead (sums stay float32), which a CPU with
# bfloat16 dot products runs faster: the whole decode about 15 % faster. The entropy
# decoding is untouched, so the same file decodes either way:

# %%
enc = hp.compress(face, 0.5)
backs = {s: (hp.decompress(enc["strings"], enc["shape"], s)["x_hat"][0].permute(1, 2, 0) * 255).round().byte().numpy()
         for s in ("float32", "bfloat16")}
for s, back in backs.items():
    print(f"{s:8s}: {psnr(images[0], back):.3f} dB")
print("largest pixel difference:", int(np.abs(backs["float32"].astype(int) - backs["bfloat16"].astype(int)).max()))

# %% [markdown]
# How far from convergence are the shipped weights? Their manifest entry keeps each phase's
# curve: held-out PSNR and bpp (real coding of 32 faces no training step saw) against
# steps, at each rate `t` it was validated at. One rate's PSNR can rise only because its bits
# rose too, so the third panel measures the whole rate-PSNR curve of each step against the
# phase's last one: Bjøntegaard's delta PSNR over 0.1-0.5 bpp. A line still rising at its end
# says more steps at the final learning rate would pay; a flat one says they would not. A longer
# schedule is another question, since its learning rate decays later: whole runs of the recipe at
# other lengths answer it (`benchmarks/convergence.py`; the model card in `results/README.md`
# gives what each doubling of the steps gained).

# %%
from facekit.training.curve import bd_psnr_by_step

fig, (ax_q, ax_r, ax_bd) = plt.subplots(1, 3, figsize=(15, 3.4))
offset = 0
for phase in hp_entry["phases"]:
    steps = [offset + r["step"] for r in phase["curve"]]
    rates = sorted((k.removeprefix("val_psnr_t") for k in phase["curve"][0] if k.startswith("val_psnr_t")), key=float)
    style = "-" if phase["phase"] == "rate-distortion" else "--"
    for i, t in enumerate(rates):
        colour = f"C{i}"
        ax_q.plot(steps, [r[f"val_psnr_t{t}"] for r in phase["curve"]], style, color=colour, label=f"t = {t}, {phase['phase']}")
        ax_r.plot(steps, [r[f"val_bpp_t{t}"] for r in phase["curve"]], style, color=colour)
    bd = bd_psnr_by_step(phase["curve"])
    ax_bd.plot([offset + r["step"] for r in bd], [r["bd_psnr_db"] for r in bd], style, color="k", label=phase["phase"])
    offset += phase["steps"]
ax_q.set(xlabel="step", ylabel="held-out PSNR (dB)")
ax_r.set(xlabel="step", ylabel="held-out bpp", yscale="log")
ax_bd.set(xlabel="step", ylabel="BD-PSNR against the phase's end (dB)", ylim=(-3, 0.5))
ax_bd.axhline(0, color="grey", lw=0.5)
ax_bd.legend(fontsize=7)
ax_q.legend(fontsize=7)
fig.suptitle(f"the shipped facekit-hyperprior ({hp_entry['hardware']}, {hp_entry['train_time_s'] / 3600:.1f} h)")
plt.show()

# %% [markdown]
# One recipe trains it: `recipes/hyperprior.toml` names the data, the steps, the `λ` range
# and the seed. The first phase trains rate and distortion; the second is the joint phase
# of the paper: the face-weighted distortion, the rate and the identity term through dlib's
# ResNet. Both phases run in checkpointed, resumable chunks, and `--install` puts the weights
# in the store with a manifest entry (recipe, commits, hardware, held-out figures, and the
# curve of held-out PSNR, bpp and identity similarity against steps). Each phase of the
# `gpu` preset fits one 15-minute H100 loan, so there it runs one phase per process. After a
# stop, run the same line with `--resume` (a resumed run keeps the preset it started with):
#
# ```bash
# facekit train --recipe recipes/hyperprior.toml --preset cpu --out runs/hp             # CPU: both phases
# facekit train --recipe recipes/hyperprior.toml --preset gpu --out runs/hp --phase rd  # GPU: phase one,
# facekit train --recipe recipes/hyperprior.toml --out runs/hp --phase joint --resume   # then the joint phase
# facekit train --recipe recipes/hyperprior.toml --out runs/hp --resume --install       # ship it
# make weights                                                                          # every recipe
# ```
