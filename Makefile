# Every target bootstraps .venv itself: a fresh clone needs only `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: test test-slow demo bench browser-deps clean-venv

$(STAMP): setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow

demo: $(STAMP)
	$(PY) -m experiments.demo

# With .venv-originals (`make originals`; not built here: it needs PyPI and ~600 MB), the original
# implementations' workloads run in the same run, each group right after ours, and the table gives
# each ratio; without it those columns stay empty and the table says why.
bench: $(STAMP)
	$(PY) -m experiments.benchmark

# Debian's Chromium for the studio's browser tests (tests/studio/test_studio_browser.py, which skip
# without it); Playwright drives it through executable_path, never downloading a browser. Root only.
browser-deps:
	@test -x /usr/bin/chromium || { apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

clean-venv:
	rm -rf $(VENV)

# The originals (Magenta 2.1.4 on TensorFlow-CPU, PianoNet's Keras models) in their own venv, and
# the fidelity fixtures they compute (tests/fixtures/originals/). Optional: test and demo never
# need them. See originals/README.md.
.PHONY: originals fixtures
originals:
	test -x .venv-originals/bin/python || bash originals/setup.sh .venv-originals

fixtures: originals
	.venv-originals/bin/python originals/make_fixtures.py

# The prepared GPU run (experiments/gpu_check.py), for a lent GPU machine: it has JAX with CUDA
# and no network, so it runs with its own python3 plus the few pure-Python packages it lacks,
# carried as wheels in .whl/ (fetch them here first with `make gpu-wheels`; carry .whl).
GPU_WHEELS := ml_collections==1.1.0
.PHONY: gpu-check gpu-wheels
gpu-wheels:
	$(PYTHON) -m pip download -q --no-deps --only-binary=:all: -d .whl $(GPU_WHEELS)

gpu-check:
	python3 -m pip install -q --no-index --no-deps --target .gpu-site .whl/*.whl
	PYTHONPATH=.gpu-site:. python3 -m experiments.gpu_check --results_dir=bench
