# mot: make train_mot (default), make test, make bench.
#
# train_mot is built by nvcc when nvcc is on the PATH (CPU and GPU paths),
# otherwise by g++ as plain C++ with the GPU parts compiled out. Tests and
# benchmarks of the CPU path are plain C++; the GPU tests and benchmarks are
# built when nvcc is present.
#
# The lists (flags, GPU architectures, sources, tests, benchmarks, MPI and
# NCCL settings, the offline kit) live in build.list, which CMakeLists.txt
# reads too; tests/check_build_lists.sh checks that both builds agree.
include build.list

CXX ?= g++
# OPT: optimization and instrumentation, e.g. make OPT="-O1 -g -fsanitize=address"
OPT ?= $(OPT_FLAGS)
# The offline kit (make offline-kit), used first when it is there.
KIT := $(OFFLINE_KIT)
KIT_INC := $(if $(wildcard $(addprefix $(KIT)/,$(OFFLINE_KIT_HEADERS))),-isystem $(KIT))
CXXFLAGS := $(OPT) -std=c++$(CXX_STD) -fopenmp $(FP_FLAGS) $(WARN_FLAGS) -I. $(KIT_INC)
NVCC ?= $(shell command -v nvcc 2>/dev/null)
# GPU architectures: build.list's GPU_ARCHS; override with GPU_ARCH=...
GPU_ARCH ?= $(foreach a,$(GPU_ARCHS),-gencode arch=compute_$(a),code=sm_$(a))
NVCCFLAGS := $(NVCC_OPT_FLAGS) -std=c++$(CXX_STD) -I. $(KIT_INC) $(GPU_ARCH) \
    -Xcompiler "-fopenmp $(FP_FLAGS) $(NVCC_HOST_FLAGS)" $(addprefix -diag-suppress ,$(NVCC_DIAG_SUPPRESS))
CUDA_LDLIBS := $(addprefix -l,$(CUDA_LIBS))

# Several ranks (docs/design.md section 11): train_mot links MPI when mpicxx is
# present (Debian: libopenmpi-dev openmpi-bin), and, built by nvcc, NCCL when
# its header is in the CUDA toolkit (or NCCL_HOME). MPI=0 / NCCL=0 leave them out.
MPICXX ?= $(shell command -v mpicxx 2>/dev/null)
ifneq ($(MPI),0)
ifneq ($(MPICXX),)
MPI_CFLAGS ?= $(shell $(MPICXX) --showme:compile 2>/dev/null)
MPI_LIBS ?= $(shell $(MPICXX) --showme:link 2>/dev/null)
MPI_DEF := $(addprefix -D,$(MPI_DEFINES))
endif
endif
NCCL_HOME ?= $(if $(NVCC),$(abspath $(dir $(NVCC))/..))
ifneq ($(NCCL),0)
ifneq ($(MPI_DEF),)
ifneq ($(wildcard $(NCCL_HOME)/include/nccl.h),)
NCCL_FLAGS := $(addprefix -D,$(NCCL_DEFINES)) -I$(NCCL_HOME)/include
NCCL_LDLIBS := -L$(NCCL_HOME)/lib64 $(addprefix -l,$(NCCL_LIBS))
endif
endif
endif
# nvcc takes -I, -L and -l itself; any other MPI flag goes to the host compiler
to_nvcc = $(foreach f,$(1),$(if $(filter -I% -L% -l% -D%,$(f)),$(f),-Xcompiler $(f)))

