#!/usr/bin/env bash
# tests/check_build_lists.sh: the Makefile and CMakeLists.txt build the same
# thing. Both read their lists from build.list; this check compares what each
# build actually does with them, so a flag, a target, a library or a test
# added to one side only fails here.
#
#   tests/check_build_lists.sh [--cpu-only] [--keep DIR]
#
# For the CPU-only build (NVCC= against -DMOT_CUDA=OFF) and, when nvcc is
# found (PATH or /usr/local/cuda/bin), the CUDA build, it takes
#   make:  the commands of `make -Bn all test bench` (nothing is built)
#   CMake: a configure in a scratch folder (compile_commands.json, each
#          target's link line, `ctest -N`, the bench target's commands)
# and reduces each binary to one line of compile flags and one of linked
# libraries (include folders relative to the repository, -Xcompiler split
# into host: flags, -gencode and CMake's --generate-code to arch: words,
# libraries to their names, each build's own plumbing such as -c, -o and
# dependency files left out), plus the suites `make test` and CTest run and
# the benchmarks `make bench` and CMake's bench target run. The two
# descriptions must be equal; a difference is printed as a diff.
# --keep DIR leaves both descriptions (and the CMake folders) there.
# Needs cmake and python3; takes a few seconds (the CUDA configure most).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

cpu_only=0
keep=
while [ $# -gt 0 ]; do
    case "$1" in
        --cpu-only) cpu_only=1 ;;
        --keep) keep=$2; shift ;;
        -h|--help) sed -n '2,/^set -e/p' "$0" | grep '^#' | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "check_build_lists: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done
for tool in cmake python3 make; do
    command -v $tool >/dev/null || { echo "check_build_lists: $tool not found on the PATH" >&2; exit 2; }
done

work=${keep:-$(mktemp -d /tmp/check_build_lists.XXXXXX)}
mkdir -p "$work"
[ -n "$keep" ] || trap 'rm -rf "$work"' EXIT

nvcc=$(command -v nvcc || true)
[ -z "$nvcc" ] && [ -x /usr/local/cuda/bin/nvcc ] && nvcc=/usr/local/cuda/bin/nvcc
modes="cpu"
[ $cpu_only -eq 0 ] && [ -n "$nvcc" ] && modes="cpu cuda"

