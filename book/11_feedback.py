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
# # 11. The user-feedback loop
#
# *Can a user teach a packaged model the faces it gets wrong — without it forgetting FER2013?* A model
# trained on FER2013's web photos meets a new kind of face: posed expressions filmed in a lab (CK+48
# {cite:p}`lucey2010`, or JAFFE {cite:p}`lyons1998`). A user who sees its mistakes corrects them —
# from the command line (`python -m fer_lib.predict PHOTO --correct LABEL`), from Python, or in a
# small JupyterLab panel — and the corrections are kept in an append-only store (`fer_lib.feedback`).
# The model is then fine-tuned on them, mixed with a replay sample of its own FER2013 training images
# so that it does not forget what it knew, and saved as a new version beside the original, which is
# never overwritten. This chapter measures the loop: a simulated user corrects *k* faces of some of
# the new domain's subjects, and accuracy is measured on the subjects it never saw and on FER2013's
# PrivateTest (what was forgotten).
#
# | step | as in the study | here |
# |---|---|---|
# | learning from users | the 3DFER study {cite:p}`seed_3dfer` names a model that improves from its users' corrections as an advanced goal; it did not build one | corrections stored with the face the model saw, its prediction, the model's hash, who and when; SQLite in WAL mode, one transaction per correction, append-only (`feedback.Store`) |
# | how corrections arrive | — | the predictor's command line (`--correct LABEL`), `feedback.correct` in Python, and an ipywidgets panel (`feedback.panel`): a face, the prediction, a button per label |
# | fine-tuning | — | chapter 3's packaged 2D model through the book's one training loop (`training.fit`), corrections mixed with a replay sample of FER2013 Training, batch-norm statistics kept; a new zoo version `<name>@v<N>` that records its parent, corrections and replay (`feedback.fine_tune`) |
# | the measurement | — | a simulated user per seed: the new domain's subjects split into correction and held-out subjects; *k* = the profile's `ks` corrections from the first; accuracy on every face of the held-out subjects and on FER2013 PrivateTest, mean ± sd over seeds |

# %% tags=["parameters"]
profile = "sample"  # smoke | sample | full: reads params/<profile>.yml
data_dir = None  # None: the profile's data_dir, then $FER_DATA_DIR, then data/
zoo_dir = None  # None: the profile's zoo (chapter 3 exports the 2D model there); a folder to use another

# %% tags=["hide-input"]
import hashlib
import time

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from IPython.display import Markdown, display
from sklearn.metrics import f1_score

import fer_lib
from fer_lib import feedback, predict, zoo
from fer_lib.data import TEST, TRAIN
from fer_lib.paths import repo_root, resolve_data_dir, results_dir

CHAPTER = "11_feedback"
started = time.perf_counter()
P = fer_lib.load_params(profile, chapter=CHAPTER, data_dir=data_dir, zoo_dir=zoo_dir)
P3 = fer_lib.load_params(profile, chapter="03_rq1_2d", data_dir=data_dir)  # the draw the model was trained on
if 0 not in P.ks or P.goal_k not in P.ks:
    raise ValueError(f"params/{profile}.yml, {CHAPTER}: ks {P.ks} must hold 0 (the packaged model) and goal_k {P.goal_k}")
if P.user not in ("every", "wrong"):
    raise ValueError(f"params/{profile}.yml, {CHAPTER}: user is 'every' or 'wrong', not {P.user!r}")
the_zoo = zoo.profile_dir(P)
packaged = zoo.entries(the_zoo)
if P.model not in packaged:
    raise FileNotFoundError(
        f"no zoo model {P.model!r} in {the_zoo} for profile {profile!r} (it holds: {', '.join(packaged) or 'nothing'}). "
        f"Chapter 3 exports it: run `make chapter CH=03_rq1_2d PROFILE={profile}` first, then this chapter again.")
base = packaged[P.model]
spec_input = base.spec["input"]
base_sha = hashlib.sha256(base.model_path.read_bytes()).hexdigest()  # checked again at the end: never overwritten
work = repo_root() / "cache" / "feedback" / profile
versions_dir = work / "versions"  # fine-tuned versions of this chapter (outside the zoo the book packages)
results_dir(profile).mkdir(parents=True, exist_ok=True)
display(Markdown(f"The model: **{base.name}** from `{the_zoo.relative_to(repo_root()) if the_zoo.is_relative_to(repo_root()) else the_zoo}`. "
                 + base.summary()))

