# modelrollout — developer entry points. `make help` lists them.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
RIG_DIR ?= $(CURDIR)/.rig
export RIG_DIR

.PHONY: help install lint security test test-unit test-e2e rig images bench-server bench-analysis crds clean demo demo-cluster

help: ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'

# KServe's Python client for the interoperability tests lives in its own venv: its pins are not ours
# (tests/support/kserve/venv.py says why); the tests find it through this variable.
KSERVE_VENV ?= $(VENV)-kserve
export MODELROLLOUT_KSERVE_VENV := $(abspath $(KSERVE_VENV))

$(BIN)/modelrollout: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip uv
	$(BIN)/uv pip install --quiet --python $(BIN)/python -e '.[server,operator,dev,demo]'
	touch $@

$(KSERVE_VENV)/modelrollout-requirements.txt: tests/support/kserve/requirements.txt $(BIN)/modelrollout
	$(BIN)/python -m tests.support.kserve.venv $(KSERVE_VENV)

install: $(BIN)/modelrollout $(KSERVE_VENV)/modelrollout-requirements.txt ## create .venv with the project and all extras, and .venv-kserve

lint: install ## ruff + mypy --strict + hadolint + checkov
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/hadolint Dockerfile.server Dockerfile.operator
	$(MAKE) --no-print-directory security

security: install ## checkov over the rendered chart and the Dockerfiles (findings justified in docs/security.md)
	bash tests/rig/build.sh --if-missing
	mkdir -p build
	$(RIG_DIR)/bin/helm template modelrollout charts/modelrollout -n modelrollout-system \
		--values charts/modelrollout/ci/everything-on-values.yaml > build/chart-rendered.yaml
	$(BIN)/checkov --config-file .checkov.yaml -f build/chart-rendered.yaml -f Dockerfile.server -f Dockerfile.operator

rig: ## build the test rig (control plane, kwok, real node, cluster DNS, gateway, Prometheus) into $(RIG_DIR)
	bash tests/rig/build.sh

images: ## build the model-server and operator images from the Dockerfiles and the helm test image, with buildah (for the e2e suite)
	bash tests/rig/build_images.sh

test: install ## run the whole suite: unit, integration, e2e (builds the rig and the images first when missing)
	@tests/phase.sh "rig build" bash tests/rig/build.sh --if-missing
	@tests/phase.sh "image build" bash tests/rig/build_images.sh --if-missing
	@tests/phase.sh unit $(BIN)/pytest tests/unit
	@tests/phase.sh integration $(BIN)/pytest tests/integration
	@tests/phase.sh e2e $(BIN)/pytest tests/e2e

test-e2e: install ## the e2e suite only: chart, operator and model servers on the real node behind Traefik
	bash tests/rig/build.sh --if-missing
	bash tests/rig/build_images.sh --if-missing
	$(BIN)/pytest tests/e2e

test-unit: install ## unit tests only (no cluster; promtool from the rig checks the alert rules)
	bash tests/rig/build.sh --if-missing
	$(BIN)/pytest tests/unit

bench-server: install ## side-by-side server benchmark: ours vs MLServer vs plain FastAPI+joblib
	$(BIN)/python -m bench.server_bench

bench-analysis: install ## statistical power of the canary analysis: canary-vs-stable statistics vs a fixed threshold
	$(BIN)/python -m bench.analysis_power

demo: install ## the whole rollout story locally (no cluster)
	$(BIN)/modelrollout demo

demo-cluster: install ## the rollout story on the rig's real node behind Traefik (builds the rig and images first)
	bash tests/rig/build.sh --if-missing
	bash tests/rig/build_images.sh --if-missing
	$(BIN)/python -m tests.rig.demo_cluster

clean: ## remove caches (not the rig)
	rm -rf .mypy_cache .ruff_cache .pytest_cache build dist

crds: install ## regenerate crds/ (and the chart's copy) from model_operator/spec.py
	$(BIN)/python -m model_operator.crdgen crds/modeldeployments.yaml
	cp crds/modeldeployments.yaml charts/modelrollout/crds/modeldeployments.yaml
