# Loupe developer entry points. `make serve` and `make test` set everything up on first use.
VENV  := .venv
PY    := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
ARGS  ?=

.PHONY: install serve test lint bench

install: $(STAMP)

# Re-runs only when the dependency list changes. torch goes first and pinned: 2.13.0 is the CPU
# build on disk; a looser requirement would pull several GB of CUDA packages.
$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev,lora,ocr,dicom,geo,scale]'
	touch $(STAMP)

serve: install
	$(VENV)/bin/loupe serve $(ARGS)

# Installs and starts what the tests need (Debian Chromium, a throwaway PostgreSQL), then pytest.
test: install
	$(VENV)/bin/ruff check .
	bash .ci/with-services.sh $(VENV)/bin/pytest -q $(ARGS)

lint: install
	$(VENV)/bin/ruff check .

bench: install
	$(VENV)/bin/loupe bench chat --family smolvlm --size real
