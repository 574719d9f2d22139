#!/usr/bin/env bash
# scripts/images.sh end to end: builds every image twice into a scratch folder
# and checks what each holds (user 65532, no shell or package manager, every
# ELF's libraries and loader inside the image, the entrypoint, the labels),
# that the second build has the same manifest digests, that containerd imports
# the archives under their full names, and runs the CPU images with runc: the
# worker's --version, a bad flag, a data error and a short training run on a
# mounted corpus; the operator's and the router's --version, --help and their
# error outside a cluster. The CUDA image is built and inspected, never run.
# Then bad input.
# As root the containers run as 65532; otherwise they run rootless as the
# caller (runc cannot switch to an unmapped user) and the containerd part is
# skipped, saying so. KILN_IMAGES_ROOTLESS=1 forces the rootless way.
# Every container, bundle, mount and the private containerd are removed at exit.
# shellcheck disable=SC2016  # jq programs and bash -c scripts are single-quoted on purpose
set -uo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
source "$ROOT/scripts/lib/common.sh"
for tool in umoci runc jq readelf; do
  command -v "$tool" >/dev/null || { echo "missing $tool: run scripts/setup.sh"; exit 1; }
done
# Short: containerd's socket paths must fit in 108 bytes.
SCRATCH="$(mktemp -d /tmp/kiln-images-test.XXXXXX)"
RUNC_ROOT="$SCRATCH/runc"
containers=()
containerd_pid=""
rootless=0
[ "$(id -u)" = 0 ] && [ "${KILN_IMAGES_ROOTLESS:-0}" != 1 ] || rootless=1

cleanup() {
  local id mnt
  for id in "${containers[@]}"; do runc --root "$RUNC_ROOT" delete --force "$id" >/dev/null 2>&1; done
  if [ -n "$containerd_pid" ]; then
    kill "$containerd_pid" 2>/dev/null
    wait "$containerd_pid" 2>/dev/null
  fi
  # Deepest first: containerd's snapshot mounts, if any survived.
  while read -r mnt; do umount "$mnt" 2>/dev/null || umount -l "$mnt" 2>/dev/null; done < <(
    awk -v d="$SCRATCH" 'index($2, d) == 1 {print $2}' /proc/mounts | sort -r)
  rm -rf "$SCRATCH"
}
trap cleanup EXIT

passed=0
failed=0
pass() { passed=$((passed + 1)); echo "ok: $1"; }
fail() { failed=$((failed + 1)); printf 'FAIL: %s\n%s\n' "$1" "${2:-}"; }
# check NAME CMD...: CMD succeeds.
check() {
  local name=$1 out
  shift
  if out="$("$@" 2>&1)"; then pass "$name"; else fail "$name" "$out"; fi
}
# expect NAME WANT_RC PATTERN... -- CMD...: CMD exits WANT_RC and its output has every PATTERN.
expect() {
  local name=$1 want_rc=$2 patterns=() out rc ok=1 p
  shift 2
  while [ "$1" != "--" ]; do patterns+=("$1"); shift; done
  shift
  out="$("$@" 2>&1)"
  rc=$?
  [ "$rc" = "$want_rc" ] || ok=0
  for p in "${patterns[@]}"; do grep -qF -- "$p" <<<"$out" || ok=0; done
  if [ "$ok" = 1 ]; then
    pass "$name"
  else
    fail "$name" "$(printf 'exit %s, want %s; patterns: %s\n--- output ---\n%s\n--------------' \
      "$rc" "$want_rc" "${patterns[*]}" "$out")"
  fi
}
phase_start=$(date +%s)
phase() { echo "-- $1 (+$(($(date +%s) - phase_start))s)"; }

version="$(kiln_project_version)"
check "the chart's appVersion is the CMake project version ($version)" \
  grep -qx "appVersion: \"$version\"" "$ROOT/charts/kiln/Chart.yaml"

phase "building every image twice"
out1="$SCRATCH/out1" out2="$SCRATCH/out2"
build_start=$(date +%s)
check "first build (--all)" bash "$ROOT/scripts/images.sh" --out "$out1" --all
echo "first build: $(($(date +%s) - build_start))s"
build_start=$(date +%s)
check "second build (--all)" bash "$ROOT/scripts/images.sh" --out "$out2" --all
echo "second build: $(($(date +%s) - build_start))s"

declare -A ref=(
  [kiln-operator]="ghcr.io/kiln-dev/kiln-operator:$version"
  [kiln-router]="ghcr.io/kiln-dev/kiln-router:$version"
  [kiln-worker]="ghcr.io/kiln-dev/kiln-worker:$version"
  [kiln-worker-cuda]="ghcr.io/kiln-dev/kiln-worker:$version-cuda"
)
declare -A program=([kiln-operator]=kiln-operator [kiln-router]=kiln-router [kiln-worker]=kiln-worker
  [kiln-worker-cuda]=kiln-worker)
