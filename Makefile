# servicedesk — the two commands a newcomer needs, and a few more.
#   make run        the whole system on this machine (embedded PostgreSQL and broker, demo traffic)
#   make test       lint, types and the whole test suite against real PostgreSQL and Kafka
#   make test-fast  the pure tests (pytest -m unit): no database, broker or process; seconds

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test test-fast lint types pytest bench clean docs

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "servicedesk needs Python >= 3.11")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	@touch $(STAMP)

run: $(STAMP)
	$(BIN)/desk up --demo

test: lint types pytest

test-fast: $(STAMP)
	$(BIN)/pytest -m unit -q

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

types: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP)
	@mkdir -p .reports
	$(BIN)/pytest --junitxml=.reports/junit.xml

bench: $(STAMP)
	@for b in bench/*.py; do \
		name=$$(basename $$b .py); \
		[ "$$name" = "__init__" ] && continue; \
		case "$$name" in _*) continue;; esac; \
		echo "== bench.$$name"; \
		$(BIN)/python -m bench.$$name || exit 1; \
	done

docs: $(STAMP)
	$(BIN)/desk schemas
	$(BIN)/desk asyncapi

clean:
	rm -rf $(VENV) .reports .mypy_cache .ruff_cache .pytest_cache
