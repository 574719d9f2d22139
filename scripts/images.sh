#!/usr/bin/env bash
# Builds kiln's container images as OCI image archives, without a container
# engine or a base image: each image is one layer holding the program, exactly
# the shared libraries it loads (its ldd closure and the dynamic loader),
# /etc/passwd and /etc/group with the nonroot user 65532, and, where an image
# asks for them, CA certificates or the CUDA libraries. GNU tar writes the
# layer (sorted, fixed owners and mtimes) and umoci turns it into an OCI image;
# the same inputs give the same manifest digest.
#
#   scripts/images.sh [--out DIR] [--bin-dir DIR] [--all] [IMAGE...]
#
# IMAGE is one of the definitions in images/: kiln-operator, kiln-router,
# kiln-worker (CPU), kiln-worker-cuda. Default: kiln-operator kiln-router
# kiln-worker; --all adds kiln-worker-cuda. Writes DIR/<image>.tar (default
# DIR: build/images), which `ctr -n k8s.io images import` imports as
# ghcr.io/kiln-dev/<repo>:<version>, and DIR/<image>.digest with the manifest
# digest.
#
# Without --bin-dir the programs come from the CMake build trees, built here
# first: build/ci (kiln-operator, kiln-router, and kiln-worker for the CUDA
# image) and build/cpu (the CPU-only kiln-worker). --bin-dir DIR takes
# DIR/kiln-operator, DIR/kiln-router, DIR/kiln-worker (must be a CPU-only
# build) and DIR/kiln-worker-cuda (or DIR/kiln-worker when absent) instead.
# Environment: SOURCE_DATE_EPOCH (default: the last commit's time) for every
# timestamp; KILN_IMAGE_SOURCE for the org.opencontainers.image.source label;
# KILN_JOBS=N for ninja -jN.
# shellcheck source-path=SCRIPTDIR
set -euo pipefail
source "$(dirname "$0")/lib/common.sh"
source "$(dirname "$0")/lib/cuda.sh"

IMAGES_DIR="$KILN_ROOT/images"
ALL_IMAGES=(kiln-operator kiln-router kiln-worker kiln-worker-cuda)
DEFAULT_IMAGES=(kiln-operator kiln-router kiln-worker)

usage() {
  sed -n '2,/^[^#]/{/^[^#]/d;/^# shellcheck/d;s/^# \{0,1\}//;p}' "$0"
}

out="$KILN_ROOT/build/images"
bin_dir=""
images=()
while [ $# -gt 0 ]; do
  case "$1" in
    --out) [ $# -ge 2 ] || die "--out needs a folder" "scripts/images.sh --out DIR"; out="$2"; shift 2 ;;
    --out=*) out="${1#--out=}"; shift ;;
    --bin-dir) [ $# -ge 2 ] || die "--bin-dir needs a folder" "scripts/images.sh --bin-dir DIR"; bin_dir="$2"; shift 2 ;;
    --bin-dir=*) bin_dir="${1#--bin-dir=}"; shift ;;
    --all) images+=("${ALL_IMAGES[@]}"); shift ;;
    -h | --help) usage; exit 0 ;;
    -*) die "unknown option '$1'" "run 'scripts/images.sh --help' for the options" ;;
    *)
      [ -f "$IMAGES_DIR/$1.image" ] ||
        die "unknown image '$1'" "name one or more of: ${ALL_IMAGES[*]} (or --all); definitions are in images/"
      images+=("$1")
      shift
      ;;
  esac