revision="$(git -C "$ROOT" rev-parse HEAD)"

# blob LAYOUT DIGEST: the path of a blob.
blob() { printf '%s/blobs/sha256/%s\n' "$1" "${2#sha256:}"; }

# elf_problems ROOTFS LD_LIBRARY_PATH: prints every ELF's interpreter or
# NEEDED library that does not resolve inside ROOTFS, the way ld.so searches
# (LD_LIBRARY_PATH, RUNPATH with $ORIGIN, the multiarch and default folders).
elf_problems() {
  local rootfs=$1 ld_path=$2 f rel interp lib dir dirs found count=0
  while IFS= read -r -d '' f; do
    readelf -h "$f" >/dev/null 2>&1 || continue
    count=$((count + 1))
    rel="/${f#"$rootfs"/}"
    interp="$(readelf -l "$f" 2>/dev/null | sed -n 's/.*interpreter: \(.*\)\]/\1/p')"
    if [ -n "$interp" ] && [ ! -e "$rootfs$interp" ]; then echo "$rel: interpreter $interp missing"; fi
    IFS=: read -ra dirs <<<"$ld_path:$(readelf -d "$f" | sed -n 's/.*(RUNPATH).*\[\(.*\)\]/\1/p;s/.*(RPATH).*\[\(.*\)\]/\1/p')"
    dirs=("${dirs[@]//\$ORIGIN/$(dirname "$rel")}" /lib/x86_64-linux-gnu /usr/lib/x86_64-linux-gnu /lib /usr/lib)
    while read -r lib; do
      found=0
      for dir in "${dirs[@]}"; do
        [ -n "$dir" ] && [ -e "$rootfs$dir/$lib" ] && found=1 && break
      done
      [ "$found" = 1 ] || echo "$rel: $lib not found in the image"
    done < <(readelf -d "$f" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p')
  done < <(find "$rootfs" -type f -print0)
  [ "$count" -gt 0 ] || echo "no ELF file found"
}

# unpack IMAGE: extracts the archive and its rootfs into $SCRATCH/IMAGE/{layout,bundle}.
unpack() {
  local image=$1 dir="$SCRATCH/$1" flags=()
  mkdir -p "$dir/layout"
  tar -C "$dir/layout" -xf "$out1/$image.tar" || return 1
  [ "$rootless" = 0 ] || flags=(--rootless)
  umoci unpack "${flags[@]}" --image "$dir/layout:${ref[$image]}" "$dir/bundle" >/dev/null
}

for image in kiln-operator kiln-router kiln-worker kiln-worker-cuda; do
  phase "inspecting $image"
  dir="$SCRATCH/$image"
  digest="$(cat "$out1/$image.digest" 2>/dev/null)"
  check "$image: same manifest digest on the second build ($digest)" \
    test -n "$digest" -a "$digest" = "$(cat "$out2/$image.digest" 2>/dev/null)"
  if ! unpack "$image"; then
    fail "$image: unpacks with umoci"
    continue
  fi
  layout="$dir/layout" rootfs="$dir/bundle/rootfs"
  check "$image: index.json names ${ref[$image]} for containerd and OCI tools, with the digest file's manifest" \
    jq -e --arg r "${ref[$image]}" --arg d "$digest" '.manifests | length == 1 and .[0].digest == $d and
      .[0].annotations["io.containerd.image.name"] == $r and
      .[0].annotations["org.opencontainers.image.ref.name"] == $r' "$layout/index.json"
  check "$image: the manifest blob hashes to its digest" \
    test "sha256:$(sha256sum <"$(blob "$layout" "$digest")" | cut -d' ' -f1)" = "$digest"
  config="$(blob "$layout" "$(jq -r .config.digest "$(blob "$layout" "$digest")")")"
  check "$image: runs as 65532:65532, entrypoint /usr/bin/${program[$image]}, labels version/revision/source" \
    jq -e --arg v "${ref[$image]##*:}" --arg r "$revision" --arg p "/usr/bin/${program[$image]}" '
      .config.User == "65532:65532" and .config.Entrypoint == [$p] and
      .config.WorkingDir == "/home/nonroot" and
      .config.Labels["org.opencontainers.image.version"] == $v and
      (.config.Labels["org.opencontainers.image.revision"] | startswith($r)) and
      (.config.Labels["org.opencontainers.image.source"] | length > 0)' "$config"
  check "$image: /etc/passwd and /etc/group name nonroot 65532" \
    grep -q '^nonroot:x:65532:65532:' "$rootfs/etc/passwd"
  check "$image: the entrypoint is an executable ELF file" \
    bash -c '[ -f "$1" ] && [ -x "$1" ] && readelf -h "$1" >/dev/null' _ "$rootfs/usr/bin/${program[$image]}"
  shells="$(find "$rootfs" \( -name sh -o -name bash -o -name dash -o -name ash -o -name zsh -o -name ksh \
    -o -name csh -o -name tcsh -o -name fish -o -name busybox -o -name dpkg -o -name apt -o -name apt-get \
    -o -name apk -o -name rpm -o -name microdnf \) -printf '/%P\n')"
  check "$image: no /bin, no shell, no package manager${shells:+ (found: $shells)}" \
    test -z "$shells" -a ! -e "$rootfs/bin"
  abs_links="$(find "$rootfs" -type l -lname '/*' -printf '/%P\n')"
  check "$image: symlinks stay inside the image${abs_links:+ (absolute: $abs_links)}" test -z "$abs_links"
  ld_path="$(jq -r '.config.Env[] | select(startswith("LD_LIBRARY_PATH=")) | ltrimstr("LD_LIBRARY_PATH=")' "$config")"
  problems="$(elf_problems "$rootfs" "$ld_path")"
  check "$image: every ELF's loader and NEEDED libraries are in the image${problems:+$'\n'$problems}" \
    test -z "$problems"
done
check "the CPU worker image carries no CUDA library" \
  test -z "$(find "$SCRATCH/kiln-worker/bundle/rootfs" -name 'libcu*' -o -name 'libnccl*')"
for image in kiln-operator kiln-router; do
  check "the $image image carries the CA bundle" \
    test -s "$SCRATCH/$image/bundle/rootfs/etc/ssl/certs/ca-certificates.crt"
done
check "the router image carries no CUDA library" \
  test -z "$(find "$SCRATCH/kiln-router/bundle/rootfs" -name 'libcu*' -o -name 'libnccl*')"
check "the CUDA image carries cudart, cuBLAS, cuBLASLt and NCCL" bash -c '
  for l in libcudart.so.13 libcublas.so.13 libcublasLt.so.13 libnccl.so.2; do
    [ -f "$1/usr/local/cuda/lib64/$l" ] || exit 1
  done' _ "$SCRATCH/kiln-worker-cuda/bundle/rootfs"
# The big CUDA rootfs is done with.
rm -rf "$SCRATCH/kiln-worker-cuda"

phase "running the CPU images with runc"
# run_in IMAGE ID [MOUNT_JSON] -- ARGS...: runs ARGS in a container of IMAGE's bundle.
run_in() {
  local image=$1 id="kiln-images-test-$$-$2" mounts='[]' bundle="$SCRATCH/$1/bundle"
  shift 2
  if [ "$1" != "--" ]; then mounts=$1; shift; fi
  shift
  local user='.'
  [ "$rootless" = 0 ] || user='.process.user = {"uid": 0, "gid": 0}'
  jq --argjson args "$(printf '%s\n' "$@" | jq -R . | jq -s .)" --argjson mounts "$mounts" \
    ".process.terminal = false | .process.args = \$args | .mounts += \$mounts | $user" \
    "$bundle/config.json" >"$bundle/config.json.new" && mv "$bundle/config.json.new" "$bundle/config.json"
  containers+=("$id")
  runc --root "$RUNC_ROOT" run --bundle "$bundle" "$id"
}
[ "$rootless" = 0 ] || echo "note: rootless: the containers run as the caller (root in a user namespace), not as 65532"
expect "worker image: kiln-worker --version" 0 "kiln-worker $version" "cpu-only" -- \
  run_in kiln-worker version -- kiln-worker --version
expect "worker image: a bad flag exits 2 (ConfigurationError) naming the flag" 2 \
  "unknown flag '--bogus'" -- run_in kiln-worker badflag -- kiln-worker --bogus
expect "worker image: training on missing data exits 6 (DataError) naming the file" 6 \
  "cannot read /data/missing/manifest.json" -- \
  run_in kiln-worker dataerror -- kiln-worker train --data /data/missing/manifest.json --steps 1
if [ -d /usr/share/games/fortunes ]; then
  mkdir -p "$SCRATCH/work" && chmod 0777 "$SCRATCH/work"
  mounts="$(jq -n --arg c /usr/share/games/fortunes --arg w "$SCRATCH/work" '[
    {destination: "/data/fortunes", type: "bind", source: $c, options: ["rbind", "ro"]},
    {destination: "/work", type: "bind", source: $w, options: ["rbind", "rw"]}]')"
  expect "worker image: prepare the fortunes corpus" 0 "prepared" -- \
    run_in kiln-worker prepare "$mounts" -- kiln-worker prepare --input /data/fortunes --output /work/data
  expect "worker image: train 3 steps on the CPU and write a checkpoint" 0 \
    '"event":"checkpoint"' '"device":"cpu"' -- run_in kiln-worker train "$mounts" -- kiln-worker train \
    --data /work/data/manifest.json --steps 3 --layers 1 --heads 2 --channels 32 --seq 32 --batch 2 \
    --checkpoint-dir /work/ckpt
  if [ "$rootless" = 0 ]; then
    check "worker image: the checkpoint is owned by 65532 (the container's user)" \
      test "$(stat -c %u "$SCRATCH/work/ckpt/step-00000003.ckpt" 2>&1)" = 65532
  fi
