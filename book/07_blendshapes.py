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
# # 7. Blendshapes: the LSTM study's social-robot pipeline, reproduced and beaten
#
# *How well can a network tell happy, sad and "something else" from the 52 ARKit blendshape scores
# MediaPipe gives a face {cite:p}`arkit_blendshapes` — and does an LSTM really flicker less than a Dense network on a live
# stream?* The LSTM study {cite:p}`seed_lstm_blendshapes` built this for a social robot: FER2013 relabelled to **happy / sad /
# unknown**, MediaPipe's blendshapes as input, a relevance rule to keep the informative ones, an LSTM
# tuned by keras-tuner's {cite:p}`omalley2019` random search and trained with AdamW. It reports **72.0 % accuracy and
# F1 0.63** on the faces MediaPipe could read, and chose the LSTM over a Dense network because its
# output flickered less on the robot's camera — a claim it did not measure. This chapter
# reproduces the pipeline on FER2013's standard protocol (train on **Training**, select on
# **PublicTest**, report on **PrivateTest**), runs the ablations the study ran and those it only
# suggested, measures the flicker, and adds a 7-class blendshape row for the comparison chapter.
#
# | step | as in the study | here |
# |---|---|---|
# | classes | happy / sad / unknown (the other five emotions) | same (`data.lstm_study_three_classes`) |
# | training caps | happy 4000, sad 4000, angry / fear / surprise / neutral 1500 each, all disgust | same (`labels.LSTM_TRAINING_CAPS`) |
# | augmentation | random flip and rotation of the *images* before extraction, appended (> 20,000 images) | same, ±0.2·180° (`blendshapes.augmented_copies`) |
# | relevance | keep a blendshape scoring > 0.4 in > 100 training images (27 of 52 kept) | same rule, on this extraction (`blendshapes.relevance`) |
# | model | stacked LSTMs + softmax, keras-tuner random search, AdamW (amsgrad, clipnorm 1) | same ranges; epochs set by early stopping, not a 5,000-epoch schedule |
# | ablations | Dense instead of LSTM; MSE instead of cross-entropy | both, plus focal loss, class weights and all 52 vs the kept blendshapes |
# | beyond | — | `blendshape_mlp` and a random forest; 7 classes; flicker measured on synthetic streams |

# %% tags=["parameters"]
profile = "sample"  # smoke | sample | full: reads params/<profile>.yml
data_dir = None  # None: the profile's data_dir, then $FER_DATA_DIR, then data/

# %%
import time

import numpy as np
import pandas as pd
from IPython.display import Markdown, display

import fer_lib
from fer_lib import anchors, blendshapes, experiment, face_mesh, plots, stream, training, tuning, zoo
from fer_lib.data import TEST, TRAIN, VAL, concatenate
from fer_lib.face_mesh import FaceMeshFeatures
from fer_lib.paths import repo_root, results_dir

CHAPTER = "07_blendshapes"
P = fer_lib.load_params(profile, chapter=CHAPTER, data_dir=data_dir)
print(P)
results_dir(profile).mkdir(parents=True, exist_ok=True)

# %% [markdown]
# ## The data: the study's protocol on FER2013
#
# MediaPipe's features of every FER2013 image come from chapter 4's extraction (read back from
# `cache/face_mesh`). The study's protocol then caps the Training images per original emotion and
# relabels to three classes; PublicTest and PrivateTest keep all their images. Every training image
# also gets one augmented copy — flipped left-right with probability ½ and rotated by up to
# ±0.2·180° — extracted by MediaPipe like the originals and appended, as the study did.

# %%
started = time.perf_counter()
lstm = tuning.lstm_study_inputs(P)  # shared with `python -m fer_lib.tuning chief|worker --chapter 07`
faces, features, copies, copy_features = lstm.faces, lstm.features, lstm.copies, lstm.copy_features
study, study_copies, study_features = lstm.study, lstm.study_copies, lstm.study_features
print(f"loading and extraction: {time.perf_counter() - started:.1f} s in this run (cached after the first run)")
classes = study.class_names
display(study.counts().style.set_caption("The study's protocol: images per class and split (Training with its augmented copies)"))
print("of which augmented copies (Training):", dict(zip(classes, np.bincount(study_copies.labels, minlength=len(classes)).tolist())))
print(f"training images (originals + copies): {int((study.split == TRAIN).sum())}; "
      f"the study had more than {anchors.SEED_RESULTS['LSTM on blendshapes']['training images after augmentation'][0]:,.0f}")

