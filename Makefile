# Boruta: the two commands are `make test` and `make demo`; `make check` while editing.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed
EXT    := boruta/_matcher$(shell $(PYTHON) -c "import sysconfig;print(sysconfig.get_config_var('EXT_SUFFIX'))")

.PHONY: test check fuzz bench bench-ci bench-e2e demo build clean system-deps

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

# The `system` session backend is tested against a real OpenSSH server, and the
# dashboard in a real headless browser (chromium and its chromedriver). As root (CI)
# we install them from Debian's packages; elsewhere, or if apt cannot, those tests
# skip and say why.
system-deps:
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  missing=""; \
	  [ -x /usr/sbin/sshd ] || missing="$$missing openssh-server"; \
	  [ -x /usr/bin/chromium ] || missing="$$missing chromium"; \
	  [ -x /usr/bin/chromedriver ] || missing="$$missing chromium-driver"; \
	  if [ -n "$$missing" ]; then \
	    echo "installing$$missing for the system session and browser tests"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	      --no-install-recommends $$missing) >/dev/null 2>&1 || echo "  (not installed)"; \
	  fi; \
	fi

test: build system-deps
	$(PY) -c "import boruta._matcher"   # the compiled core must be there
	$(PY) -m pytest -q -p no:cacheprovider

# The edit-and-test loop: every test that starts no process (under a minute).
check: build
	$(PY) -m pytest -q -p no:cacheprovider -m "not slow"

# The long fuzz run against a live server (minutes): a million frames, memory flat.
fuzz: build
	$(PY) -m bench.fuzz --frames 1000000 --memory

bench: build
	$(PY) -m bench

# The short set CI runs (seconds): saved under .benchmarks/ and shown next to the
# previous run; fails only if the compiled matcher is missing or has lost its lead.
bench-ci: build
	$(PY) -m bench.ci

bench-e2e: build
	$(PY) -m bench --e2e

demo: build
	$(PY) -m boruta.sim.demo $(if $(DURATION),--duration $(DURATION))

clean:
	rm -rf $(VENV) build boruta/*.so boruta/_matcher.c *.egg-info
