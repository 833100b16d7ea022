# Two commands on a fresh clone: `make demo` and `make test`. Everything else is a helper.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test check fmt up chaos bench report clean

# The compileall line writes bytecode for the modules the workflow sandbox re-imports on every
# run (no .pyc is written at run time under PYTHONDONTWRITEBYTECODE); the worker refreshes it if
# a source changed.
$(STAMP): pyproject.toml
	@command -v $(PY) >/dev/null || { echo "need $(PY) on PATH"; exit 1; }
	test -d $(VENV) || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip >/dev/null
	$(BIN)/pip install -q -e '.[dev,safety]' --config-settings editable_mode=compat
	$(BIN)/python -m compileall -q workflows domain
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/stationthis demo

check: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy .

fmt: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# Two workers (one per core): the tests mostly wait on real servers, so two sessions side by
# side, each with its own stack on free ports, halve the wall time. `--dist loadgroup` keeps
# the Telegram-bot files together on one worker (tests/conftest.py says why).
test: check
	$(BIN)/pytest -q -n 2 --dist loadgroup

up: $(STAMP)
	$(BIN)/stationthis up

chaos: $(STAMP)
	$(BIN)/python bench/chaos.py --jobs 200 --users 20 --minutes 5

fuzz: $(STAMP)
	$(BIN)/python bench/fuzz.py --scale 10

bench: $(STAMP)
	$(BIN)/python bench/make_image.py

report: $(STAMP)
	$(BIN)/python bench/report.py

clean:
	rm -rf .devstack build *.egg-info .mypy_cache .pytest_cache .ruff_cache
