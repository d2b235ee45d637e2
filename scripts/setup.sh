#!/usr/bin/env bash
# Installs everything masic needs on a fresh machine (Debian, Python 3.11, root): the aarch64 cross toolchain and
# qemu from Debian, clang with libFuzzer and the sanitizer runtimes (the loader's fuzz targets, fuzz/), a CPU-only
# torch pinned first (anything unpinned pulls a multi-GB CUDA build), norse without its torchvision dependency,
# snnTorch, SpikingJelly and Sinabs without theirs, Apache TVM, and masic itself in editable mode. Safe to re-run:
# each step is skipped when already satisfied.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
log() { printf '[setup] %s\n' "$*" >&2; }

need_apt=()
command -v aarch64-linux-gnu-gcc >/dev/null || need_apt+=(gcc-aarch64-linux-gnu libc6-dev-arm64-cross)
[ -e /usr/aarch64-linux-gnu/lib/libc.a ] || need_apt+=(libc6-dev-arm64-cross)
command -v qemu-aarch64 >/dev/null || need_apt+=(qemu-user)
# masic deploy and profile use the system's OpenSSH client; their tests start a real sshd on 127.0.0.1
command -v ssh >/dev/null && command -v scp >/dev/null || need_apt+=(openssh-client)
[ -x /usr/sbin/sshd ] || need_apt+=(openssh-server)
# clang, and compiler-rt's libFuzzer and sanitizer runtimes of the same version (libclang-rt-N-dev from Debian 12 on,
# part of libclang-common-N-dev before). gcc's own sanitizer runtimes (libasan, libubsan) come with gcc.
clang_major() {
  if command -v clang >/dev/null; then clang -dumpversion | cut -d. -f1
  else apt-cache depends clang 2>/dev/null | grep -o 'clang-[0-9]\+' | head -n1 | cut -d- -f2; fi
}
fuzzer_runtime() { compgen -G "/usr/lib/llvm-$1/lib/clang/*/lib/linux/libclang_rt.fuzzer-$(uname -m).a" >/dev/null; }
need_clang=0
command -v clang >/dev/null && fuzzer_runtime "$(clang_major)" || need_clang=1
if [ ${#need_apt[@]} -gt 0 ] || [ $need_clang -eq 1 ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  if [ ${#need_apt[@]} -gt 0 ]; then
    log "installing Debian packages: ${need_apt[*]}"
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
  fi
  if [ $need_clang -eq 1 ]; then
    major=$(clang_major)
    runtime=libclang-rt-$major-dev
    apt-cache show "$runtime" >/dev/null 2>&1 || runtime=libclang-common-$major-dev
    log "installing Debian packages: clang $runtime"
    # without recommends: they would add llvm-N-dev, hundreds of MB the fuzzers do not use
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends clang "$runtime" >/dev/null
  fi
fi

pip_install() { "$PY" -m pip install -q --disable-pip-version-check "$@"; }

if ! "$PY" -c 'import torch, sys; sys.exit(torch.__version__.split("+")[0] != "2.13.0")' 2>/dev/null; then
  log "installing torch==2.13.0 (CPU)"
  pip_install torch==2.13.0
fi
if ! "$PY" -c 'import norse, nirtorch' 2>/dev/null; then
  log "installing norse, nir, nirtorch (norse without torchvision)"
  pip_install --no-deps norse==1.1.0 nirtorch==2.6
  pip_install nir==1.0.8 h5py
fi
FRAMEWORKS="snntorch==1.0.0 spikingjelly==2.0.0 sinabs==3.1.3 pbr==7.1.3 loguru==0.7.3"
if ! "$PY" -c 'import sys, importlib.metadata as m
sys.exit(any(m.version(n) != v for n, v in (p.split("==") for p in sys.argv[1:])))' $FRAMEWORKS 2>/dev/null; then
  # The SNN frameworks masic's frontends read, without their declared dependencies, which would pull another torch
  # (spikingjelly: torchvision, torchaudio, tensorboard; sinabs: samna, the Speck hardware library) or an older nir
  # (sinabs: nir<=1.0.4). What they import at run time is pure Python: pbr (sinabs' version, needs setuptools) and
  # loguru (spikingjelly's logger, no dependencies on Linux); numpy, h5py, matplotlib come with masic's own.
  log "installing snntorch 1.0.0, spikingjelly 2.0.0, sinabs 3.1.3 (without their dependencies)"
  pip_install --no-deps $FRAMEWORKS
fi
if ! "$PY" -c 'import tvm' 2>/dev/null; then
  log "installing apache-tvm 0.27"
  pip_install apache-tvm==0.27.0.post1
fi
if ! "$PY" -c 'import omnimalloc' 2>/dev/null; then
  # Only for bench/memplan.py's comparison; it depends on typing-extensions alone (no torch).
  log "installing omnimalloc 1.0.0"
  pip_install omnimalloc==1.0.0
fi
log "installing masic and its Python dependencies"
# Without build isolation the editable build uses this interpreter's setuptools, which needs wheel (a bare Python
# has neither a recent setuptools nor wheel).
"$PY" -c 'import wheel' 2>/dev/null || pip_install wheel
pip_install --no-build-isolation -e '.[dev]'
