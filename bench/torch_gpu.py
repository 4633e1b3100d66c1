#!/usr/bin/env python3
"""PyTorch on the GPU beside the engine's webgpu rows (bench/device_run.sh, part b): one
micro-batch gradient of the default model's shape and of BERT-base's shape (random weights,
dropout 0.1, train mode), clean and PGD K = 1, in fp32 with TF32 off, in TF32, and under bf16
autocast; samples/s.

    python3 bench/torch_gpu.py [--shapes default,bert-base] [--micro-batch 32] [--seq-len 128]
        [--precisions fp32,tf32,bf16] [--modes off,pgd1] [--impl auto|hf|plain]
        [--min-seconds 1] [--min-reps 3] [--device cuda|cpu] [--out FILE]

Model: transformers' BertForSequenceClassification (random init from a BertConfig) when
transformers imports (--impl auto or hf), else the plain BERT of bench/torch_bert.py (post-LN
encoder, erf GELU, tanh pooler, linear classifier; the same module as bench/torch_cpu.py's, with
tensors made on the model's device). Shapes as bench/engine_devices.ts: `default` = hidden 128, 2 layers,
2 heads, intermediate 512; `bert-base` = hidden 768, 12 layers, 12 heads, intermediate 3072;
vocabulary 30522, 2 labels.

One call (docs/method.md, "One micro-batch gradient"):
- off: forward and backward for every parameter's gradient.
- pgd1: a delta-only pass (torch.autograd.grad with respect to delta on inputs_embeds, no weight
  gradients formed), the L2 ascent step delta1 = a*g/||g|| per example projected onto the
  eps-ball (a 0.1, eps 1), then the full pass at E + delta1 - the engine's PGD K = 1.

The gradient stays on the GPU (the engine's webgpu rows include one readback of it to the host).
Timing: one warm-up call, then calls until >= --min-reps and >= --min-seconds; each call ends
with torch.cuda.synchronize(); the median is reported. Without torch this script is never
started (device_run.sh checks `import torch`); without CUDA it runs on the CPU only with
--device cpu (the smoke mode's tiny sizes).
"""
import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import time

try:
    import torch
    from torch import nn

    from torch_bert import PlainBert, gradient, make_batch
except ImportError as e:  # pragma: no cover - reported, not raised
    sys.exit(f"torch_gpu: torch is not installed ({e})")

SHAPES = {
    "default": dict(hidden=128, layers=2, heads=2, intermediate=512),
    "bert-base": dict(hidden=768, layers=12, heads=12, intermediate=3072),
}
COMMON = dict(vocab=30522, positions=512, types=2, eps=1e-12, dropout=0.1, labels=2)


class HfBert(nn.Module):
    """transformers' BertForSequenceClassification behind the same two methods."""

    def __init__(self, c):
        super().__init__()
        from transformers import BertConfig, BertForSequenceClassification

        cfg = BertConfig(vocab_size=c["vocab"], hidden_size=c["hidden"],
                         num_hidden_layers=c["layers"], num_attention_heads=c["heads"],
                         intermediate_size=c["intermediate"],
                         max_position_embeddings=c["positions"], type_vocab_size=c["types"],
                         layer_norm_eps=c["eps"], hidden_dropout_prob=c["dropout"],
                         attention_probs_dropout_prob=c["dropout"], num_labels=c["labels"])
        self.model = BertForSequenceClassification(cfg)

    def embeds(self, ids):
        return self.model.bert.embeddings.word_embeddings(ids)

    def logits(self, inputs_embeds, types, mask):
        return self.model(inputs_embeds=inputs_embeds, token_type_ids=types,
                          attention_mask=mask).logits


def set_precision(p):
    tf32 = p == "tf32"
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    torch.set_float32_matmul_precision("high" if tf32 else "highest")


