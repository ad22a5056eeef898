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
# # 1. The data
#
# Every chapter of this book measures on the same three datasets, loaded by the same code. This
# chapter shows what is in them before any model sees them: how many images each class and split
# holds, what the faces look like, which images are defective (blank frames, exact duplicates —
# including duplicates that leak test images into training), and how the seven emotions collapse
# into the coarser label sets two of the seed studies used
# {cite:p}`seed_lstm_blendshapes,seed_emotion_sketches`.
#
# | dataset | what | used for |
# |---|---|---|
# | **FER2013** {cite:p}`goodfellow2013` | 35,887 grey 48×48 web faces, 7 emotions, official Training / PublicTest / PrivateTest split | every representation; train on Training, select on PublicTest, report on PrivateTest |
# | **CK+48** {cite:p}`lucey2010` | the last 3 frames of CK+'s 327 posed sequences, 118 subjects, 48×48 | the video (3D-CNN) study {cite:p}`haddad2020`, subject-independent folds |
# | **JAFFE** {cite:p}`lyons1998` | 213 posed 256×256 images of 10 Japanese women | cross-dataset checks, subject-independent folds |
#
# The profile decides how much of it is used: `smoke` and `sample` read the small stratified sample
# committed in `data/sample`, `full` reads the full archives (`$FER_DATA_DIR`). Labels are handled
# by name, never by index: FER2013's class 0 is *angry*, JAFFE's is *neutral*.

# %% tags=["parameters"]
profile = "sample"  # smoke | sample | full: reads params/<profile>.yml
data_dir = None  # None: the profile's data_dir, then $FER_DATA_DIR, then data/

# %%
import time

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from IPython.display import display

import fer_lib
from fer_lib import anchors, plots, quality
from fer_lib.data import FER2013_STANDARD_SIZES, TRAIN, lstm_study_three_classes
from fer_lib.paths import resolve_data_dir

P = fer_lib.load_params(profile, chapter="01_data", data_dir=data_dir)
DATA = resolve_data_dir(P.data_dir)
pd.set_option("display.width", 140)
print(P)
print(f"data folder: {DATA}")


def load(name):
    """Load a dataset, thinned to `per_class` images per class and split when the profile says so."""
    started = time.perf_counter()
    dataset = fer_lib.load_dataset(name, DATA)
    seconds = time.perf_counter() - started
    if P.per_class is not None:
        dataset = dataset.stratified_subset(P.per_class, seed=P.seed)
    print(f"{dataset!r}\nloaded in {seconds:.1f} s from {dataset.report.source}; "
          f"skipped {dataset.report.n_skipped}")
    return dataset


# %% [markdown]
# ## FER2013
#
# Loading reports every row or file it could not use (none, for the project's archive; the Kaggle csv
# and the image folders are read by the same loader and do report them). Each image keeps its
# original file name as its id (`Training_3908`, `PrivateTest_…`), so any error in a later chapter
# can be traced back to a picture.

# %%
fer = load("fer2013")
print(fer.report)

# %% [markdown]
# Images per class and split. Under `full` this table must match the standard release exactly
# (Training 28,709 / PublicTest 3,589 / PrivateTest 3,589); the cells' outputs are checked by
# `nbval`, so a regression in loading fails CI. The `smoke` and `sample` profiles read a stratified
# subset, so only `full` matches.

# %%
# NBVAL_CHECK_OUTPUT
fer_counts = fer.counts()
print(fer_counts.to_string())

# %%
# NBVAL_CHECK_OUTPUT
split_sizes = pd.DataFrame({
    "found": fer_counts.loc["total"].drop("total"),
    "standard": pd.Series(FER2013_STANDARD_SIZES),
})
split_sizes["match"] = split_sizes["found"] == split_sizes["standard"]
print(split_sizes.to_string())
if P.profile == "full":
    assert split_sizes["match"].all(), "FER2013 split sizes differ from the standard release"

# %% [markdown]
# The class balance, as shares of each split. In the full data *happy* is a quarter of the images
# and *disgust* under 2 %: accuracy alone flatters a model that ignores the rare classes, which is
# why every record in this book carries macro F1 and per-class recall too. The three splits share
# the same balance to within 1.5 percentage points (the largest gap is *sad*: 16.8 % of Training,
# 18.2 % of PublicTest), so PublicTest is a fair stand-in for PrivateTest when selecting models
# (the table below, and {numref}`fig-data-class-counts` in images).
# (The committed sample is stratified, so under `sample` and `smoke` the classes look balanced.)

