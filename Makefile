# Two commands on a fresh clone: `make demo` and `make test`. `make install` is what both use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: install demo test lint format bench clean

install: $(VENV)/.installed

$(VENV)/.installed: setup.cfg pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[cpu,tensorrt-rtx,triton,dev]'
	touch $@

# export (SavedModel, ONNX fp32/fp16/int8, bf16 SavedModel) -> verify -> bench -> Triton + TF Serving
# layouts -> artifacts/encoder-tiny/report.md. TensorRT plans too when a GPU is present.
demo: install
	$(VENV)/bin/attnkit run encoder-tiny --out artifacts/encoder-tiny --force

# pytest exits 5 when it collected no test; that is reported, not treated as a pass or a crash.
test: install
	$(PY) -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests"; fi; exit $$rc

# The workloads of BENCHMARKS.md (minutes, not part of the tests). Results land in bench-results/.
bench: install
	$(VENV)/bin/attnkit bench encoder-tiny --batch-sizes 1,8,32 --seq-lens 128 --min-seconds 3 --out bench-results/w-tiny
	$(VENV)/bin/attnkit bench encoder-base --batch-sizes 8 --seq-lens 128 --min-seconds 10 --out bench-results/w-base
	$(PY) -m attnkit.benchmark.report bench-results/w-tiny/results.json > bench-results/w-tiny/results.md
	$(PY) -m attnkit.benchmark.report bench-results/w-base/results.json > bench-results/w-base/results.md

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: install
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

clean:
	rm -rf artifacts bench-results .pytest_cache
