#!/usr/bin/env python3
"""PyTorch CPU anchor for the worker benchmark: one micro-batch gradient of the
default model's shape, clean and PGD K = 1 (a delta on inputs_embeds), at the
same micro-batch, sequence length and thread counts as bench/worker_compute.ts.

    /usr/bin/python3 bench/torch_cpu.py [--threads 1,2] [--micro-batch 32]
        [--seq-len 128] [--modes off,pgd1] [--min-seconds 2] [--out FILE]

Debian's python3-torch (apt-get install python3-torch); no transformers
needed: the plain BERT of bench/torch_bert.py (post-LN encoder, erf GELU, tanh
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
import os
import platform
import statistics
import sys
import time

import torch

import torch_bert

CONFIG = dict(vocab=30522, hidden=128, layers=2, heads=2, intermediate=512, positions=512,
              types=2, eps=1e-12, dropout=0.1, labels=2)


def gradient(model, ids, types, mask, labels, mode):
    return torch_bert.gradient(model, ids, types, mask, labels, mode).item()


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
    model = torch_bert.PlainBert(CONFIG).train()
    gen = torch.Generator().manual_seed(7)
    data = torch_bert.make_batch(a.micro_batch, a.seq_len, CONFIG["vocab"], CONFIG["labels"],
                                 gen, torch.device("cpu"))
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
