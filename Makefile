# fer-book: make book | make test | make chapter CH=01_data PROFILE=full | make render PROFILE=full
# Every target creates/updates the virtual environment first when the pinned stack changed.

PROFILE ?= sample
CH ?=
# VERBOSE=1: the kernels' C++ log lines (TensorFlow, absl, MediaPipe) on the terminal, not in cache/logs/
VERBOSE ?=
export VERBOSE
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
RUN := $(PY) -m fer_lib.runner
# Full-profile chapters cheap enough for nbval to re-execute in CI when the full data is present
# ($FER_DATA_DIR): their checked cells guard the data layer against regressions.
NBVAL_FULL := book/executed/full/01_data.ipynb

.PHONY: help venv book execute chapter render check-book check-numbers test smoke sample-data clean train full-run readme-example

help:
	@echo "make book [PROFILE=sample|full|smoke]   execute every chapter, then build the HTML book"
	@echo "make chapter CH=01_data [PROFILE=...]    execute one chapter"
	@echo "make render [PROFILE=full]               build the HTML book from executed notebooks only"
	@echo "make check-book                          the full book with warnings as errors, then every page in headless Chromium"
	@echo "make check-numbers [PROFILE=full] [SINCE=HEAD]  typed numbers in the prose that a re-execution changed"
	@echo "make test                                unit tests + nbval executing every chapter under smoke"
	@echo "make train [PROFILE=full]                train chapter 3's converged 2D models in the background"
	@echo "make full-run [CHAPTERS='03 04 …']        make train's fits, then every chapter (or those) under full, in the background"
	@echo "make readme-example                      rerun README's predict example on the packaged zoo, write its output there"
	@echo "make venv                                create/update $(VENV) with the pinned stack"
	@echo "VERBOSE=1 (any target)                   the kernels' C++ log lines on the terminal, not in cache/logs/"

$(STAMP): requirements.txt constraints.txt pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt -c constraints.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $@

venv: $(STAMP)

execute: venv
	$(RUN) execute --profile $(PROFILE)

chapter: venv
	@test -n "$(CH)" || { echo "name a chapter: make chapter CH=01_data (chapters: $$($(RUN) list | tr '\n' ' '))"; exit 2; }
	$(RUN) execute --profile $(PROFILE) --chapter $(CH)

render: venv
	$(RUN) render --profile $(PROFILE)

book: execute render

# The committed full book, rendered with warnings as errors, then every page opened in headless Chromium
# (Debian's chromium + chromium-driver): console errors, undecoded images, broken links and anchors fail it;
# a screenshot per page goes to _build/full/screenshots/.
check-book: venv
	$(RUN) render --profile full --strict
	$(PY) -m fer_lib.browser_check _build/full/_build/html

# After re-executing chapters: every percentage or decimal typed into their prose that the record field or
# output position which gave it at $(SINCE) no longer gives, with what it says now (fer_lib.typed_numbers).
SINCE ?= HEAD
check-numbers: venv
	$(PY) -m fer_lib.typed_numbers --since $(SINCE) book/executed/$(PROFILE)/*.ipynb

smoke: venv
	$(RUN) execute --profile smoke

# nbval executes every smoke chapter once, from a parameterised but unexecuted copy (runner prepare):
# papermill first and nbval again would run each twice. Chapter 01 alone is executed first, because its
# NBVAL_CHECK_OUTPUT cells compare against stored outputs.
# pytest-xdist spreads the test modules and notebooks over TEST_WORKERS processes (`--dist loadscope`: a
# notebook's cells, like a module's tests, stay on one worker, in order). Most of the time goes to building
# and tracing Keras graphs on one core, so two workers on two cores take about 40 % less time than one.
# Chapters that read what others wrote run in later waves: chapters 4-8 compare against chapter 3's 2D
# predictions, chapters 10-11 read every chapter's records and zoo exports (tests/test_book_structure.py
# checks the waves against the chapters' sources). TEST_WORKERS=0: everything in this process, in order.
NBVAL_SMOKE := _build/nbval/smoke
NBVAL_WAVE2 := 04_rq2_1_landmarks 05_rq2_2_voxels 06_rq2_3_mesh 07_blendshapes 08_sketches
NBVAL_WAVE3 := 10_comparison 11_feedback
TEST_WORKERS ?= logical
PYTEST := $(PY) -m pytest -n $(TEST_WORKERS) --dist loadscope --nbval-lax --durations=15
test: venv
	$(RUN) execute --profile smoke --chapter 01_data
	rm -rf $(NBVAL_SMOKE) && $(RUN) prepare --profile smoke --out $(NBVAL_SMOKE) --except 01_data
	@if $(RUN) has-full-data; then full="$(NBVAL_FULL)"; else echo "nbval: full-profile notebooks not re-checked (set FER_DATA_DIR to the full data)"; full=""; fi; \
	later="$(NBVAL_WAVE2) $(NBVAL_WAVE3)"; first=""; \
	for nb in $(NBVAL_SMOKE)/*.ipynb; do case " $$later " in *" $$(basename $$nb .ipynb) "*) ;; *) first="$$first $$nb";; esac; done; \
	set -x; $(PYTEST) tests book/executed/smoke/01_data.ipynb $$first $$full
	$(PYTEST) $(patsubst %,$(NBVAL_SMOKE)/%.ipynb,$(NBVAL_WAVE2))
	$(PYTEST) $(patsubst %,$(NBVAL_SMOKE)/%.ipynb,$(NBVAL_WAVE3))

# Chapter 3's converged models take hours on a CPU: train them in the background (resumable; a progress
# line per epoch in cache/logs/03_rq1_2d-$(PROFILE).log), then `make chapter CH=03_rq1_2d PROFILE=...`.
train: venv
	@mkdir -p cache/logs
	nohup $(PY) -m fer_lib.pixels train --profile $(PROFILE) > cache/logs/03_rq1_2d-$(PROFILE).out 2>&1 &
	@echo "training in the background: tail -f cache/logs/03_rq1_2d-$(PROFILE).log"

# The whole full-profile book from where its stores and caches stand, unattended: chapter 3's converged
# fits (resumed), then every chapter executed in order (each reads what is cached and trains the rest).
# CHAPTERS='03 04 05' executes only those (default: all). Progress: cache/logs/full-run.out (a line per
# chapter) and each fit's log. Then commit, and run
# `make check-numbers PROFILE=full` before trusting the chapters' prose.
full-run: venv
	@mkdir -p cache/logs
	nohup sh -c '$(PY) -m fer_lib.pixels train --profile full > cache/logs/03_rq1_2d-full.out 2>&1 && \
		$(RUN) execute --profile full $(foreach c,$(CHAPTERS),--chapter $(c))' > cache/logs/full-run.out 2>&1 &
	@echo "running in the background: tail -f cache/logs/full-run.out cache/logs/03_rq1_2d-full.log"

# README's "Use the book's models": the command run on the committed example photo with the packaged zoo
readme-example: venv
	$(PY) -m fer_lib.readme_example

sample-data: venv
	@test -n "$$FER_DATA_DIR" || { echo "set FER_DATA_DIR to the folder with the full .npz archives"; exit 2; }
	$(PY) -m fer_lib.sample --source "$$FER_DATA_DIR" --out data/sample

clean:
	rm -rf _build book/executed/smoke book/executed/sample results/smoke results/sample
