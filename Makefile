# The two commands of the README:
#   make reproduce   set up a fresh machine and run the main job
#   make test        set up what the tests need and run them
#   make notebooks   bring each notebook pair (notebooks/NN_name.py and .ipynb) in step after an edit
#   make weights     train every shipped model from its recipe (recipes/*.toml) and install it
PRESET ?= quick

.PHONY: setup setup-test reproduce test lint notebooks figures weights

setup:
	bash scripts/setup.sh

setup-test:
	bash scripts/setup.sh --test

reproduce: setup
	.venv/bin/facekit reproduce --preset $(PRESET) --out results/$(PRESET)

test: setup-test
	.venv/bin/ruff check facekit tests benchmarks notebooks
	.venv/bin/python -m pytest -q --durations=15

lint:
	.venv/bin/ruff check facekit tests benchmarks notebooks

# the side edited last wins: an edited .py rewrites its .ipynb (outputs kept), and the reverse
notebooks:
	.venv/bin/jupytext --sync notebooks/[0-9][0-9]_*.py

# redraw results/rate_accuracy.png and rate_accuracy_roi.png from the committed results JSON
figures:
	.venv/bin/python -m facekit.plots results/rate_accuracy.json

# each recipe trains into $(WEIGHTS_RUNS)/<name> (continuing a run stopped there), then goes into the
# weights store with its manifest entry; WEIGHTS_PRESET=gpu on a machine with CUDA
FACEKIT ?= .venv/bin/facekit
RECIPES ?= $(wildcard recipes/*.toml)
WEIGHTS_PRESET ?= cpu
WEIGHTS_RUNS ?= runs/weights
WEIGHTS_FOLDER ?= facekit/weights
weights:
	@for r in $(RECIPES); do \
	  n=$$(basename $$r .toml); resume=$$(test -f $(WEIGHTS_RUNS)/$$n/run.json && echo --resume); \
	  echo "== $$r -> $(WEIGHTS_RUNS)/$$n $$resume"; \
	  $(FACEKIT) train --recipe $$r --preset $(WEIGHTS_PRESET) --out $(WEIGHTS_RUNS)/$$n $$resume \
	    --install --weights-folder $(WEIGHTS_FOLDER) || exit 1; \
	done