# %% [markdown]
# ### Images MediaPipe cannot read
#
# The study dropped the images MediaPipe could not read and tabled them per class (its Table 3,
# reproduced here as *its* numbers). Here the misses are counted per original emotion and per part
# of the data; the model never sees them, and the "misses counted wrong" accuracy below charges them
# against it.

# %%
unread = blendshapes.unread_table(study, study_features)
unread["the study's Table 3 (not measured here)"] = pd.Series(anchors.LSTM_STUDY_UNREAD_PER_CLASS)
display(unread.style.format(precision=0, na_rep="–")
        .set_caption("Images MediaPipe could not read, per original emotion and part of the data, beside the study's Table 3"))
display(blendshapes.split_arrays(study_features, study).table().style.format({"coverage": "{:.2%}"})
        .set_caption("Blendshape model inputs: images read per split and coverage"))

# %% [markdown]
# The cascade of chapter 4 (ten ways of showing a 48-pixel face to MediaPipe, half of them
# mirrored) reads far more faces than the study's pipeline did. On the `full` run it misses 90 of the
# 14,436 capped Training originals, 97 of their augmented copies and 40 of the 7,178 test images
# (0.6 % of the 36,050 images in all); the study's Table 3 lists about 3,000 unread images, above
# all *sad* (835), *fear* (616) and *angry* (597). *Sad* is also the class this cascade misses most
# (96 images), so the study's pattern holds at a tenth of its size. The rotated copies are only
# slightly harder to read than the originals.

# %% [markdown]
# ## Blendshape relevance
#
# The study kept a blendshape when it scored above 0.4 in more than 100 training images, on the
# grounds that a score that never rises carries no expression. The same rule on this extraction's
# training faces (originals and copies), in {numref}`fig-blendshapes-scores` and the table below it:

# %% mystnb={"figure": {"caption": "The 52 blendshape scores of a sample of training faces (one dot per face), ordered by how many faces score above the threshold (dashed); blue: kept by the study's rule, grey: dropped.", "name": "fig-blendshapes-scores"}}
R = P.relevance
train_scores, relevance, columns = lstm.train_scores, lstm.relevance, lstm.columns
plots.blendshape_scores(train_scores, relevance, R["threshold"], seed=P.seed);

# %%
display(relevance.sort_values(relevance.columns[1], ascending=False).set_index("blendshape").round(3).T
        .style.format(precision=3).set_caption("The relevance rule per blendshape (training faces)"))
print(f"kept {len(columns)} of 52 blendshapes (the study kept "
      f"{anchors.SEED_RESULTS['LSTM on blendshapes']['blendshapes kept'][0]:.0f}):",
      ", ".join(relevance.blendshape[columns]))
kept, all52 = lstm.kept, lstm.all52

# %% [markdown]
# The rule keeps **40** blendshapes here against the study's 27. It counts images, not a share of
# them, and this training set is larger (28,872 images, of which 28,685 read, against the study's
# "more than 20,000"), so a blendshape that fires rarely passes the 100-image bar more easily. The
# twelve dropped are the ones MediaPipe almost never moves on these faces — cheek puff and squint,
# nose sneer, jaw forward, `_neutral` — and a few rare ones (`eyeWideLeft`, `jawRight`, `mouthRight`,
# `mouthClose`, `mouthFunnel`). The ablation below measures what dropping them costs or gains.

# %% [markdown]
# ## The study's LSTM, tuned by random search
#
# keras-tuner's `RandomSearch` over the study's ranges — learning rate 1e-6…1e-3, units 10…32 in
# steps of 4, L2 1e-10…1e-5, activation selu / tanh / relu / leaky ReLU, weight decay 1e-10…9e-4 —
# with AdamW (amsgrad, global gradient norm clipped at 1). Each trial trains for at most the
# profile's epochs with early stopping; PublicTest accuracy scores it. The study trained for
# thousands of epochs at whatever learning rate was drawn; a trial here stops when PublicTest loss
# stops improving, so a very small learning rate simply scores low.

# %%
base = training.TrainConfig.from_params(P.training, seed=P.seed)
n_features = len(columns)
print(base)


def build(model: str, options: dict, seed: int, n_inputs: int = n_features, n_classes: int = len(classes)):
    return lambda: blendshapes.build(model, n_classes, n_inputs, seed=seed, **options)


