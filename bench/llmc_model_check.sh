#!/usr/bin/env bash
# Checks kiln's llm.c model files against llm.c's own reader: trains a small
# kiln model on the fortunes corpus, exports it with `kiln-worker convert`,
# loads the file with llm.c's gpt2_build_from_checkpoint and runs llm.c's
# gpt2_forward on a text, and compares llm.c's mean loss with `kiln-worker
# eval` on the same text (the byte tokenizer: token = byte). They agree to
# float rounding when the file is right. llm.c's train_gpt2.c comes from the
# user's checkout (LLMC_DIR) and is compiled in a temporary folder, unmodified.
#   LLMC_DIR=/path/to/llm.c bench/llmc_model_check.sh [BUILD_DIR=build/dev] [TEXT]
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
source "$ROOT/scripts/lib/common.sh"
build="$(cd "${1:-$ROOT/build/dev}" && pwd)"
text="${2:-The quick brown fox jumps}"
worker="$build/worker/kiln-worker"
[ -n "${LLMC_DIR:-}" ] && [ -f "$LLMC_DIR/train_gpt2.c" ] ||
  die "LLMC_DIR must point at an llm.c checkout" "git clone https://github.com/karpathy/llm.c"
[ -x "$worker" ] || die "missing $worker" "cmake --build $build --target kiln-worker"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cd "$work"
"$worker" prepare --input /usr/share/games/fortunes --output data >/dev/null
# Context 64 > the text, so eval scores it in one window, as gpt2_forward does.
"$worker" train --data data/manifest.json --layers 2 --heads 4 --channels 64 --seq 64 \
  --batch 4 --steps 60 --lr 3e-3 --log-every 100 --checkpoint-dir ckpt >/dev/null
"$worker" convert --input ckpt --output model.bin >/dev/null
cat >harness.c <<'C'
#define main llmc_main
#include "train_gpt2.c"
#undef main
int main(int argc, char** argv) {
  GPT2 model;
  gpt2_build_from_checkpoint(&model, argv[1]);
  const char* text = argv[2];
  int T = (int)strlen(text) - 1;
  int* in = (int*)malloc(sizeof(int) * T);
  int* tg = (int*)malloc(sizeof(int) * T);
  for (int i = 0; i < T; ++i) {
    in[i] = (unsigned char)text[i];
    tg[i] = (unsigned char)text[i + 1];
  }
  gpt2_forward(&model, in, tg, 1, T);
  printf("%.6f\n", model.mean_loss);
  return 0;
}
C
gcc -O2 -fopenmp -I"$LLMC_DIR" -o harness harness.c -lm 2>/dev/null
llmc="$(./harness model.bin "$text" | tail -1)"
python3 -c 'import json, sys; print(json.dumps({"text": sys.argv[1]}))' "$text" >eval.jsonl
kiln="$("$worker" eval --data eval.jsonl --checkpoint ckpt | python3 -c 'import json, sys; print("%.6f" % json.load(sys.stdin)["loss"]["mean"])')"
echo "text: '$text' ($(( ${#text} - 1 )) predicted tokens)"
echo "llm.c gpt2_forward on kiln's exported file: mean loss $llmc"
echo "kiln-worker eval on the kiln checkpoint:     mean loss $kiln"
python3 -c 'import sys; a, b = map(float, sys.argv[1:]); sys.exit(0 if abs(a - b) <= 1e-4 * max(1, abs(b)) else 1)' \
  "$llmc" "$kiln" && echo "agree (within 1e-4)" || die "llm.c and kiln disagree" ""
