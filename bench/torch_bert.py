"""The plain PyTorch BERT classifier shared by bench/torch_cpu.py and bench/torch_gpu.py:
post-LN encoder, erf GELU, tanh pooler, linear classifier (the shape of
shared/model/default_model.ts), a random batch like worker_compute's randomBatch, and one
micro-batch gradient, clean or PGD K = 1 (docs/method.md, "One micro-batch gradient").

Imported by the two scripts from their own folder (python3 puts the script's folder first on
sys.path); torch must import before this module does.
"""
import contextlib
import math

import torch
import torch.nn.functional as F
from torch import nn


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


class PlainBert(nn.Module):
    """A plain BERT classifier: logits(inputs_embeds, token types, mask) -> logits."""

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

    def logits(self, inputs_embeds, types, mask):
        l = inputs_embeds.shape[1]
        pos = torch.arange(l, device=inputs_embeds.device).unsqueeze(0)
        x = self.ln(inputs_embeds + self.pos(pos) + self.token_type(types))
        x = F.dropout(x, self.p, self.training)
        add_mask = (1.0 - mask[:, None, None, :].to(x.dtype)) * torch.finfo(x.dtype).min
        for layer in self.layers:
            x = layer(x, add_mask)
        return self.classifier(F.dropout(torch.tanh(self.pooler(x[:, 0])), self.p, self.training))

    forward = logits


def make_batch(b, l, vocab, labels, gen, device):
    """[CLS] ... [SEP] with up to 20% padding per example (~10% on average), like
    worker_compute's randomBatch: (ids, token types, mask, labels) on `device`."""
    ids = torch.zeros(b, l, dtype=torch.long)
    mask = torch.zeros(b, l, dtype=torch.long)
    for i in range(b):
        n = max(3, l - round(torch.rand(1, generator=gen).item() * 0.2 * l))
        ids[i, :n] = torch.randint(1000, vocab, (n,), generator=gen)
        ids[i, 0], ids[i, n - 1] = 101, 102
        mask[i, :n] = 1
    y = torch.randint(0, labels, (b,), generator=gen)
    types = torch.zeros(b, l, dtype=torch.long)
    return tuple(t.to(device) for t in (ids, types, mask, y))


def gradient(model, ids, types, mask, labels, mode, autocast=contextlib.nullcontext, lr=0.1,
             eps=1.0):
    """One micro-batch gradient into the model's .grad: `off` a forward and backward pass;
    `pgd1` a delta-only pass, the L2 ascent step delta1 = lr*g/||g|| per example projected onto
    the eps-ball, then the full pass at E + delta1. `autocast` makes the context the passes run
    in. Returns the loss (a tensor)."""
    model.zero_grad(set_to_none=True)
    with autocast():
        e = model.embeds(ids)
        if mode == "pgd1":
            delta = torch.zeros_like(e, requires_grad=True)
            loss = F.cross_entropy(model.logits(e.detach() + delta, types, mask).float(), labels)
            (g,) = torch.autograd.grad(loss, delta)
            g = g.float() * mask[..., None]
            norm = g.flatten(1).norm(dim=1).clamp_min(1e-12)[:, None, None]
            d1 = lr * g / norm
            dn = d1.flatten(1).norm(dim=1)[:, None, None]
            d1 = d1 * torch.where(dn > eps, eps / dn, torch.ones_like(dn))
            e = e + d1.to(e.dtype)
        loss = F.cross_entropy(model.logits(e, types, mask).float(), labels)
    loss.backward()
    return loss