# %% [markdown]
# ## The new domain, the simulated user and FER2013
#
# The new domain's labels are matched to FER2013's seven by name (CK+'s *contempt* has no FER2013
# class and is left out; CK+ has no *neutral*). Each face is cut out as a photo's faces are
# (`predict.dataset_faces`: CK+48's 48-pixel crops as they are, JAFFE's 256-pixel photos through the
# predictor's face finder) and becomes the model's input through the predictor's own pipeline
# (`predict.pixel_inputs`: chapter 3's detection, alignment, crop and CLAHE). FER2013 is the same
# draw chapter 3 trained on: its **Training** images are the replay pool, its **PrivateTest** images
# measure forgetting.

# %% tags=["hide-input"]
from fer_lib.preprocess import MediaPipeDetector

loaders = {"ckplus": fer_lib.load_ckplus, "jaffe": fer_lib.load_jaffe}
if P.new_domain not in loaders:
    raise ValueError(f"params/{profile}.yml, {CHAPTER}: new_domain is one of {sorted(loaders)}, not {P.new_domain!r}")
raw_domain = loaders[P.new_domain](resolve_data_dir(P.data_dir))
known = np.isin(raw_domain.label_names, base.class_order)
domain = raw_domain.subset(known)
y_domain = np.array([base.class_order.index(name) for name in domain.label_names])
faces_domain, found_domain = predict.dataset_faces(domain.images)
fer = fer_lib.load_fer2013(resolve_data_dir(P.data_dir)).protocol_subset(P3.train_per_class, P3.eval_per_class, P3.seed)
private = fer.select_split(TEST)
replay_pool = fer.select_split(TRAIN)
y_private = np.array([base.class_order.index(name) for name in private.label_names])
detector = MediaPipeDetector(**spec_input["detector_options"])  # one MediaPipe graph for every input below
x_domain, _ = predict.pixel_inputs(faces_domain, spec_input, detector)
x_private, _ = predict.pixel_inputs(private.images, spec_input, detector)
base_model = zoo.load_model(base)
base_domain = predict.model_scores(base_model, x_domain, spec_input).argmax(1)
base_private = predict.model_scores(base_model, x_private, spec_input).argmax(1)
names = {"ckplus": "CK+48", "jaffe": "JAFFE"}
left_out = {f"{c} images (no FER2013 class)": int((raw_domain.label_names == c).sum())
            for c in sorted(set(raw_domain.label_names[~known]))}
overview = pd.DataFrame([
    {"data": f"{names[P.new_domain]} (new domain)", "images": len(domain), "subjects": len(np.unique(domain.subject)),
     "faces found": int(found_domain.sum()), "accuracy of the packaged model": float((base_domain == y_domain)[found_domain].mean())},
    {"data": "FER2013 PrivateTest (forgetting)", "images": len(private), "subjects": np.nan, "faces found": len(private),
     "accuracy of the packaged model": float((base_private == y_private).mean())},
    {"data": "FER2013 Training (the replay pool)", "images": len(replay_pool), "subjects": np.nan, "faces found": len(replay_pool),
     "accuracy of the packaged model": np.nan},
]).set_index("data")
display(overview.style.format({"images": "{:,.0f}", "subjects": "{:.0f}", "faces found": "{:,.0f}",
                               "accuracy of the packaged model": "{:.1%}"}, na_rep="–")
        .set_caption(f"The data (profile {profile}); left out: {left_out or 'nothing'}"))

# %% [markdown]
# ## Fine-tuning on *k* corrections
#
# One simulated user per seed. The seed splits the new domain's subjects into **correction subjects**
# (a share `correction_subjects` of them) and **held-out subjects**; the user reviews the correction
# subjects' faces in a random order and records the true label of each (`user: every`; `user:
# wrong` would record only the faces the model got wrong) into a fresh store, as `feedback.Store.add`
# does for any correction. For each *k*, `feedback.fine_tune` fine-tunes the packaged model on the
# first *k* of them — so *k* = 25 extends the 10 of *k* = 10, as for one user over time — with
# `replay_ratio` FER2013 Training images per correction. A share `val_fraction` of the corrections
# and of the replay sample is held out to choose the epoch; the held-out subjects take no part in
# anything but the measurement. *k* = 0 is the packaged model itself.

# %% tags=["hide-input"]
def accuracy_and_f1(y_true, y_pred):
    return float((y_true == y_pred).mean()), float(f1_score(y_true, y_pred, average="macro", labels=sorted(set(y_true)),
                                                            zero_division=0))


