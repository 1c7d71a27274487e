# securetransport.ca_rotation — developer and CI entry points.
#   make demo   create .venv, install the collection, start the local stack, run rotate.yml
#   make test   install what the tests need and run unit, integration, sanity and lint
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON      ?= python3
VENV        := $(CURDIR)/.venv
BIN         := $(VENV)/bin
BUILD       := $(CURDIR)/.build
DEV_COLL    := $(BUILD)/collections
DEV_LINK    := $(DEV_COLL)/ansible_collections/securetransport/ca_rotation
# outside the checkout (ansible-test must not see the repository around the copy), one per checkout
SANITY_BASE ?= /tmp/securetransport-ca_rotation-sanity-$(shell printf %s '$(CURDIR)' | sha1sum | cut -c1-10)
SANITY_ROOT := $(SANITY_BASE)/ansible_collections/securetransport/ca_rotation
INSTALLED   := $(BUILD)/installed
VERSION     := $(shell sed -n 's/^version: *//p' galaxy.yml)
TARBALL     := $(BUILD)/dist/securetransport-ca_rotation-$(VERSION).tar.gz
PIP_SHIM    := $(HOME)/.ansible/test/cache/get_pip_24_2.py
PYTEST_ARGS ?=
export ANSIBLE_COLLECTIONS_PATH := $(DEV_COLL)
export PATH := $(BIN):$(PATH)

.PHONY: help venv dev build install demo demo-down test test-checks test-services unit integration integration-main integration-side faults soak-short sanity lint bench soak clean

help:
	@echo "make demo   - create .venv, install the collection, start the local stack, run playbooks/rotate.yml"
	@echo "make test   - install test requirements and run unit, integration, sanity and lint"
	@echo "make bench  - run the benchmarks under bench/ (prints figures)"
	@echo "make clean  - stop the local stack and remove build output"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: requirements.txt requirements-test.txt | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements-test.txt
	touch $@

venv: $(VENV)/.installed

# the source tree, importable as ansible_collections.securetransport.ca_rotation
dev: venv
	@mkdir -p $(dir $(DEV_LINK))
	@[ -L $(DEV_LINK) ] || ln -sfn $(CURDIR) $(DEV_LINK)

build: venv
	@mkdir -p $(BUILD)/dist
	$(BIN)/ansible-galaxy collection build --force --output-path $(BUILD)/dist .

install: build
	$(BIN)/ansible-galaxy collection install --offline --force -p $(INSTALLED) $(TARBALL)

DEMO_EPOCH  ?= 20s
DEMO_EPOCHS ?= 3
demo: install
	$(BIN)/python scripts/localstack up --rebuild --epoch-duration $(DEMO_EPOCH)
	$(BIN)/python scripts/ca-rotation-demo --epochs $(DEMO_EPOCHS) --collections $(INSTALLED) $(DEMO_ARGS)

demo-down: venv
	$(BIN)/python scripts/localstack down

# two streams, one per core, of about the same length: most of the integration suite and the short soak (printed as
# they run) beside the checks, the multi-cluster integration tests, the fault suite and the ansible-core edges (lint,
# sanity, unit, integration-side, faults, test-matrix-edges; printed when they end, also in .build/test-checks.log). Each stream runs its steps in order and stops at the first
# failure; make test fails when either does.
test: dev
	@set -o pipefail; mkdir -p $(BUILD); start=$$(date +%s); \
	$(MAKE) --no-print-directory -j1 test-checks > $(BUILD)/test-checks.log 2>&1 & checks=$$!; \
	$(MAKE) --no-print-directory -j1 test-services 2>&1 | tee $(BUILD)/test-services.log; services=$$?; \
	wait $$checks; checks_rc=$$?; \
	echo "== checks (lint, sanity, unit, integration-side, faults, test-matrix-edges): exit $$checks_rc"; cat $(BUILD)/test-checks.log; \
	echo "== services (integration-main, soak-short): exit $$services; make test took $$(( $$(date +%s) - start ))s"; \
	[ $$services -eq 0 ] && [ $$checks_rc -eq 0 ]