S = P.search
search_started = time.perf_counter()
# the search as data, so that distributed workers (`python -m fer_lib.tuning`) run exactly this one
trials, tuned_config, tuned_options = tuning.lstm_study_search(P, lstm).run()
search_seconds = time.perf_counter() - search_started
trials.to_csv(results_dir(profile) / f"{CHAPTER}__search.csv", index=False)
display(trials.style.format({"learning_rate": "{:.2e}", "l2": "{:.1e}", "weight_decay": "{:.1e}",
                             "val_accuracy": "{:.4f}", "val_loss": "{:.4f}"})
        .set_caption("The random search: one row per trial"))
tuned_config = tuned_config.with_(epochs=base.epochs)
print(f"search: {len(trials)} trials, {search_seconds:.0f} s in this run (read from cache/tuning after the first run)")
print("best trial:", tuned_options, {k: getattr(tuned_config, k) for k in ("learning_rate", "weight_decay")})

# %% [markdown]
# On the `full` run the search's twelve trials took under four minutes. The learning rate decides
# almost everything: the four trials drawn below 1e-5 barely leave the majority-class guess (57 %
# PublicTest accuracy) in 30 epochs, every trial above 1e-4 reaches 69–71 %, and units, activation,
# L2 and weight decay make at most a point of difference at this budget. The best trial (30 units,
# leaky ReLU, learning rate 2.0e-4) trains the final LSTM below; at that rate it needs a few hundred
# epochs to converge, which early stopping finds on its own.

# %% [markdown]
# ## The three-class models
#
# The tuned LSTM; the study's Dense ablation with the same tuned settings (each LSTM layer replaced by
# a Dense layer of the same width and activation); this book's `blendshape_mlp`; and a random
# forest, all on the kept blendshapes of the same training images. Accuracy is on the PrivateTest
# faces MediaPipe read (as the study reported it) and, in *accuracy, misses counted wrong*, on all
# PrivateTest images.

# %%
fields = {"chapter": CHAPTER, "representation": "blendshapes", "dataset": "fer2013", "label_set": study.label_set,
          "profile": profile, "seed": P.seed, "extract_ms_per_image": float(features.ms.mean()),
          "n_blendshapes": n_features, "training_caps": P.training_caps}
TUNED = {"study_lstm", "study_dense"}  # these take the search's best options


def with_tuned_options(models: dict, suffix: str = "") -> dict:
    """A params ``models`` block with the search's options under each tuned model's own, labelled ``<label><suffix>``."""
    specs = {}
    for label, spec in models.items():
        model = spec.get("model", label)
        options = {**(tuned_options if model in TUNED else {}), **(spec.get("options") or {})}
        specs[f"{label}{suffix}"] = {**spec, "model": model, "options": options}
    return specs


def new_forest():
    return blendshapes.random_forest(**P.random_forest, n_jobs=P.n_jobs, seed=P.seed)


specs = with_tuned_options(P.models)
runs = experiment.run_models(specs, build=build, inputs={"kept blendshapes": kept}, base=tuned_config,
                             cache_prefix=CHAPTER, record=fields, class_names=classes, store=training.model_store(P))
runs["random_forest"] = experiment.train_classical(new_forest(), kept, class_names=classes,
                                                   record={**fields, "model": "random_forest", "input": "kept blendshapes"})

# %% mystnb={"figure": {"caption": "Learning curves of the three-class networks: loss and accuracy per epoch (the random forest has none).", "name": "fig-blendshapes-curves"}}
experiment.show_learning_curves(runs)

# %%
table = experiment.show_results_tables(runs, "FER2013 PrivateTest, happy / sad / unknown, the study's protocol")

# %% mystnb={"figure": {"caption": "Confusion matrices of the three-class models on FER2013 PrivateTest (the faces MediaPipe read).", "name": "fig-blendshapes-confusion"}}
experiment.show_confusion_matrices(runs)

# %%
seed_numbers = anchors.SEED_RESULTS["LSTM on blendshapes"]
display(Markdown(
    f"Anchors, **the study's numbers, not measured here**: LSTM accuracy {seed_numbers['LSTM'][0]:.1%}, F1 "
    f"{seed_numbers['LSTM macro F1'][0]:.2f} (faces MediaPipe read). Measured here: " + experiment.results_sentence(runs) + "."))

