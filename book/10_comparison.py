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
# # 10. Every representation on the same faces
#
# *How well do deep models recognise emotion from each representation of a face?* Chapters 3–8 each
# answered for one representation; none of the seed studies compared them on the same images. This
# chapter does, on FER2013's **PrivateTest** (7 classes), with each representation's best single model
# as its chapter chose it on PublicTest. It reads only the results records and per-image predictions
# the chapters wrote (`results/<profile>/`) and retrains nothing, so every number here is one a
# chapter measured, compared on exactly the same faces.
#
# | question | as in the studies | here |
# |---|---|---|
# | which representation wins | 3DFER {cite:p}`seed_3dfer`: 2D 62 %, landmarks 51–55 %, voxels 43 %, mesh 57 %, each on its own run; LSTM study {cite:p}`seed_lstm_blendshapes`: blendshapes on 3 classes | every representation's best model on the same PrivateTest faces, accuracy and macro F1 with bootstrap 95 % CIs, paired McNemar tests between every pair |
# | what a representation costs | not reported together | extraction + inference ms per image, training minutes, parameters, and the faces each one loses (coverage; accuracy with misses counted wrong) |
# | do they fail on the same faces | — | pairwise correlation of their errors, and the faces every one gets wrong |
# | does combining them help | — | late fusion of their class probabilities, weights chosen on PublicTest only, tested against the best single representation on PrivateTest |

# %% tags=["parameters"]
profile = "sample"  # smoke | sample | full: reads params/<profile>.yml
data_dir = None  # None: the profile's data_dir, then $FER_DATA_DIR, then data/

# %% tags=["hide-input"]
import time

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from IPython.display import Markdown, display

import fer_lib
from fer_lib import comparison, plots, results
from fer_lib.paths import repo_root, resolve_data_dir

CHAPTER = "10_comparison"
P = fer_lib.load_params(profile, chapter=CHAPTER, data_dir=data_dir)
started = time.perf_counter()
best, missing = comparison.best_models(profile, label_set=P.label_set)
if not best:
    raise FileNotFoundError(f"no FER2013 {P.label_set} records in results/{profile}: execute chapters 3–8 under "
                            f"profile {profile!r} first")
names = {rep: comparison.REPRESENTATIONS.get(rep, rep) for rep in best}

# %% [markdown]
# ## The best model of each representation
#
# One row per representation: the model its chapter's PublicTest accuracy chose (ensembles left out:
# PublicTest chose their members), its PrivateTest accuracy and macro F1 with bootstrap 95 % intervals,
# one-vs-rest AUC, the share of faces it could represent (coverage) and its accuracy with the lost faces
# counted wrong, what one face costs (feature extraction + inference, ms), training time and size. The
# seeds' numbers are theirs, from their own runs and splits.

# %% tags=["hide-input"]
table = comparison.comparison_table(best)
display(table.style.format({"accuracy": "{:.3f}", "macro F1": "{:.3f}", "AUC-ROC": "{:.3f}", "coverage": "{:.2%}",
                            "accuracy, misses wrong": "{:.3f}", "ms per image": "{:.2f}", "training min": "{:.1f}",
                            "parameters": "{:,.0f}", "seed's accuracy": "{:.2f}"}, na_rep="–")
        .set_caption(f"FER2013 PrivateTest, {P.label_set}: each representation's best single model"))
if missing:
    display(pd.DataFrame({"why it is not here": missing}).rename(index=comparison.REPRESENTATIONS)
            .style.set_caption("Representations without a record under this profile"))

# %% [markdown]
# ## Accuracy against cost
#
# Each point is a representation's best model: its PrivateTest accuracy (misses counted wrong, so a
# representation cannot look better by skipping hard faces) against the milliseconds one face costs
# on this machine's CPU, on a log scale ({numref}`fig-comparison-cost`). The line joins the Pareto
# front: the models no other beats on both accuracy and cost.

# %% tags=["hide-input"] mystnb={"figure": {"caption": "Accuracy against cost: each representation's best model, PrivateTest accuracy with misses counted wrong against milliseconds per face (log scale); red: the Pareto front.", "name": "fig-comparison-cost"}}
cost = table["ms per image"].clip(lower=1e-3)
accuracy = table["accuracy, misses wrong"]
front = comparison.pareto_front(accuracy, cost)
figure, axis = plt.subplots(figsize=(7, 4.2))
axis.scatter(cost, accuracy, s=60, c=np.where(front, "tab:red", "tab:blue"))
for name, x, y in zip(table.index, cost, accuracy):
    axis.annotate(name, (x, y), textcoords="offset points", xytext=(6, 4), fontsize=9)
