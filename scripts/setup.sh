#!/usr/bin/env bash
# Installs everything kiln's build, tests and demo need, idempotently:
#   - Debian packages (compilers, C++ libraries, Catch2, the fortunes corpus),
#   - the CUDA 13.0 toolkit from NVIDIA's PyPI wheels when no nvcc 13.0 exists,
#   - the pinned Kubernetes control plane, etcd, kwok and helm built from Go modules,
#     and the real nodes' kubelet, kube-proxy and CoreDNS (containerd, runc and the
#     CNI plugins are Debian packages), and the Gateway API's standard CRDs.
# A second run does nothing but check. Environment:
#   KILN_SKIP_CUDA=1   skip the CUDA toolkit (CPU-only build)
#   KILN_SKIP_TOOLS=1  skip the Go-built control-plane tools
set -euo pipefail
source "$(dirname "$0")/lib/common.sh"
source "$(dirname "$0")/lib/cuda.sh"

APT_PACKAGES=(
  build-essential cmake ninja-build pkg-config ccache clang-format git curl openssl
  python3 python3-pip python3-yaml python3-numpy iproute2 procps
  containerd runc containernetworking-plugins iptables util-linux
  libcpprest-dev libboost-dev libyaml-cpp-dev libssl-dev nlohmann-json3-dev prometheus-cpp-dev catch2
  libjemalloc-dev  # kiln-router's allocator (cmake/KilnDependencies.cmake)
  fortunes
  # Container images without a container engine (scripts/images.sh), and
  # running them in the tests.
  umoci runc containerd jq ca-certificates
  # The fuzz preset (fuzz/, docs/reliability.md): bookworm's newest clang; its
  # runtime libraries (libFuzzer, ASan, UBSan) are in libclang-rt-16-dev, and
  # the CPU kernels' OpenMP under clang is libomp. The asan and tsan presets
  # use GCC's own sanitizers (libasan, libubsan, libtsan: build-essential).
  clang-16 libclang-rt-16-dev libomp-16-dev
  # A real Prometheus for the ModelDeployment analysis test (the test starts
  # its binary on loopback; the service the package starts is disabled below).
  prometheus
  # The tests of kiln's Argo CD health checks (integrations/argocd/) run them
  # in Lua 5.1, the language version of the interpreter Argo CD embeds
  # (gopher-lua).
  lua5.1
)

install_apt_packages() {
  local missing=() pkg
  for pkg in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  need apt-get "kiln's setup installs Debian packages; on another distribution install: ${missing[*]}"
  local sudo=()
  if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null 2>&1 || die "missing packages ${missing[*]} and not root" "run as root or install them: apt-get install ${missing[*]}"
    sudo=(sudo)
  fi
  log "installing Debian packages: ${missing[*]}"
  "${sudo[@]}" apt-get update -qq >/dev/null ||
    die "apt-get update failed" "check the machine's Debian mirrors (/etc/apt/sources.list*)"
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null ||
    die "apt-get could not install: ${missing[*]}" "run 'apt-get install ${missing[*]}' to see the error"
  # kiln needs Prometheus' binary, not a daemon: on a systemd host the package
  # just installed has started and enabled its own service on :9090.
  if [[ " ${missing[*]} " == *" prometheus "* ]] && [ -d /run/systemd/system ]; then
    log "stopping and disabling the prometheus.service the package started (kiln runs the binary itself)"
    "${sudo[@]}" systemctl disable --now prometheus.service >/dev/null 2>&1 || true  # Absent: nothing to stop.
  fi
}

install_apt_packages
if [ "${KILN_SKIP_CUDA:-0}" != 1 ] && [ -z "$(kiln_system_cuda_root)" ]; then
  kiln_install_cuda_wheels
fi
if [ "${KILN_SKIP_TOOLS:-0}" != 1 ]; then
  "$KILN_ROOT/scripts/build-tools.sh"
fi
log "setup complete (cache: $KILN_CACHE_DIR)"
