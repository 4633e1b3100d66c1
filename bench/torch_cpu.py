#!/usr/bin/env python3
"""PyTorch CPU anchor for the worker benchmark: one micro-batch gradient of the
default model's shape, clean and PGD K = 1 (a delta on inputs_embeds), at the
same micro-batch, sequence length and thread counts as bench/worker_compute.ts.

    /usr/bin/python3 bench/torch_cpu.py [--threads 1,2] [--micro-batch 32]
        [--seq-len 128] [--modes off,pgd1] [--min-seconds 2] [--out FILE]

Debian's python3-torch (apt-get install python3-torch); no transformers
needed: a plain BERT is written out below (post-LN encoder, erf GELU, tanh
pooler, linear classifier), the shape of shared/model/default_model.ts.

What one call is (docs/method.md, "One micro-batch gradient"):
- off: a forward and backward pass for every parameter's gradient.
- pgd K=1: a delta-only pass (torch.autograd.grad with respect to delta: no
  weight gradients are formed), the L2 ascent step delta1 = a*g/||g|| per
  example projected onto the eps-ball, then the full pass at E + delta1.

Model GFLOP/s divides the same analytic count as bench/worker_compute.ts
(forward = 2*P_enc*B*L + 2*P_head*B + layers*4*L^2*H*B; full pass 3x, delta-only
2x) by the median time. Timing: one warm-up call, then >= 3 calls and
>= --min-seconds; median.
"""
import argparse
import datetime
import json
import math
import os
import platform
import statistics
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn

CONFIG = dict(vocab=30522, hidden=128, layers=2, heads=2, intermediate=512, positions=512,
              types=2, eps=1e-12, dropout=0.1, labels=2)


class Layer(nn.Module):
    def __init__(self, c):
        super().__init__()
        h, i = c["hidden"], c["intermediate"]
        self.heads = c["heads"]
        self.qkv = nn.ModuleList([nn.Linear(h, h) for _ in range(3)])
        self.attn_out = nn.Linear(h, h)
        self.ln1 = nn.LayerNorm(h, eps=c["eps"])
        self.inter = nn.Linear(h, i)
        self.out = nn.Linear(i, h)
        self.ln2 = nn.LayerNorm(h, eps=c["eps"])
        self.p = c["dropout"]

    def forward(self, x, add_mask):
        b, l, h = x.shape
        d = h // self.heads
        q, k, v = (m(x).view(b, l, self.heads, d).transpose(1, 2) for m in self.qkv)
        scores = q @ k.transpose(-1, -2) / math.sqrt(d) + add_mask
        probs = F.dropout(scores.softmax(-1), self.p, self.training)
        ctx = (probs @ v).transpose(1, 2).reshape(b, l, h)
        x = self.ln1(x + F.dropout(self.attn_out(ctx), self.p, self.training))
        y = self.out(F.gelu(self.inter(x)))
        return self.ln2(x + F.dropout(y, self.p, self.training))


class Bert(nn.Module):
    def __init__(self, c):
        super().__init__()
        h = c["hidden"]
        self.word = nn.Embedding(c["vocab"], h)
        self.pos = nn.Embedding(c["positions"], h)
        self.token_type = nn.Embedding(c["types"], h)
        self.ln = nn.LayerNorm(h, eps=c["eps"])
        self.layers = nn.ModuleList([Layer(c) for _ in range(c["layers"])])
        self.pooler = nn.Linear(h, h)
        self.classifier = nn.Linear(h, c["labels"])
        self.p = c["dropout"]
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, std=0.02)
            if isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def embeds(self, ids):
        return self.word(ids)

    def forward(self, inputs_embeds, types, mask):
        l = inputs_embeds.shape[1]
        pos = torch.arange(l).unsqueeze(0)
        x = self.ln(inputs_embeds + self.pos(pos) + self.token_type(types))
        x = F.dropout(x, self.p, self.training)
        add_mask = (1.0 - mask[:, None, None, :].float()) * torch.finfo(x.dtype).min
        for layer in self.layers:
            x = layer(x, add_mask)
        return self.classifier(F.dropout(torch.tanh(self.pooler(x[:, 0])), self.p, self.training))


def batch(b, l, vocab, gen):
    """[CLS] ... [SEP] with about 10% padding, like worker_compute's randomBatch."""
    ids = torch.zeros(b, l, dtype=torch.long)
    mask = torch.zeros(b, l, dtype=torch.long)
    for i in range(b):
        n = max(3, l - round(torch.rand(1, generator=gen).item() * 0.2 * l))
        ids[i, :n] = torch.randint(1000, vocab, (n,), generator=gen)
        ids[i, 0], ids[i, n - 1] = 101, 102
        mask[i, :n] = 1
    labels = torch.randint(0, CONFIG["labels"], (b,), generator=gen)
    return ids, torch.zeros(b, l, dtype=torch.long), mask, labels