order = np.argsort(cost[front].to_numpy())
axis.plot(cost[front].to_numpy()[order], accuracy[front].to_numpy()[order], "--", color="tab:red", label="Pareto front")
axis.set(xscale="log", xlabel="extraction + inference, ms per face (log scale)",
         ylabel="PrivateTest accuracy (misses counted wrong)", title="What each representation costs and gives")
axis.xaxis.set_major_formatter(plt.ScalarFormatter())
axis.xaxis.set_minor_formatter(plt.FuncFormatter(lambda value, _: f"{value:g}"))
axis.legend()
plt.tight_layout()
plt.show()

# %% [markdown]
# ## Which emotions each representation reads
#
# Per-class F1 of each best model (the 3DFER study's per-representation figures in one view,
# {numref}`fig-comparison-per-class`).

# %% tags=["hide-input"] mystnb={"figure": {"caption": "F1 per class (columns) of each representation's best model (rows) on PrivateTest.", "name": "fig-comparison-per-class"}}
per_class = pd.DataFrame({names[rep]: {c: v["f1"] for c, v in r["per_class"].items()} for rep, r in best.items()}).T
figure, axis = plt.subplots(figsize=(8, 0.6 * len(per_class) + 1.5))
sns.heatmap(per_class, annot=True, fmt=".2f", cmap="viridis", vmin=0, vmax=1, ax=axis, cbar_kws={"label": "F1"})
axis.set(title="Per-class F1 on PrivateTest", xlabel="", ylabel="")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## Paired differences
#
# Every pair of representations on the faces both classify: the accuracy difference (row − column) and
# the exact McNemar test {cite:p}`mcnemar1947` on the faces exactly one of the two gets right
# ({numref}`fig-comparison-pairs`). A difference is only read as one where p is small; the matrix of
# shared images says how many faces each test rests on.

# %% tags=["hide-input"] mystnb={"figure": {"caption": "Every pair of representations on the faces both classify: accuracy difference, row minus column, in points (left), and McNemar's p (right).", "name": "fig-comparison-pairs"}}
test = comparison.aligned_predictions(profile, best)
pairs = comparison.pairwise_tests(test, n_boot=P.n_boot, seed=P.seed)
labelled = {key: frame.rename(index=names, columns=names) for key, frame in pairs.items()}
figure, (left, right) = plt.subplots(1, 2, figsize=(13, 0.7 * len(best) + 2))
sns.heatmap(labelled["difference"].astype(float) * 100, annot=True, fmt="+.1f", cmap="RdBu", center=0, ax=left,
            cbar_kws={"label": "points"})
left.set(title="Accuracy difference, row − column (points)", xlabel="", ylabel="")
sns.heatmap(labelled["McNemar p"].astype(float), annot=True, fmt=".2g", cmap="YlOrRd_r", vmin=0, vmax=0.1, ax=right,
            cbar_kws={"label": "p (0.1 and above: palest)"})
right.set(title="McNemar p (shared faces)", xlabel="", ylabel="")
plt.tight_layout()
plt.show()

# %% tags=["hide-input"]
display(labelled["shared images"].style.format("{:.0f}", na_rep="–").set_caption("Faces both representations classify"))

# %% [markdown]
# ## Do they fail on the same faces?
#
# The correlation of two representations' errors (1 where wrong, 0 where right) over the faces both
# classify: near 1, they fail on the same faces and combining them can gain little; near 0, their
# failures are unrelated and each can correct the other ({numref}`fig-comparison-errors`). Then the
# faces every representation gets wrong.

# %% tags=["hide-input"] mystnb={"figure": {"caption": "Correlation of the representations' errors on the faces both classify.", "name": "fig-comparison-errors"}}
correlation = comparison.error_correlation(test).rename(index=names, columns=names)
figure, axis = plt.subplots(figsize=(6.5, 0.6 * len(best) + 1.8))
sns.heatmap(correlation, annot=True, fmt=".2f", cmap="mako", vmin=0, vmax=1, ax=axis)
axis.set(title="Correlation of errors (faces both classify)", xlabel="", ylabel="")
plt.tight_layout()
plt.show()

# %% tags=["hide-input"]
wrong_everywhere = comparison.always_wrong(test)
classified_by_all = comparison.errors(test).dropna()
display(Markdown(f"**{len(wrong_everywhere)}** of the {len(classified_by_all)} PrivateTest faces that every representation "
                 f"classifies are wrong in every one ({len(wrong_everywhere) / max(1, len(classified_by_all)):.1%})."))