HEADERS := $(wildcard common/*.h cpu/*.h cpu/fast/*.h gpu/*.cuh tokenizer/*.h data/*.h train/*.h tests/*.h bench/*.h)
CPU_TESTS := $(patsubst tests/%.cpp,build/%,$(wildcard $(CPU_TEST_SOURCES)))
GPU_TESTS := $(if $(NVCC),$(patsubst tests/%.cu,build/%,$(wildcard $(GPU_TEST_SOURCES))))
BENCHES := $(patsubst bench/%.cpp,build/%,$(wildcard $(CPU_BENCH_SOURCES))) \
    $(if $(NVCC),$(patsubst bench/%.cu,build/%,$(wildcard $(GPU_BENCH_SOURCES))))

.PHONY: all test test-cpu bench clean offline-kit reproduce
all: train_mot prepare

ifneq ($(NVCC),)
train_mot: $(TRAIN_MOT_SOURCE) $(HEADERS)
	$(NVCC) $(NVCCFLAGS) $(MPI_DEF) $(call to_nvcc,$(MPI_CFLAGS)) $(NCCL_FLAGS) $< -o $@ $(CUDA_LDLIBS) \
	    $(call to_nvcc,$(MPI_LIBS)) $(NCCL_LDLIBS)
else
train_mot: $(TRAIN_MOT_SOURCE) $(HEADERS)
	$(CXX) $(CXXFLAGS) $(MPI_DEF) $(MPI_CFLAGS) -x c++ $< -o $@ $(MPI_LIBS)
endif

prepare: $(PREPARE_SOURCE) $(HEADERS)
	$(CXX) $(CXXFLAGS) $< -o $@

build/%: tests/%.cpp $(HEADERS)
	@mkdir -p build
	$(CXX) $(CXXFLAGS) $< -o $@

build/%: tests/%.cu $(HEADERS)
	@mkdir -p build
	$(NVCC) $(NVCCFLAGS) $< -o $@ $(CUDA_LDLIBS)

# Every suite, then one summary line "N passed, N failed, N skipped".
test: train_mot prepare build/study $(CPU_TESTS) $(GPU_TESTS)
	@tests/run_tests.sh $(CPU_TESTS) $(GPU_TESTS)

# CPU suites only (the sanitizer build in .ci/run uses this).
test-cpu: train_mot prepare build/study $(CPU_TESTS)
	@tests/run_tests.sh $(CPU_TESTS)

# OpenBLAS (libopenblas-dev) only where build.list's OPENBLAS_BENCHES says
build/bench_%: bench/bench_%.cpp $(HEADERS)
	@mkdir -p build
	$(CXX) $(CXXFLAGS) $< -o $@ $(if $(filter $(notdir $@),$(OPENBLAS_BENCHES)),-lopenblas)

build/bench_%: bench/bench_%.cu $(HEADERS)
	@mkdir -p build
	$(NVCC) $(NVCCFLAGS) $< -o $@ $(CUDA_LDLIBS)

# Every benchmark, the GPU ones with nvcc (they say so and exit 0 without a GPU).
bench: $(BENCHES) train_mot
	@for b in $(BENCHES); do echo "== $$b"; ./$$b || exit 1; done

# The MoT-against-dense study (README): make reproduce [QUICK=1] [TEXT=...]
build/study: $(STUDY_SOURCE) $(HEADERS)
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

# Copies the folders of build.list's OFFLINE_KIT_HEADERS, CLI11 and doctest
# (from the Debian packages libcli11-dev and doctest-dev; another prefix with
# INCLUDE_DIR=...) into $(KIT), an ignored folder that travels with the
# working tree to a node that lacks them.
INCLUDE_DIR ?= /usr/include
KIT_DIRS := $(sort $(foreach h,$(OFFLINE_KIT_HEADERS),$(firstword $(subst /, ,$(h)))))
offline-kit:
	@for h in $(OFFLINE_KIT_HEADERS); do test -f $(INCLUDE_DIR)/$$h || { echo "offline-kit: $(INCLUDE_DIR)/$$h not found (apt-get install libcli11-dev doctest-dev)" >&2; exit 1; }; done
	rm -rf $(KIT) && mkdir -p $(KIT)
	cp -r $(addprefix $(INCLUDE_DIR)/,$(KIT_DIRS)) $(KIT)/
	@echo "offline-kit: $(KIT) holds $(KIT_DIRS); it travels with the tree (tests/gpu_check.sh uses it)"

# keeps the offline kit (it may be the only copy on an offline node)
clean:
	@mkdir -p build && find build -mindepth 1 -maxdepth 1 ! -name offline-kit -exec rm -rf {} +
	rm -f train_mot prepare