subjects = np.unique(domain.subject)
n_correction = int(np.clip(round(P.correction_subjects * len(subjects)), 1, len(subjects) - 1))
stores_dir = work / "simulated"
stores_dir.mkdir(parents=True, exist_ok=True)
rows, tuned_versions = [], {}
for seed in P.seeds:
    rng = np.random.default_rng(seed)
    correction_subjects = rng.permutation(subjects)[:n_correction]
    is_correction = np.isin(domain.subject, correction_subjects)
    held_out = ~is_correction & found_domain
    pool = np.flatnonzero(is_correction & found_domain & ((base_domain != y_domain) if P.user == "wrong" else True))
    order = rng.permutation(pool)
    if max(P.ks) > len(order):
        raise ValueError(f"seed {seed}: k = {max(P.ks)} corrections asked for, but the correction subjects have "
                         f"{len(order)} usable faces: lower ks in params/{profile}.yml ({CHAPTER}) or raise correction_subjects")
    # the simulated user's store is scratch, rebuilt at every execution (a real store is only ever appended to)
    store_path = stores_dir / f"seed{seed}.db"
    for leftover in stores_dir.glob(f"seed{seed}.db*"):
        leftover.unlink()
    store = feedback.Store(store_path)
    for i in order[:max(P.ks)]:
        store.add(faces_domain[i], domain.label_names[i], predicted=base.class_order[base_domain[i]], model=base.name,
                  model_sha256=base_sha, representation=base.representation, class_order=base.class_order,
                  who=f"simulated user {seed}", image_id=domain.ids[i], image_sha256=feedback.array_sha256(domain.images[i]),
                  source="simulated")
    for k in P.ks:
        tick = time.perf_counter()
        if k == 0:
            model, tuned = base_model, None
        else:
            tuned = feedback.fine_tune(base, store, first=k, replay=replay_pool, replay_ratio=P.replay_ratio,
                                       training=dict(P.training), val_fraction=P.val_fraction,
                                       freeze_batchnorm=P.freeze_batchnorm, seed=seed, versions_dir=versions_dir,
                                       detector=detector)
            tuned_versions[(seed, k)] = tuned
            model = zoo.load_model(tuned.entry)  # the saved version, as a user would load it
        seconds = time.perf_counter() - tick
        held_acc, held_f1 = accuracy_and_f1(y_domain[held_out], predict.model_scores(model, x_domain[held_out], spec_input).argmax(1))
        private_acc, private_f1 = accuracy_and_f1(y_private, predict.model_scores(model, x_private, spec_input).argmax(1))
        version = tuned.version if tuned else {}
        rows.append({"seed": seed, "k": k, "held-out accuracy": held_acc, "held-out macro F1": held_f1,
                     "held-out faces": int(held_out.sum()), "held-out subjects": len(subjects) - n_correction,
                     "PrivateTest accuracy": private_acc, "PrivateTest macro F1": private_f1,
                     "version": tuned.entry.name if tuned else base.name,
                     "corrections trained": version.get("corrections", {}).get("train", 0),
                     "corrections validating": version.get("corrections", {}).get("validation", 0),
                     "replay trained": version.get("replay", {}).get("train", 0),
                     "replay validating": version.get("replay", {}).get("validation", 0),
                     "epochs run": version.get("fit", {}).get("epochs_run", 0),
                     "best epoch": version.get("fit", {}).get("best_epoch", 0), "fine-tune s": seconds,
                     "reused": bool(tuned and tuned.reused)})
    store.close()
detector.close()
curve = pd.DataFrame(rows)
for measure in ("held-out accuracy", "PrivateTest accuracy"):  # paired with the same seed's k = 0
    curve[f"{measure} change"] = curve[measure] - curve.seed.map(curve[curve.k == 0].set_index("seed")[measure])
curve_path = results_dir(profile) / f"{CHAPTER}__curve.csv"
curve.to_csv(curve_path, index=False)
summary = curve.groupby("k").agg(**{
    "seeds": ("seed", "count"),
    "held-out accuracy": ("held-out accuracy", "mean"), "held-out sd": ("held-out accuracy", "std"),
    "gain (points)": ("held-out accuracy change", "mean"), "gain sd": ("held-out accuracy change", "std"),
    "PrivateTest accuracy": ("PrivateTest accuracy", "mean"), "PrivateTest sd": ("PrivateTest accuracy", "std"),
    "PrivateTest change (points)": ("PrivateTest accuracy change", "mean"),
    "replay images": ("replay trained", "mean"), "epochs run": ("epochs run", "mean"),
    "fine-tune s": ("fine-tune s", "mean")})