# %%
shares = (fer_counts.drop(index="total") / fer_counts.loc["total"] * 100).round(1)
shares.columns = [f"{c} %" for c in shares.columns]
if anchors.THREEDFER_TABLE1_PERCENT:
    shares["3DFER Table 1 % (theirs)"] = pd.Series(anchors.THREEDFER_TABLE1_PERCENT)
display(shares.style.format(precision=1, na_rep="–").set_caption("FER2013: each class's share of each split (%)"))

# %% mystnb={"figure": {"caption": "FER2013: images per class in each split.", "name": "fig-data-class-counts"}}
plots.class_distribution(fer_counts, "FER2013: images per class and split");

# %% [markdown]
# The 3DFER report {cite:p}`seed_3dfer` gives its own class percentages in its Table 1. Those figures are not among this
# book's sources (the study's public repository holds notebooks only), so they are not invented
# here: `fer_lib.anchors.THREEDFER_TABLE1_PERCENT` is empty, and the column above appears as soon
# as someone with the report fills it in.
#
# What the faces look like ({numref}`fig-data-fer-faces`) — one row per class, random images, each
# titled with its id:

# %% mystnb={"figure": {"caption": "FER2013: random faces of each class (one row per class), each titled with its id.", "name": "fig-data-fer-faces"}}
plots.image_grid_per_class(fer, per_class=P.grid_per_class, seed=P.seed, title="FER2013");

# %% [markdown]
# ## Defects in FER2013
#
# **Blank images.** Frames with (almost) no variation: FER2013 holds a handful of all-black
# pictures. The shared copy is JPEG, so "constant" means a pixel standard deviation under
# `quality.BLANK_MAX_STD` = 1 grey level.

# %%
blanks = quality.blank_images(fer)
print(f"{len(blanks)} blank images")
display(blanks.style.format({"mean": "{:.2f}", "std": "{:.2f}"})
        .set_caption("FER2013's blank images: pixel mean and standard deviation (grey levels)"))

# %% [markdown]
# **Exact duplicates.** Pixel-identical images. Within a split they only over-weight a few faces;
# across splits they leak: a model that memorised a Training image also "recognises" its copy in
# PrivateTest. Groups whose copies carry different labels show FER2013's label noise directly.

# %%
# NBVAL_CHECK_OUTPUT
duplicates = quality.duplicate_groups(fer)
non_blank = duplicates[~duplicates["id"].isin(blanks["id"])]
summary = pd.DataFrame({
    "all duplicates": quality.duplicate_summary(duplicates),
    "excluding blank frames": quality.duplicate_summary(non_blank) if len(non_blank) else 0,
})
print(summary.to_string())

# %% [markdown]
# Which classes are duplicated most? The share of each class's images that have a pixel-identical
# twin somewhere in the dataset:

# %%
duplicated_share = (non_blank.groupby("class").size().reindex(list(fer.class_names), fill_value=0)
                    / fer_counts["total"].drop("total") * 100).round(1)
print(duplicated_share.rename("% of the class in a duplicate group").to_string())
most = duplicated_share.sort_values(ascending=False)
print(f"\nmost duplicated: {most.index[0]} ({most.iloc[0]} %) and {most.index[1]} ({most.iloc[1]} %); "
      f"least: {most.index[-1]} ({most.iloc[-1]} %)")

# %% [markdown]
# Some examples: groups that cross from Training into PrivateTest, and groups whose copies disagree
# on the emotion (each group's copies shown side by side, captioned with id, split and label; a
# profile whose data holds no such group says so instead).

# %%
def groups_where(table, condition, n_groups):
    chosen = [g for g, members in table.groupby("group") if condition(members)][:n_groups]
    return table[table["group"].isin(chosen)]


def strip_of(table, title):
    """The images of ``table`` side by side (one figure), or a line saying there are none."""
    if len(table):
        plots.image_strip(fer, [position[i] for i in table["id"]], title=title)
    else:
        print(f"no {title} in this profile's data")


position = {image_id: i for i, image_id in enumerate(fer.ids)}
leaks = groups_where(non_blank, lambda m: {"Training", "PrivateTest"} <= set(m["split"]), 4)
conflicts = groups_where(non_blank, lambda m: m["class"].nunique() > 1, 4)

# %% mystnb={"figure": {"caption": "Pixel-identical images in Training and in PrivateTest: the test copy leaks into training.", "name": "fig-data-leaks"}}
strip_of(leaks, "duplicates across Training and PrivateTest")