# %% [markdown]
# **Reproduced.** The study's LSTM, trained exactly as the study describes (caps, augmentation before
# extraction, relevance rule, random search, AdamW with amsgrad and clipping), reaches **72.6 %**
# (95 % CI 71.1–74.0) with macro F1 **0.675** on the PrivateTest faces MediaPipe read, against the
# study's 72.0 % and 0.63, and 72.1 % on all PrivateTest images with the misses counted wrong. It
# converged: early stopping ended it after 362 epochs, not the study's 5,000 ({numref}`fig-blendshapes-curves`). The Dense ablation is
# within its confidence interval (72.0 %, F1 0.671), and so is this book's wider `blendshape_mlp`
# (71.6 %, F1 0.676). A random forest is the best single model (73.9 %, F1 0.696) at a tenth of the
# training time. All three networks stop at the same PublicTest loss (0.649–0.650) whatever their
# size — the sign of a ceiling in the input, not in the model. *Happy* is easy (F1 about 0.80: the
# smile blendshapes carry it), *sad* is the hard class (F1 0.44–0.50): on a 48-pixel face its cues —
# lowered brows, a pressed mouth — are small and shared with *angry*, *fear* and *neutral*, all
# inside *unknown* ({numref}`fig-blendshapes-confusion`).

# %% [markdown]
# ### Beyond the study's protocol
#
# Two changes that leave the evaluation untouched (same PrivateTest images, same three classes):
# averaging the four models' probabilities (*ensemble*, no training), and training on **all**
# Training images instead of the study's caps. The caps make training nearly balanced, while
# PublicTest and PrivateTest keep FER2013's mix, in which *unknown* is the majority.

# %%
new = ["ensemble"]
runs["ensemble"] = experiment.average_models(dict(runs), kept, classes, seed=P.seed,
                                             record={**fields, "model": "ensemble", "input": "kept blendshapes"})
uncapped_set = concatenate([faces.relabel("happy_sad_unknown"), copies.relabel("happy_sad_unknown")], name="fer2013+augmented")
uncapped = blendshapes.split_arrays(FaceMeshFeatures.concatenate([features, copy_features]), uncapped_set, columns)
uncapped_fields = {**fields, "training_caps": None}
uncapped_specs = with_tuned_options({label: P.models[label] for label in P.uncapped_models}, suffix="_all_training")
runs.update(experiment.run_models(uncapped_specs, build=build, inputs={"kept blendshapes, all Training": uncapped},
                                  base=tuned_config, cache_prefix=f"{CHAPTER}-uncapped", record=uncapped_fields, class_names=classes,
                                  store=training.model_store(P)))
runs["random_forest_all_training"] = experiment.train_classical(
    new_forest(), uncapped, class_names=classes,
    record={**uncapped_fields, "model": "random_forest_all_training", "input": "kept blendshapes, all Training"})
new += [*uncapped_specs, "random_forest_all_training"]
print("Training images per class, capped:", np.bincount(kept.y[TRAIN]).tolist(), "| all:", np.bincount(uncapped.y[TRAIN]).tolist(),
      "| PrivateTest:", np.bincount(kept.y[TEST]).tolist(), f"({classes})")
display(pd.DataFrame([{**runs[name].row, "input": runs[name].record.get("input")} for name in new]).set_index("model")
        .style.format(precision=3, na_rep="–").set_caption("Beyond the protocol: the ensemble, and the models trained on all of Training"))

# %% [markdown]
# **Beyond the protocol** (`full` run). Averaging the four models (73.1 %, F1 0.683) does not beat
# the forest alone: the four make nearly the same mistakes, since they read the same 40 numbers.
# Training on every Training image instead of the caps lifts accuracy by 3–4 points — the forest
# reaches **77.1 %** (95 % CI 75.7–78.5), `blendshape_mlp` 76.2 % — but macro F1 *falls* to
# 0.64: uncapped, *unknown* is 58 % of the training faces, as it is of PrivateTest, so the models
# learn to say *unknown* when unsure and recall less *sad*. The caps buy macro F1, the full training
# set buys accuracy; no model here gets both the accuracy and the F1 this book set as goals (see the
# end of the chapter).

# %% [markdown]
# ## Ablations on the tuned LSTM
#
# Each row changes one thing of the tuned LSTM above: the input (all 52 blendshapes instead of the
# kept ones), the loss (mean squared error, as the study tried, and categorical focal loss, which
# down-weights easy faces), and balanced class weights (suggested by the study, never tried).

# %%
A = P.ablation
variants = {"tuned LSTM (kept blendshapes, cross-entropy)": ({}, kept),
            "all 52 blendshapes": ({}, all52),
            "loss: mean squared error": ({"loss": "mean_squared_error"}, kept),
            "loss: categorical focal": ({"loss": "categorical_focal_crossentropy"}, kept),
            "class weights: balanced": ({"class_weight": "balanced"}, kept)}