points = ["gain (points)", "gain sd", "PrivateTest change (points)"]
summary[points] = summary[points] * 100
display(summary.style.format({"held-out accuracy": "{:.1%}", "held-out sd": "{:.1%}", "PrivateTest accuracy": "{:.1%}",
                              "PrivateTest sd": "{:.1%}", "gain (points)": "{:+.1f}", "gain sd": "{:.1f}",
                              "PrivateTest change (points)": "{:+.1f}", "replay images": "{:.0f}", "epochs run": "{:.1f}",
                              "fine-tune s": "{:.0f}"},
                             na_rep="–")
        .set_caption(f"Fine-tuning on k corrections of {names[P.new_domain]}: held-out subjects and FER2013 PrivateTest, "
                     f"mean and sd over {len(P.seeds)} seed(s); changes paired with each seed's k = 0 "
                     f"(curve: {curve_path.relative_to(repo_root())})"))

# %% [markdown]
# ## The curve
#
# {numref}`fig-feedback-curve` shows held-out accuracy on the new domain (left) and FER2013
# PrivateTest accuracy (right) against the number of corrections: each seed's simulated user as a dot, the mean over seeds as the line, ± one
# standard deviation as the band. The dashed line is the packaged model.

# %% tags=["hide-input"] mystnb={"figure": {"caption": "Held-out new-domain accuracy and FER2013 PrivateTest accuracy against the number of corrections k: each seed's simulated user, the mean and +/- 1 sd over seeds; dashed: the packaged model.", "name": "fig-feedback-curve"}}
figure, axes = plt.subplots(1, 2, figsize=(11, 4), sharex=True)
for axis, measure, title in ((axes[0], "held-out accuracy", f"{names[P.new_domain]}, held-out subjects"),
                             (axes[1], "PrivateTest accuracy", "FER2013 PrivateTest (forgetting)")):
    by_k = curve.groupby("k")[measure]
    mean, sd = by_k.mean(), by_k.std().fillna(0)
    axis.fill_between(mean.index, mean - sd, mean + sd, alpha=0.2, color="tab:blue", label="± 1 sd over seeds")
    axis.plot(mean.index, mean, "o-", color="tab:blue", label="mean")
    jitter = np.random.default_rng(0).uniform(-0.015, 0.015, len(curve)) * max(P.ks)  # seeds side by side
    axis.scatter(curve.k + jitter, curve[measure], s=14, color="grey", alpha=0.7, label="one seed")
    axis.axhline(mean.loc[0], ls="--", color="tab:red", lw=1, label="packaged model (k = 0)")
    axis.set(title=title, xlabel="corrections k", ylabel="accuracy", xticks=P.ks)
    axis.yaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: f"{v:.0%}"))
axes[0].legend(fontsize=8)
plt.tight_layout()
plt.show()

# %% [markdown]
# ## What a version records
#
# Every fine-tune is a new zoo folder `versions/<name>@v<N>/` (a model file and `spec.json`, as every
# zoo model), so `python -m fer_lib.predict --zoo cache/feedback/<profile>/versions --representation
# <name>@v<N>` runs it like the original. Its `spec.json` names its parent (and the parent's model
# hash), the corrections (their ids in the store) and replay images it was trained on, its training
# settings and how the fit ended. The largest *k* of the first seed:

# %% tags=["hide-input"]
example = tuned_versions[(P.seeds[0], max(P.ks))]
v = example.version
display(pd.DataFrame({"value": {
    "version": example.entry.name, "parent": f"{v['parent']} (model sha256 {v['parent_model_sha256'][:12]}…)",
    "corrections": f"{v['corrections']['train']} trained, {v['corrections']['validation']} choosing the epoch; "
                   f"labels {v['corrections']['labels']}",
    "replay": f"{v['replay']['train']} trained, {v['replay']['validation']} choosing the epoch, from {v['replay']['source']} Training",
    "training": ", ".join(f"{key} {v['training'][key]}" for key in ("optimizer", "learning_rate", "batch_size", "epochs")),
    "batch-norm statistics": "kept (frozen)" if v["freeze_batchnorm"] else "trained",
    "fit": f"{v['fit']['epochs_run']} epochs, best {v['fit']['best_epoch']}, stopped by {v['fit']['stopped_by']}, "
           f"{v['fit']['device']}",
    "size": f"{example.entry.megabytes:.1f} MB",
}}).style.set_caption(f"The spec.json version block of {example.entry.name}"))

