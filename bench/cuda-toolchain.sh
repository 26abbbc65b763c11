#!/usr/bin/env bash
# cuda-toolchain.sh — a CUDA toolkit from PyPI, enough to build dwell with
# `--features cuda` on a machine with no system CUDA install and no GPU.
#
#   bash bench/cuda-toolchain.sh [DIR]        (DIR defaults to ./.cuda-toolchain)
#   eval "$(bash bench/cuda-toolchain.sh DIR)" # same, and apply the exports
#   cargo build --release --features cuda
#
# What it does, idempotently (a rerun only re-prints the exports):
#   1. pip-installs NVIDIA's CUDA 13.0 wheels (the `cuda-toolkit` meta-package
#      with the extras candle needs: nvcc, cicc, headers, cudart, cuBLAS,
#      cuRAND, NVRTC) into DIR/pip. They unpack into one toolkit-shaped tree,
#      DIR/pip/nvidia/cu13/{bin,include,lib,nvvm}. The cu12 wheels are no use
#      here: they carry ptxas but no nvcc.
#   2. adds the unversioned lib*.so links that the linker looks for
#      (the wheels ship only lib*.so.13 and friends) and lib64 -> lib.
#   3. builds lib/stubs/libcuda.so, a stub of the driver library (soname
#      libcuda.so.1) with every cu* entry point of cuda.h, so that the final
#      link succeeds where no NVIDIA driver is installed. It is for linking
#      only: at run time the real driver's libcuda.so.1 is used, so never put
#      lib/stubs on LD_LIBRARY_PATH.
#   4. prints the environment to export (stdout; progress goes to stderr).
#
# CUDA 13.0 is pinned on purpose: candle loads its kernels as PTX, and a driver
# only JIT-compiles PTX from a toolkit no newer than itself (driver 580 = CUDA
# 13.0, as on the H200 machines), and the CUDA 13 libraries need driver >= 580
# anyway. CUDA_TOOLKIT_VERSION picks another cuda-toolkit release (cudarc
# 0.19.10 knows CUDA up to 13.4; the 12.x wheels lack nvcc, so for a CUDA 12
# driver use a system toolkit instead).
# CUDA_COMPUTE_CAP chooses the GPU generation the kernels are compiled for:
# as set, else what nvidia-smi reports, else 90 (Hopper: H100/H200; 80 = A100,
# 89 = L4/RTX 40xx). With no GPU present nothing can detect it.
#
# Needs: python3 with pip or venv (PYTHON=... picks another), gcc/g++ (nvcc's
# host compiler), PyPI on the first run. About 1.2 GB on disk.
set -euo pipefail

DIR=${1:-.cuda-toolchain}
mkdir -p "$DIR"
DIR=$(cd "$DIR" && pwd)
VERSION=${CUDA_TOOLKIT_VERSION:-13.0.2}
CAP=${CUDA_COMPUTE_CAP:-$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -n1 | tr -d '.[:space:]' || true)}
CAP=${CAP:-90}
PY=${PYTHON:-python3}
EXTRAS="nvcc,crt,nvvm,cudart,cccl,cublas,curand,nvrtc"
STAMP="$DIR/.installed-$VERSION"

log() { echo "cuda-toolchain: $*" >&2; }

if [ ! -e "$STAMP" ]; then
    if ! "$PY" -m pip --version >/dev/null 2>&1; then
        log "$PY has no pip; making a venv in $DIR/venv for pip alone"
        "$PY" -m venv "$DIR/venv" || { log "install python3-pip (or python3-venv) first"; exit 1; }
        PY="$DIR/venv/bin/python"
    fi
    log "installing cuda-toolkit[$EXTRAS]==$VERSION from PyPI into $DIR/pip"
    rm -rf "$DIR/pip"
    "$PY" -m pip install --quiet --disable-pip-version-check --no-warn-script-location \
        --target "$DIR/pip" "cuda-toolkit[$EXTRAS]==$VERSION" >&2
    touch "$STAMP"
fi

ROOT=$(ls -d "$DIR"/pip/nvidia/cu1[0-9]* 2>/dev/null | head -n1 || true)
if [ -z "$ROOT" ] || [ ! -x "$ROOT/bin/nvcc" ]; then
    log "no nvcc under $DIR/pip/nvidia/cu*/bin (cuda-toolkit $VERSION's wheels lack it?)"
    exit 1
fi

# 2. Unversioned names for the linker: libcublas.so -> libcublas.so.13, etc.
for lib in "$ROOT"/lib/lib*.so.*; do
    base=${lib##*/}
    case $base in *.alt.so*) continue ;; esac
    plain=${base%%.so.*}.so
    [ -e "$ROOT/lib/$plain" ] || ln -s "$base" "$ROOT/lib/$plain"
done
[ -e "$ROOT/lib64" ] || ln -s lib "$ROOT/lib64"

# 3. The driver stub.
STUB="$ROOT/lib/stubs/libcuda.so"
if [ ! -e "$STUB" ]; then
    log "building the link-time stub $STUB"
    mkdir -p "$ROOT/lib/stubs"
    src=$(mktemp --suffix=.c)
    # Every cu<Upper>... name in cuda.h, before and after its macros (which
    # map e.g. cuMemAlloc to the exported cuMemAlloc_v2): a superset of the
    # driver's entry points. Extra symbols in a stub do no harm.
    {
        grep -ohE '\bcu[A-Z][A-Za-z0-9_]*' "$ROOT/include/cuda.h"
        echo '#include <cuda.h>' | gcc -E -P -I"$ROOT/include" - | grep -ohE '\bcu[A-Z][A-Za-z0-9_]*'
    } | sort -u | awk '{ printf "int %s(void) { return 34; }\n", $1 }' >"$src" # 34 = CUDA_ERROR_STUB_LIBRARY
    gcc -shared -fPIC -o "$STUB" -Wl,-soname,libcuda.so.1 -x c "$src"
    rm -f "$src"
fi

cat <<EOF
export CUDA_HOME='$ROOT'
export CUDA_PATH='$ROOT'
export PATH='$ROOT/bin':"\$PATH"
export CUDA_COMPUTE_CAP='$CAP'
# candle-kernels' nvcc jobs in parallel (cudaforge's default is half the cores):
export CUDAFORGE_THREADS='$(nproc)'
# run time only (cuBLAS, cuRAND, NVRTC, cudart; the driver comes from the system):
export LD_LIBRARY_PATH='$ROOT/lib'"\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
EOF
