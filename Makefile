# Loupe developer entry points. `make serve` and `make test` set everything up on first use.
# Every install comes from requirements.lock (exact versions the suite passed with); `make lock`
# refreshes it from pyproject.toml's ranges, `make check-latest` tries the newest allowed versions.
VENV    := .venv
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.installed-stamp
EXTRAS  := dev,lora,ocr,dicom,geo,scale
PIP_VERSION := 26.3
WHEELS  ?= /opt/wheels
LATEST  ?= /tmp/loupe-check-latest
ARGS    ?=

VLLM_VENV := .venv-vllm
VLLM_STAMP := $(VLLM_VENV)/.installed-stamp

.PHONY: install serve test lint bench lock check-latest vllm gpu-wheels gpu-check vendor

install: $(STAMP)

# Re-runs only when the lock or the project metadata changes. The editable install adds Loupe alone
# (--no-deps): every dependency is the locked one.
$(STAMP): requirements.lock pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q pip==$(PIP_VERSION)
	$(PY) -m pip install -q --find-links $(WHEELS) -r requirements.lock
	$(PY) -m pip install -q --no-deps -e .
	$(PY) -m pip check
	touch $(STAMP)

# vLLM's own environment for `loupe serve-model` (about 3.5 GB): it pins its own torch and transformers.
# --no-deps: every package is in the lock, and the torchvision/torchaudio/torchcodec it names are left out.
vllm: $(VLLM_STAMP)

$(VLLM_STAMP): requirements-vllm.lock
	test -x $(VLLM_VENV)/bin/python || python3 -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/python -m pip install -q pip==$(PIP_VERSION)
	$(VLLM_VENV)/bin/python -m pip install -q --no-deps --find-links $(WHEELS) -r requirements-vllm.lock
	$(VLLM_VENV)/bin/python -c "import vllm.entrypoints.openai.api_server"
	touch $(VLLM_STAMP)

serve: install
	$(VENV)/bin/loupe serve $(ARGS)

# Installs and starts what the tests need (Debian Chromium, a throwaway PostgreSQL, vLLM), then pytest on every
# core (pytest-xdist; whole files per process, so a file's shared server or model is built once).
test: install vllm
	$(VENV)/bin/ruff check .
	LOUPE_VLLM_PYTHON=$(CURDIR)/$(VLLM_VENV)/bin/python bash .ci/with-services.sh $(VENV)/bin/pytest -q -n auto --dist loadfile $(ARGS)

lint: install
	$(VENV)/bin/ruff check .

bench: install
	$(VENV)/bin/loupe bench chat --family smolvlm --size real

# The GPU check (docs/performance.md, "On a GPU"). A GPU machine with CUDA torch, transformers and no
# network: `make gpu-wheels` here fetches the locked versions it may lack into .whl/ (they travel with the
# checkout); `make gpu-check` there installs them and Loupe into a scratch folder and writes bench-gpu.json
# to $OUT (default: the current folder). GPU_PY is that machine's Python with CUDA torch.
GPU_PY    ?= python3
GPU_SITE  ?= /tmp/loupe-gpu-site
GPU_LOCKED := transformers peft
gpu-wheels:
	rm -rf .whl && mkdir .whl
	$(PY) -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp -d .whl \
	  $$(grep -E '^($(subst $(eval) ,|,$(GPU_LOCKED)))==' requirements.lock)

gpu-check:
	$(GPU_PY) -m pip install -q --no-index --no-deps --no-build-isolation --no-compile --upgrade --target $(GPU_SITE) .whl/*.whl .
	PYTHONPATH=$(GPU_SITE) PYTHONUNBUFFERED=1 $(GPU_PY) -m loupe.apps.cli bench gpu --workdir /tmp/loupe-gpu-bench \
	  --out $${OUT:-.}/bench-gpu.json $(ARGS) > /dev/null

# Re-resolve the lock from pyproject.toml's ranges (newest allowed versions). Run the suite on it and
# commit both files together.
lock: install
	$(VENV)/bin/uv pip compile pyproject.toml --all-extras --python-version 3.11 \
	  --find-links $(WHEELS) --no-emit-find-links --constraint .ci/lock-constraints.txt \
	  --custom-compile-command "make lock" --upgrade -o requirements.lock

# Drift check (not part of .ci/run): the newest versions pyproject.toml allows, in a scratch venv,
# against the whole suite. A failure here is what a user installing without the lock would meet.
check-latest:
	rm -rf $(LATEST)
	python3 -m venv $(LATEST)
	$(LATEST)/bin/pip install -q pip==$(PIP_VERSION)
	$(LATEST)/bin/pip install -q --find-links $(WHEELS) -c .ci/lock-constraints.txt --upgrade --upgrade-strategy eager -e '.[$(EXTRAS)]'
	$(LATEST)/bin/pip freeze --exclude-editable > $(LATEST)/versions.txt
	@echo "newest allowed versions: $(LATEST)/versions.txt"
	LOUPE_CHECK_LATEST=1 bash .ci/with-services.sh $(LATEST)/bin/pytest -q -p no:cacheprovider $(ARGS)

# The browser viewers Loupe serves (apps/web/vendor): their built files, copied from the npm packages at the
# versions apps/web/vendor/package-lock.json locks, and Loupe's own viewers (apps/web/viewers/*.js) bundled
# with those packages by esbuild. Run after changing package.json or a viewer; commit the result.
BUNDLE = node_modules/.bin/esbuild --bundle --minify --format=iife --target=es2020 --log-level=warning --legal-comments=none
vendor:
	rm -rf /tmp/loupe-vendor && mkdir -p /tmp/loupe-vendor && cp apps/web/vendor/package.json apps/web/vendor/package-lock.json /tmp/loupe-vendor/
	cd /tmp/loupe-vendor && npm ci --ignore-scripts --no-audit --no-fund --silent
	mkdir -p apps/web/vendor/openseadragon/images apps/web/vendor/loupe-dicom apps/web/vendor/loupe-map
	cp /tmp/loupe-vendor/node_modules/openseadragon/build/openseadragon/openseadragon.min.js apps/web/vendor/openseadragon/
	cp /tmp/loupe-vendor/node_modules/openseadragon/build/openseadragon/images/*.png apps/web/vendor/openseadragon/images/
	cp /tmp/loupe-vendor/node_modules/openseadragon/LICENSE.txt apps/web/vendor/openseadragon/
	cp apps/web/viewers/*.js apps/web/viewers/*.mjs /tmp/loupe-vendor/
	cd /tmp/loupe-vendor && $(BUNDLE) dicom.js --metafile=dicom.meta.json --outfile=$(CURDIR)/apps/web/vendor/loupe-dicom/loupe-dicom.js
	cd /tmp/loupe-vendor && node licences.mjs dicom.meta.json > $(CURDIR)/apps/web/vendor/loupe-dicom/LICENSES.txt
	cd /tmp/loupe-vendor && $(BUNDLE) map.js --metafile=map.meta.json --outfile=$(CURDIR)/apps/web/vendor/loupe-map/loupe-map.js
	cd /tmp/loupe-vendor && node licences.mjs map.meta.json > $(CURDIR)/apps/web/vendor/loupe-map/LICENSES.txt