rows = []
for variant, (changes, data) in variants.items():
    for seed in A["seeds"]:
        config = tuned_config.with_(seed=seed, epochs=A["epochs"], **changes,
                                    time_budget_s=None if A["time_budget_min"] is None else 60 * A["time_budget_min"])
        run = experiment.train_and_evaluate(
            build("study_lstm", tuned_options, seed, n_inputs=data.x[TRAIN].shape[1]), data, config,
            cache_name=f"{CHAPTER}-ablation", options={"model": "study_lstm", **tuned_options, "inputs": data.x[TRAIN].shape[1]},
            class_names=classes, record=None, n_boot=200, verbose=0, store=training.model_store(P))
        rows.append({"variant": variant, "seed": seed, "PublicTest accuracy": run.record["val_accuracy"],
                     "PrivateTest accuracy": run.record["accuracy"], "PrivateTest macro F1": run.record["macro_f1"],
                     **{f"{c} recall": run.record["per_class"][c]["recall"] for c in classes},
                     "epochs": run.fitted.epochs_run, "stopped by": run.fitted.stopped_by, "train s": run.fitted.train_seconds})
ablation = pd.DataFrame(rows)
ablation.to_csv(results_dir(profile) / f"{CHAPTER}__ablation.csv", index=False)
display(ablation.groupby("variant", sort=False).mean(numeric_only=True).drop(columns="seed").round(3)
        .style.format(precision=3).set_caption("Ablations on the tuned LSTM (mean over the seeds)"))

# %% [markdown]
# **What the ablations show** (`full` run, one seed each, every run ended by early stopping). None of
# the study's choices matters much. The kept blendshapes and all 52 are within half a point (72.6 %
# against 72.2 % on PrivateTest, and the other way round on PublicTest): the twelve dropped
# blendshapes hardly ever move, so the rule neither helps nor hurts. Mean squared error trains as well
# as cross-entropy (72.6 %, in a third of the epochs) and focal loss slightly worse (71.9 %): with
# three fairly balanced training classes there are few easy examples for focal loss to discount.
# Balanced class weights — suggested by the study but never tried — do what they promise for *sad*
# (recall 0.47 → 0.69) but cost 6 points of accuracy and lower macro F1 (0.675 → 0.652): the
# capped training set is already close to balanced, and the weights push the model to over-predict
# *sad* on a test set where *unknown* is 59 % of the faces.

# %% [markdown]
# ## The worst errors
#
# Image ids travel with the features, so the PrivateTest faces the best model (chosen on
# PublicTest) gets most confidently wrong can be shown as images ({numref}`fig-blendshapes-worst`):

# %% mystnb={"figure": {"caption": "The PrivateTest faces the best three-class model gives the lowest probability for their true class: id, true class, and what it said with what probability.", "name": "fig-blendshapes-worst"}}
best = max(runs, key=lambda name: runs[name].record["val_accuracy"])
probabilities = runs[best].test_probabilities
true_probability = probabilities[np.arange(len(kept.y[TEST])), kept.y[TEST]]
worst = np.argsort(true_probability)[:P.gallery]
position = pd.Index(study.ids).get_indexer(kept.ids[TEST][worst])
plots.image_strip(study, position, [f"{study.ids[p]}\ntrue {classes[kept.y[TEST][w]]}\nsaid {classes[probabilities[w].argmax()]} "
                                    f"{probabilities[w].max():.2f}" for p, w in zip(position, worst)],
                  title=f"{best}: the {len(worst)} PrivateTest faces with the lowest probability for their true class");

# %% [markdown]
# The model chosen on PublicTest is the forest trained on all Training images. Its most confident
# errors (`full` run) are mostly FER2013's labels rather than the model's reading: wide-open
# "surprised" mouths labelled *happy*, broad smiles labelled *sad* or *unknown*, which the model
# calls *unknown* and *happy* with probabilities above 0.9. The rest are real limits of the
# representation — a crying child's *sad*, a dark, low-contrast face — where MediaPipe's
# blendshapes stay close to neutral.

# %% [markdown]
# ## Seven classes from blendshapes
#
# The same representation on FER2013's seven classes and the whole of Training (originals and
# their augmented copies; no caps), for the comparison with the other representations. A random
# forest on the 52 blendshapes is the classical baseline (reported elsewhere at 51 % on FER2013).

