"""GPT-2's forward pass in numpy (float64), written from the GPT-2 definition, for checking Strata's export.

usage: python3 gpt2_reference.py DIR '[ids...]'   -> prints the logits [T, vocab] as JSON

Reads DIR/config.json and DIR/model.safetensors (parsed here: 8-byte header length, JSON header, raw data).
"""
import json
import math
import struct
import sys

import numpy as np


def load_safetensors(path):
    raw = open(path, "rb").read()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8 : 8 + n])
    data = raw[8 + n :]
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        assert info["dtype"] == "F32", info["dtype"]
        start, end = info["data_offsets"]
        out[name] = np.frombuffer(data[start:end], dtype="<f4").reshape(info["shape"]).astype(np.float64)
    return out


def layer_norm(x, g, b, eps):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * g + b


ERF = np.vectorize(math.erf)
ACTIVATIONS = {
    "gelu_new": lambda x: 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3))),
    "gelu": lambda x: 0.5 * x * (1.0 + ERF(x / math.sqrt(2.0))),
    "relu": lambda x: np.maximum(x, 0.0),
    "tanh": np.tanh,
    "sigmoid": lambda x: 1.0 / (1.0 + np.exp(-x)),
    "linear": lambda x: x,
}


def main():
    folder, ids = sys.argv[1], json.loads(sys.argv[2])
    cfg = json.load(open(f"{folder}/config.json"))
    w = {k.removeprefix("transformer."): v for k, v in load_safetensors(f"{folder}/model.safetensors").items()}
    d, heads, eps = cfg["n_embd"], cfg["n_head"], cfg["layer_norm_epsilon"]
    act = ACTIVATIONS[cfg["activation_function"]]
    t = len(ids)
    x = w["wte.weight"][ids] + w["wpe.weight"][np.arange(t)]
    causal = np.triu(np.full((t, t), -np.inf), k=1)
    dh = d // heads
    for i in range(cfg["n_layer"]):
        p = lambda name: w[f"h.{i}.{name}"]
        h = layer_norm(x, p("ln_1.weight"), p("ln_1.bias"), eps)
        qkv = h @ p("attn.c_attn.weight") + p("attn.c_attn.bias")  # Conv1D: weight is [in, out]
        q, k, v = np.split(qkv, 3, axis=-1)
        q, k, v = (a.reshape(t, heads, dh).transpose(1, 0, 2) for a in (q, k, v))
        scores = q @ k.transpose(0, 2, 1) / math.sqrt(dh) + causal
        scores = np.exp(scores - scores.max(-1, keepdims=True))
        attn = scores / scores.sum(-1, keepdims=True)
        y = (attn @ v).transpose(1, 0, 2).reshape(t, d)
        x = x + y @ p("attn.c_proj.weight") + p("attn.c_proj.bias")
        h = layer_norm(x, p("ln_2.weight"), p("ln_2.bias"), eps)
        x = x + act(h @ p("mlp.c_fc.weight") + p("mlp.c_fc.bias")) @ p("mlp.c_proj.weight") + p("mlp.c_proj.bias")
    x = layer_norm(x, w["ln_f.weight"], w["ln_f.bias"], eps)
    head = w["wte.weight"] if cfg.get("tie_word_embeddings", True) else w["lm_head.weight"]
    print(json.dumps((x @ head.T).tolist()))


if __name__ == "__main__":
    main()