done
[ ${#images[@]} -gt 0 ] || images=("${DEFAULT_IMAGES[@]}")
# Each image once, in the order first named.
mapfile -t images < <(printf '%s\n' "${images[@]}" | awk '!seen[$0]++')

need umoci "install Debian's umoci: run scripts/setup.sh (or apt-get install umoci)"
need tar "install GNU tar (apt-get install tar)"
need ldd "install Debian's libc-bin (apt-get install libc-bin)"
need readelf "install binutils: run scripts/setup.sh (or apt-get install binutils)"
need strip "install binutils: run scripts/setup.sh (or apt-get install binutils)"
need python3 "install Python 3 (apt-get install python3)"
need sha256sum "install coreutils (apt-get install coreutils)"

version="$(kiln_project_version)"
[ -n "$version" ] || die "no version in $KILN_ROOT/CMakeLists.txt" "keep 'project(kiln VERSION x.y.z' in CMakeLists.txt"
revision="$(git -C "$KILN_ROOT" rev-parse HEAD 2>/dev/null || echo unknown)"
if [ "$revision" != unknown ] && [ -n "$(git -C "$KILN_ROOT" status --porcelain --untracked-files=no 2>/dev/null)" ]; then
  revision="$revision-dirty"
fi
epoch="${SOURCE_DATE_EPOCH:-$(git -C "$KILN_ROOT" log -1 --format=%ct 2>/dev/null || echo 0)}"
created="$(date -u -d "@$epoch" +%Y-%m-%dT%H:%M:%SZ)"
source_url="${KILN_IMAGE_SOURCE:-https://github.com/kiln-dev/kiln}"
case "$(uname -m)" in
  x86_64) arch=amd64 ;;
  aarch64) arch=arm64 ;;
  *) die "unsupported machine $(uname -m)" "build the images on x86-64 or arm64" ;;
esac

# load_image NAME: the IMAGE_* variables of images/NAME.image.
load_image() {
  IMAGE_ENV=() IMAGE_PORTS=() IMAGE_TAG_SUFFIX="" IMAGE_CA_CERTIFICATES=0 IMAGE_CUDA=0
  # shellcheck source=/dev/null
  source "$IMAGES_DIR/$1.image"
}

# Builds the programs the images need in their CMake build trees (configure
# keeps the embedded commit current; ninja rebuilds only what changed).
build_programs() {
  local preset targets name
  local -A wanted=()
  for name in "${images[@]}"; do
    load_image "$name"
    wanted[$IMAGE_PRESET]+=" $IMAGE_PROGRAM"
  done
  for preset in ci cpu; do
    [ -n "${wanted[$preset]:-}" ] || continue
    read -ra targets <<<"$(tr ' ' '\n' <<<"${wanted[$preset]}" | sort -u | xargs)"
    need cmake "run scripts/setup.sh"
    need ninja "run scripts/setup.sh"
    log "building ${targets[*]} (preset $preset)"
    local cfg_log="$KILN_ROOT/build/images-configure-$preset.log"
    mkdir -p "$KILN_ROOT/build"
    (cd "$KILN_ROOT" && cmake --preset "$preset" >"$cfg_log" 2>&1) ||
      die "configuring the $preset preset failed (log: $cfg_log)" "run scripts/setup.sh, then 'cmake --preset $preset' to see the error"
    ninja -C "$KILN_ROOT/build/$preset" ${KILN_JOBS:+-j"$KILN_JOBS"} "${targets[@]}" >&2 ||
      die "building ${targets[*]} in build/$preset failed" "fix the build error above, or pass --bin-dir with built programs"
  done
}

# program_path NAME: the program file image NAME packs.
program_path() {
  load_image "$1"
  if [ -z "$bin_dir" ]; then
    printf '%s/build/%s/%s\n' "$KILN_ROOT" "$IMAGE_PRESET" "$IMAGE_PROGRAM_PATH"
  elif [ "$1" = kiln-worker-cuda ] && [ -x "$bin_dir/kiln-worker-cuda" ]; then
    printf '%s/kiln-worker-cuda\n' "$bin_dir"
  else
    printf '%s/%s\n' "$bin_dir" "$IMAGE_PROGRAM"
  fi
}

# needed ELF: the DT_NEEDED names of ELF, one a line.
needed() {
  readelf -d "$1" 2>/dev/null | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p'
}

# The folder of the CUDA libraries the CUDA build links (for ldd).
cuda_lib_dir() {
  local root
  root="$(kiln_system_cuda_root)"
  [ -n "$root" ] || root="$KILN_CACHE_DIR/cuda/current"
  if [ -d "$root/lib64" ]; then printf '%s/lib64\n' "$root"; else printf '%s/lib\n' "$root"; fi
}

