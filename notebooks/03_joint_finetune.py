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
# # 3 · Joint fine-tuning with the face recogniser
#
# [![Open in Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/facekit-dev/facekit/blob/main/notebooks/03_joint_finetune.ipynb) [![Binder](https://mybinder.org/badge_logo.svg)](https://mybinder.org/v2/gh/facekit-dev/facekit/HEAD?labpath=notebooks/03_joint_finetune.ipynb)
#
# Phase two of Bian et al.: starting from the distortion-trained codec, the reconstruction
# is also passed through a frozen face recogniser and the loss gains an **identity term**,
# the distance between the embeddings of the original and of its reconstruction:
#
# $$L = \lambda_{\mathrm{mse}}\,\lVert x - \hat x\rVert^2 + \lambda_{\mathrm{id}}\,
# \big\lVert f(\mathrm{align}(x, T)) - f(\mathrm{align}(\hat x, T))\big\rVert^2$$
#
# Both images are aligned with the transform $T$ found on the *original* (a differentiable
# `grid_sample`), so the gradient reaches the codec through the recogniser, which stays
# frozen so that the evaluation judges the codec alone. The recogniser is dlib's face
# ResNet, ported to PyTorch by facekit. Raising $\lambda_{\mathrm{id}}$ trades PSNR for
# identity: the reconstruction may match the pixels of the original a little less, but
# looks more like the same person to the recogniser.
#
# `facekit.training.finetune_joint` does the work (the same loop as `facekit joint`). The quick
# setting fine-tunes for a handful of steps on a few faces at a few identity weights: it
# shows the mechanics, and the numbers on the test faces barely move (a few steps on eight
# faces do not generalise). The effect comes from a full run: the `full` preset of
# `facekit reproduce` (GPU), or the shipped joint weights (codec `paper`) when this installation
# has them, shown beside the distortion-only codec below.

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
run_root = None        # the fine-tuning runs (checkpoints, weights) go here; None: a temporary folder
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

from facekit.reproduce import Record, resolve_device

device = resolve_device(device)
rec = Record(out_dir)  # figures and summary.json of this notebook go to out_dir
print(f"facekit {facekit.__version__}, torch {torch.__version__}, device {device}, output in {rec.dir}")

# %% [markdown]
# ## The recogniser and the test faces
#
# The transforms (landmarks, then the similarity transform to dlib's 150×150 chip) are
# found once on the originals and cached. The test faces come from `pairs.txt`: people the
# codec was never trained on.

# %%
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

# %% [markdown]
# ## The identity term on the distortion-only codec
#
# Before any fine-tuning: how far does the recogniser's embedding of each reconstruction
# move from that of its original? Distances above the threshold mean the recogniser no
# longer takes the reconstruction for the same person.

# %%
from facekit.codecs import bits_per_pixel, get_codec
from facekit.metrics import psnr
from facekit.protocol import pair_distances


def embed(images, names):
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float().div(255).to(device)
    th = torch.from_numpy(np.stack([thetas[n] for n in names]).astype(np.float32)).to(device)
    with torch.inference_mode():
        return rec_net.embed(x, th).float().cpu().numpy()


original_embeddings = embed(test_images, test_names)


def measure(codec, setting):
    """Mean bpp (whole files), PSNR and identity distance of the test faces through a codec."""
    datas = [codec.encode(im, setting) for im in test_images]
    recons = [codec.decode(d) for d in datas]
    dist = pair_distances(original_embeddings, embed(recons, test_names), rec_net.distance)
    return recons, {
        "bpp": float(np.mean([bits_per_pixel(d, *im.shape[:2]) for d, im in zip(datas, test_images, strict=True)])),
        "psnr": float(np.mean([psnr(a, b) for a, b in zip(test_images, recons, strict=True)])),
        "identity_distance": float(dist.mean()), "distances": dist.tolist(),
    }


mse_codec = get_codec("paper-mse", device=device)
before_recons, before = measure(mse_codec, rate_point)
print(f"paper-mse {rate_point}: {before['bpp']:.3f} bpp, {before['psnr']:.2f} dB, "
      f"mean identity distance {before['identity_distance']:.3f}")
rec.update(rate_point=rate_point, before=before, threshold=rec_net.threshold)

# %% [markdown]
# ## The shipped jointly trained codec
#
# When this installation ships joint weights (codec `paper`) (fine-tuned from the distortion
# weights of each rate point for the full run), the same faces through them:

# %%
try:
    joint_codec = get_codec("paper", device=device)
    if rate_point not in joint_codec.settings:
        raise facekit.FacekitError(f"no joint weights for {rate_point} (has {', '.join(joint_codec.settings)})")
    shipped_recons, shipped = measure(joint_codec, rate_point)
    print(f"paper {rate_point}: {shipped['bpp']:.3f} bpp, {shipped['psnr']:.2f} dB, "
          f"mean identity distance {shipped['identity_distance']:.3f}")
except facekit.FacekitError as e:
    joint_codec, shipped_recons, shipped = None, None, None
    print(f"no shipped joint weights here: {e}")
rec.update(shipped_joint=shipped)

# %% [markdown]
# ## Joint fine-tuning, live
#
# For each identity weight, the distortion weights of the rate point are fine-tuned with the
# joint loss on whole faces of the identity-disjoint split (with their transforms; flips
# mirror the transform too), then installed as a `joint` model in the run folder and
# measured through the codec on the same test faces. $\lambda_{\mathrm{id}} = 0$ is the
# control: the same steps with the distortion term alone.

# %%
import copy
import tempfile
from pathlib import Path

from facekit.data import identity_disjoint_split
from facekit.training import AlignedImageSet, JointConfig, finetune_joint
from facekit.zoo import install_weights