# %%
faces7 = concatenate([faces, copies], name="fer2013+augmented")
features7 = FaceMeshFeatures.concatenate([features, copy_features])
seven = blendshapes.split_arrays(features7, faces7)
classes7 = faces7.class_names
fields7 = {**fields, "label_set": faces7.label_set, "n_blendshapes": 52, "training_caps": None}
# labelled "<model>_7class": records and predictions are per chapter and model name, beside the 3-class ones
specs7 = with_tuned_options(P.models_7class, suffix="_7class")
runs7 = experiment.run_models(specs7, build=lambda m, o, s: build(m, o, s, n_inputs=52, n_classes=len(classes7)),
                              inputs={"52 blendshapes": seven}, base=tuned_config, cache_prefix=f"{CHAPTER}-7class",
                              record=fields7, class_names=classes7, store=training.model_store(P))
runs7["random_forest_7class"] = experiment.train_classical(new_forest(), seven, class_names=classes7,
                                                           record={**fields7, "model": "random_forest_7class", "input": "52 blendshapes"})

# %% mystnb={"figure": {"caption": "Learning curves of the seven-class networks: loss and accuracy per epoch.", "name": "fig-blendshapes-curves-7"}}
experiment.show_learning_curves(runs7)

# %%
table7 = experiment.show_results_tables(runs7, "FER2013 PrivateTest, 7 classes, blendshape models")

# %% mystnb={"figure": {"caption": "Confusion matrices of the seven-class blendshape models on FER2013 PrivateTest.", "name": "fig-blendshapes-confusion-7"}}
experiment.show_confusion_matrices(runs7)

# %%
display(Markdown(f"Anchor, **reported elsewhere, not measured here**: random forest on 52 blendshapes "
                 f"{seed_numbers['random forest, 7 classes'][0]:.0%}. Measured here: " + experiment.results_sentence(runs7) + "."))

# %% [markdown]
# **Seven classes** (`full` run). The random forest is again the best model: **59.5 %**
# (95 % CI 58.0–61.1, macro F1 0.555) against the 51 % reported for a random forest on the 52
# blendshapes, and above this book's goal of 58 %. It is also the only model that finds a third of
# the *disgust* faces (recall 0.33; the LSTM 0.07; {numref}`fig-blendshapes-confusion-7`). The LSTM
# ran into its 8-minute CPU budget still improving slowly (PublicTest loss falling by a few
# thousandths per hundred epochs at the tuned learning rate of 2e-4; {numref}`fig-blendshapes-curves-7`)
# and the MLP ended by early stopping; both stay 3 points below the forest.
# Fifty-two numbers per face on seven classes favour trees: the decisions are thresholds on single
# blendshapes (a smile above 0.5, a jaw open wide), which a forest states directly.
#
# Seven-class blendshapes beside the best 2D model of chapter 3 on the same PrivateTest faces:

# %%
rq_answer = experiment.answer_rq(profile, CHAPTER, runs7, seven, "blendshape", seed=P.seed)

# %% [markdown]
# ## The packaged model
#
# The chapter's best single seven-class blendshape model goes to the profile's model zoo
# (`fer_lib.zoo`; under `full`, the committed `fer_lib/models/zoo/`) with the input pipeline it
# needs and the record it came from: the model `python -m fer_lib.predict` runs on a photo, that
# chapter 10 tests on CK+48 and JAFFE and `stream.FrameClassifier.from_zoo` runs frame by frame on a
# video. It is chosen on PublicTest: of the single models within a point of the best, the smallest
# (a model of millions of parameters is not worth a point in a committed zoo).

# %% tags=["hide-input"]
packaged = zoo.export_best(runs7, lambda name, run: zoo.mesh_input(P.face_mesh, kind="blendshapes", columns=list(range(52))),
                           name="blendshapes", zoo_dir=zoo.profile_dir(P))
display(Markdown(packaged.summary() if packaged else "*No model of this chapter could be packaged (see the line above).*"))

# %% [markdown]
# ## Stability in a stream
#
# The study chose the LSTM because its output flickered less than the Dense model's on the robot's
# camera. To measure that, each test video here is built from a PrivateTest face: a *static* stream
# is `frames` jittered views of one face (small shifts and rotations, brightness changes and sensor
# noise, drawn independently per frame, as a hand-held camera gives), and a *transition* stream cuts
# half way to a face of another class. MediaPipe reads every frame; each model then classifies the
# stream frame by frame (`stream.FrameClassifier`):
#
# - the Dense model and the LSTM *without* state (each frame on its own, exactly as both were trained),
# - the LSTM *with* its state carried from frame to frame (a stateful copy with the trained weights),
# - `blendshape_mlp`, and the Dense model with an exponential moving average of its probabilities
#   (the plain engineering answer to flicker).
#
# *Flip rate*: label changes per pair of consecutive frames. *Frames to settle*: after the cut, the
# frames until the label stops changing for good. A perfectly stable model that is also right has
# flip rate 0 on static streams and settles on the second face's class within a frame or two.