# stage_rootfs NAME PROGRAM ROOTFS: lays out image NAME's files under ROOTFS.
stage_rootfs() {
  local name=$1 program=$2 rootfs=$3 line soname path real dest interp interp_real cuda_dir=""
  local multiarch
  interp="$(readelf -l "$program" | sed -n 's/.*Requesting program interpreter: \(.*\)\]/\1/p')"
  [ -n "$interp" ] || die "$program has no program interpreter (not a dynamic executable?)" \
    "build it with the CMake presets (cmake --preset ci)"
  interp_real="$(readlink -f "$interp")"
  multiarch="$(basename "$(dirname "$interp_real")")"
  mkdir -p "$rootfs"/{etc,tmp,usr/bin,usr/lib64,"usr/lib/$multiarch"} "$rootfs/home/nonroot"
  ln -s usr/lib "$rootfs/lib"
  ln -s usr/lib64 "$rootfs/lib64"
  install -m 0644 "$IMAGES_DIR"/base/etc/{passwd,group,nsswitch.conf} "$rootfs/etc/"
  chmod 1777 "$rootfs/tmp"
  chmod 0700 "$rootfs/home/nonroot"
  strip --strip-debug -o "$rootfs/usr/bin/$IMAGE_PROGRAM" "$program"
  chmod 0755 "$rootfs/usr/bin/$IMAGE_PROGRAM"

  if [ "$IMAGE_CA_CERTIFICATES" = 1 ]; then
    [ -f /etc/ssl/certs/ca-certificates.crt ] ||
      die "no CA bundle at /etc/ssl/certs/ca-certificates.crt" "install Debian's ca-certificates: run scripts/setup.sh"
    mkdir -p "$rootfs/etc/ssl/certs"
    install -m 0644 /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/"
  fi

  local links_cuda=0
  needed "$program" | grep -q '^libcudart\.so' && links_cuda=1
  if [ "$IMAGE_CUDA" = 1 ]; then
    [ "$links_cuda" = 1 ] || die "$program does not link the CUDA runtime, so it cannot be the CUDA image's worker" \
      "build it with the ci preset (cmake --preset ci), or give --bin-dir a CUDA build as kiln-worker-cuda"
    cuda_dir="$(cuda_lib_dir)"
    mkdir -p "$rootfs/usr/local/cuda/lib64"
  elif [ "$links_cuda" = 1 ]; then
    die "$program links the CUDA libraries, but $name is the CPU-only image" \
      "use the CPU-only build (cmake --preset cpu; build/cpu/worker/kiln-worker), or build kiln-worker-cuda"
  fi

  # The loader and every library ldd resolves, as regular files named by
  # their sonames; system libraries keep their folder, CUDA's go to
  # /usr/local/cuda/lib64.
  install -m 0755 "$interp_real" "$rootfs/usr/lib/$multiarch/$(basename "$interp")"
  ln -s "../lib/$multiarch/$(basename "$interp")" "$rootfs/usr/lib64/$(basename "$interp")"
  local ldd_out
  ldd_out="$(LD_LIBRARY_PATH="$cuda_dir" ldd "$program")" || die "ldd failed on $program" "check that it is a dynamic executable for this machine"
  if grep -q 'not found' <<<"$ldd_out"; then
    die "$program needs libraries this machine cannot find: $(grep 'not found' <<<"$ldd_out" | awk '{print $1}' | xargs)" \
      "run scripts/setup.sh (Debian packages, CUDA wheels), then rebuild"
  fi
  while read -r line; do
    case "$line" in
      *' => '*) soname="${line%% => *}"; path="${line#* => }"; path="${path%% (*}" ;;
      *) continue ;;
    esac
    real="$(readlink -f "$path")"
    case "$real" in
      /usr/lib/* | /lib/*) dest="$rootfs/usr/lib/${real#*/lib/}"; dest="$(dirname "$dest")/$soname" ;;
      *)
        [ "$IMAGE_CUDA" = 1 ] || die "$program loads $soname from $real, outside the system library folders" \
          "install it as a Debian package, or link it statically"
        dest="$rootfs/usr/local/cuda/lib64/$soname"
        ;;
    esac
    mkdir -p "$(dirname "$dest")"
    install -m 0755 "$real" "$dest"
  done <<<"$ldd_out"
}

