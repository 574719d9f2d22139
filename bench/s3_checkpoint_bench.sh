#!/usr/bin/env bash
# Checkpoint storage benchmark: a GPT-2 124M checkpoint (parameters and AdamW
# moments, 1.49 GB) written to and restored from the local SeaweedFS S3
# gateway (scripts/seaweedfs.py) and a local directory, in the order A B A B
# (A = s3://, B = files), plus `cp` of the same checkpoint file. Prints one
# JSON line per run (bench/checkpoint_store_bench.cc) and the cp times.
#   bench/s3_checkpoint_bench.sh [BUILD_DIR=build/ci]
# TMPDIR chooses the disk for the files, SeaweedFS's data and the cp copy.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
source "$ROOT/scripts/lib/common.sh"
build="${1:-$ROOT/build/ci}"
bench="$build/bench/checkpoint_store_bench"
[ -x "$bench" ] || die "missing $bench" "build first: cmake --build $build --target checkpoint_store_bench"
tmp="$(mktemp -d)"
trap 'python3 "$ROOT/scripts/seaweedfs.py" down --dir "$tmp/s3" || true; rm -rf "$tmp"' EXIT
python3 "$ROOT/scripts/seaweedfs.py" up --dir "$tmp/s3" >/dev/null
set -a
# shellcheck disable=SC1091
source "$tmp/s3/env"
set +a
python3 - <<'PY'
import hashlib, hmac, os, urllib.request, datetime
# Create the bucket with one SigV4-signed PUT (the bench binary only reads and writes objects).
now = datetime.datetime.now(datetime.timezone.utc)
amz, day = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
host = os.environ["AWS_ENDPOINT_URL"].split("://")[1]
empty = hashlib.sha256(b"").hexdigest()
canonical = f"PUT\n/kiln-bench\n\nhost:{host}\nx-amz-content-sha256:{empty}\nx-amz-date:{amz}\n\nhost;x-amz-content-sha256;x-amz-date\n{empty}"
scope = f"{day}/us-east-1/s3/aws4_request"
to_sign = f"AWS4-HMAC-SHA256\n{amz}\n{scope}\n" + hashlib.sha256(canonical.encode()).hexdigest()
key = ("AWS4" + os.environ["AWS_SECRET_ACCESS_KEY"]).encode()
for part in (day, "us-east-1", "s3", "aws4_request"):
    key = hmac.new(key, part.encode(), hashlib.sha256).digest()
sig = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
req = urllib.request.Request(os.environ["AWS_ENDPOINT_URL"] + "/kiln-bench", method="PUT", headers={
    "x-amz-date": amz, "x-amz-content-sha256": empty,
    "Authorization": f"AWS4-HMAC-SHA256 Credential={os.environ['AWS_ACCESS_KEY_ID']}/{scope}, "
                     f"SignedHeaders=host;x-amz-content-sha256;x-amz-date, Signature={sig}"})
urllib.request.urlopen(req).read()
PY
for run in 1 2; do
  "$bench" "s3://kiln-bench/run$run" "$tmp/files$run"
  file="$(ls "$tmp/files$run"/step-*.ckpt)"
  start=$(date +%s.%N)
  cp "$file" "$tmp/copy$run.ckpt" && sync "$tmp/copy$run.ckpt"
  end=$(date +%s.%N)
  python3 -c "import json,sys; print(json.dumps({'location': 'cp', 'bytes': $(stat -c %s "$file"), 'seconds': round($end - $start, 3)}))"
  rm -f "$tmp/copy$run.ckpt"
done