# %% tags=["hide-input"] mystnb={"figure": {"caption": "Faces every representation gets wrong, a few of each emotion: the label, then what the representations said.", "name": "fig-comparison-always-wrong"}}
if len(wrong_everywhere):
    faces = fer_lib.load_fer2013(resolve_data_dir(P.data_dir))
    position = pd.Series(np.arange(len(faces)), index=pd.Index(faces.ids.astype(str)))
    first = next(iter(test.values()))
    # a few of each emotion, in turn, rather than the first ids (which are one class)
    by_class = first.loc[wrong_everywhere].groupby("y_true").cumcount()
    shown = by_class.sort_values(kind="stable").index[:P.gallery]
    captions = [f"{faces.class_names[int(first.loc[i, 'y_true'])]} → "
                + "/".join(sorted({faces.class_names[int(t.loc[i, 'y_pred'])][:3] for t in test.values()})) for i in shown]
    figure = plots.image_strip(faces, position[shown].to_numpy(), captions, ncols=min(8, len(shown)),
                               title="Faces every representation gets wrong: label → what they said")
    plt.close(figure)
    display(figure)

# %% [markdown]
# ## Fusion of representations
#
# Late fusion averages the class probabilities of each representation's best model. Two versions:
# **equal weights** for every representation (a fixed rule, nothing chosen), and **weights chosen on
# PublicTest** by ensemble selection (members added, with replacement, by the fused PublicTest
# log-loss; chapter 3's ensemble uses the same procedure). PrivateTest never takes part in choosing.
# A face a representation lost is fused from the others. Each fusion is compared with the best single
# representation on every PrivateTest face (paired bootstrap CI and McNemar).

# %% tags=["hide-input"]
class_names = list(best[next(iter(best))]["class_order"])
selection, no_selection = {}, {}
for rep, r in best.items():
    try:
        selection[rep] = results.load_predictions(profile, r["chapter"], r["model"], results.SELECTION).set_index("id")
    except FileNotFoundError:
        no_selection[rep] = f"no PublicTest predictions: re-execute chapter {r['chapter']} (it writes them)"
fusions = {"equal weights, every representation": comparison.fuse(test, {rep: 1.0 for rep in test}, class_names)}
if len(selection) >= 2:
    fusions["weights chosen on PublicTest"] = comparison.late_fusion(
        selection, {rep: test[rep] for rep in selection}, class_names, rounds=P.fusion_rounds)
if no_selection:
    display(pd.DataFrame({"left out of the chosen weights": no_selection}).rename(index=comparison.REPRESENTATIONS)
            .style.set_caption("Representations the PublicTest-chosen fusion could not weigh"))
single = max(best, key=lambda rep: table.loc[names[rep], "accuracy, misses wrong"])
reference = test[single]
rows = [{"model": f"best single: {names[single]} ({best[single]['model']})", "faces": len(reference),
         "accuracy": float((reference.y_pred == reference.y_true).mean()), "difference": np.nan}]
for name, fusion in fusions.items():
    shared = fusion.ids.intersection(reference.index)
    fused = pd.Series(fusion.y_pred, index=fusion.ids).loc[shared]
    paired = results.paired_difference(reference.loc[shared, "y_true"], fused, reference.loc[shared, "y_pred"],
                                       n_boot=P.n_boot, seed=P.seed)
    rows.append({"model": f"fusion, {name}", "faces": len(shared), "accuracy": paired["accuracy_a"],
                 "difference": paired["difference"],
                 "95% CI": f"[{paired['difference_ci95_low']:+.3f}, {paired['difference_ci95_high']:+.3f}]",
                 "McNemar p": paired["mcnemar_p"],
                 "weights": ", ".join(f"{names[r]} {w:.2f}" for r, w in fusion.weights.items() if w > 0)})
fusion_table = pd.DataFrame(rows).set_index("model")
display(fusion_table.style.format({"accuracy": "{:.3f}", "difference": "{:+.3f}", "McNemar p": "{:.2g}"}, na_rep="–")
        .set_caption(f"Late fusion against the best single representation on PrivateTest (difference: fusion − {names[single]})"))

# %% [markdown]
# ## Beyond FER2013: CK+48 and JAFFE
#
# The packaged FER2013 models (`fer_lib.zoo`: what chapters 3–7 exported, the models
# `python -m fer_lib.predict` runs) on two datasets they never saw, posed expressions in a lab: CK+48
# (its *contempt* clips left out: FER2013 has no such class) and JAFFE (its 256-px photos cut to a
# 48-px face first, as a photo's faces are). Labels are matched by name, and every face goes through
# the same pipelines as in training.