# %%
T = P.streams
test_faces = study.subset(study.split == TEST)
frames, streams = stream.build_streams(test_faces, T["static"], T["transitions"], T["frames"], seed=P.seed, **T["jitter"])
frame_features = face_mesh.extract_for_chapter(frames, P)
scores = frame_features.blendshapes.reshape(len(streams), T["frames"], -1)
print(f"{len(streams)} streams ({(streams.kind == 'static').sum()} static, {(streams.kind == 'transition').sum()} transitions) "
      f"of {T['frames']} frames; MediaPipe read {frame_features.coverage:.1%} of the {len(frames)} frames")
lstm_spec = specs["study_lstm"]
classifiers = {
    "study_dense": stream.FrameClassifier(runs["study_dense"].fitted.model, columns, classes),
    "study_lstm, no state": stream.FrameClassifier(runs["study_lstm"].fitted.model, columns, classes),
    "study_lstm, with state": stream.FrameClassifier(
        blendshapes.stateful_copy(runs["study_lstm"].fitted.model, lstm_spec.get("model", "study_lstm"), len(classes),
                                  n_features, lstm_spec["options"], seed=P.seed), columns, classes),
    "blendshape_mlp": stream.FrameClassifier(runs["blendshape_mlp"].fitted.model, columns, classes),
    f"study_dense + moving average (α={T['smoothing']})": stream.FrameClassifier(
        runs["study_dense"].fitted.model, columns, classes, smoothing=T["smoothing"]),
}
true = frames.labels.reshape(len(streams), T["frames"])
stability, outputs = [], {}
for name, classifier in classifiers.items():
    started = time.perf_counter()
    outputs[name] = np.stack([classifier.run_features(s) for s in scores])
    ms = (time.perf_counter() - started) * 1000 / scores[..., 0].size
    labels = np.where(np.isnan(outputs[name][..., 0]), -1, np.nan_to_num(outputs[name]).argmax(-1))
    per_stream = stream.stream_metrics(labels, streams)
    seen = labels >= 0
    transitions = per_stream[per_stream.kind == "transition"]
    stability.append({"model": name, "frame accuracy": float((labels[seen] == true[seen]).mean()),
                      "flip rate, static": per_stream.loc[per_stream.kind == "static", "flip rate"].mean(),
                      "static streams without a flip": float((per_stream.loc[per_stream.kind == "static", "flips"] == 0).mean()),
                      "flip rate, transitions": transitions["flip rate"].mean(),
                      "frames to settle (mean)": transitions["frames to settle"].mean(),
                      "frames to settle (median)": transitions["frames to settle"].median(),
                      "ends on the second face's class": transitions["ends on the second face's class"].mean(),
                      "ms per frame (model only)": ms})
stability = pd.DataFrame(stability).set_index("model")
stability.to_csv(results_dir(profile) / f"{CHAPTER}__streams.csv")
display(stability.style.format(precision=3, na_rep="–").set_caption("Stability in a stream: each model frame by frame over the same streams"))

# %% [markdown]
# **What the streams show** (`full` run: 250 streams of 30 frames from PrivateTest faces, 99.1 % of
# the 7,500 frames read by MediaPipe). Frame by frame, every stateless model flickers: the Dense
# model changes its label on 21 % of consecutive frames of an *unchanging* face, and only 38 % of
# the static streams pass without a single flip; the LSTM without state behaves the same (it *is* a
# per-frame classifier when each face is a one-step sequence). Carrying the LSTM's state from frame to
# frame does cut the flicker tenfold (flip rate 0.018; 81 % of static streams never flip) — the
# study's observation on its robot, measured. But the state costs accuracy: 58.0 % of frames right
# against 64.3 % without it, and after a cut it ends on the new face's class less often (59 % of
# transitions against 68 %). The LSTM was trained on single frames from a reset state, so a state
# built over earlier frames is something it never learned to use: it becomes inertia, keeping the
# first impression of a stream. A plain moving average of the Dense model's probabilities (α = 0.6)
# gives most of the stability (flip rate 0.083, 63 % of static streams without a flip), keeps the
# accuracy (64.6 %) and settles fastest after a cut (3.0 frames on average). For a robot, smoothing
# a per-frame model is the better engineering choice; an LSTM that should use its state needs to be
# trained on sequences of frames (video clips), which FER2013's still images do not provide.
# {numref}`fig-blendshapes-stream` follows one stream through a cut.

