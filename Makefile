# The two quick-start commands are `make run` and `make test`; both set everything up first.
VENV ?= .venv
WORKDIR ?= workdir
BIN := $(VENV)/bin

.PHONY: setup run data pipeline test test-fast lint format bench bench-week bench-year bench-serving bench-drift bench-estimate clean

setup:
	@scripts/setup.sh

## Prepare the full data set and run the whole pipeline on it (8 to 21 minutes on 2 cores, by the host's speed).
run: setup data pipeline

data:
	$(BIN)/fmnist data prepare --workdir $(WORKDIR)

pipeline:
	$(BIN)/fmnist run --workdir $(WORKDIR)

## The default test suite: unit, component and end-to-end tests on slices of the real data.
test: setup
	$(BIN)/python -m pytest

## Everything but the end-to-end pipeline runs (a minute).
test-fast: setup
	$(BIN)/python -m pytest -m "not e2e"

## Style, the layering contract (pyproject.toml [tool.importlinter]) and dead code (vulture).
lint: setup
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/vulture

format: setup
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

## Full-data benchmark: fresh pipeline runs and cached reruns, figures to benchmarks/results/.
BENCH_RUNS ?= 3
bench: setup data
	$(BIN)/python benchmarks/pipeline_benchmark.py --workdir $(WORKDIR)/bench --data-dir $(WORKDIR)/data --runs $(BENCH_RUNS)

## Serving and drift benchmarks against the model `make run` pushed (run that first).
bench-serving: setup
	$(BIN)/python benchmarks/serving_benchmark.py --model-dir $$(ls -d $(WORKDIR)/serving/fashion_mnist/[0-9]* | sort -n | tail -1)

bench-drift: setup
	$(BIN)/python benchmarks/drift_benchmark.py --workdir $(WORKDIR)

## Label-free accuracy estimate against the truth on shifted test images (about 4 minutes).
bench-estimate: setup
	$(BIN)/python benchmarks/accuracy_estimate_benchmark.py --workdir $(WORKDIR)

## A week of data: six spans arriving one per run, warm start vs from scratch, two bad days (about an hour).
bench-week: setup
	$(BIN)/python benchmarks/continuous_benchmark.py --workdir $(WORKDIR)/bench-week

## A year of data, compressed: 60 daily spans with retention and a bounded window against none (3.5 hours here).
bench-year: setup
	$(BIN)/python benchmarks/year_benchmark.py --workdir $(WORKDIR)/bench-year

clean:
	rm -rf $(WORKDIR)
