#!/usr/bin/env python3
"""Writes the fuzz harnesses' seed corpora (fuzz/corpus/<harness>/): small,
valid inputs of each format, so the fuzzers start from what kiln really
reads. The corpora are committed; rerun after changing a format:
    python3 fuzz/make_seeds.py
"""
import hashlib
import json
import os
import struct
import sys

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "fuzz", "corpus")


def put(harness, name, data):
    folder = os.path.join(OUT, harness)
    os.makedirs(folder, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(folder, name), "wb") as f:
        f.write(data)


def kubeconfigs():
    base = {
        "apiVersion": "v1", "kind": "Config", "current-context": "kiln-1",
        "clusters": [{"name": "kiln-1", "cluster": {
            "server": "https://127.0.0.1:6443", "certificate-authority-data": "LS0tLS1CRUdJTg==",
            "tls-server-name": "kubernetes"}}],
        "users": [{"name": "admin", "user": {"token": "abc"}}],
        "contexts": [{"name": "kiln-1", "context": {"cluster": "kiln-1", "user": "admin",
                                                     "namespace": "kiln-system"}}],
    }
    put("kubeconfig", "token.yaml", yaml.safe_dump(base))
    exec_cfg = json.loads(json.dumps(base))
    exec_cfg["users"][0]["user"] = {"exec": {
        "apiVersion": "client.authentication.k8s.io/v1", "command": "kiln-auth",
        "args": ["--cluster", "kiln-1"], "env": [{"name": "A", "value": "1"}],
        "provideClusterInfo": True, "installHint": "install it"}}
    put("kubeconfig", "exec.yaml", yaml.safe_dump(exec_cfg))
    cert = json.loads(json.dumps(base))
    cert["users"][0]["user"] = {"client-certificate-data": "Y2VydA==", "client-key-data": "a2V5",
                                "tokenFile": "token"}
    cert["clusters"].append({"name": "default", "cluster": {
        "server": "http://localhost:8080/", "insecure-skip-tls-verify": True,
        "certificate-authority": "ca.crt"}})
    cert["contexts"].append({"name": "default", "context": {"cluster": "default", "user": "admin"}})
    put("kubeconfig", "two-contexts.yaml", yaml.safe_dump(cert))


def watch_events():
    obj = {"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": "w-0", "namespace": "default", "resourceVersion": "12"}}
    lines = [
        {"type": "ADDED", "object": obj},
        {"type": "MODIFIED", "object": obj},
        {"type": "BOOKMARK", "object": {"kind": "Pod", "metadata": {"resourceVersion": "13"}}},
        {"type": "DELETED", "object": obj},
    ]
    stream = "".join(json.dumps(l) + "\n" for l in lines)
    put("watch", "events", b"\x07" + stream.encode())
    gone = {"type": "ERROR", "object": {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                        "message": "too old resource version", "reason": "Expired",
                                        "code": 410}}
    put("watch", "error-410", b"\xff" + (json.dumps(gone) + "\n").encode())


def api_errors():
    status = {"kind": "Status", "apiVersion": "v1", "status": "Failure",
              "message": "TrainingJob.kiln.dev \"j\" is invalid", "reason": "Invalid",
              "details": {"group": "kiln.dev", "kind": "TrainingJob", "name": "j",
                          "retryAfterSeconds": 3,
                          "causes": [{"reason": "FieldValueInvalid", "field": "spec.workers",
                                      "message": "must be positive"}]},
              "code": 422}
    put("api_error", "invalid", bytes([22, 1]) + b"5" + json.dumps(status).encode())
    put("api_error", "text", bytes([103, 0]) + b"upstream connect error\n")


def api_types():
    for name in ("trainingjob", "modeldeployment", "membercluster"):
        with open(os.path.join(ROOT, "examples", name + ".yaml")) as f:
            for i, doc in enumerate(d for d in yaml.safe_load_all(f) if d):
                put("api_types", f"{name}-{i}.json", json.dumps(doc, separators=(",", ":")))


def http_requests():
    body = json.dumps({"model": "chat", "prompt": "Hello", "max_tokens": 4, "stream": True})
    put("http_request", "post", f"POST /v1/completions HTTP/1.1\r\nHost: kiln\r\n"
        f"Content-Type: application/json\r\nCookie: a=1; session=s1\r\n"
        f"Content-Length: {len(body)}\r\n\r\n{body}")
    put("http_request", "pipelined", "GET /readyz?verbose&x=%2F HTTP/1.1\r\nHost: example.com:80\r\n\r\n"
        "GET /v1/models HTTP/1.1\r\nHost: example.com\r\nX-Session-Id: 7\r\n"
        "X-Kiln-Version: canary\r\n\r\n")
    a, b = '{"mod', 'el":"chat","a":1}'
    put("http_request", "chunked", "POST /v1/completions HTTP/1.1\r\nHost: [::1]:8080\r\n"
        "Transfer-Encoding: chunked\r\nX-Kiln-Version: v2\r\n\r\n"
        f"{len(a):x}\r\n{a}\r\n{len(b):x}\r\n{b}\r\n0\r\n\r\n")
    put("http_request", "http10", "HEAD /metrics HTTP/1.0\r\nAccept: */*\r\nAccept: text/plain\r\n\r\n")