# %% [markdown]
# ## Recording corrections
#
# The simulated user above wrote its corrections with `Store.add`. A person uses one of these; each
# finds and cuts out the face exactly as the predictor does, predicts it, and stores the crop with the
# prediction:
#
# ```bash
# python -m fer_lib.predict photo.jpg --correct happy                  # the photo's one face
# python -m fer_lib.predict group.jpg --correct sad --face 2 --who ana  # one of several faces
# ```
#
# ```python
# from fer_lib import feedback, predict
# predictor = predict.Predictor(["pixels_2d"])
# feedback.correct(predictor, "photo.jpg", "happy")         # Python
# feedback.panel(predictor, "my_photos/")                   # JupyterLab: a face, the prediction, a button per label
# feedback.fine_tune("pixels_2d", feedback.Store())         # then a new version from everything stored
# ```
#
# Below, the panel and `feedback.correct` on two held-out faces, into a scratch store: the panel's
# button is clicked from code (in JupyterLab it is a click), and both rows are the same kind of record.

# %% tags=["hide-input"]
demo_path = work / "demo.db"
for leftover in work.glob("demo.db*"):
    leftover.unlink()
demo_store = feedback.Store(demo_path)
demo_predictor = predict.Predictor([base.name], zoo_dir=the_zoo)
held = np.flatnonzero(held_out)[:2]
widget = feedback.panel(demo_predictor, domain.subset(held[:1]), demo_store, who="reader")  # a FaceDataset: its ids
widget.buttons[domain.label_names[held[0]]].click()
feedback.correct(demo_predictor, domain.images[held[1]], domain.label_names[held[1]], demo_store, who="reader",
                 image_id=domain.ids[held[1]])
demo_predictor.close()
display(demo_store.table()[["created", "who", "source", "image_id", "model", "representation", "predicted", "corrected"]]
        .style.set_caption(f"Two corrections in a store ({demo_path.name}): one from the panel, one from feedback.correct"))
demo_store.close()

# %% [markdown]
# ## Goals
#
# The goals, read from the measured curve at `goal_k` corrections (50 in the full profile);
# the gain and the drop are paired with each seed's own *k* = 0 and averaged over seeds.

# %% tags=["hide-input"]
at_goal = curve[curve.k == P.goal_k]
gain, gain_sd = at_goal["held-out accuracy change"].mean(), at_goal["held-out accuracy change"].std()
change, change_sd = at_goal["PrivateTest accuracy change"].mean() + 0.0, at_goal["PrivateTest accuracy change"].std()
def sd(value):
    return f"sd {value * 100:.1f}" if np.isfinite(value) else "one seed: no sd"


unchanged = hashlib.sha256(base.model_path.read_bytes()).hexdigest() == base_sha
recorded = all(t.version["corrections"]["train"] + t.version["corrections"]["validation"] == k
               and t.version["parent"] == base.name for (s, k), t in tuned_versions.items())
goals = pd.DataFrame([
    {"goal": f"fine-tuning on {P.goal_k} corrections raises held-out {names[P.new_domain]} accuracy by ≥ 10 points",
     "measured": f"{gain * 100:+.1f} points ({sd(gain_sd)}, {len(at_goal)} seed(s))", "met": bool(gain >= 0.10)},
    {"goal": "… while FER2013 PrivateTest accuracy drops by ≤ 1 point",
     "measured": f"{change * 100:+.1f} points ({sd(change_sd)})", "met": bool(change >= -0.01)},
    {"goal": "the packaged model is never overwritten", "measured": f"model file hash {'unchanged' if unchanged else 'CHANGED'} "
     f"after {len(tuned_versions)} fine-tunes", "met": unchanged},
    {"goal": "each version records its parent and the corrections it used",
     "measured": f"{len(tuned_versions)} versions checked", "met": recorded},
]).set_index("goal")
display(goals.style.set_caption(f"This chapter's goals, measured under the {profile} profile"
                                + ("" if profile == "full" else ": at this size they measure nothing, only that the loop runs")))
display(Markdown(f"Chapter executed in {time.perf_counter() - started:.1f} s "
                 f"({sum(not t.reused for t in tuned_versions.values())} fine-tunes trained, "
                 f"{sum(t.reused for t in tuned_versions.values())} read back)."))