test-checks: lint sanity unit integration-side faults test-matrix-edges

test-services: integration-main soak-short

# the integration suite split between the two streams (make integration runs all of it)
INTEGRATION_SIDE := tests/integration/test_rotation_multicluster.py tests/integration/test_dual_mode.py

unit: dev
	$(BIN)/python -m pytest tests/unit -q $(PYTEST_ARGS)

integration: dev
	$(BIN)/python -m pytest tests/integration -q $(PYTEST_ARGS)

integration-main: dev
	$(BIN)/python -m pytest tests/integration -q --durations=15 $(addprefix --ignore=,$(INTEGRATION_SIDE)) $(PYTEST_ARGS)

integration-side: dev
	$(BIN)/python -m pytest $(INTEGRATION_SIDE) -q $(PYTEST_ARGS)

$(PIP_SHIM): .ci/get_pip_shim.py
	@mkdir -p $(dir $@)
	cp $< $@

# ansible-test needs the collection under ansible_collections/<ns>/<name>: sanity runs on a copy of the
# files git knows about (tracked + new, not ignored).
sanity: dev $(PIP_SHIM)
	@rm -rf $(SANITY_ROOT) && mkdir -p $(SANITY_ROOT)
	@git ls-files -z --cached --others --exclude-standard | grep -zv '^\.ci/' | \
		while IFS= read -r -d '' f; do [ -e "$$f" ] && printf '%s\0' "$$f"; done | \
		xargs -0 cp --parents -t $(SANITY_ROOT)
	cd $(SANITY_ROOT) && $(BIN)/ansible-test sanity --python 3.11 --color no $(SANITY_ARGS)

lint: dev
	$(BIN)/ansible-lint --profile production --offline
	$(BIN)/antsibull-changelog lint

faults: dev
	$(BIN)/python -m pytest tests/faults -q --durations=10 $(PYTEST_ARGS)

bench: dev
	@set -e; for b in bench/bench_*.py; do echo "== $$b"; $(BIN)/python $$b; done

soak-short: dev
	SOAK_EPOCHS=5 $(BIN)/python -m pytest tests/soak -q -s -m soak $(PYTEST_ARGS)

SOAK_EPOCHS ?= 100
soak: dev
	SOAK_EPOCHS=$(SOAK_EPOCHS) $(BIN)/python -m pytest tests/soak -q -s -m soak $(PYTEST_ARGS)

# the ansible-core versions of meta/runtime.yml (noxfile.py): unit tests and the rotate smoke per version, each in its
# own venv under .build/nox (reused); `make test` runs the smoke under the oldest and the newest (nox tag "edge")
.PHONY: test-matrix test-matrix-edges changelog
test-matrix: dev
	$(BIN)/nox $(NOX_ARGS)

test-matrix-edges: dev
	$(BIN)/nox -t edge $(NOX_ARGS) -- smoke

# CHANGELOG.rst from changelogs/fragments for the version in galaxy.yml, not yet released: the release is made on a
# scratch copy, so changelogs/changelog.yaml keeps no release and the fragments stay (`antsibull-changelog release`
# in the tree, at release time, records the release and removes them)
CHANGELOG_TMP := $(BUILD)/changelog
changelog: dev
	@rm -rf $(CHANGELOG_TMP) && mkdir -p $(CHANGELOG_TMP)
	@cp -r galaxy.yml meta plugins roles changelogs $(CHANGELOG_TMP)/
	cd $(CHANGELOG_TMP) && $(BIN)/antsibull-changelog release --version $(VERSION)
	cp $(CHANGELOG_TMP)/CHANGELOG.rst CHANGELOG.rst

clean:
	-[ -x $(BIN)/python ] && $(BIN)/python scripts/localstack down
	rm -rf $(BUILD) $(SANITY_BASE)
