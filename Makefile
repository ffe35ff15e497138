# Two commands do all set-up on a fresh Debian machine (run as root, or with the packages below present):
#   make test    build the extension and run the whole test suite
#   make bench   build, get Fashion-MNIST, train once, benchmark against faiss, write benchmarks/results/
PYTHON ?= python3.11
VENV   ?= .venv
VPY    := $(VENV)/bin/python
DEPS   := $(VENV)/.deps-installed
BUILT  := $(VENV)/.drqindex-built
THREADS ?= $(shell nproc)
FASHION_DIR ?= /usr/share/datasets/fashion-mnist

.PHONY: all build test bench data system-deps clean

all: build

# Compilers, the venv module and SIMDe (lets the tests run the AVX-512 kernel on CPUs without
# AVX-512); installed with apt only when missing (CI and fresh machines).
system-deps:
	@command -v g++ >/dev/null && $(PYTHON) -c 'import venv, ensurepip' 2>/dev/null \
	  && [ -f /usr/include/simde/x86/avx512.h ] || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && apt-get install -y -qq g++ make python3-venv python3-dev libsimde-dev; \
	  else echo "need g++, $(PYTHON) with venv, and (optional) SIMDe:" \
	    "apt-get install -y g++ python3-venv python3-dev libsimde-dev"; \
	    command -v g++ >/dev/null || exit 1; fi; }

$(VPY): | system-deps
	$(PYTHON) -m venv $(VENV)

# torch is pinned to the CPU wheel; an unpinned torch would pull a multi-GB CUDA build.
$(DEPS): requirements.txt | $(VPY)
	$(VPY) -m pip install -q --upgrade pip
	$(VPY) -m pip install -q -r requirements.txt
	touch $@

$(BUILT): $(DEPS) CMakeLists.txt pyproject.toml setup.py $(shell find csrc -type f 2>/dev/null)
	$(VPY) -m pip install -q --no-build-isolation --no-deps -e .
	touch $@

build: system-deps $(BUILT)

# The real-data tests need Fashion-MNIST: installed when possible, skipped (with a reason) otherwise.
test: build
	-@$(MAKE) --no-print-directory data
	$(VPY) -m pytest -q tests

data:
	@if [ ! -f $(FASHION_DIR)/train-images-idx3-ubyte.gz ] && [ -z "$$DRQ_FASHION_MNIST_DIR" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist; \
	  else echo "Fashion-MNIST not found: run 'apt-get install -y dataset-fashion-mnist' as root," \
	    "or set DRQ_FASHION_MNIST_DIR to a folder holding the four idx files"; exit 1; fi; fi

bench: build data
	$(VPY) benchmarks/bench_fashion_mnist.py --threads $(THREADS)

clean:
	rm -rf build _skbuild python/drqindex/_core*.so $(BUILT)
