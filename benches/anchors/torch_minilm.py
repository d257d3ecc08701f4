#!/usr/bin/env python3
"""PyTorch (eager, CPU) anchor for Strata's encoder fine-tuning workload (`strata_benches::EncoderWorkload`):
all-MiniLM-L6-v2's shapes (BERT post-LN, 6 layers, width 384, 12 heads, MLP 1536, exact GELU, vocabulary 30,522,
512 positions, 2 token types), random weights, batch 32 x sequence 64 of real tokens (no padding mask), masked mean
pooling, a 2-class linear head, cross-entropy, AdamW (lr 2e-5, weight decay 0.01) on every parameter.
usage: torch_minilm.py [--batch 32] [--seq 64]"""
import argparse, statistics, time

import torch
import torch.nn as nn
import torch.nn.functional as F

p = argparse.ArgumentParser()
p.add_argument("--batch", type=int, default=32)
p.add_argument("--seq", type=int, default=64)
a = p.parse_args()
V, D, H, FF, L, P = 30522, 384, 12, 1536, 6, 512


class Layer(nn.Module):
    def __init__(s):
        super().__init__()
        s.q, s.k, s.v, s.o = (nn.Linear(D, D) for _ in range(4))
        s.ln1, s.ln2 = nn.LayerNorm(D, eps=1e-12), nn.LayerNorm(D, eps=1e-12)
        s.fc, s.out = nn.Linear(D, FF), nn.Linear(FF, D)

    def forward(s, x):
        b, t, _ = x.shape
        heads = lambda z: z.view(b, t, H, D // H).transpose(1, 2)
        y = F.scaled_dot_product_attention(heads(s.q(x)), heads(s.k(x)), heads(s.v(x)))
        x = s.ln1(x + s.o(y.transpose(1, 2).reshape(b, t, D)))
        return s.ln2(x + s.out(F.gelu(s.fc(x))))


class Model(nn.Module):
    def __init__(s):
        super().__init__()
        s.word, s.pos, s.types = nn.Embedding(V, D), nn.Embedding(P, D), nn.Embedding(2, D)
        s.ln = nn.LayerNorm(D, eps=1e-12)
        s.layers = nn.ModuleList(Layer() for _ in range(L))
        s.head = nn.Linear(D, 2)

    def forward(s, ids, labels):
        t = ids.shape[1]
        x = s.ln(s.word(ids) + s.pos(torch.arange(t)) + s.types(torch.zeros_like(ids)))
        for layer in s.layers:
            x = layer(x)
        return F.cross_entropy(s.head(x.mean(dim=1)), labels)


torch.manual_seed(0)
m = Model()
opt = torch.optim.AdamW(m.parameters(), lr=2e-5, weight_decay=0.01)
ids = torch.randint(V, (a.batch, a.seq))
labels = torch.arange(a.batch) % 2


def step():
    m(ids, labels).backward()
    opt.step()
    opt.zero_grad(set_to_none=True)


for _ in range(3):
    step()
ts = []
for _ in range(10):
    t0 = time.perf_counter()
    step()
    ts.append(time.perf_counter() - t0)
t = statistics.median(ts)
print(f"# torch={torch.__version__} threads={torch.get_num_threads()} MiniLM-shaped encoder B{a.batch} T{a.seq}")
print(f"torch MiniLM train: {a.batch * a.seq / t:8.0f} tokens/s  ({t * 1e3:.1f} ms/step)")
