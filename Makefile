# make demo: install, generate the synthetic dataset, train the paired demo runs,
#            write their .mat files, the comparison plot, the evaluation and one
#            ranked-list picture per run (outputs/demo_*/ranked_random.png).
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

DEMO_RUNS := outputs/demo_standard outputs/demo_soft

demo: $(STAMP)
	PYTHON=$(abspath $(PY)) scripts/paired.sh configs/demo_standard.yaml configs/demo_soft.yaml --seed 0 --device cpu
	for run in $(DEMO_RUNS); do $(PY) -m reid.visualize $$run || exit 1; done

test: $(STAMP)
	$(PY) -m pytest -q

clean:
	rm -rf outputs data/synthetic-demo data/cache
