# The two commands of the README:
#   make reproduce   set up a fresh machine and run the main job
#   make test        set up what the tests need and run them
#   make notebooks   bring each notebook pair (notebooks/NN_name.py and .ipynb) in step after an edit
PRESET ?= quick

.PHONY: setup setup-test reproduce test lint notebooks figures

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
