# mot: make train_mot (default), make test, make bench.
#
# train_mot is built by nvcc when nvcc is on the PATH (CPU and GPU paths),
# otherwise by g++ as plain C++ with the GPU parts compiled out. Tests and
# benchmarks of the CPU path are plain C++; the GPU test and benchmark are
# built when nvcc is present.

CXX ?= g++
# OPT: optimization and instrumentation, e.g. make OPT="-O1 -g -fsanitize=address"
OPT ?= -O3 -march=native
# The offline kit (make offline-kit): copies of the header-only dependencies
# (CLI11, doctest) inside the tree, for GPU nodes without Debian packages.
KIT := build/offline-kit/include
KIT_INC := $(if $(wildcard $(KIT)/CLI/CLI.hpp),-isystem $(KIT))
# -fno-math-errno: no code reads errno after a math call, and with it GCC
# vectorizes AdamW's sqrt. -fno-trapping-math: no code turns floating-point
# exceptions into traps, and with it GCC if-converts the clamps and selects of
# fast/exp.h, so the loops of GELU and the softmaxes vectorize (the README's
# "Speed" says what each flag gains). Neither makes code wrong; vectorized,
# the softmaxes' sums add in another order, so results move in float rounding.
FPFLAGS := -fno-math-errno -fno-trapping-math
CXXFLAGS := $(OPT) -std=c++17 -fopenmp $(FPFLAGS) -Wall -Wextra -I. $(KIT_INC)
NVCC ?= $(shell command -v nvcc 2>/dev/null)
# GPU architectures: Ampere (sm_80) and Hopper (sm_90); override with GPU_ARCH=...
GPU_ARCH ?= -gencode arch=compute_80,code=sm_80 -gencode arch=compute_90,code=sm_90
NVCCFLAGS := -O3 -std=c++17 -I. $(KIT_INC) $(GPU_ARCH) -Xcompiler "-fopenmp $(FPFLAGS) -march=native -Wall" -diag-suppress 20012

# Several ranks (docs/design.md section 11): train_mot links MPI when mpicxx is
# present (Debian: libopenmpi-dev openmpi-bin), and, built by nvcc, NCCL when
# its header is in the CUDA toolkit (or NCCL_HOME). MPI=0 / NCCL=0 leave them out.
MPICXX ?= $(shell command -v mpicxx 2>/dev/null)
ifneq ($(MPI),0)
ifneq ($(MPICXX),)
MPI_CFLAGS ?= $(shell $(MPICXX) --showme:compile 2>/dev/null)
MPI_LIBS ?= $(shell $(MPICXX) --showme:link 2>/dev/null)
MPI_DEF := -DMOT_MPI -DOMPI_SKIP_MPICXX -DMPICH_SKIP_MPICXX  # the C API only
endif
endif
NCCL_HOME ?= $(if $(NVCC),$(abspath $(dir $(NVCC))/..))
ifneq ($(NCCL),0)
ifneq ($(MPI_DEF),)
ifneq ($(wildcard $(NCCL_HOME)/include/nccl.h),)
NCCL_FLAGS := -DMOT_NCCL -I$(NCCL_HOME)/include
NCCL_LIBS := -L$(NCCL_HOME)/lib64 -lnccl
endif
endif
endif
# nvcc takes -I, -L and -l itself; any other MPI flag goes to the host compiler
to_nvcc = $(foreach f,$(1),$(if $(filter -I% -L% -l% -D%,$(f)),$(f),-Xcompiler $(f)))

