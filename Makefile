# Boruta: the two commands are `make test` and `make demo`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed
EXT    := boruta/_matcher$(shell $(PYTHON) -c "import sysconfig;print(sysconfig.get_config_var('EXT_SUFFIX'))")

.PHONY: test test-pure bench bench-e2e demo build clean

$(PY):
	$(PYTHON) -m venv $(VENV)

# Dependencies change only with pyproject.toml; the stamp keeps reruns fast.
$(STAMP): pyproject.toml | $(PY)
	$(PIP) install --quiet --upgrade pip setuptools wheel
	$(PIP) install --quiet "Cython>=3.0" "numpy>=1.26"
	$(PIP) install --quiet --no-build-isolation -e ".[test]"
	$(PIP) install --quiet uvloop || true
	touch $(STAMP)

$(EXT): boruta/_matcher.pyx setup.py $(STAMP)
	$(PY) setup.py --quiet build_ext --inplace

build: $(STAMP) $(EXT)

test: build
	$(PY) -c "import boruta._matcher"   # the compiled core must be there
	$(PY) -m pytest -q -p no:cacheprovider

bench: build
	$(PY) -m bench

bench-e2e: build
	$(PY) -m bench --e2e

demo: build
	$(PY) -m boruta.demo

clean:
	rm -rf $(VENV) build boruta/*.so boruta/_matcher.c *.egg-info