else
  fail "worker image: training run" "no /usr/share/games/fortunes: run scripts/setup.sh (Debian's fortunes)"
fi
expect "operator image: kiln-operator --version" 0 "kiln-operator $version" -- \
  run_in kiln-operator version -- kiln-operator --version
expect "operator image: kiln-operator --help" 0 "Usage: kiln-operator" "--leader-elect" -- \
  run_in kiln-operator help -- kiln-operator --help
expect "operator image: outside a cluster it exits 2 saying why" 2 "not running in a pod" -- \
  run_in kiln-operator nocluster -- kiln-operator
expect "router image: kiln-router --version" 0 "kiln-router $version" -- \
  run_in kiln-router version -- kiln-router --version
expect "router image: kiln-router --help" 0 "Usage: kiln-router" "--routes" -- \
  run_in kiln-router help -- kiln-router --help
expect "router image: outside a cluster, without --routes, it exits 2 saying why" 2 \
  "not running in a pod" "or pass --routes FILE" -- run_in kiln-router nocluster -- kiln-router

phase "importing into a private containerd"
if [ "$rootless" = 1 ]; then
  echo "skipped: containerd needs root"
elif ! command -v containerd >/dev/null || ! command -v ctr >/dev/null; then
  fail "containerd import" "containerd or ctr missing: run scripts/setup.sh"
