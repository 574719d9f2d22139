#!/usr/bin/env python3
"""An independent float64 NumPy model of kiln's GPT-2 engine, for golden tests.

Written from the math, not from worker/model/gpt.cc: vectorised forward,
hand-derived backward, AdamW. Usage: gpt_reference.py DIR, where DIR holds

  config.json   {"L", "NH", "C", "maxT", "V", "Vp", "B", "T", "steps",
                 "adam": {"lr": [one per step], "beta1", "beta2", "eps",
                          "weight_decay"}}
  params.bin    float64 little-endian, every tensor in kiln's Param order
  inputs.bin    int32 little-endian [B, T] tokens
  targets.bin   int32 little-endian [B, T] tokens

and gets back

  golden_logits.bin   float64 [B, T, Vp] logits of the initial parameters
  golden_grads.bin    float64 gradient of the mean loss, laid out as params
  golden_losses.json  {"losses": [...]}: the loss before each of `steps`
                      AdamW updates on the same batch

Exits 2 with a message on stderr for bad input.
"""

import json
import math
import os
import sys

import numpy as np

LN_EPS = 1e-5
GELU_SCALE = math.sqrt(2.0 / math.pi)
GELU_CUBIC = 0.044715


class InputError(Exception):
    pass


def param_specs(cfg):
    """(name, shape, decays) for each tensor in kiln's Param order."""
    L, C, Vp, maxT = cfg["L"], cfg["C"], cfg["Vp"], cfg["maxT"]
    return [
        ("wte", (Vp, C), True), ("wpe", (maxT, C), True),
        ("ln1w", (L, C), False), ("ln1b", (L, C), False),
        ("qkvw", (L, 3 * C, C), True), ("qkvb", (L, 3 * C), False),
        ("attprojw", (L, C, C), True), ("attprojb", (L, C), False),
        ("ln2w", (L, C), False), ("ln2b", (L, C), False),
        ("fcw", (L, 4 * C, C), True), ("fcb", (L, 4 * C), False),
        ("fcprojw", (L, C, 4 * C), True), ("fcprojb", (L, C), False),
        ("lnfw", (C,), False), ("lnfb", (C,), False),
    ]


# Forward pieces; each returns its output and what its backward needs.

def layernorm(x, w, b):
    mean = x.mean(axis=-1, keepdims=True)
    rstd = 1.0 / np.sqrt(((x - mean) ** 2).mean(axis=-1, keepdims=True) + LN_EPS)
    xhat = (x - mean) * rstd
    return xhat * w + b, (xhat, rstd, w)


def layernorm_backward(dy, cache):
    xhat, rstd, w = cache
    dxhat = dy * w
    dx = rstd * (dxhat - dxhat.mean(axis=-1, keepdims=True)
                 - xhat * (dxhat * xhat).mean(axis=-1, keepdims=True))
    return dx, (dy * xhat).sum(axis=(0, 1)), dy.sum(axis=(0, 1))


def gelu(x):
    return 0.5 * x * (1.0 + np.tanh(GELU_SCALE * (x + GELU_CUBIC * x ** 3)))


def gelu_grad(x):
    th = np.tanh(GELU_SCALE * (x + GELU_CUBIC * x ** 3))
    du = GELU_SCALE * (1.0 + 3.0 * GELU_CUBIC * x ** 2)
    return 0.5 * (1.0 + th) + 0.5 * x * (1.0 - th ** 2) * du


