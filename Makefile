# AgentWatch: `make run` starts the gateway, `make test` runs every check.
UV := $(shell command -v uv 2>/dev/null || echo "$(HOME)/.local/bin/uv")
export UV_PYTHON := 3.11
# `make run` applies this declarative config unless AGENTWATCH_CONFIG is already set.
QUICKSTART_CONFIG := examples/quickstart.yaml

.PHONY: run test lint typecheck pytest install services bench clean

install: $(UV)
	$(UV) sync --frozen

$(UV):
	@command -v uv >/dev/null 2>&1 || python3 -m pip install --quiet --user uv || python3 -m pip install --quiet uv

run: install
	$(UV) run agentwatch db upgrade
	AGENTWATCH_CONFIG="$${AGENTWATCH_CONFIG:-$(QUICKSTART_CONFIG)}" $(UV) run agentwatch serve

services:
	./scripts/ensure-services.sh

lint: install
	$(UV) run ruff check --no-cache src tests bench
	$(UV) run ruff format --no-cache --check src tests bench

typecheck: install
	$(UV) run mypy

pytest: install services
	$(UV) run pytest -q

test: lint typecheck pytest

bench: install
	@command -v wrk >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq wrk)
	$(UV) run python bench/run.py

clean:
	rm -rf .venv .mypy_cache .ruff_cache .pytest_cache
