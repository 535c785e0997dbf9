# Developer entry points. `make demo` trains on simulated data and serves the API on
# http://127.0.0.1:3000; `make test` runs the test suite. Both create .venv first.

SHELL := /bin/bash
.DEFAULT_GOAL := help

# Python 3.12, the Lambda runtime's version: the first interpreter that actually runs.
PYTHON ?= $(shell for p in python3.12 $$HOME/.pyenv/versions/3.12*/bin/python3.12 /usr/local/bin/python3.12 /usr/bin/python3.12; do $$p -c 'import sys; assert sys.version_info[:2] == (3, 12)' >/dev/null 2>&1 && { echo $$p; break; }; done)
VENV := .venv
BIN := $(VENV)/bin
SAM_VENV := .venv-sam
SAM := $(SAM_VENV)/bin/sam
PY_DIR := $(dir $(shell $(PYTHON) -c 'import sys; print(sys.executable)' 2>/dev/null))

DATA ?= data/transactions.parquet
BUNDLE ?= model/bundle
DATABASE_URL ?= sqlite:///audit.db
HOST ?= 127.0.0.1
PORT ?= 3000
LAMBDA_PORT ?= 3001
# Offline checks of the template need a region and (dummy) credentials; nothing is sent.
AWS_OFFLINE := AWS_DEFAULT_REGION=us-east-1 AWS_ACCESS_KEY_ID=offline AWS_SECRET_ACCESS_KEY=offline SAM_CLI_TELEMETRY=0

.PHONY: help install port-free twin-ports-free demo simulate train serve twin audit-schema test test-fast lint iac-lint sam-build bench bench-smoke reference-train clean

help:
	@echo "make demo        simulate history, train, serve on http://$(HOST):$(PORT)"
	@echo "make test        run the test suite (PostgreSQL and reference-data tests skip unless configured)"
	@echo "make twin        serve stage 1 and a local Lambda endpoint for stage 2"
	@echo "make lint        ruff and mypy;  make iac-lint: sam validate --lint and cfn-lint"
	@echo "make sam-build   sam build (Python 3.12 on PATH, no container)"
	@echo "make bench       full benchmark suite (bench-smoke: the short CI version)"

$(BIN)/.installed: pyproject.toml
	@test -n "$(PYTHON)" || { echo "Python 3.12 not found: install it or pass PYTHON=/path/to/python3.12"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

install: $(BIN)/.installed

$(SAM_VENV)/.installed:
	@test -n "$(PYTHON)" || { echo "Python 3.12 not found"; exit 1; }
	$(PYTHON) -m venv $(SAM_VENV)
	$(SAM_VENV)/bin/pip install --quiet --upgrade pip
	$(SAM_VENV)/bin/pip install --quiet aws-sam-cli cfn-lint
	touch $@

$(DATA): | install
	$(BIN)/python -m training simulate --out $(DATA)

simulate: $(DATA)

$(BUNDLE)/manifest.json: $(DATA)
	$(BIN)/python -m training train --data $(DATA) --out $(BUNDLE)

train: $(BUNDLE)/manifest.json

audit-schema: install
	DATABASE_URL=$(DATABASE_URL) $(BIN)/python -m fraudscore.audit_schema

# Binds HOST and each port given, as the server will; exits with the error if one fails.
# uvicorn's own message for a taken port does not say how to pick another.
define PORT_CHECK
import socket, sys
host = sys.argv[1]
for port in map(int, sys.argv[2:]):
    try:
        family, kind, protocol, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        with socket.socket(family, kind, protocol) as listener:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind(address)
    except OSError as exc:
        sys.exit(f"cannot listen on {host} port {port}: {exc}")
endef
export PORT_CHECK

port-free: install
	@$(BIN)/python -c "$$PORT_CHECK" '$(HOST)' '$(PORT)' \
		|| { echo "pick another port, for example PORT=3100 make $(MAKECMDGOALS)"; exit 1; }

serve: port-free train audit-schema
	MODEL_URI=$(BUNDLE) DATABASE_URL=$(DATABASE_URL) $(BIN)/uvicorn functions.stage1.app:app --host $(HOST) --port $(PORT)

demo: serve

# The twin always listens on 127.0.0.1: stage 1 on PORT, the Lambda Invoke API on LAMBDA_PORT.
twin-ports-free: install
	@$(BIN)/python -c "$$PORT_CHECK" 127.0.0.1 '$(PORT)' '$(LAMBDA_PORT)' \
		|| { echo "pick other ports, for example PORT=3100 LAMBDA_PORT=3101 make twin"; exit 1; }

twin: twin-ports-free train audit-schema
	MODEL_URI=$(BUNDLE) DATABASE_URL=$(DATABASE_URL) $(BIN)/python -m fraudscore.local_twin --port $(PORT) --lambda-port $(LAMBDA_PORT)

test: install
	$(BIN)/pytest

test-fast: install
	$(BIN)/pytest -m "not slow"

lint: install
	$(BIN)/ruff check layers functions training tests benchmarks
	$(BIN)/mypy layers/shared/fraudscore training

iac-lint: $(SAM_VENV)/.installed
	$(AWS_OFFLINE) $(SAM) validate --lint
	$(SAM_VENV)/bin/cfn-lint template.yaml

# sam build, then ship compiled .pyc: Lambda's code directory is read-only, so without
# them every cold start compiles every module (docs/benchmarks.md, "Shipping .pyc").
# numpy's and scipy's own test suites are removed first to stay under the 250 MiB limit.
BUILD := .aws-sam/build
sam-build: $(SAM_VENV)/.installed
	PATH="$(PY_DIR):$$PATH" $(AWS_OFFLINE) $(SAM) build
	find $(BUILD)/Stage1Function $(BUILD)/Stage2Function $(BUILD)/SharedLayer/python \
	    -type d -name tests \( -path '*/numpy/*' -o -path '*/scipy/*' \) -prune -exec rm -rf {} +
	# FastAPI imports pydantic.v1, when present, only to reject v1 models (21 ms of each
	# stage-1 cold start); without it, it treats every model as a v2 model.
	rm -rf $(BUILD)/Stage1Function/pydantic/v1
	$(PYTHON) -m compileall -q -j 0 --invalidation-mode unchecked-hash \
	    $(BUILD)/Stage1Function $(BUILD)/Stage2Function $(BUILD)/SharedLayer/python \
	    $(BUILD)/AuditReplayFunction $(BUILD)/AuditSchemaFunction

bench: install
	$(BIN)/python -m benchmarks --full

bench-smoke: install
	$(BIN)/python -m benchmarks --smoke

clean:
	rm -rf .aws-sam data model audit.db audit.db-* audit-spool.jsonl audit-spool.jsonl.*

# Full run on the public reference data set (see docs/model-quality.md).
reference-train: install
	@test -n "$(FRAUD_REFERENCE_DATA)" || { echo "set FRAUD_REFERENCE_DATA to the reference Parquet file"; exit 1; }
	$(BIN)/python -m training train --data $(FRAUD_REFERENCE_DATA) --out model/reference \
	    --test-start 2018-08-08 --train-start 2018-05-08
