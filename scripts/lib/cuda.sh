# shellcheck shell=bash
# Locates or installs the CUDA toolkit kiln builds against. Source after common.sh.
# The GPU machines run CUDA 13.0 and NCCL 2.28; where no nvcc of that line is
# installed, NVIDIA's PyPI wheels at these exact versions form a toolkit prefix
# in the cache that CMake's CUDA language and find_package(CUDAToolkit) accept.

KILN_CUDA_WHEELS=(
  nvidia-cuda-nvcc==13.0.88
  nvidia-cuda-runtime==13.0.96
  nvidia-cuda-crt==13.0.88
  nvidia-cuda-cccl==13.0.85
  nvidia-nvvm==13.0.88
  nvidia-cublas==13.1.0.3
  nvidia-nccl-cu13==2.28.9
)

kiln_cuda_wheel_prefix() {
  printf '%s/cuda/%s\n' "$KILN_CACHE_DIR" "$(printf '%s\n' "${KILN_CUDA_WHEELS[@]}" | sha256sum | cut -c1-12)"
}

# Prints the root of an installed CUDA 13.0 toolkit ($CUDA_HOME, $CUDA_PATH or
# /usr/local/cuda*), or nothing when there is none.
kiln_system_cuda_root() {
  local cand
  for cand in "${CUDA_HOME:-}" "${CUDA_PATH:-}" /usr/local/cuda-13.0 /usr/local/cuda; do
    [ -n "$cand" ] && [ -x "$cand/bin/nvcc" ] || continue
    if "$cand/bin/nvcc" --version 2>/dev/null | grep -q 'release 13\.0'; then
      printf '%s\n' "$cand"
      return 0
    fi
  done
}

# Installs the pinned wheels and lays out lib64, unversioned .so links and NCCL
# next to the CUDA headers and libraries, as a CUDA installation has them.
kiln_install_cuda_wheels() {
  local prefix root tmp
  prefix="$(kiln_cuda_wheel_prefix)"
  root="$prefix/nvidia/cu13"
  if [ -f "$root/.kiln-ready" ]; then
    ln -sfn "$root" "$KILN_CACHE_DIR/cuda/current"
    return 0
  fi
  export PIP_ROOT_USER_ACTION=ignore
  need python3 "install Python 3 with pip (Debian: apt-get install python3 python3-pip)"
  python3 -m pip --version >/dev/null 2>&1 ||
    die "python3 has no pip module, needed to install the CUDA toolkit wheels" \
      "apt-get install python3-pip, or install CUDA 13.0 and set CUDA_HOME"
  log "installing CUDA 13.0 toolkit wheels into $prefix (about 1 GiB)"
  tmp="$prefix.partial"
  rm -rf "$tmp"
  if ! python3 -m pip install --quiet --disable-pip-version-check --no-deps \
    --no-warn-script-location --target "$tmp" "${KILN_CUDA_WHEELS[@]}"; then
    rm -rf "$tmp"
    die "pip could not install the CUDA wheels (${KILN_CUDA_WHEELS[*]})" \
      "check that PyPI is reachable (pip config list), or install CUDA 13.0 and set CUDA_HOME"
  fi
  (
    cd "$tmp/nvidia/cu13"
    ln -sfn lib lib64
    cd lib
    local lib
    for lib in *.so.*; do ln -sf "$lib" "${lib%%.so.*}.so"; done
    ln -sf ../../nccl/lib/libnccl.so.2 libnccl.so.2
    ln -sf libnccl.so.2 libnccl.so
    cd ../include
    for lib in ../../nccl/include/*; do ln -sfn "$lib" .; done
  )
  "$tmp/nvidia/cu13/bin/nvcc" --version >/dev/null ||
    die "the installed nvcc does not run" "remove $tmp and rerun scripts/setup.sh"
  touch "$tmp/nvidia/cu13/.kiln-ready"
  rm -rf "$prefix"
  mv "$tmp" "$prefix"
  # A stable name for CMake (cmake/KilnCuda.cmake) to find without this script.
  ln -sfn "$root" "$KILN_CACHE_DIR/cuda/current"
  log "CUDA toolkit ready at $root"
}
