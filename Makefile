# make demo: install, generate the synthetic dataset, train the paired demo runs,
#            write their .mat files, the comparison plot and the evaluation.
# make test: install and run the whole test suite.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test install clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	PYTHON=$(abspath $(PY)) scripts/paired.sh configs/demo_standard.yaml configs/demo_soft.yaml --seed 0 --device cpu

test: $(STAMP)
	$(PY) -m pytest -q

clean:
	rm -rf outputs data/synthetic-demo data/cache
