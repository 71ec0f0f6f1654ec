# One entry point for people and CI. `make help` lists the targets.
SHELL := /bin/bash
PY := .venv/bin/python
# Every target runs in development mode (short test secrets accepted; see README "Security"). Production
# deployments set APP_ENV=production (the default when unset) and real secrets.
export APP_ENV ?= development

.PHONY: help lint venv stack-install stack-up stack-down stack-status stack-reset test test-unit demo bench chaos worker api simulator mutation

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

venv:  ## create .venv with the pinned dependencies
	@bash scripts/bootstrap_venv.sh

stack-install: venv  ## install Kafka, Redis, the S3 server and the CDN edge (cached in .stack/)
	@bash scripts/stack.sh install

stack-up: stack-install  ## start the local stack (idempotent)
	@bash scripts/stack.sh up

stack-down:  ## stop every process of the local stack
	@bash scripts/stack.sh down

stack-status:  ## show what is running
	@bash scripts/stack.sh status

stack-reset:  ## stop the stack and wipe its data (keeps downloads)
	@bash scripts/stack.sh reset

test:  ## THE test command: installs and starts everything, runs all tests, stops the stack
	@bash scripts/test.sh

test-unit: venv  ## fast tests that need no stack
	@$(PY) -m pytest tests/unit tests/agents tests/api -q

demo: stack-up  ## the whole pipeline with a crowd of simulated app users (PHOTOS=dir: your own photos)
	@$(PY) -m tools.demo $(if $(PHOTOS),--photos "$(PHOTOS)")

bench: stack-up  ## benchmarks; writes bench/latest.json
	@$(PY) -m bench

mutation: venv  ## mutation score of the deciding modules against the fast tests (slow; not part of make test; docs/MUTATION.md)
	@.venv/bin/python -m pip install -q -c constraints.txt -e '.[dev]'
	@bash scripts/mutation.sh

chaos: stack-install  ## fault suite on a private 3-broker + Redis Cluster stack (other ports); writes chaos/latest.json and CHAOS.md (CHAOS_ARGS='--only redis_master_failover': one fault)
	@$(PY) -m tools.chaos $(CHAOS_ARGS)

lint: venv  ## ruff and mypy (install the dev extra: .venv/bin/pip install -e '.[dev]')
	@.venv/bin/ruff check models streams agents api simulator tools bench
	@.venv/bin/mypy models streams agents api tools

worker: venv  ## run one Faust worker in the foreground
	@.venv/bin/faust -A streams.app worker -l info

api: venv  ## run the API in the foreground
	@$(PY) -m api
