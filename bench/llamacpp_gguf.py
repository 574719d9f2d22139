#!/usr/bin/env python3
"""Writes a GGUF of kiln's GPT-2 shape with random weights, for llama.cpp's server.

The model is the one `kiln-worker serve` runs in bench/llamacpp_compare.sh:
GPT-2 (LayerNorm, learned positions, fused QKV, tanh GELU, the classifier tied
to the token embedding) with kiln's byte vocabulary: 256 byte tokens and an
end-of-text token (256). The tokenizer is GPT-2's byte-level BPE with no
merges, so llama.cpp maps each byte of a prompt to one token, as kiln does.
Weights are random (N(0, 0.02), norms at 1, biases at 0): speed does not
depend on them, and both servers run to max_tokens (ignore_eos).

Needs llama.cpp's gguf-py (PYTHONPATH=<llama.cpp>/gguf-py) and numpy.

  llamacpp_gguf.py OUT.gguf --layers 6 --heads 6 --channels 288 --context 256 [--bf16]
"""

import argparse
import sys

import numpy as np

try:
    import gguf
except ImportError:
    sys.exit("llamacpp_gguf.py: cannot import gguf; set PYTHONPATH to llama.cpp's gguf-py")

VOCAB = 257  # kiln's byte vocabulary: bytes 0-255, then end of text.
END_OF_TEXT = 256


def byte_tokens():
    """GPT-2's byte-to-unicode table: the text of each byte's token."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAC + 1)) + list(range(0xAE, 0xFF + 1))
    chars = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in chars:
            chars[b] = chr(256 + extra)
            extra += 1
    return [chars[b] for b in range(256)]


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out")
    p.add_argument("--layers", type=int, default=6)
    p.add_argument("--heads", type=int, default=6)
    p.add_argument("--channels", type=int, default=288)
    p.add_argument("--context", type=int, default=256)
    p.add_argument("--bf16", action="store_true", help="weight matrices in bf16 (norms and biases stay float)")
    p.add_argument("--seed", type=int, default=1)
    a = p.parse_args()
    if a.channels % a.heads:
        p.error("--channels must be a multiple of --heads")

    C, T, L = a.channels, a.context, a.layers
    rng = np.random.default_rng(a.seed)
    w = gguf.GGUFWriter(a.out, "gpt2")
    w.add_name("kiln-shape-gpt2")
    w.add_context_length(T)
    w.add_embedding_length(C)
    w.add_feed_forward_length(4 * C)
    w.add_block_count(L)
    w.add_head_count(a.heads)
    w.add_layer_norm_eps(1e-5)
    matrix_type = gguf.GGMLQuantizationType.BF16 if a.bf16 else gguf.GGMLQuantizationType.F32
    w.add_file_type(gguf.LlamaFileType.MOSTLY_BF16 if a.bf16 else gguf.LlamaFileType.ALL_F32)

    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("gpt-2")
    w.add_token_list(byte_tokens() + ["<|endoftext|>"])
    w.add_token_types([gguf.TokenType.NORMAL] * 256 + [gguf.TokenType.CONTROL])
    # One merge that no prompt of the benchmark uses (bytes 0 and 1): llama.cpp
    # needs the key, and gguf-py cannot type an empty array.
    w.add_token_merges(["\u0100 \u0101"])
    w.add_bos_token_id(END_OF_TEXT)
    w.add_eos_token_id(END_OF_TEXT)
    w.add_add_bos_token(False)

    def matrix(name, rows, cols):
        # numpy (rows, cols) is ggml's {cols, rows}: rows outputs of cols inputs.
        t = rng.normal(0, 0.02, size=(rows, cols)).astype(np.float32)
        if a.bf16:
            w.add_tensor(name, gguf.quantize(t, matrix_type), raw_dtype=matrix_type)
        else:
            w.add_tensor(name, t)

    def vector(name, n, value):
        w.add_tensor(name, np.full(n, value, dtype=np.float32))

    matrix("token_embd.weight", VOCAB, C)
    w.add_tensor("position_embd.weight", rng.normal(0, 0.01, size=(T, C)).astype(np.float32))
    for i in range(L):
        b = f"blk.{i}."
        vector(b + "attn_norm.weight", C, 1.0)
        vector(b + "attn_norm.bias", C, 0.0)
        matrix(b + "attn_qkv.weight", 3 * C, C)
        vector(b + "attn_qkv.bias", 3 * C, 0.0)
        matrix(b + "attn_output.weight", C, C)
        vector(b + "attn_output.bias", C, 0.0)
        vector(b + "ffn_norm.weight", C, 1.0)
        vector(b + "ffn_norm.bias", C, 0.0)
        matrix(b + "ffn_up.weight", 4 * C, C)
        vector(b + "ffn_up.bias", 4 * C, 0.0)
        matrix(b + "ffn_down.weight", C, 4 * C)
        vector(b + "ffn_down.bias", C, 0.0)
    vector("output_norm.weight", C, 1.0)
    vector("output_norm.bias", C, 0.0)

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


if __name__ == "__main__":
    main()
