# Every target installs what it needs first (scripts/install.sh is idempotent and quick when done).
VENV := .venv
PY := $(VENV)/bin/python
export NO_ALBUMENTATIONS_UPDATE := 1
export HF_HUB_OFFLINE := 1
export NLTK_DATA := $(CURDIR)/.data/nltk_data

.PHONY: install test lint demo pipeline bench clean

install:
	@bash scripts/install.sh

test: install
	@bash scripts/install_chromium.sh
	$(VENV)/bin/ruff check curate tests scripts
	$(PY) -m pytest -q -p no:cacheprovider

lint: install
	$(VENV)/bin/ruff check curate tests scripts

demo: install
	@bash scripts/demo.sh

pipeline: install
	.venv/bin/curate run $(CONFIG)

bench: install
	$(PY) -m bench.run $(BENCH)

clean:
	rm -rf demo bench/results .pytest_cache