# %% mystnb={"figure": {"caption": "Pixel-identical images whose copies carry different labels: FER2013's label noise.", "name": "fig-data-conflicts"}}
strip_of(conflicts, "duplicates with conflicting labels")

# %% [markdown]
# This book keeps the standard split untouched, as every published FER2013 number does, so that its
# results stay comparable with the seeds'. The counts above say how much that protocol is inflated by
# leaks; `quality.duplicate_groups` gives the ids for anyone who wants the cleaned protocol.
#
# ## CK+48
#
# The posed CK+ sequences {cite:p}`lucey2010`, reduced to their last three (peak-expression) frames
# ({numref}`fig-data-ck-faces`). There is no official split: the video chapter uses
# subject-independent folds (leave-one-subject-out), so the subject count matters as much as the
# image count.

# %%
ck = load("ckplus")
ck_table = pd.DataFrame({
    "images": pd.Series(ck.label_names).value_counts(),
    "sequences": pd.Series(list(zip(ck.subject, ck.meta["sequence"]))).groupby(ck.label_names).nunique(),
    "subjects": pd.Series(ck.subject).groupby(ck.label_names).nunique(),
}).reindex(list(ck.class_names))
ck_table.loc["total"] = [len(ck), len(set(zip(ck.subject, ck.meta["sequence"]))), len(set(ck.subject))]
frames_per_sequence = pd.Series(list(zip(ck.subject, ck.meta["sequence"]))).value_counts().value_counts()
print(ck_table.to_string())
print("frames per sequence:", {int(k): int(v) for k, v in frames_per_sequence.items()})

# %% mystnb={"figure": {"caption": "CK+48: random frames of each class (one row per class), each titled with its id.", "name": "fig-data-ck-faces"}}
plots.image_grid_per_class(ck, per_class=P.grid_per_class, seed=P.seed, title="CK+48");

# %% [markdown]
# ## JAFFE
#
# Ten subjects {cite:p}`lyons1998`, each posing every expression about three times. Images are
# 256×256 with the whole head and background ({numref}`fig-data-jaffe-faces`): unlike FER2013 and
# CK+48 they are not cropped to the face, which the preprocessing chapter's face detectors take care of.

# %%
jaffe = load("jaffe")
jaffe_table = pd.crosstab(pd.Series(jaffe.label_names, name="class"), pd.Series(jaffe.subject, name="subject"),
                          margins=True, margins_name="total").reindex([*jaffe.class_names, "total"])
print(jaffe_table.to_string())

# %% mystnb={"figure": {"caption": "JAFFE: random photographs of each class (one row per class), each titled with its id.", "name": "fig-data-jaffe-faces"}}
plots.image_grid_per_class(jaffe, per_class=min(P.grid_per_class, 4), seed=P.seed, title="JAFFE");

# %% [markdown]
# ## Relabelled targets
#
# **Happy / sad / unknown** — the LSTM-on-blendshapes study {cite:p}`seed_lstm_blendshapes`. Its
# training set caps each emotion (happy 4000, sad 4000, angry / fear / surprise / neutral 1500 each,
# every disgust image) before merging all but happy and sad into *unknown*; PublicTest (validation)
# and PrivateTest (test) keep all their images, relabelled. The caps make *unknown* the largest training class even so.

# %%
# NBVAL_CHECK_OUTPUT
three = lstm_study_three_classes(fer, seed=P.seed)
print(three.counts().to_string())
print()
print("capped Training set by original emotion:")
print(pd.Series(three.select_split(TRAIN).emotions).value_counts().reindex(list(fer.class_names)).to_string())

# %% [markdown]
# **Positive / negative / awe / neutral** — the emotion-sketch study {cite:p}`seed_emotion_sketches`:
# happy is positive; angry, disgust and sad (and CK+'s contempt) are negative; fear and surprise are awe.

# %%
# NBVAL_CHECK_OUTPUT
valence = {name: ds.relabel("valence4").counts()["total"].drop("total")
           for name, ds in (("FER2013", fer), ("CK+48", ck), ("JAFFE", jaffe))}
print(pd.DataFrame(valence).to_string())

# %% [markdown]
# ## What the later chapters take from here
#
# - The split sizes and class counts above are the denominators of every result: a representation
#   whose extractor loses faces reports its coverage against these numbers.
# - Class imbalance (disgust under 2 %) is why the results schema carries macro F1, per-class recall
#   and one-vs-rest AUC beside accuracy.
# - The leak and label-conflict counts bound how much any FER2013 PrivateTest number can be trusted
#   to the last point.
