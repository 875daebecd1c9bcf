# The two commands of the README: `make demo` and `make test`. Both install what they need.
VENV ?= .venv

$(VENV)/.installed: pyproject.toml scripts/install.sh
	bash scripts/install.sh

.PHONY: install demo test lint bench
install: $(VENV)/.installed

demo: $(VENV)/.installed
	$(VENV)/bin/pr-review demo

test: $(VENV)/.installed lint
	$(VENV)/bin/python -m pytest

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
