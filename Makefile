SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export KUBECONFIG_SECUREAI := $(CURDIR)/.cluster/kubeconfig

.PHONY: venv lint typecheck layers unit integration test crds crds-check toolchain images node-deps cluster down demo bench helm-lint clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q -U pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check operator tests bench
	$(BIN)/ruff format --check operator tests bench

typecheck: $(STAMP)
	$(BIN)/mypy

layers: $(STAMP)
	$(BIN)/lint-imports

crds: $(STAMP)
	$(BIN)/secureai crds --out-dir crds
	if [ -d charts/secureai-operator/crds ]; then cp crds/*.yaml charts/secureai-operator/crds/; fi
	$(BIN)/python -c "from secureai.api.reference import markdown; print(markdown(), end='')" > docs/api.md

crds-check: $(STAMP)
	@$(BIN)/secureai crds --check crds

toolchain:
	hack/build.sh

# OCI images without a container engine (hack/images.py); reuses the last build when nothing
# that goes into the images changed. Writes charts/secureai-operator/images.json.
images: $(STAMP)
	$(PY) hack/images.py build --write-examples >/dev/null

node-deps:
	hack/node-deps.sh

cluster: $(STAMP) toolchain images node-deps
	hack/cluster.sh up

down:
	@state="$${SECUREAI_CLUSTER_DIR:-.cluster}"; if [ -f "$$state/operator.pid" ]; then kill "$$(cat "$$state/operator.pid")" 2>/dev/null || true; rm -f "$$state/operator.pid"; fi
	hack/cluster.sh down

demo: $(STAMP) cluster
	hack/demo.sh

helm-lint: toolchain
	$$(hack/build.sh --print-bindir)/helm lint --strict charts/secureai-operator

unit: $(STAMP)
	$(BIN)/pytest -m "not integration" tests

integration: $(STAMP) toolchain images node-deps
	$(BIN)/pytest -m integration tests

test: lint typecheck layers crds-check toolchain images node-deps helm-lint
	$(BIN)/pytest tests

bench: $(STAMP) toolchain
	$(BIN)/python -m bench.run

clean: down
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache

# Mutation testing (docs/testing.md): every mutant of the security-critical modules, in a
# scratch copy of HEAD. MUTATION_ARGS="crypto drift" limits the groups; "--sample" is the
# small fixed sample that `make test` runs.
.PHONY: mutation
mutation: $(STAMP)
	$(BIN)/python tests/mutation/harness.py $(MUTATION_ARGS)
