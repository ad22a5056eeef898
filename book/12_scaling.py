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
# # 12. Scaling out
#
# *What runs where, and what does a second worker buy?* Every chapter of this book runs on one
# 2-core CPU. Three of its steps are embarrassingly parallel — the face extractions (MediaPipe, dlib,
# the detectors) and the hyper-parameter searches — and each runs on an engine that already knows how
# to use more machines: a Dask cluster for the extractions, keras-tuner's distributed mode for the
# keras-tuner searches (chapters 3 and 7), and Optuna's shared storage for chapter 9's search. This
# page says which command runs each, and measures the first on this machine.
#
# | step | as in the studies | here, one machine | here, many machines |
# |---|---|---|---|
# | face extraction (MediaPipe's cascade, dlib-68, detectors) | one process, not reported | chunks of 500 images on a joblib pool of the machine's cores, each chunk cached (`face_mesh.extract_dataset`) | the same chunks on any `concurrent.futures` executor: `extract_dataset(faces, executor=client.get_executor())` with a Dask `distributed` client; same features, same cache |
# | keras-tuner searches (chapter 3's grid, chapter 7's random search) | one process | the chapter runs the search (`fer_lib.tuning`) | keras-tuner's own chief/worker mode: `python -m fer_lib.tuning chief` serves the oracle, `python -m fer_lib.tuning worker --worker-id N` on every machine; the chapter then reads the finished trials |
# | Optuna search (chapter 9) | 800+ trials, hardware not stated | the chapter, or `python -m fer_lib.video search` | any number of `python -m fer_lib.video search` workers on one study in a shared storage (SQLite on one machine, a database URL for many) |
# | training one model, cross-validation folds | GPU, not stated | TensorFlow on the CPU's cores (a GPU when there is one) | not distributed: one model per process; folds resume from the fold store |
#
# The speeds below come from `benchmarks/scale_out.py`, run on this machine with nothing else running;
# the chapter reads its last recorded run (`benchmarks/scale_out.results.jsonl`). Speed is measured by
# that script, never by a test; what the tests check is that a distributed run gives the same results
# (`tests/test_dask_extraction.py`: a 2-worker `LocalCluster` gives bit-identical MediaPipe features,
# dlib landmarks and detector boxes; `tests/test_tuning_distributed.py`: a chief and two workers on
# localhost run every trial of a search exactly once, and the chapter's own call then trains nothing).

# %% tags=["parameters"]
profile = "sample"  # smoke | sample | full: reads params/<profile>.yml

# %% tags=["hide-input"]
import json

import matplotlib.pyplot as plt
import pandas as pd
from IPython.display import Markdown, display

import fer_lib
from fer_lib.paths import repo_root

P = fer_lib.load_params(profile, chapter="12_scaling")
benchmark_file = repo_root() / P.benchmark

# %% [markdown]
# ## MediaPipe extraction on 1 and 2 Dask workers
#
# The benchmark extracts MediaPipe's features (the book's ten-attempt cascade, no cache) of the first
# *N* FER2013 images three ways: a `LocalCluster` of one single-threaded worker process, one of two,
# and the chapters' default joblib pool of two processes. Dask workers are started and warmed first
# (their import of MediaPipe is reported as *startup*, not counted in the speed); the joblib pool
# starts its processes inside each call, so its time includes that start. Every run must give the
# first run's features bit for bit: the table below and {numref}`fig-scaling-speed`.

# %% tags=["hide-input"]
recorded = [json.loads(line) for line in benchmark_file.read_text().splitlines() if line.strip()] if benchmark_file.is_file() else []
if recorded:
    run = recorded[-1]
    speeds = pd.DataFrame(run["runs"]).set_index("run")
    one = speeds.loc[speeds.index.str.startswith("local") & (speeds.workers == 1), "images_per_s"]
    display(speeds[["workers", "startup_s", "seconds", "images_per_s", "speed-up", "identical"]]
            .rename(columns={"startup_s": "startup s", "seconds": "extraction s", "images_per_s": "images / s",
                             "speed-up": "speed-up over 1 worker", "identical": "features identical"})
            .style.format({"startup s": "{:.1f}", "extraction s": "{:.1f}", "images / s": "{:.1f}",
                           "speed-up over 1 worker": "{:.2f}"}, na_rep="–")
            .set_caption(f"{run['images']:,} FER2013 images, {run['chunk_size']} per task, {run['cores']} cores, "
                         f"1-minute load {run['load_average_1min_before']} before the runs ({run.get('date', 'date not recorded')})"))