# %% tags=["hide-input"]
from fer_lib import predict, zoo

zoo_dir = zoo.profile_dir(P)
packaged = zoo.entries(zoo_dir)
if not packaged:
    display(Markdown(f"*The zoo of this profile (`{zoo_dir.relative_to(repo_root())}`) holds no models yet, so there "
                     f"is no cross-dataset table: chapters 3–7 export their best models there when they run.*"))
else:
    display(pd.DataFrame([{"model": e.name, "representation": e.representation, "from": f"{e.spec['record'].get('chapter')}: "
                           f"{e.spec['record'].get('model')}", "input": e.spec["input"]["kind"], "MB": e.megabytes}
                          for e in packaged.values()]).set_index("model").style.format({"MB": "{:.1f}"})
            .set_caption(f"The packaged models: {sum(e.megabytes for e in packaged.values()):.1f} MB in all"))
    predictor = predict.Predictor(zoo_dir=zoo_dir)
    tables, left_out = {}, {}
    for dataset_name, load in (("CK+48", fer_lib.load_ckplus), ("JAFFE", fer_lib.load_jaffe)):
        dataset = load(resolve_data_dir(P.data_dir))
        tables[dataset_name], left_out[dataset_name] = comparison.cross_dataset(predictor, dataset, n_boot=P.n_boot, seed=P.seed)
    predictor.close()
    cross = pd.concat(tables, names=["dataset"])
    display(cross.style.format({"accuracy": "{:.3f}", "macro F1": "{:.3f}", "accuracy, misses wrong": "{:.3f}"}, na_rep="–")
            .set_caption("FER2013-trained models on other datasets (labels matched by name)"))
    display(pd.DataFrame(left_out).fillna(0).astype(int).style.set_caption("Images left out of the table above"))

# %% [markdown]
# ## The research questions, answered

# %% tags=["hide-input"]
def against(rep):
    """One sentence: this representation's best model against the 2D one on the faces both classify."""
    if rep not in best or "pixels_2d" not in best:
        return "not measured under this profile"
    r = best[rep]
    low, high = r["accuracy_ci95"]
    p = pairs["McNemar p"].loc[rep, "pixels_2d"]
    d = pairs["difference"].loc[rep, "pixels_2d"]
    return (f"{r['accuracy']:.1%} [{low:.1%}, {high:.1%}] on {r['coverage']:.1%} of faces; "
            f"{d:+.1%} against 2D on the same faces (McNemar p = {p:.2g})")


answers = pd.DataFrame([
    {"question": "RQ1: how well do 2D CNNs recognise emotion from pixels?",
     "the study said": "2D CNN 62 %, VGG16 (transfer) 67 %",
     "here": (f"{best['pixels_2d']['model']}: {best['pixels_2d']['accuracy']:.1%} "
              f"[{best['pixels_2d']['accuracy_ci95'][0]:.1%}, {best['pixels_2d']['accuracy_ci95'][1]:.1%}]")
     if "pixels_2d" in best else "not measured under this profile"},
    {"question": "RQ2.1: landmarks vs 2D", "the study said": "landmark MLP 51 %, 1D-CNN 55 %: below 2D",
     "here": against("landmarks_3d")},
    {"question": "RQ2.2: voxels vs 2D", "the study said": "voxel 3D-CNN 43 %: far below 2D", "here": against("voxels_3d")},
    {"question": "RQ2.3: mesh vs 2D", "the study said": "mesh-distance CNN 57 %: below 2D", "here": against("mesh_3d")},
    {"question": "blendshapes vs 2D (7 classes)", "the study said": "a random forest at 51 % (the LSTM study's baseline)",
     "here": against("blendshapes")},
    {"question": "emotion sketches vs 2D (7 classes)", "the study said": "not measured on FER2013", "here": against("sketch")},
    {"question": "does fusing representations beat the best one?", "the study said": "not asked",
     "here": "; ".join(f"{name}: {row['accuracy']:.1%}, {row['difference']:+.1%} against {names[single]} "
                       f"(95 % CI {row['95% CI']}), McNemar p = {row['McNemar p']:.2g}"
                       for name, row in fusion_table.iloc[1:].iterrows())},
]).set_index("question")
display(answers.style.set_caption("Each question in one line, with this book's numbers beside the study's claim"))
display(Markdown(f"Chapter executed in {time.perf_counter() - started:.1f} s from the records alone."))