def split_heads(x, nh):
    B, T, C = x.shape
    return x.reshape(B, T, nh, C // nh).transpose(0, 2, 1, 3)


def merge_heads(x):
    B, nh, T, hs = x.shape
    return x.transpose(0, 2, 1, 3).reshape(B, T, nh * hs)


def attention(qkv, nh):
    C = qkv.shape[-1] // 3
    q, k, v = (split_heads(qkv[..., i * C:(i + 1) * C], nh) for i in range(3))
    scale = 1.0 / math.sqrt(C // nh)
    T = qkv.shape[1]
    scores = q @ k.transpose(0, 1, 3, 2) * scale
    scores = np.where(np.triu(np.ones((T, T), dtype=bool), k=1), -np.inf, scores)
    att = np.exp(scores - scores.max(axis=-1, keepdims=True))
    att /= att.sum(axis=-1, keepdims=True)
    return merge_heads(att @ v), (q, k, v, att, scale)


def attention_backward(dy, cache):
    q, k, v, att, scale = cache
    dy = split_heads(dy, q.shape[1])
    datt = dy @ v.transpose(0, 1, 3, 2)
    dv = att.transpose(0, 1, 3, 2) @ dy
    # Softmax Jacobian; masked entries have att == 0, so they get no gradient.
    dscores = att * (datt - (datt * att).sum(axis=-1, keepdims=True)) * scale
    dq = dscores @ k
    dk = dscores.transpose(0, 1, 3, 2) @ q
    return np.concatenate([merge_heads(d) for d in (dq, dk, dv)], axis=-1)


def forward(p, cfg, inputs, targets):
    """Logits [B, T, Vp], mean cross-entropy loss, and the backward's cache."""
    L, NH, V = cfg["L"], cfg["NH"], cfg["V"]
    T = inputs.shape[1]
    x = p["wte"][inputs] + p["wpe"][:T]
    layers = []
    for layer in range(L):
        h1, ln1 = layernorm(x, p["ln1w"][layer], p["ln1b"][layer])
        y, att = attention(h1 @ p["qkvw"][layer].T + p["qkvb"][layer], NH)
        x = x + y @ p["attprojw"][layer].T + p["attprojb"][layer]
        h2, ln2 = layernorm(x, p["ln2w"][layer], p["ln2b"][layer])
        f = h2 @ p["fcw"][layer].T + p["fcb"][layer]
        g = gelu(f)
        x = x + g @ p["fcprojw"][layer].T + p["fcprojb"][layer]
        layers.append(dict(h1=h1, ln1=ln1, y=y, att=att, h2=h2, ln2=ln2, f=f, g=g))
    z, lnf = layernorm(x, p["lnfw"], p["lnfb"])
    logits = z @ p["wte"].T
    real = logits[..., :V]  # Padding columns take no part in the softmax.
    shifted = real - real.max(axis=-1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
    picked = np.take_along_axis(log_probs, targets[..., None], axis=-1)
    loss = -picked.mean()
    cache = dict(inputs=inputs, targets=targets, layers=layers, z=z, lnf=lnf,
                 probs=np.exp(log_probs))
    return logits, loss, cache


def backward(p, cfg, cache):
    """Gradient of the mean loss with respect to every parameter tensor."""
    inputs, targets = cache["inputs"], cache["targets"]
    B, T = inputs.shape
    V = cfg["V"]
    grads = {name: np.zeros_like(value) for name, value in p.items()}

    dlogits = np.zeros((B, T, p["wte"].shape[0]))
    dlogits[..., :V] = (cache["probs"] - np.eye(V)[targets]) / (B * T)
    grads["wte"] += np.einsum("btv,btc->vc", dlogits, cache["z"])
    dx, grads["lnfw"], grads["lnfb"] = layernorm_backward(dlogits @ p["wte"], cache["lnf"])

    def linear_backward(dout, inp, name, layer):
        grads[name + "w"][layer] = np.einsum("bto,btc->oc", dout, inp)
        grads[name + "b"][layer] = dout.sum(axis=(0, 1))
        return dout @ p[name + "w"][layer]

    for layer in reversed(range(cfg["L"])):
        c = cache["layers"][layer]
        dg = linear_backward(dx, c["g"], "fcproj", layer)
        dh2 = linear_backward(dg * gelu_grad(c["f"]), c["h2"], "fc", layer)
        dres, grads["ln2w"][layer], grads["ln2b"][layer] = layernorm_backward(dh2, c["ln2"])
        dx = dx + dres
        dy = linear_backward(dx, c["y"], "attproj", layer)
        dh1 = linear_backward(attention_backward(dy, c["att"]), c["h1"], "qkv", layer)
        dres, grads["ln1w"][layer], grads["ln1b"][layer] = layernorm_backward(dh1, c["ln1"])
        dx = dx + dres

    np.add.at(grads["wte"], inputs, dx)
    grads["wpe"][:T] += dx.sum(axis=0)
    return grads


def adamw_step(p, grads, m, v, adam, step, decays):
    """One AdamW update in place (decoupled weight decay, bias-corrected)."""
    b1, b2, eps = adam["beta1"], adam["beta2"], adam["eps"]
    lr = adam["lr"][step - 1]
    for name in p:
        m[name] = b1 * m[name] + (1.0 - b1) * grads[name]
        v[name] = b2 * v[name] + (1.0 - b2) * grads[name] ** 2
        m_hat = m[name] / (1.0 - b1 ** step)
        v_hat = v[name] / (1.0 - b2 ** step)
        wd = adam["weight_decay"] if decays[name] else 0.0
        p[name] -= lr * (m_hat / (np.sqrt(v_hat) + eps) + wd * p[name])


# Files.

def load_config(d):
    path = os.path.join(d, "config.json")
    try:
        with open(path) as f:
            cfg = json.load(f)
    except (OSError, ValueError) as e:
        raise InputError(f"cannot read {path}: {e}")
    for key in ("L", "NH", "C", "maxT", "V", "Vp", "B", "T", "steps"):
        value = cfg.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise InputError(f"{path}: '{key}' must be a positive integer, got {value!r}")
    adam = cfg.get("adam")
    if not isinstance(adam, dict):
        raise InputError(f"{path}: 'adam' must be an object")
    for key in ("beta1", "beta2", "eps", "weight_decay"):
        if not isinstance(adam.get(key), (int, float)):
            raise InputError(f"{path}: 'adam.{key}' must be a number, got {adam.get(key)!r}")
    lr = adam.get("lr")
    if (not isinstance(lr, list) or len(lr) != cfg["steps"]
            or not all(isinstance(x, (int, float)) for x in lr)):
        raise InputError(f"{path}: 'adam.lr' must be a list of {cfg['steps']} numbers, "
                         "one per step")
    if cfg["C"] % cfg["NH"]:
        raise InputError(f"{path}: C ({cfg['C']}) must be a multiple of NH ({cfg['NH']})")
    if cfg["Vp"] < cfg["V"]:
        raise InputError(f"{path}: Vp ({cfg['Vp']}) must be at least V ({cfg['V']})")
    if cfg["T"] > cfg["maxT"]:
        raise InputError(f"{path}: T ({cfg['T']}) exceeds maxT ({cfg['maxT']})")
    return cfg


def load_array(d, name, dtype, count):
    path = os.path.join(d, name)
    try:
        data = np.fromfile(path, dtype=dtype)
    except OSError as e:
        raise InputError(f"cannot read {path}: {e}")
    if data.size != count or os.path.getsize(path) != count * np.dtype(dtype).itemsize:
        raise InputError(f"{path}: expected {count} values of {np.dtype(dtype).name}, "
                         f"found {os.path.getsize(path)} bytes")
    return data


def load_params(d, cfg):
    specs = param_specs(cfg)
    flat = load_array(d, "params.bin", "<f8", sum(math.prod(s) for _, s, _ in specs))
    params, at = {}, 0
    for name, shape, _ in specs:
        n = math.prod(shape)
        params[name] = flat[at:at + n].reshape(shape).copy()
        at += n
    return params


def load_tokens(d, name, cfg):
    tokens = load_array(d, name, "<i4", cfg["B"] * cfg["T"]).reshape(cfg["B"], cfg["T"])
    bad = (tokens < 0) | (tokens >= cfg["V"])
    if bad.any():
        raise InputError(f"{os.path.join(d, name)}: token {tokens[bad][0]} is outside "
                         f"the vocabulary [0, {cfg['V']})")
    return tokens.astype(np.int64)


def main(argv):
    if len(argv) != 2:
        raise InputError("usage: gpt_reference.py DIR")
    d = argv[1]
    cfg = load_config(d)
    params = load_params(d, cfg)
    inputs = load_tokens(d, "inputs.bin", cfg)
    targets = load_tokens(d, "targets.bin", cfg)

    logits, loss, cache = forward(params, cfg, inputs, targets)
    grads = backward(params, cfg, cache)
    logits.astype("<f8").tofile(os.path.join(d, "golden_logits.bin"))
    np.concatenate([grads[name].ravel() for name in params]).astype("<f8").tofile(
        os.path.join(d, "golden_grads.bin"))

    decays = {name: decay for name, _, decay in param_specs(cfg)}
    m = {name: np.zeros_like(value) for name, value in params.items()}
    v = {name: np.zeros_like(value) for name, value in params.items()}
    losses = []
    for step in range(1, cfg["steps"] + 1):
        if step > 1:
            _, loss, cache = forward(params, cfg, inputs, targets)
            grads = backward(params, cfg, cache)
        losses.append(float(loss))
        adamw_step(params, grads, m, v, cfg["adam"], step, decays)
    with open(os.path.join(d, "golden_losses.json"), "w") as f:
        json.dump({"losses": losses}, f)


if __name__ == "__main__":
    try:
        main(sys.argv)
    except InputError as e:
        print(f"gpt_reference.py: error: {e}", file=sys.stderr)
        sys.exit(2)