def autocast_for(p, device):
    if p == "bf16":
        return lambda: torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return lambda: torch.autocast(device_type=device.type, enabled=False)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shapes", default="default,bert-base")
    ap.add_argument("--micro-batch", type=int, default=32)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--precisions", default="fp32,tf32,bf16")
    ap.add_argument("--modes", default="off,pgd1")
    ap.add_argument("--impl", default="auto", choices=["auto", "hf", "plain"])
    ap.add_argument("--min-seconds", type=float, default=1.0)
    ap.add_argument("--min-reps", type=int, default=3)
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    ap.add_argument("--out")
    a = ap.parse_args()
    shapes, precisions, modes = (s.split(",") for s in (a.shapes, a.precisions, a.modes))
    for s in shapes:
        if s not in SHAPES:
            sys.exit(f"error: --shapes: default or bert-base, not {s}")
    for p in precisions:
        if p not in ("fp32", "tf32", "bf16"):
            sys.exit(f"error: --precisions: fp32, tf32 or bf16, not {p}")
    for m in modes:
        if m not in ("off", "pgd1"):
            sys.exit(f"error: --modes: off or pgd1, not {m}")
    if a.device == "cuda" and not torch.cuda.is_available():
        sys.exit("torch_gpu: torch.cuda.is_available() is False (use --device cpu for a trial)")
    device = torch.device(a.device)
    impl = a.impl
    transformers_version = None
    if impl in ("auto", "hf"):
        try:
            import transformers

            transformers_version = transformers.__version__
            impl = "hf"
        except ImportError as e:
            if a.impl == "hf":
                sys.exit(f"error: --impl hf: {e}")
            print(f"torch_gpu: transformers not importable ({e}); plain torch BERT",
                  file=sys.stderr)
            impl = "plain"
    rows = []
    out_models = {}
    report = dict(
        benchmark="torch_gpu",
        date=datetime.datetime.now(datetime.timezone.utc).isoformat(),
        machine=dict(gpu=torch.cuda.get_device_name(0) if device.type == "cuda" else None,
                     cuda=torch.version.cuda, torch=torch.__version__,
                     transformers=transformers_version, python=platform.python_version(),
                     cores=os.cpu_count()),
        impl=impl,
        settings=dict(shapes=shapes, microBatch=a.micro_batch, seqLen=a.seq_len,
                      precisions=precisions, modes=modes, minSeconds=a.min_seconds,
                      minReps=a.min_reps, device=a.device,
                      note="gradient left on the device (no host readback)"),
        models=out_models,
        rows=rows,
    )

    def write():
        if a.out:
            os.makedirs(os.path.dirname(a.out) or ".", exist_ok=True)
            with open(a.out, "w") as f:
                f.write(json.dumps(report, indent=2) + "\n")

    for shape in shapes:
        c = dict(COMMON, **SHAPES[shape])
        torch.manual_seed(42)
        model = (HfBert(c) if impl == "hf" else PlainBert(c)).to(device).train()
        out_models[shape] = dict(c, parameters=sum(p.numel() for p in model.parameters()))
        gen = torch.Generator().manual_seed(7)
        data = make_batch(a.micro_batch, a.seq_len, c["vocab"], c["labels"], gen, device)
        for precision in precisions:
            set_precision(precision)
            autocast = autocast_for(precision, device)
            for mode in modes:
                gradient(model, *data, mode, autocast)  # warm-up
                sync(device)
                times = []
                start = time.perf_counter()
                while len(times) < a.min_reps or time.perf_counter() - start < a.min_seconds:
                    t0 = time.perf_counter()
                    loss = gradient(model, *data, mode, autocast)
                    sync(device)
                    times.append(time.perf_counter() - t0)
                med = statistics.median(times)
                row = dict(shape=shape, precision=precision, mode=mode,
                           microBatch=a.micro_batch, seqLen=a.seq_len, reps=len(times),
                           medianMs=med * 1000, minMs=min(times) * 1000,
                           samplesPerSec=a.micro_batch / med, loss=loss.item())
                rows.append(row)
                print(f"  torch {shape} {precision} {mode} mb {a.micro_batch} seq {a.seq_len}:"
                      f" {row['samplesPerSec']:.1f} samples/s ({row['medianMs']:.2f} ms,"
                      f" {len(times)} reps)", file=sys.stderr)
                write()
        del model
        if device.type == "cuda":
            torch.cuda.empty_cache()
    write()
    print("| shape | precision | mode | samples/s | ms/call |")
    print("| --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['shape']} | {r['precision']} | {r['mode']} | {r['samplesPerSec']:.1f} |"
              f" {r['medianMs']:.2f} |")
    if a.out:
        print(f"wrote {a.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