else:
    display(Markdown(f"*No recorded benchmark yet: run `python benchmarks/scale_out.py 2000 --data-dir $FER_DATA_DIR "
                     f"--joblib 2 --out {P.benchmark}` on a quiet machine.*"))

# %% tags=["hide-input"] mystnb={"figure": {"caption": "MediaPipe extraction speed on this machine: one and two Dask worker processes, and the chapters' default joblib pool; the dashed line is a perfect speed-up from one worker.", "name": "fig-scaling-speed"}}
if recorded:
    figure, axis = plt.subplots(figsize=(6, 3.2))
    axis.bar(speeds.index, speeds["images_per_s"], color=["tab:blue" if name.startswith("local") else "tab:grey" for name in speeds.index])
    if len(one):
        dask_runs = [name for name in speeds.index if name.startswith("local")]
        axis.plot(dask_runs, [one.iloc[0] * speeds.loc[name, "workers"] for name in dask_runs], "k--", label="perfect speed-up")
        axis.legend()
    axis.set(ylabel="images per second", title="MediaPipe extraction (no cache)")
    plt.close(figure)
    display(figure)

# %% tags=["hide-input"]
if recorded:
    dask_two = speeds[speeds.index.str.startswith("local") & (speeds.workers == 2)]
    pool = speeds[speeds.index.str.startswith("joblib")]
    lines = []
    if len(dask_two) and len(one):
        gain = dask_two["speed-up"].iloc[0]
        lines.append(f"Two Dask workers extract **{gain:.2f}×** as fast as one on this {run['cores']}-core machine "
                     f"({dask_two['images_per_s'].iloc[0]:.1f} against {one.iloc[0]:.1f} images per second"
                     + (f", {2 - gain:.2f} short of a perfect 2×)." if gain < 2 else ")."))
    if len(pool) and len(dask_two):
        ratio = dask_two["images_per_s"].iloc[0] / pool["images_per_s"].iloc[0]
        lines.append(f"On the same cores the chapters' joblib pool reaches {pool['images_per_s'].iloc[0]:.1f} images per "
                     f"second, its processes' start-up inside the time: two Dask workers run at {ratio:.2f}× its speed. "
                     + ("On one machine Dask buys little over the pool; its point is the same call on more machines."
                        if ratio < 1.25 else "Part of that is the pool's start-up, which a long extraction pays once."))
    lines.append("Features identical in every run: " + ("**yes**." if bool(speeds["identical"].all()) else "**no** — see the table."))
    display(Markdown(" ".join(lines)))

# %% [markdown]
# ## The same commands on a cluster
#
# **Extraction.** Start a scheduler and workers on machines that have this book's environment
# (`pip install -r requirements.txt -c constraints.txt && pip install -e .`) and MediaPipe's model
# (`FER_MODELS_DIR` where it is not under `shared/models`), then give the extraction the client's
# executor. The chunks travel to the workers inside the tasks, the features come back, and the calling
# process caches them as it does without Dask:
#
# ```bash
# dask scheduler                                        # on one machine: tcp://HOST:8786
# dask worker tcp://HOST:8786 --nthreads 1 --nworkers 2 # on each worker machine: one process per core
# python benchmarks/scale_out.py 20000 --data-dir $FER_DATA_DIR --scheduler tcp://HOST:8786
# ```
#
# ```python
# from dask.distributed import Client
# from fer_lib import face_mesh
#
# with Client("tcp://HOST:8786") as client:
#     features = face_mesh.extract_dataset(faces, executor=client.get_executor())
# ```
#
# **keras-tuner searches.** The chief serves the oracle where the chapter will run (it keeps the
# trials in the chapter's `cache/tuning` folder); each worker runs trials until the oracle says the
# search is done; the chapter afterwards reads the trials instead of training them:
#
# ```bash
# python -m fer_lib.tuning chief  --chapter 07 --profile full --oracle 0.0.0.0:8000
# python -m fer_lib.tuning worker --chapter 07 --profile full --oracle chief-host:8000 --worker-id 0
# python -m fer_lib.tuning worker --chapter 07 --profile full --oracle chief-host:8000 --worker-id 1
# make chapter CH=07 PROFILE=full
# ```
#
# **Chapter 9's Optuna search.** Every worker opens the same study in a shared storage; a trial
# whose worker died is failed by the storage's heartbeat and run again:
#
# ```bash
# python -m fer_lib.video search --profile full --storage postgresql://user@db/fer --trials 100
# ```
#
# The README's *Scaling out* section lists what each worker needs, how ids and restarts work, and
# what is not encrypted.
