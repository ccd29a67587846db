# The two user-facing targets are `make demo` and `make test`; both set themselves up.
VENV ?= .venv
STAMP := $(VENV)/.bootstrap-stamp

.PHONY: demo test setup lint clean

setup: $(STAMP)

$(STAMP): tools/bootstrap.sh constraints.txt setup.py
	bash tools/bootstrap.sh
	touch $@

test: setup
	bash tools/run_tests.sh

demo: setup
	bash tools/run_demo.sh

lint: setup
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

clean:
	rm -rf build install log demo_output .pytest_cache .mypy_cache .ruff_cache
