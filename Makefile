# Sluice — every target works on a fresh machine: it creates .venv/ and installs what is missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: install run test chaos bench lint fmt clean system-deps node-deps

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Sluice needs Python 3.11+"'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/sluice up

# Programs the tests drive beyond Python: Chromium (the web page), tmux (the CLI in a real terminal), Node and npm
# (the JavaScript clients). Installed from Debian when missing and we may (root); otherwise the tests that need them
# skip and say why — except under CI=true, where a missing one fails here, named. tests/support/system_deps.py is
# also what the tests use to find them, so both agree.
system-deps:
	@$(PYTHON) tests/support/system_deps.py

# The official JavaScript clients the Node tests drive (`ai`, `@ag-ui/client`), pinned in tests/node/package-lock.json.
NODE_DEPS := tests/node/node_modules/.package-lock.json
$(NODE_DEPS): tests/node/package.json tests/node/package-lock.json
	@if command -v npm >/dev/null 2>&1; then cd tests/node && npm ci --no-audit --no-fund --loglevel=error; \
	else echo "npm is missing: the Node client tests will be skipped"; fi

# The reference MCP server the tool-runner's MCP tests run over stdio, pinned in tests/mcp_everything/.
MCP_EVERYTHING_DEPS := tests/mcp_everything/node_modules/.package-lock.json
$(MCP_EVERYTHING_DEPS): tests/mcp_everything/package.json tests/mcp_everything/package-lock.json
	@if command -v npm >/dev/null 2>&1; then cd tests/mcp_everything && npm ci --no-audit --no-fund --loglevel=error; \
	else echo "npm is missing: the MCP server-everything test will be skipped"; fi

# The JavaScript tool-runner the tests run (the official @nats-io packages), pinned in tests/js_tool_runner/.
JS_TOOL_RUNNER_DEPS := tests/js_tool_runner/node_modules/.package-lock.json
$(JS_TOOL_RUNNER_DEPS): tests/js_tool_runner/package.json tests/js_tool_runner/package-lock.json
	@if command -v npm >/dev/null 2>&1; then cd tests/js_tool_runner && npm ci --no-audit --no-fund --loglevel=error; \
	else echo "npm is missing: the JavaScript tool-runner test will be skipped"; fi

node-deps: $(NODE_DEPS) $(MCP_EVERYTHING_DEPS) $(JS_TOOL_RUNNER_DEPS)

test: $(STAMP) system-deps node-deps
	$(BIN)/python -m pytest -n 2 --dist loadgroup $(PYTEST_ARGS)

# The nemesis suite (tests/chaos, not part of `make test`): tasks of every kind on a 3-node NATS cluster, 2 edges,
# 2 agent-runners and 2 tool-runners while runners, edges and NATS nodes are killed, frozen and restarted at random.
# SLUICE_CHAOS_SEED=<n> replays a run's choices; SLUICE_CHAOS_SHORT=1 is the short form CI runs.
chaos: $(STAMP)
	SLUICE_CHAOS=1 $(BIN)/python -m pytest tests/chaos -s $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python -m bench

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

fmt: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .sluice