# pack_layer ROOTFS TAR: a layer archive that depends only on the files'
# contents, names and modes: entries sorted, owners root (the home folder
# 65532), every mtime SOURCE_DATE_EPOCH, no atime/ctime/xattr records.
pack_layer() {
  local rootfs=$1 tarball=$2
  # shellcheck disable=SC2054  # the commas belong to --pax-option
  local common=(--format=posix --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime
    --mtime="@$epoch" --numeric-owner --no-acls --no-xattrs --no-selinux -C "$rootfs")
  local top
  mapfile -t top < <(cd "$rootfs" && printf '%s\n' * | LC_ALL=C sort)
  LC_ALL=C tar --create --file "$tarball" --sort=name --owner=0 --group=0 \
    --exclude=./home/nonroot --exclude=home/nonroot "${common[@]}" "${top[@]}"
  LC_ALL=C tar --append --file "$tarball" --no-recursion --owner=65532 --group=65532 \
    "${common[@]}" home/nonroot
}

# build_image NAME: writes $out/NAME.tar and $out/NAME.digest.
build_image() {
  local name=$1 program work ref tag started
  started=$(date +%s)
  program="$(program_path "$name")"
  load_image "$name"
  [ -x "$program" ] || die "no program for $name at $program" \
    "build it (scripts/images.sh builds it without --bin-dir), or point --bin-dir at a folder holding $IMAGE_PROGRAM"
  tag="$version$IMAGE_TAG_SUFFIX"
  ref="$IMAGE_REPOSITORY:$tag"
  work="$work_root/$name"
  mkdir -p "$work"
  stage_rootfs "$name" "$program" "$work/rootfs"
  pack_layer "$work/rootfs" "$work/layer.tar"

  local layout="$work/layout" args=() kv port
  umoci init --layout "$layout"
  umoci new --image "$layout:$tag"
  umoci raw add-layer --image "$layout:$tag" --history.created "$created" \
    --history.created_by "scripts/images.sh $name" "$work/layer.tar"
  args=(--created "$created" --no-history --architecture "$arch" --os linux
    --config.user 65532:65532 --config.workingdir /home/nonroot
    --config.entrypoint "/usr/bin/$IMAGE_PROGRAM"
    --config.env PATH=/usr/local/bin:/usr/bin --config.env HOME=/home/nonroot)
  for kv in "${IMAGE_ENV[@]}"; do args+=(--config.env "$kv"); done
  for port in "${IMAGE_PORTS[@]}"; do args+=(--config.exposedports "$port"); done
  for kv in "org.opencontainers.image.title=$name" \
    "org.opencontainers.image.description=$IMAGE_DESCRIPTION" \
    "org.opencontainers.image.version=$tag" "org.opencontainers.image.revision=$revision" \
    "org.opencontainers.image.source=$source_url" "org.opencontainers.image.created=$created"; do
    args+=(--config.label "$kv" --manifest.annotation "$kv")
  done
  umoci config --image "$layout:$tag" "${args[@]}"
  umoci gc --layout "$layout"

  # Name the manifest the way containerd's importer and OCI tools read it.
  local digest
  digest="$(python3 - "$layout/index.json" "$ref" <<'EOF'
import json, sys
path, ref = sys.argv[1], sys.argv[2]
with open(path) as f:
    index = json.load(f)
[manifest] = index["manifests"]
manifest["annotations"] = {"io.containerd.image.name": ref, "org.opencontainers.image.ref.name": ref}
with open(path, "w") as f:
    json.dump(index, f, sort_keys=True, separators=(",", ":"))
print(manifest["digest"])
EOF
)"
  mkdir -p "$out"
  LC_ALL=C tar --create --file "$out/$name.tar.partial" --sort=name --format=posix \
    --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime --mtime="@$epoch" \
    --owner=0 --group=0 --numeric-owner --mode=a+r -C "$layout" oci-layout index.json blobs
  mv "$out/$name.tar.partial" "$out/$name.tar"
  printf '%s\n' "$digest" >"$out/$name.digest"
  rm -rf "$work"
  log "$name: $ref $digest ($(du -h "$out/$name.tar" | cut -f1), $(($(date +%s) - started))s) -> $out/$name.tar"
}

[ -n "$bin_dir" ] || build_programs
work_root="$(mktemp -d "${TMPDIR:-/tmp}/kiln-images.XXXXXX")"
trap 'rm -rf "$work_root"' EXIT
for name in "${images[@]}"; do build_image "$name"; done