HEADERS := $(wildcard common/*.h cpu/*.h cpu/fast/*.h gpu/*.cuh tokenizer/*.h data/*.h train/*.h tests/*.h)
CPU_TESTS := $(patsubst tests/%.cpp,build/%,$(wildcard tests/test_*.cpp))
GPU_TESTS := $(if $(NVCC),$(patsubst tests/%.cu,build/%,$(wildcard tests/test_*.cu)))

.PHONY: all test test-cpu bench clean offline-kit reproduce
all: train_mot prepare

ifneq ($(NVCC),)
train_mot: mot.cu $(HEADERS)
	$(NVCC) $(NVCCFLAGS) $(MPI_DEF) $(call to_nvcc,$(MPI_CFLAGS)) $(NCCL_FLAGS) mot.cu -o $@ -lcublas \
	    $(call to_nvcc,$(MPI_LIBS)) $(NCCL_LIBS)
else
train_mot: mot.cu $(HEADERS)
	$(CXX) $(CXXFLAGS) $(MPI_DEF) $(MPI_CFLAGS) -x c++ mot.cu -o $@ $(MPI_LIBS)
endif

prepare: data/prepare.cpp $(HEADERS)
	$(CXX) $(CXXFLAGS) $< -o $@

build/%: tests/%.cpp $(HEADERS)
	@mkdir -p build
	$(CXX) $(CXXFLAGS) $< -o $@

build/%: tests/%.cu $(HEADERS)
	@mkdir -p build
	$(NVCC) $(NVCCFLAGS) $< -o $@ -lcublas

# Every suite, then one summary line "N passed, N failed, N skipped".
test: train_mot prepare build/study $(CPU_TESTS) $(GPU_TESTS)
	@tests/run_tests.sh $(CPU_TESTS) $(GPU_TESTS)

# CPU suites only (the sanitizer build in .ci/run uses this).
test-cpu: train_mot prepare build/study $(CPU_TESTS)
	@tests/run_tests.sh $(CPU_TESTS)

build/bench_%: bench/bench_%.cpp $(HEADERS)
	@mkdir -p build
	$(CXX) $(CXXFLAGS) $< -o $@ -lopenblas

build/bench_gpu: bench/bench_gpu.cu $(HEADERS)
	@mkdir -p build
	$(NVCC) $(NVCCFLAGS) $< -o $@ -lcublas

BENCHES := $(patsubst bench/%.cpp,build/%,$(wildcard bench/bench_*.cpp))
bench: $(BENCHES) train_mot
	@for b in $(BENCHES); do echo "== $$b"; ./$$b || exit 1; done

# The MoT-against-dense study (README): make reproduce [QUICK=1] [TEXT=...]
build/study: study/study.cpp $(HEADERS)
	@mkdir -p build
	$(CXX) $(CXXFLAGS) $< -o $@

# QUICK, TEXT and OUT reach the script as written (value: make expands no $ in
# them; unexport: nor does it to put them in the environment) and as one
# single-quoted shell word each (shell_quote), so a path with spaces, quotes,
# $ or ; in it is a path and never a command. The script's other settings
# come through the environment.
shell_quote = '$(subst ','\'',$(1))'
unexport QUICK TEXT OUT
reproduce: train_mot prepare build/study
	@QUICK=$(call shell_quote,$(value QUICK)) TEXT=$(call shell_quote,$(value TEXT)) \
	    OUT=$(call shell_quote,$(value OUT)) study/reproduce.sh

# Copies CLI11 and doctest (from the Debian packages libcli11-dev and
# doctest-dev; another prefix with INCLUDE_DIR=...) into $(KIT), an ignored folder that
# travels with the working tree to a node that lacks them.
INCLUDE_DIR ?= /usr/include
offline-kit:
	@test -f $(INCLUDE_DIR)/CLI/CLI.hpp || { echo "offline-kit: $(INCLUDE_DIR)/CLI/CLI.hpp not found (apt-get install libcli11-dev)" >&2; exit 1; }
	@test -f $(INCLUDE_DIR)/doctest/doctest.h || { echo "offline-kit: $(INCLUDE_DIR)/doctest/doctest.h not found (apt-get install doctest-dev)" >&2; exit 1; }
	rm -rf $(KIT) && mkdir -p $(KIT)
	cp -r $(INCLUDE_DIR)/CLI $(INCLUDE_DIR)/doctest $(KIT)/
	@echo "offline-kit: $(KIT) holds CLI11 and doctest; it travels with the tree (tests/gpu_check.sh uses it)"

# keeps the offline kit (it may be the only copy on an offline node)
clean:
	@mkdir -p build && find build -mindepth 1 -maxdepth 1 ! -name offline-kit -exec rm -rf {} +
	rm -f train_mot prepare