split = identity_disjoint_split(lfw)
train_names = sorted(n for imgs in split.values() for n in imgs)[: n_train_images or None]
train_thetas = find_transforms(rec_net, lfw, train_names)
data = AlignedImageSet([rec_net.read_original(lfw.path(n)) for n in train_names],
                       [train_thetas[n] for n in train_names], train_names)
print(f"fine-tuning on {len(train_names)} faces (the last {min(2, len(train_names) - 1)} held out)")

scratch = None if run_root else tempfile.TemporaryDirectory(prefix="facekit-03-")
runs_root = Path(run_root or scratch.name)  # run folders are working files, not results
runs = {}
for lam in lambdas:
    cfg = JointConfig(rate=rate_point, steps=steps, batch_size=batch_size, lr=lr, lambda_id=lam, seed=seed,
                      recognizer=recognizer, log_every=max(1, steps // 8), checkpoint_every=steps,
                      val_images=min(2, len(train_names) - 1))
    run_dir = runs_root / f"joint_{rate_point}_lambda{lam:g}"
    model = copy.deepcopy(mse_codec.model(rate_point))  # start from the distortion weights
    summary = finetune_joint(cfg, model, run_dir, data, recognizer=rec_net, device=device, verbose=False)
    install_weights(model.cpu(), "joint", folder=run_dir / "weights")
    recons, m = measure(get_codec("paper", device=device, folder=run_dir / "weights"), rate_point)
    m["train_time_s"] = summary["train_time_s"]
    m["run_dir"] = str(run_dir)
    m["run_files"] = sorted(str(f.relative_to(run_dir)) for f in run_dir.rglob("*") if f.is_file())
    runs[lam] = (recons, m)
    print(f"λ_id {lam:g}: {m['bpp']:.3f} bpp, {m['psnr']:.2f} dB, identity distance {m['identity_distance']:.3f} "
          f"({summary['train_time_s']:.0f} s)")
rec.update(steps=steps, runs={f"{lam:g}": m for lam, (_, m) in runs.items()})

# %% [markdown]
# ## Before and after

# %%
variants = [("distortion only", before_recons, before["distances"])]
if shipped:
    variants.append(("shipped joint", shipped_recons, shipped["distances"]))
variants += [(f"{steps} steps, λ_id={lam:g}", r, m["distances"]) for lam, (r, m) in runs.items()]
n = len(test_names)
fig, axes = plt.subplots(1 + len(variants), n, figsize=(2.6 * n, 2.9 * (1 + len(variants))), squeeze=False)
for i in range(n):
    axes[0, i].imshow(test_images[i])
    axes[0, i].set_title(f"{test_names[i].split('/')[0].replace('_', ' ')}\noriginal", fontsize=8)
    for row, (title, recons, dists) in zip(axes[1:], variants, strict=True):
        row[i].imshow(recons[i])
        verdict = "same" if dists[i] <= rec_net.threshold else "DIFFERENT"
        row[i].set_title(f"{title}\nd = {dists[i]:.3f} ({verdict})", fontsize=8)
for ax in axes.flat:
    ax.set_axis_off()
fig.tight_layout()
rec.figure(fig, "before_after.png")
plt.show()


# %% [markdown]
# ## The trade-off: PSNR against identity distance
#
# Each point is one codec setting. Across the rate points of the distortion-only codec
# both PSNR and identity improve with the rate; at one rate point the identity weight moves
# the codec along another axis: lower identity distance for some PSNR.

# %%
def sweep_codec(codec):
    return {s: measure(codec, s)[1] for s in codec.settings}


sweeps = {"paper-mse": sweep_codec(mse_codec)}
if joint_codec is not None:
    sweeps["paper"] = sweep_codec(joint_codec)
fig, ax = plt.subplots(figsize=(7, 4.5))
for (label, sw), style in zip(sweeps.items(), ("D--", "D-"), strict=False):
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

# %% [markdown]
# A real run is one command per rate point (GPU recommended; `--install` ships the result
# as the joint weights of codec `paper`, with how it was made recorded in the manifest):
#
# ```bash
# facekit joint --rate q2 --steps 5000 --batch-size 16 --lambda-id 0.02 --out runs/joint-q2 --install
# ```
#
# Beyond the paper, the loss can also carry a **rate term**, $\lambda_{\mathrm{rate}}$ times the
# code's bits per pixel under the context prior of the starting weights (the model behind the
# `-entropy` variants; exact in value, straight-through in gradient, `facekit.models.rate`):
# `facekit joint ... --lambda-rate 0.1`, or `JointConfig(lambda_rate=...)` with
# `finetune_joint(..., rate_prior=prior)`. With `--install` such a run ships as its own
# variant, `jointrate` (codec `facekit-jointrate-entropy`), beside the `joint` weights; refit
# its prior afterwards (`facekit weights fit-prior q2 --variant jointrate --layout 4`:
# the shipped jointrate priors are small integer networks over a wide causal window,
# `facekit-prior/4`; `--layout 3` fits count tables, which a later run's rate term can read).
#
# The recogniser reads only the face chip, so the distortion term may weigh the background
# less: `--background-weight 0.1` multiplies the squared error outside the chip (found on
# the original, `facekit.training.face_weights`) by 0.1, and the run ships as the `jointface`
# variant; range-coded, it is the recommended codec, `facekit`. Those weights were trained on a lent GPU, several rate
# points side by side for a fixed time each: `facekit joint --write-pack pack.npz` writes the
# training split (files and transforms, 14 MB) for a machine without LFW or dlib, and
# `bash scripts/gpu_joint.sh pack.npz DLIB_WEIGHTS runs/gpu 450` runs the lines of
# `scripts/gpu_joint_runs.txt` with `--time-limit 450`.