# One build's description on stdout, from make's dry run (make) or a CMake
# folder (cmake); see the header for what it holds.
describe() {
    python3 - "$@" <<'EOF'
import glob, json, os, re, shlex, sys

side, src, arg = sys.argv[1], sys.argv[2], sys.argv[3]
cuda_root = sys.argv[4] if len(sys.argv) > 4 else ""
# what a compiler finds by itself; the builds may or may not name them
implicit_inc = {"/usr/include", "/usr/local/include"}
if cuda_root:
    implicit_inc |= {cuda_root + "/include", cuda_root + "/targets/x86_64-linux/include"}
# libraries a compiler driver links by itself (nvcc: the CUDA runtime;
# -fopenmp: gomp and pthread; CMake's CUDA::cublas: cuBLAS's own dependencies,
# which -lcublas brings as libcublas.so's)
implicit_lib = {"cudart", "cudart_static", "cudadevrt", "rt", "pthread", "dl", "gomp", "m", "cublasLt", "culibos"}

def rel(path):
    path = os.path.normpath(path if os.path.isabs(path) else os.path.join(src, path))
    return "." if path == src else os.path.relpath(path, src) if path.startswith(src + "/") else path

def lib_name(tok):
    m = re.match(r"-l(.+)$", tok) or re.match(r".*/lib([^/]+?)\.(so|a)(\.[0-9.]+)?$", tok)
    return m.group(1) if m else None

def arch_words(spec):  # arch=compute_80,code=sm_80 or code=[compute_80,sm_80]
    m = re.match(r"arch=compute_(\d+a?),code=\[?([^\]]*)\]?$", spec)
    if not m:
        return ["arch:?" + spec]
    return ["arch:" + (c[3:] + "-real" if c.startswith("sm_") else c[8:] + "-virtual")
            for c in m.group(2).split(",")]

def flags(toks):
    """compile flags of one compiler command (first token: the compiler)"""
    out, i = set(), 1
    while i < len(toks):
        t = toks[i]
        nxt = toks[i + 1] if i + 1 < len(toks) else ""
        if t in ("-o", "-MT", "-MF"):
            i += 2; continue
        if t == "-x":  # -x cu is how CMake hands nvcc a .cu file
            if nxt != "cu":
                out.add("-x" + nxt)
            i += 2; continue
        if t in ("-c", "-MD", "-MMD", "-forward-unknown-to-host-compiler") or t.startswith("-L"):
            i += 1; continue
        if t in ("-I", "-isystem"):
            t, i = "-I" + nxt, i + 1
        elif t.startswith("-isystem"):
            t = "-I" + t[len("-isystem"):].lstrip("=")
        if t.startswith("-I"):
            d = rel(t[2:])
            if d not in implicit_inc:
                out.add("inc:" + d)
        elif t in ("-Xcompiler",) or t.startswith("-Xcompiler="):
            val = nxt if t == "-Xcompiler" else t.split("=", 1)[1]
            if t == "-Xcompiler":
                i += 1
            out |= {"host:" + f for f in re.split(r"[ ,]+", val) if f}
        elif t in ("-gencode", "--generate-code") or t.startswith("--generate-code="):
            val = nxt if "=" not in t else t.split("=", 1)[1]
            if "=" not in t:
                i += 1
            out |= set(arch_words(val))
        elif t == "-diag-suppress":
            out.add("diag-suppress:" + nxt); i += 1
        elif t.startswith("-diag-suppress="):
            out.add("diag-suppress:" + t.split("=", 1)[1])
        elif t.startswith("-") and not lib_name(t):
            out.add(t)
        elif t.endswith((".cpp", ".cu", ".o")) or lib_name(t):
            pass
        else:
            out.add("?" + t)
        i += 1
    return out

def libs(toks):
    return {n for n in map(lib_name, toks[1:]) if n and n not in implicit_lib}

def expand(toks, base):
    """CMake's response files (--options-file F, @F) spliced in"""
    out, i = [], 0
    while i < len(toks):
        if toks[i] == "--options-file":
            out += shlex.split(open(os.path.join(base, toks[i + 1])).read()); i += 2; continue
        if toks[i].startswith("@"):
            out += shlex.split(open(os.path.join(base, toks[i][1:])).read())
        else:
            out.append(toks[i])
        i += 1
    return out

def is_compiler(tok):
    return os.path.basename(tok) in ("g++", "c++", "nvcc", "clang++") or tok.endswith("/nvcc")

targets, tests, benches = {}, [], []
if side == "make":
    for line in open(arg).read().replace("\\\n", " ").splitlines():
        line = line.strip()
        if not line:
            continue
        toks = shlex.split(line)
        if is_compiler(toks[0]) and "-o" in toks:
            name = os.path.basename(toks[toks.index("-o") + 1])
            targets[name] = (flags(toks), libs(toks))
        elif "tests/run_tests.sh" in line:
            tests = [os.path.basename(t) for t in toks[toks.index("tests/run_tests.sh") + 1:]]
        elif line.startswith("for b in"):
            benches = [os.path.basename(t.rstrip(";")) for t in toks[3:toks.index("do")] if t.rstrip(";")]
else:
    build = arg
    compiled = {}
    for e in json.load(open(os.path.join(build, "compile_commands.json"))):
        m = re.search(r"CMakeFiles/([^/]+)\.dir/", e["command"])
        compiled[m.group(1)] = flags(expand(shlex.split(e["command"]), e["directory"]))
    for link in sorted(glob.glob(os.path.join(build, "CMakeFiles/*.dir/link.txt"))):
        name = os.path.basename(os.path.dirname(link))[:-4]
        toks = expand(shlex.split(open(link).read()), build)
        targets[name] = (compiled[name], libs(toks))
    tests = re.findall(r"Test +#\d+: (\S+)", open(os.path.join(build, "ctest-N.txt")).read())
    bench_make = os.path.join(build, "CMakeFiles/bench.dir/build.make")
    if os.path.exists(bench_make):
        for line in open(bench_make):
            if line.startswith("\t") and "bench_" in line and "Makefile" not in line:
                benches += [os.path.basename(t) for t in shlex.split(line)
                            if re.search(r"/bench_\w+$", t) and not t.endswith(".dir")]

for name in sorted(targets):
    f, l = targets[name]
    print(f"{name} compile: {' '.join(sorted(f))}")
    print(f"{name} link: {' '.join(sorted(l))}")
print("tests run:", " ".join(tests))
print("benches run:", " ".join(benches))
EOF
}

status=0
for mode in $modes; do
    if [ $mode = cpu ]; then make_nvcc=; cmake_cuda=-DMOT_CUDA=OFF; cuda_root=
    else make_nvcc=$nvcc; cmake_cuda=-DCMAKE_CUDA_COMPILER=$nvcc; cuda_root=$(dirname "$(dirname "$nvcc")"); fi
    make -Bn NVCC="$make_nvcc" all test bench > "$work/make-$mode.txt"
    cmake -S . -B "$work/cmake-$mode" -G "Unix Makefiles" -DCMAKE_EXPORT_COMPILE_COMMANDS=ON $cmake_cuda \
        > "$work/cmake-$mode.log" 2>&1 || { cat "$work/cmake-$mode.log" >&2; echo "check_build_lists: CMake configure ($mode) failed" >&2; exit 1; }
    (cd "$work/cmake-$mode" && ctest -N) > "$work/cmake-$mode/ctest-N.txt"
    describe make "$root" "$work/make-$mode.txt" $cuda_root > "$work/make-$mode.desc"
    describe cmake "$root" "$work/cmake-$mode" $cuda_root > "$work/cmake-$mode.desc"
    if diff -u --label "make ($mode)" --label "cmake ($mode)" "$work/make-$mode.desc" "$work/cmake-$mode.desc"; then
        echo "check_build_lists: make and CMake agree ($mode build: $(grep -c ' link:' "$work/make-$mode.desc") binaries)"
    else
        echo "check_build_lists: make and CMake differ ($mode build), see the diff above; both read build.list" >&2
        status=1
    fi
done
exit $status