else
  cd_dir="$SCRATCH/containerd"
  mkdir -p "$cd_dir"
  cat >"$cd_dir/config.toml" <<EOF
version = 2
root = "$cd_dir/root"
state = "$cd_dir/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$cd_dir/sock"
[ttrpc]
  address = "$cd_dir/sock.ttrpc"
EOF
  containerd --config "$cd_dir/config.toml" >"$cd_dir/log" 2>&1 &
  containerd_pid=$!
  ctr=(ctr --address "$cd_dir/sock" -n k8s.io)
  for _ in $(seq 50); do "${ctr[@]}" version >/dev/null 2>&1 && break; sleep 0.2; done
  for image in kiln-operator kiln-router kiln-worker; do
    expect "containerd: ctr images import names $image ${ref[$image]}" 0 "${ref[$image]}" -- \
      "${ctr[@]}" images import "$out1/$image.tar"
    check "containerd: ${ref[$image]} has the digest file's digest" \
      test "$("${ctr[@]}" images ls "name==${ref[$image]}" | awk 'NR == 2 {print $3}')" = \
      "$(cat "$out1/$image.digest")"
  done
fi

phase "bad input"
expect "an unknown image is named, with the valid names as the fix" 1 \
  "unknown image 'bogus'" "fix: name one or more of: kiln-operator kiln-router kiln-worker kiln-worker-cuda" -- \
  bash "$ROOT/scripts/images.sh" --out "$SCRATCH/bad" bogus
mkdir -p "$SCRATCH/minpath"
ln -s "$(command -v dirname)" "$(command -v awk)" "$SCRATCH/minpath/"
expect "without umoci it says how to install it" 1 \
  "required command 'umoci' not found" "fix: install Debian's umoci" -- \
  env PATH="$SCRATCH/minpath" "$BASH" "$ROOT/scripts/images.sh" --out "$SCRATCH/bad"
mkdir -p "$SCRATCH/bins"
expect "--bin-dir without the program names the missing file" 1 \
  "no program for kiln-operator at $SCRATCH/bins/kiln-operator" "fix:" -- \
  bash "$ROOT/scripts/images.sh" --out "$SCRATCH/bad" --bin-dir "$SCRATCH/bins" kiln-operator
ln -s "$ROOT/build/ci/worker/kiln-worker" "$SCRATCH/bins/kiln-worker"
expect "a CUDA-linked worker is refused for the CPU image" 1 \
  "links the CUDA libraries, but kiln-worker is the CPU-only image" "fix: use the CPU-only build" -- \
  bash "$ROOT/scripts/images.sh" --out "$SCRATCH/bad" --bin-dir "$SCRATCH/bins" kiln-worker
check "nothing was written for the refused builds" test ! -e "$SCRATCH/bad/kiln-worker.tar"

phase "done"
echo "images: $passed passed, $failed failed"
[ "$failed" = 0 ]
