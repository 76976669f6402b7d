# recsys: `make train` compares optimizers on the default dataset and logs to MLflow.
# Every target works from a fresh clone: the first one that needs it creates .venv.

PYTHON  ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
DATASET ?= data/synthetic/u.data
ML100K  ?= data/ml-100k/u.data
comma   := ,
OPTIMIZERS ?= gd,gd-bb,newton-cg,newton-pcg,lbfgs,als
STUDY      ?= gd,gd-bb,gd-momentum,newton-cg,newton-pcg,newton-cg-gn,trust-ncg,trust-krylov,lbfgs,cg,als,sgd
ARGS    ?=
PORT    ?= 5000

.PHONY: install data train compare study sweep report bench bench-kernels bench-scale bench-train bench-load bench-peers ui test test-fast check-grad clean help

help:
	@echo "make train      install, generate the default dataset, compare $(OPTIMIZERS), log to MLflow"
	@echo "make compare    every optimizer in the registry, 30 s each (STUDY=..., DATASET=..., ARGS='--seeds 0,1,2')"
	@echo "make study      performance profiles of every optimizer over a suite of problems (ML100K=u.data adds MovieLens)"
	@echo "make sweep      tune rank and penalties on validation, refit, report test RMSE once"
	@echo "make ui         the MLflow UI on http://127.0.0.1:$(PORT)"
	@echo "make report     the case study (Markdown + figures) of the newest comparison"
	@echo "make bench      kernels vs floor, peers (ML100K=u.data), 25M scale run, make-train time, 25M load vs cache"
	@echo "make test       the whole test suite"
	@echo "make check-grad finite-difference check of the gradient and Hessian-vector product"
	@echo "make clean      remove the venv, the MLflow store, generated data and caches"

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[test]"  # the pinned stack the figures came from
	@$(BIN)/python -c "from pipeline.objectives import BiasedMF; print(f'numba kernels compiled in {BiasedMF.compile_kernels():.1f} s (cached: no run compiles them again)')"
	@touch $(STAMP)

install: $(STAMP)

data/synthetic/u.data: | $(STAMP)
	$(BIN)/recsys data synth --out $@

data: data/synthetic/u.data

train: install data
	$(BIN)/recsys compare --dataset $(DATASET) --optimizers $(OPTIMIZERS) $(ARGS)

compare: install data
	$(BIN)/recsys compare --dataset $(DATASET) --optimizers $(STUDY) --max-seconds 30 $(ARGS)

study: install data
	$(BIN)/recsys study --datasets $(subst $(eval) ,$(comma),$(strip data/synthetic/u.data $(wildcard $(ML100K)))) --optimizers $(STUDY) $(ARGS)

sweep: install data
	$(BIN)/recsys sweep --dataset $(DATASET) $(ARGS)

report: install
	$(BIN)/recsys report $(ARGS)

bench: bench-kernels bench-peers bench-scale bench-train bench-load

bench-kernels: install
	$(BIN)/python benchmarks/kernels.py

bench-scale: install
	$(BIN)/python benchmarks/scale.py

bench-train: install
	bash benchmarks/train_time.sh

bench-load: install
	$(BIN)/python benchmarks/load.py

.venv-peers/.installed:
	$(PYTHON) -m venv .venv-peers
	.venv-peers/bin/python -m pip install --quiet --upgrade pip
	.venv-peers/bin/python -m pip install --quiet scikit-surprise cmfrec optuna pandas threadpoolctl
	@touch $@

bench-peers: install .venv-peers/.installed
	$(BIN)/python benchmarks/peers.py $(wildcard $(ML100K))  # MovieLens 100K only where the file is

check-grad: install data
	$(BIN)/recsys check-grad --dataset $(DATASET) $(ARGS)

ui: install
	$(BIN)/recsys ui --port $(PORT)

test: install
	$(BIN)/python -m pytest -q

test-fast: install
	$(BIN)/python -m pytest -q -m "not slow"

clean:
	rm -rf $(VENV) .venv-peers mlflow.db mlartifacts mlruns data/synthetic data/cache benchmarks/results reports .pytest_cache .hypothesis
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
