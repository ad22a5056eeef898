# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 2. Preprocessing
#
# The 3DFER study {cite:p}`seed_3dfer` planned a preprocessing pipeline for its 2D models — unify
# colour, crop the face, align it, normalise lighting, resize, normalise pixels — and gave up on the
# face crop because dlib's detector {cite:p}`king2009` missed too many of FER2013's 48×48 faces. This chapter builds every step as a
# function in `fer_lib.preprocess` (applied identically at training and inference time), measures
# how many faces each of three detectors finds, per class and split, and how long it takes, and
# shows what each step does to a face. The RQ1 chapter then trains the same model on raw and on
# preprocessed images to answer whether any of it matters.
#
# | step | implementation |
# |---|---|
# | unify colour | `to_gray` (any grey / BGR / BGRA image to one channel); `to_channels` for 3-channel models |
# | face crop | OpenCV Haar cascade; dlib HOG on the image upscaled to 80×80 (as the study tried); MediaPipe FaceLandmarker {cite:p}`lugaresi2019,kartynnik2019` (vendored `face_landmarker.task`) — a miss falls back to the whole frame, so no image is lost |
# | alignment | rotate about the eyes' midpoint so the eye line is horizontal (eyes from MediaPipe's mesh) |
# | lighting | CLAHE, clip limit 2, 8×8 tiles (as the 3D-CNN study {cite:p}`haddad2020`) |
# | resize | back to 48×48 |
# | pixel normalisation | per-image standard (zero mean, unit variance) or min-max, as a Keras layer |
# | augmentation | Keras layers: horizontal flip, rotation, linear contrast 127 + α(v − 127), α ∈ [0.22, 2.2], Gaussian noise |

# %% tags=["parameters"]
profile = "sample"  # smoke | sample | full: reads params/<profile>.yml
data_dir = None  # None: the profile's data_dir, then $FER_DATA_DIR, then data/

# %%
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from IPython.display import display

import fer_lib
from fer_lib import plots, preprocess
from fer_lib.paths import resolve_data_dir

P = fer_lib.load_params(profile, chapter="02_preprocessing", data_dir=data_dir)
print(P)
fer = fer_lib.load_fer2013(resolve_data_dir(P.data_dir))
if P.per_class is not None:
    fer = fer.stratified_subset(P.per_class, seed=P.seed)
print(fer)

# %% [markdown]
# ## How many faces does each detector find?
#
# Each detector runs on every image (one process per core; results cached in `cache/detections`).
# *found* is the share of images where it returned a face; the rest fall back to the whole frame.

# %%
detections = {}
for name, options in P.detectors.items():
    detections[name] = preprocess.detect_dataset(fer, name, n_jobs=P.n_jobs, **(options or {}))

split = pd.Categorical(fer.split, categories=fer.splits)
label = pd.Categorical(fer.label_names, categories=fer.class_names)
overall = pd.DataFrame([
    {"detector": name, "found %": 100 * t["found"].mean(), "fallbacks (whole frame used)": int(t["fallback"].sum()),
     "mean ms / image": t["ms"].mean(), "median ms / image": t["ms"].median()}
    for name, t in detections.items()
]).set_index("detector").round(2)
display(overall.style.format(precision=2).set_caption("FER2013: faces each detector finds, and its time per image"))
found = pd.concat({name: t["found"].groupby([label, split], observed=False).mean().mul(100).round(1).unstack()
                   for name, t in detections.items()}, axis=1)
found.index.name = "class"
display(found.style.format(precision=1).set_caption("FER2013: faces found (%) per detector, class and split"))

# %% [markdown]
# **What the full run measured** (all 35,887 FER2013 images; the tables above are its output):
# MediaPipe finds a face in 96.3 % of the images (1,322 misses — the 3DFER study lost 7 %), dlib's
# HOG detector on the 80×80 upscale in 63.9 % (a third of the faces lost: why the study gave up on
# it) and the Haar cascade in 37.0 %. *Sad* is the hardest class for all three detectors (Haar
# about 25 %, dlib about 50 %, MediaPipe 93–94 %), *happy* and *neutral* among the easiest; the three
# splits behave alike. MediaPipe pays for its coverage with about 13 ms per image (median) against
# under 1 ms for the other two ({numref}`fig-pre-found`). With the whole-frame fallback no image is
# lost whatever the detector.

# %% mystnb={"figure": {"caption": "FER2013: the share of faces each detector finds, per class.", "name": "fig-pre-found"}}
by_class = pd.DataFrame({name: t["found"].groupby(label, observed=False).mean().mul(100)
                         for name, t in detections.items()})