def gradient(model, ids, types, mask, labels, mode, lr=0.1, eps=1.0):
    model.zero_grad(set_to_none=True)
    e = model.embeds(ids)
    if mode == "pgd1":
        delta = torch.zeros_like(e, requires_grad=True)
        loss = F.cross_entropy(model(e.detach() + delta, types, mask), labels)
        (g,) = torch.autograd.grad(loss, delta)
        g = g * mask[..., None]
        norm = g.flatten(1).norm(dim=1).clamp_min(1e-12)[:, None, None]
        d1 = lr * g / norm
        dn = d1.flatten(1).norm(dim=1)[:, None, None]
        d1 = d1 * torch.where(dn > eps, eps / dn, torch.ones_like(dn))
        e = e + d1
    loss = F.cross_entropy(model(e, types, mask), labels)
    loss.backward()
    return loss.item()


def flops(model, b, l, mode):
    c = CONFIG
    per_token = sum(p.numel() for p in model.layers.parameters())
    per_example = sum(p.numel() for p in model.pooler.parameters()) + \
        sum(p.numel() for p in model.classifier.parameters())
    fwd = 2 * per_token * b * l + 2 * per_example * b + c["layers"] * 4 * l * l * c["hidden"] * b
    return 3 * fwd + (2 * fwd if mode == "pgd1" else 0)


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--micro-batch", type=int, default=32)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--modes", default="off,pgd1")
    ap.add_argument("--min-seconds", type=float, default=2.0)
    ap.add_argument("--min-reps", type=int, default=3)
    ap.add_argument("--out")
    a = ap.parse_args()
    modes = a.modes.split(",")
    for m in modes:
        if m not in ("off", "pgd1"):
            sys.exit(f"error: --modes: off or pgd1, not {m}")
    threads = [int(t) for t in a.threads.split(",")]
    torch.manual_seed(42)
    torch.set_num_interop_threads(1)
    model = Bert(CONFIG).train()
    gen = torch.Generator().manual_seed(7)
    data = batch(a.micro_batch, a.seq_len, CONFIG["vocab"], gen)
    rows = []
    for t in threads:
        torch.set_num_threads(t)
        for mode in modes:
            gradient(model, *data, mode)  # warm-up
            times = []
            start = time.perf_counter()
            while len(times) < a.min_reps or time.perf_counter() - start < a.min_seconds:
                t0 = time.perf_counter()
                loss = gradient(model, *data, mode)
                times.append(time.perf_counter() - t0)
            med = statistics.median(times)
            f = flops(model, a.micro_batch, a.seq_len, mode)
            row = dict(threads=t, torch_threads=torch.get_num_threads(), mode=mode,
                       microBatch=a.micro_batch, seqLen=a.seq_len, reps=len(times),
                       medianMs=med * 1000, minMs=min(times) * 1000,
                       samplesPerSec=a.micro_batch / med, gflopPerCall=f / 1e9,
                       gflops=f / 1e9 / med, loss=loss)
            rows.append(row)
            print(f"  torch {t}t {mode} mb {a.micro_batch} seq {a.seq_len}: median "
                  f"{row['medianMs']:.1f} ms ({len(times)} reps), {row['samplesPerSec']:.1f} "
                  f"samples/s, {row['gflops']:.2f} GFLOP/s", file=sys.stderr)
    report = dict(
        benchmark="torch_cpu",
        date=datetime.datetime.now(datetime.timezone.utc).isoformat(),
        machine=dict(cpuModel=cpu_model(), cores=os.cpu_count(), python=platform.python_version(),
                     torch=torch.__version__, config=torch.__config__.show().strip(),
                     openblasCoretype=os.environ.get("OPENBLAS_CORETYPE")),
        model=dict(CONFIG, parameters=sum(p.numel() for p in model.parameters())),
        settings=dict(threads=threads, modes=modes, minSeconds=a.min_seconds,
                      minReps=a.min_reps),
        rows=rows,
    )
    text = json.dumps(report, indent=2) + "\n"
    if a.out:
        os.makedirs(os.path.dirname(a.out) or ".", exist_ok=True)
        with open(a.out, "w") as f:
            f.write(text)
        print(f"wrote {a.out}", file=sys.stderr)
    else:
        sys.stdout.write(text)


if __name__ == "__main__":
    main()
