# Two commands on a fresh clone: `make demo` and `make test`. `make install` is what both use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=
# Test files run on two pytest-xdist workers, each file's tests on one worker (--dist loadfile: a module's
# exports are made once). Measured 2026-11-28, AVX2 EPYC, 2 cores: 6 min 36 s against 11 min 25 s serial
# (much of a test's time is single-threaded Python: tracing, tf2onnx, NNCF). PYTEST_WORKERS=0 runs serially.
PYTEST_WORKERS ?= 2
# The serving venv (Triton's own tritonserver from nvidia-pytriton, numpy < 2) and what the servers serve.
SERVING_VENV ?= .venv-serving
REPO ?= artifacts/encoder-tiny/triton
TFSERVING ?= artifacts/encoder-tiny/tfserving
HTTP_PORT ?= 8000
GRPC_PORT ?= 8001
METRICS_PORT ?= 8002
REST_PORT ?= 8501

.PHONY: install demo test lint format bench clean serving triton tfserving serving-demo peers

install: $(VENV)/.installed

$(VENV)/.installed: setup.cfg pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[cpu,openvino,keras-hub,genai,tensorrt-rtx,triton,fixtures,dev]'
	touch $@

# export (SavedModel, ONNX fp32/fp16/int8, bf16 SavedModel) -> verify -> bench -> Triton + TF Serving
# layouts -> artifacts/encoder-tiny/report.md. TensorRT plans too when a GPU is present.
demo: install
	$(VENV)/bin/attnkit run encoder-tiny --out artifacts/encoder-tiny --force

# pytest exits 5 when it collected no test; that is reported, not treated as a pass or a crash.
# The serving venv is built first (its tests start a real tritonserver); where it cannot be built, the
# build says why and those tests skip with that reason.
test: install
	-$(VENV)/bin/attnkit serve setup --venv $(SERVING_VENV)
	ATTNKIT_SERVING_VENV=$(abspath $(SERVING_VENV)) $(PY) -m pytest -n $(PYTEST_WORKERS) --dist loadfile $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests"; fi; exit $$rc

# The workloads of BENCHMARKS.md (minutes, not part of the tests). Results land in bench-results/.
bench: install
	$(VENV)/bin/attnkit bench encoder-tiny --batch-sizes 1,8,32 --seq-lens 128 --min-seconds 3 --out bench-results/w-tiny
	$(VENV)/bin/attnkit bench encoder-base --batch-sizes 8 --seq-lens 128 --min-seconds 10 --out bench-results/w-base
	$(PY) -m attnkit.benchmark.report bench-results/w-tiny/results.json > bench-results/w-tiny/results.md
	$(PY) -m attnkit.benchmark.report bench-results/w-base/results.json > bench-results/w-base/results.md

# The peers' venv (issue 36): what a user of the same architecture would run instead of attnkit -- PyTorch
# (the CPU build on this disk), transformers, optimum-intel, OpenVINO GenAI, onnxruntime-genai's model builder and
# llama.cpp (built from source here; `make peers` from nothing took 5 min 46 s on 2 cores) -- pinned by scripts/peers/requirements.txt, kept out
# of attnkit's venv. Used by scripts/decode_peers.py only, never by the tests.
PEERS_VENV ?= .venv-peers
peers: $(PEERS_VENV)/.installed

$(PEERS_VENV)/.installed: scripts/peers/requirements.txt
	test -x $(PEERS_VENV)/bin/python || $(PYTHON) -m venv $(PEERS_VENV)
	$(PEERS_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(PEERS_VENV)/bin/python -m pip install --quiet -r scripts/peers/requirements.txt
	# optimum-intel asks for torchvision, which no LLM export imports (PyPI's torchvision does not import
	# beside the CPU torch build): installed without its dependencies, which the file above pins
	$(PEERS_VENV)/bin/python -m pip install --quiet --no-deps optimum-intel==2.2.0
	# optimum-intel 2.2 exports Gemma and Gemma 3 only with transformers <= 5.0: that one beside the venv, put
	# on the path by scripts/peers/decode_peer.py for those exports only
	$(PEERS_VENV)/bin/python -m pip install --quiet --no-deps --target $(PEERS_VENV)/transformers-5.0 transformers==5.0.0
	CMAKE_BUILD_PARALLEL_LEVEL=2 $(PEERS_VENV)/bin/python -m pip install --quiet --no-cache-dir llama-cpp-python==0.3.36
	# llama.cpp's own converter (convert_hf_to_gguf.py, conversion/, gguf-py) from the same release's source
	rm -rf $(PEERS_VENV)/src && mkdir -p $(PEERS_VENV)/src
	$(PEERS_VENV)/bin/python -m pip download --quiet --no-deps --no-binary :all: llama-cpp-python==0.3.36 -d $(PEERS_VENV)/src
	tar -xzf $(PEERS_VENV)/src/llama_cpp_python-0.3.36.tar.gz -C $(PEERS_VENV)/src --strip-components=2 \
		llama_cpp_python-0.3.36/vendor/llama.cpp/convert_hf_to_gguf.py llama_cpp_python-0.3.36/vendor/llama.cpp/conversion \
		llama_cpp_python-0.3.36/vendor/llama.cpp/gguf-py
	$(PEERS_VENV)/bin/python -m pip install --quiet $(PEERS_VENV)/src/llama.cpp/gguf-py
	touch $@

# The serving venv: nvidia-pytriton (tritonserver 2.51 + Triton's Python backend), onnxruntime and
# TensorFlow for attnkit's stand-in backends, numpy < 2; pinned by attnkit/serving/constraints.txt.
serving: install
	$(VENV)/bin/attnkit serve setup --venv $(SERVING_VENV)

# Triton's own server on a repository `attnkit package` wrote (REPO=...), on 127.0.0.1, in the foreground:
# HTTP $(HTTP_PORT), gRPC $(GRPC_PORT). Ctrl-C or SIGTERM stops it and its backend processes.
triton: serving
	$(VENV)/bin/attnkit serve triton $(REPO) --venv $(SERVING_VENV) --http-port $(HTTP_PORT) \
		--grpc-port $(GRPC_PORT) --metrics-port $(METRICS_PORT)

# attnkit's TF Serving REST stand-in (not tensorflow_model_server) on a tfserving/ layout, 127.0.0.1:$(REST_PORT).
tfserving: install
	$(VENV)/bin/attnkit serve tfserving $(TFSERVING) --port $(REST_PORT)

# The demo with the serving stage: encoder-tiny in Triton, load-tested with dynamic batching on and off.
serving-demo: serving
	ATTNKIT_SERVING_VENV=$(abspath $(SERVING_VENV)) $(VENV)/bin/attnkit run encoder-tiny --out artifacts/encoder-tiny --force --serve

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: install
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

clean:
	rm -rf artifacts bench-results .pytest_cache
