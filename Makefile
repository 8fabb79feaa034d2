# Two commands on a fresh machine: `make demo` and `make test`. Both create or reuse .venv.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The CPU build of torch for this environment; GPU users install their own torch first (see README).
TORCH ?= torch==2.13.0

.PHONY: install demo test clean

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -e ".[dev]"
	# DeepSpeed JIT-compiles its CPU shared-memory collective on first use (minutes on 2 cores): once, here
	$(BIN)/python -c "from deepspeed.ops.op_builder.cpu import ShareMemCommBuilder as B; B().load(verbose=False)"
	# bubblewrap isolates the code sandbox; best effort where we are root on Debian (otherwise rewards warns)
	command -v bwrap >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  (apt-get update -qq && apt-get install -y -qq bubblewrap >/dev/null) || true; }
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/python recipes/pipeline.py --config recipes/configs/tiny/pipeline.yaml

test: $(STAMP)
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) build *.egg-info