def openai_requests():
    put("openai_request", "basic", json.dumps({"model": "chat", "prompt": "Hi", "max_tokens": 8}))
    put("openai_request", "all", json.dumps({
        "model": "chat", "prompt": ["Once upon"], "max_tokens": 20, "temperature": 0.7,
        "top_p": 0.9, "top_k": 40, "seed": 7, "stop": ["\n", "."], "stream": True,
        "user": "u", "n": 1, "best_of": 1, "echo": False, "logprobs": None,
        "presence_penalty": 0, "frequency_penalty": 0, "ignore_eos": True}))
    put("openai_request", "reply", json.dumps({
        "id": "cmpl-1", "object": "text_completion", "choices": [{"text": "x"}],
        "usage": {"prompt_tokens": 2, "completion_tokens": 5, "total_tokens": 7}}))


# The seed checkpoints' shape; fuzz/checkpoint_fuzz.cc builds the same.
SHAPE = {"layers": 1, "heads": 2, "channels": 4, "maxSeqLen": 8, "vocabSize": 60,
         "paddedVocabSize": 64}


def num_params(s):
    C, L, V, T = s["channels"], s["layers"], s["paddedVocabSize"], s["maxSeqLen"]
    # model::Param order: wte, wpe, ln1 w+b, qkv w+b, attproj w+b, ln2 w+b,
    # fc w+b, fcproj w+b, lnf w+b.
    return (V * C + T * C + 2 * L * C + 3 * L * C * C + 3 * L * C + L * C * C + L * C + 2 * L * C
            + 4 * L * C * C + 4 * L * C + 4 * L * C * C + L * C + 2 * C)


def floats(n, scale):
    return struct.pack(f"<{n}f", *[((i * 37) % 17 - 8) * scale for i in range(n)])


def checkpoints():
    n = num_params(SHAPE)
    tensors, blob = [], b""
    for name, scale in (("params", 0.01), ("adam_m", 0.001), ("adam_v", 0.0001)):
        raw = floats(n, scale)
        tensors.append({"name": name, "offset": len(blob), "bytes": len(raw),
                        "sha256": hashlib.sha256(raw).hexdigest()})
        blob += raw
    header = json.dumps({"step": 1, "position": {"epoch": 0, "shard": 1, "offset": 64},
                         "model": SHAPE, "tensors": tensors, "rng": {"seed": 42},
                         "writer": {"job": "6f1c0d2e-1111-2222-3333-444455556666",
                                    "attempt": 3}},
                        separators=(",", ":")).encode()
    put("checkpoint", "step-1.ckpt", b"KILNCKPT" + struct.pack("<II", 1, len(header)) + header + blob)
    # The same harness parses the checkpoint fence and the --fence token.
    put("checkpoint", "fence.json", json.dumps(
        {"kind": "kiln.dev/checkpoint-fence", "version": 1,
         "job": "6f1c0d2e-1111-2222-3333-444455556666", "attempt": 3, "baseStep": 200},
        separators=(",", ":")) + "\n")
    put("checkpoint", "fence-token", "6f1c0d2e-1111-2222-3333-444455556666:3")
    return n


def llmc_models(n):
    s = SHAPE
    for version, raw in ((3, floats(n, 0.01)),
                         (5, b"".join(struct.pack("<f", f)[2:] for f in
                                      struct.unpack(f"<{n}f", floats(n, 0.01))))):
        header = [20240326, version, s["maxSeqLen"], s["vocabSize"], s["layers"], s["heads"],
                  s["channels"], s["paddedVocabSize"]] + [0] * 248
        put("llmc_model", f"v{version}.bin", struct.pack("<256i", *header) + raw)


def manifests():
    m = {"formatVersion": 1, "tokenizer": "byte", "vocabSize": 257, "eot": 256,
         "valFraction": 0.1, "shardTokens": 1000000,
         "inputs": [{"path": "/usr/share/games/fortunes/fortunes", "format": "fortunes",
                     "bytes": 12345, "documents": 431, "sha256": "ab" * 32}],
         "splits": {"train": {"documents": 400, "tokens": 11000, "shards": [
                        {"file": "train_000000.bin", "tokens": 11000, "sha256": "cd" * 32}]},
                    "val": {"documents": 31, "tokens": 1345, "shards": [
                        {"file": "val_000000.bin", "tokens": 1345, "sha256": "ef" * 32}]}}}
    put("manifest", "manifest.json", json.dumps(m, indent=2) + "\n")


def shards():
    tokens = [72, 101, 108, 108, 111, 256, 32, 255]
    header = [20240520, 1, len(tokens)] + [0] * 253
    put("shard", "shard.bin", struct.pack("<256i", *header) + struct.pack(f"<{len(tokens)}H", *tokens))


def main():
    kubeconfigs()
    watch_events()
    api_errors()
    api_types()
    http_requests()
    openai_requests()
    llmc_models(checkpoints())
    manifests()
    shards()
    return 0


if __name__ == "__main__":
    sys.exit(main())