ax = by_class.plot.bar(figsize=(8, 3.2), width=0.8)
ax.set_ylabel("faces found (%)")
ax.set_ylim(0, 100)
ax.tick_params(axis="x", rotation=0)
ax.set_title("FER2013: faces found per class and detector");

# %% [markdown]
# What the detectors miss — a few images each detector found no face in, one figure per detector:

# %%
rng = np.random.default_rng(P.seed)


def missed_strip(name):
    """Up to 8 random images detector ``name`` found no face in (one figure), drawn from the shared ``rng``."""
    if name not in detections:
        print(f"{name}: not run under this profile")
        return
    missed = np.flatnonzero(detections[name]["fallback"].to_numpy())
    if len(missed):
        plots.image_strip(fer, rng.choice(missed, size=min(8, len(missed)), replace=False),
                          title=f"{name}: no face found ({len(missed)} images)")
    else:
        print(f"{name}: found a face in every image")


# %% mystnb={"figure": {"caption": "Faces OpenCV's Haar cascade does not find.", "name": "fig-pre-missed-haar"}}
missed_strip("haar")

# %% mystnb={"figure": {"caption": "Faces dlib's HOG detector (on the 80x80 upscale) does not find.", "name": "fig-pre-missed-dlib"}}
missed_strip("dlib_hog")

# %% mystnb={"figure": {"caption": "Faces MediaPipe's FaceLandmarker does not find.", "name": "fig-pre-missed-mediapipe"}}
missed_strip("mediapipe")

# %% [markdown]
# ## What each step does to a face
#
# For a few random faces ({numref}`fig-pre-steps`): the raw frame, the crop of each detector (the
# fallback is the raw frame), MediaPipe's crop aligned by the eye line, and the aligned crop after CLAHE.

# %% mystnb={"figure": {"caption": "Each preprocessing step on a few random faces (one row per face): raw, each detector's crop, aligned by the eyes, then CLAHE.", "name": "fig-pre-steps"}}
examples = rng.choice(len(fer), size=min(6, len(fer)), replace=False)
sub = fer.subset(examples)
steps = {"raw": preprocess.Preprocessing().apply(sub.images)}
for name in detections:
    steps[f"{name} crop"] = preprocess.Preprocessing(detector=name).apply(sub.images, detections[name].iloc[examples])
if "mediapipe" in detections:
    mp_rows = detections["mediapipe"].iloc[examples]
    steps["aligned"] = preprocess.Preprocessing(detector="mediapipe", align=True).apply(sub.images, mp_rows)
    steps["aligned + CLAHE"] = preprocess.Preprocessing(detector="mediapipe", align=True, use_clahe=True).apply(
        sub.images, mp_rows)

fig, axes = plt.subplots(len(examples), len(steps), figsize=(1.4 * len(steps), 1.5 * len(examples)), squeeze=False)
for col, (step, faces) in enumerate(steps.items()):
    for row in range(len(examples)):
        axes[row, col].imshow(faces[row], cmap="gray", vmin=0, vmax=255)
        axes[row, col].axis("off")
        if row == 0:
            axes[row, col].set_title(step, fontsize=7)
fig.tight_layout()

# %% [markdown]
# ## Augmentation and pixel normalisation
#
# Both are Keras layers that the models include, so they run on the same device as training and a
# saved model carries them. Augmentation is active only while training: eight draws of the same face
# ({numref}`fig-pre-augmentation`).

# %% mystnb={"figure": {"caption": "Eight draws of the training augmentation (flip, rotation, contrast, noise) on one face.", "name": "fig-pre-augmentation"}}
import keras  # noqa: E402 - TensorFlow is imported only by the chapters that need it

from fer_lib import layers  # noqa: E402

augment = layers.augmentation(**P.augmentation, seed=P.seed)
face = fer.images[examples[0]][None, :, :, None].astype("float32")
draws = np.concatenate([np.asarray(augment(face, training=True)) for _ in range(8)])
fig, axes = plt.subplots(1, 9, figsize=(12, 1.6))
for ax, image, title in zip(axes, [face[0], *draws], ["original", *[f"draw {i + 1}" for i in range(8)]]):
    ax.imshow(image[:, :, 0], cmap="gray", vmin=0, vmax=255)
    ax.set_title(title, fontsize=7)
    ax.axis("off")
for method in layers.PerImageNormalisation.METHODS:
    values = np.asarray(layers.PerImageNormalisation(method)(face))
    print(f"{method:>8}: min {values.min():.2f}, max {values.max():.2f}, mean {values.mean():.2f}, std {values.std():.2f}")