# %% mystnb={"figure": {"caption": "One transition stream frame by frame: each model's class probabilities (rows); the background shades the true class.", "name": "fig-blendshapes-stream"}}
example = int(streams.index[streams.kind == "transition"][0]) if (streams.kind == "transition").any() else 0
plots.stream_traces({name: np.nan_to_num(out[example]) for name, out in outputs.items()}, classes, true[example],
                    title=f"Stream {example}: {streams.first[example]} → {streams.second[example]}");

# %% [markdown]
# ### A model over a video file
#
# `stream.classify_video` runs a classifier over any OpenCV source — a video file or a camera index —
# one frame at a time. Here the stream above is written to a video file and read back:

# %%
import cv2

video_path = repo_root() / "cache" / f"{CHAPTER}-example-stream.avi"
video_path.parent.mkdir(parents=True, exist_ok=True)
writer = cv2.VideoWriter(str(video_path), cv2.VideoWriter_fourcc(*"MJPG"), 10, frames.images.shape[1:][::-1], False)
for image in frames.images[frames.meta["stream"] == example]:
    writer.write(image)
writer.release()
video = stream.classify_video(str(video_path), classifiers["study_lstm, with state"])
classifiers["study_lstm, with state"].close()
display(video.round(3).T.style.format(precision=3).set_caption("The stateful LSTM over the stream written to a video file: one column per frame"))

# %% [markdown]
# ## Goals
#
# Each goal against the model chosen on PublicTest among those it concerns (never on PrivateTest).

# %%
def chosen(names):
    return max(names, key=lambda name: runs_all[name].record["val_accuracy"])


runs_all = {**runs, **runs7}
study_protocol = [name for name in runs if runs[name].record.get("training_caps") == P.training_caps]
goals = []
for what, names, metric, target in [
        ("3 classes, study protocol: accuracy", study_protocol, "accuracy", 0.78),
        ("3 classes, study protocol: macro F1", study_protocol, "macro_f1", 0.70),
        ("3 classes, any training set: accuracy", list(runs), "accuracy", 0.78),
        ("7 classes: accuracy", list(runs7), "accuracy", 0.58)]:
    name = chosen(names)
    record = runs_all[name].record
    goals.append({"goal": f"{what} ≥ {target:g}", "model (chosen on PublicTest)": name, "measured": record[metric],
                  "all PrivateTest images, misses counted wrong": record["accuracy_all_faces"] if metric == "accuracy" else None,
                  "met": record[metric] >= target})
goals = pd.DataFrame(goals).set_index("goal")
display(goals.style.format(precision=3, na_rep="–").set_caption("This chapter's goals, each against the model chosen on PublicTest"))

# %% [markdown]
# **Goals** (`full` run). The study is reproduced and beaten on its own protocol: its LSTM gives
# 72.6 % and F1 0.675 here (study: 72.0 %, 0.63), and a random forest on the same blendshapes 73.9 %
# and 0.696. The 7-class goal is met (59.5 % ≥ 58 %). The three-class targets of 78 % accuracy and
# macro F1 0.70 are **not met**: the best study-protocol model is 4 points short in accuracy and
# 0.004 short in F1, and training on all Training images reaches 77.1 % but only by trading F1
# away (0.64). Why, from what this chapter measured:
#
# - *The input is the limit, not the training.* Three network families and a forest, from 2 k to
#   5 M parameters, all stop at the same PublicTest loss and within 2 points of each other; every
#   network ended by early stopping (except the 7-class LSTM's budget), so more epochs or a GPU
#   would not move them. Blendshapes were made to animate avatars from a clear, frontal face, not to
#   measure a 48-pixel grey face; on FER2013 they see a smile well and the small movements of
#   *sad* poorly (F1 0.44–0.50).
# - *Sad against unknown is the hard part.* Happy is recalled at 85 %; *sad* at 47–54 %, confused
#   mostly with *angry*, *fear* and *neutral*, which are *unknown* here. Any gain must come from
#   there, which needs more than the blendshapes: chapter 4's landmarks or the pixels themselves.
# - *Accuracy and macro F1 pull apart.* The study's caps balance training, which helps F1 and costs
#   accuracy on FER2013's unbalanced test set; removing them does the reverse. The targets ask for
#   both at once, which none of the models trained here achieves.
