# Quick start: `make demo` runs the main job, `make test` runs the test suite.
# Each target creates .venv and installs what it needs on the way.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint docs bench clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[test]'
# torchvision: a reference implementation for the tests only (tests/reference.py).
# --no-deps keeps the pinned CPU torch: the wheel's own requirements could pull another torch.
	$(BIN)/python -m pip install --quiet --no-deps -c constraints.txt torchvision
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/dslc verify specs/lenet5.dl --out build/lenet5
	@echo "dslc is in $(BIN): '. $(BIN)/activate' puts it on your PATH, or run $(BIN)/dslc"

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/python -m pip install --quiet ruff mypy
	$(BIN)/ruff check dslc tests bench && $(BIN)/ruff format --check dslc tests bench && $(BIN)/mypy dslc

docs: $(STAMP)
	$(BIN)/python -m dslc.tools.docgen docs/ops.md
	$(BIN)/python -m dslc.tools.stdlibdoc docs/stdlib.md

# Timings need a quiet machine; the tables in docs/benchmarks.md are rewritten from the results.
bench: $(STAMP)
	$(BIN)/python bench/onnx_lenet5.py
	$(BIN)/python bench/onnx_cnn.py
	$(BIN)/python bench/onnx_gpt.py
	$(BIN)/python bench/train_throughput.py
	$(BIN)/python bench/detection.py
	$(BIN)/python bench/report.py

clean:
	rm -rf $(VENV) build
