"""Reference pre-training of adaptmesh's default model shape in plain PyTorch.

A control experiment, not a second training system: it answers how much
masked-language-model pre-training this exact model (BERT, hidden 128, 2
layers, 2 heads, intermediate 512, the bert-base-uncased vocabulary) needs on
the exact corpus `deno task pretrain` uses before it helps adaptation — work
a 2-core machine cannot do in a session, run where a GPU is lent. The
checkpoint it writes is an ordinary Hugging Face BertForMaskedLM folder
(F16, adaptmesh's tensor names), so adaptmesh adapts it like any other.

The recipe mirrors adaptmesh's (coordinator/mlm_data.ts, coordinator/
optimizer.ts, docs/method.md): 64-token packed sequences, BERT masking (15% of the
non-special tokens; 80% [MASK], 10% random, 10% unchanged), loss = mean over
predicted tokens, decoder tied to the word embeddings with its bias started
at the log unigram frequencies, BERT initialisation (normal, std 0.02), no
dropout, AdamW or LAMB (beta 0.9/0.999, eps 1e-6, decoupled weight decay 0.01
except biases and LayerNorm), linear warmup then linear decay to 0.

    python3 reference_pretrain.py --data DIR --out DIR --name NAME \
        [--optimizer adamw|lamb] [--lr 1e-3] [--batch 32] [--warmup 0.025] \
        [--steps N | --budget SECONDS] [--eval-every 500] [--seed 1] [--device cuda] \
        [--init-from SAFETENSORS]

DIR holds what bench/reference_pretrain/export_tokens.ts writes. With
--budget, a timing probe on a throwaway copy of the model sets the step count
so the run fits the budget (and a deadline stops it anyway). Writes
OUT/NAME.safetensors (F16) and OUT/NAME.json (recipe, timing, curve).
"""
import argparse
import copy
import json
import math
import os
import struct
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

# ---------------------------------------------------------------------------
# The model: BERT with Hugging Face's module names, so state_dict() keys are
# the names adaptmesh reads and writes.


class Embeddings(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.word_embeddings = nn.Embedding(c["vocab_size"], c["hidden_size"])
        self.position_embeddings = nn.Embedding(c["max_position_embeddings"], c["hidden_size"])
        self.token_type_embeddings = nn.Embedding(c["type_vocab_size"], c["hidden_size"])
        self.LayerNorm = nn.LayerNorm(c["hidden_size"], eps=c["layer_norm_eps"])

    def forward(self, ids):
        pos = torch.arange(ids.shape[1], device=ids.device)
        x = self.word_embeddings(ids) + self.position_embeddings(pos)[None]
        x = x + self.token_type_embeddings.weight[0]  # single segment: type 0 everywhere
        return self.LayerNorm(x)


class SelfAttention(nn.Module):
    def __init__(self, c):
        super().__init__()
        h = c["hidden_size"]
        self.heads = c["num_attention_heads"]
        self.query, self.key, self.value = nn.Linear(h, h), nn.Linear(h, h), nn.Linear(h, h)

    def forward(self, x, keep):
        b, t, h = x.shape
        split = lambda y: y.view(b, t, self.heads, h // self.heads).transpose(1, 2)
        q, k, v = split(self.query(x)), split(self.key(x)), split(self.value(x))
        # keep: (b, 1, 1, t) booleans, True where the key is a real token.
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=keep)
        return y.transpose(1, 2).reshape(b, t, h)


class DenseNorm(nn.Module):
    """dense → + residual → LayerNorm (BERT's attention.output and output)."""

    def __init__(self, c, d_in):
        super().__init__()
        self.dense = nn.Linear(d_in, c["hidden_size"])
        self.LayerNorm = nn.LayerNorm(c["hidden_size"], eps=c["layer_norm_eps"])

    def forward(self, y, residual):
        return self.LayerNorm(self.dense(y) + residual)


class Attention(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.self = SelfAttention(c)
        self.output = DenseNorm(c, c["hidden_size"])

    def forward(self, x, keep):
        return self.output(self.self(x, keep), x)


class Intermediate(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.dense = nn.Linear(c["hidden_size"], c["intermediate_size"])

    def forward(self, x):
        return F.gelu(self.dense(x))  # exact (erf) GELU: the config's "gelu"


class Layer(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.attention = Attention(c)
        self.intermediate = Intermediate(c)
        self.output = DenseNorm(c, c["intermediate_size"])

    def forward(self, x, keep):
        a = self.attention(x, keep)
        return self.output(self.intermediate(a), a)


class Encoder(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.layer = nn.ModuleList(Layer(c) for _ in range(c["num_hidden_layers"]))

    def forward(self, x, keep):
        for layer in self.layer:
            x = layer(x, keep)
        return x


class Bert(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.embeddings = Embeddings(c)
        self.encoder = Encoder(c)


class Transform(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.dense = nn.Linear(c["hidden_size"], c["hidden_size"])
        self.LayerNorm = nn.LayerNorm(c["hidden_size"], eps=c["layer_norm_eps"])

    def forward(self, x):
        return self.LayerNorm(F.gelu(self.dense(x)))


class Predictions(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.transform = Transform(c)
        self.bias = nn.Parameter(torch.zeros(c["vocab_size"]))


class Cls(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.predictions = Predictions(c)


class BertForMaskedLM(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.bert = Bert(c)
        self.cls = Cls(c)

    def forward(self, ids, pad_id):
        """Hidden states (b, t, h)."""
        keep = (ids != pad_id)[:, None, None, :]
        return self.bert.encoder(self.bert.embeddings(ids), keep)

    def logits(self, states):
        """MLM logits of the given states; the decoder is the word-embedding matrix (tied)."""
        p = self.cls.predictions
        return F.linear(p.transform(states), self.bert.embeddings.word_embeddings.weight, p.bias)

    def mlm_loss(self, ids, labels, pad_id):
        """Mean cross-entropy over the predicted positions (labels >= 0), and their count."""
        where = labels >= 0
        states = self.forward(ids, pad_id)[where]
        logits = self.logits(states)
        return F.cross_entropy(logits, labels[where]), logits, where


def init_weights(model, std):
    for m in model.modules():
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, std)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, 0.0, std)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def decays(name):
    """adaptmesh's rule: weight decay (and LAMB's trust ratio) for weights, not biases or LayerNorm."""
    return not (name.endswith(".bias") or "LayerNorm" in name)


# ---------------------------------------------------------------------------
# Optimizers: torch's AdamW is adaptmesh's AdamW (u = m̂/(√v̂+ϵ) + λw, w ← w − η·u);
# LAMB as coordinator/optimizer.ts: r = ‖w‖/‖u‖ per decayed tensor, w ← w − η·r·u.


class Lamb(torch.optim.Optimizer):
    def __init__(self, groups, lr, betas=(0.9, 0.999), eps=1e-6):
        super().__init__(groups, dict(lr=lr, betas=betas, eps=eps, weight_decay=0.0))

    @torch.no_grad()
    def step(self):
        for g in self.param_groups:
            b1, b2 = g["betas"]
            for p in g["params"]:
                if p.grad is None:
                    continue
                st = self.state[p]
                if not st:
                    st["t"], st["m"], st["v"] = 0, torch.zeros_like(p), torch.zeros_like(p)
                st["t"] += 1
                t, m, v = st["t"], st["m"], st["v"]
                m.mul_(b1).add_(p.grad, alpha=1 - b1)
                v.mul_(b2).addcmul_(p.grad, p.grad, value=1 - b2)
                u = (m / (1 - b1**t)) / ((v / (1 - b2**t)).sqrt_().add_(g["eps"]))
                if g["weight_decay"] > 0:  # the decayed tensors: decay and trust ratio
                    u.add_(p, alpha=g["weight_decay"])
                    wn, un = p.norm(), u.norm()
                    r = torch.where((wn > 0) & (un > 0), wn / un, torch.ones_like(wn))
                    p.sub_(u * (g["lr"] * r))
                else:
                    p.sub_(u, alpha=g["lr"])


def make_optimizer(model, kind, lr, weight_decay=0.01):
    named = list(model.named_parameters())
    groups = [
        {"params": [p for n, p in named if decays(n)], "weight_decay": weight_decay},
        {"params": [p for n, p in named if not decays(n)], "weight_decay": 0.0},
    ]
    if kind == "adamw":
        fused = next(model.parameters()).is_cuda
        return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.999), eps=1e-6, fused=fused)
    if kind == "lamb":
        return Lamb(groups, lr=lr)
    raise SystemExit(f"unknown optimizer {kind!r}")


def lr_at(step, total, warmup_steps, peak):
    """coordinator/lr_schedule.ts at 1-based step s = step + 1: peak·s/W while s ≤ W, then
    peak·(T − s)/(T − W). (The runs of 2026-11-28 used (T − s + 1) after warmup: one step later.)"""
    s = step + 1
    if s <= warmup_steps:
        return peak * s / warmup_steps
    return peak * max(0, total - s) / max(1, total - warmup_steps)


# ---------------------------------------------------------------------------
# Data and masking.


def read_array(path, dtype, width):
    a = np.fromfile(path, dtype=dtype)
    if a.size % width:
        raise SystemExit(f"{path}: {a.size} values is not a multiple of {width}")
    return a.reshape(-1, width).astype(np.int64)


def unigram_log_prior(train, vocab, special):
    counts = np.bincount(train.reshape(-1), minlength=vocab).astype(np.float64)
    counts[list(special)] = 0
    total = counts.sum()
    return np.log(counts + 0.5) - math.log(total + 0.5 * vocab)


def mask_batch(ids, special, mask_id, vocab, rate, gen):
    """BERT masking of a (b, t) batch of token ids; labels -1 where nothing is predicted."""
    candidate = ~torch.isin(ids, special)
    chosen = candidate & (torch.rand(ids.shape, device=ids.device, generator=gen) < rate)
    labels = torch.where(chosen, ids, torch.full_like(ids, -1))
    r = torch.rand(ids.shape, device=ids.device, generator=gen)
    random_ids = torch.randint(0, vocab, ids.shape, device=ids.device, generator=gen)
    inputs = torch.where(chosen & (r < 0.8), torch.full_like(ids, mask_id), ids)
    inputs = torch.where(chosen & (r >= 0.8) & (r < 0.9), random_ids, inputs)
    return inputs, labels


@torch.no_grad()
def evaluate(model, inputs, labels, pad_id):
    model.eval()
    loss, logits, where = model.mlm_loss(inputs, labels, pad_id)
    acc = (logits.argmax(-1) == labels[where]).float().mean().item()
    model.train()
    return {"mlm_loss": loss.item(), "mlm_accuracy": acc, "predicted": int(where.sum().item())}


# ---------------------------------------------------------------------------
# safetensors, written by hand (no package needed): F16, adaptmesh's names.


def save_f16(model, path, names):
    sd = model.state_dict()
    missing = [n for n in names if n not in sd]
    if missing:
        raise SystemExit(f"model lacks tensors {missing}")
    header, blobs, offset = {"__metadata__": {"format": "pt"}}, [], 0
    for n in names:
        b = sd[n].detach().to("cpu", torch.float16).contiguous().numpy().tobytes()
        header[n] = {"dtype": "F16", "shape": list(sd[n].shape), "data_offsets": [offset, offset + len(b)]}
        blobs.append(b)
        offset += len(b)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)
    os.replace(tmp, path)


def load_safetensors(model, path):
    """Loads F16/F32 tensors by name into the model (every model tensor must be there)."""
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    sd = model.state_dict()
    for name, t in sd.items():
        h = header[name]
        lo, hi = h["data_offsets"]
        dtype = {"F16": np.float16, "F32": np.float32}[h["dtype"]]
        arr = np.frombuffer(data[lo:hi], dtype=dtype).reshape(h["shape"])
        t.copy_(torch.from_numpy(arr.astype(np.float32)))


def safetensors_names(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        return [k for k in json.loads(f.read(n)) if k != "__metadata__"]


# ---------------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--model-dir", default="models/adaptmesh-bert-small",
                    help="config.json and the tensor names to write come from here")
    ap.add_argument("--out", required=True)
    ap.add_argument("--name", required=True)
    ap.add_argument("--optimizer", default="adamw", choices=["adamw", "lamb"])
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--warmup", type=float, default=0.025)
    ap.add_argument("--steps", type=int, default=0)
    ap.add_argument("--budget", type=float, default=0.0, help="seconds of training (sets --steps)")
    ap.add_argument("--eval-every", type=int, default=500)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--init-from", metavar="SAFETENSORS",
                    help="start from these weights (a second phase at a longer --data sequence length)")
    ap.add_argument("--eval-only", metavar="SAFETENSORS",
                    help="print the held-out MLM loss/accuracy of these weights and stop")
    a = ap.parse_args()
    if not a.eval_only and not (a.steps > 0) ^ (a.budget > 0):
        raise SystemExit("give exactly one of --steps N or --budget SECONDS")
    t_start = time.time()
    torch.backends.cuda.matmul.allow_tf32 = False  # float32 math, as adaptmesh
    torch.backends.cudnn.allow_tf32 = False
    dev = torch.device(a.device)
    torch.manual_seed(a.seed)
    gen = torch.Generator(device=dev)
    gen.manual_seed(a.seed)

    meta = json.load(open(f"{a.data}/meta.json"))
    c = json.load(open(f"{a.model_dir}/config.json"))
    L, V, ids = meta["maxLen"], meta["vocabSize"], meta["ids"]
    if V > c["vocab_size"]:
        raise SystemExit(f"tokenizer has {V} ids, model {c['vocab_size']}")
    train = read_array(f"{a.data}/train.u16", np.uint16, L)
    held_in = torch.from_numpy(read_array(f"{a.data}/heldout_masked.u16", np.uint16, L)).to(dev)
    held_lab = torch.from_numpy(read_array(f"{a.data}/heldout_labels.i32", np.int32, L)).to(dev)
    special_list = [ids["pad"], ids["cls"], ids["sep"], ids["mask"], ids["unk"]]
    special = torch.tensor(special_list, device=dev)
    train_t = torch.from_numpy(train).to(dev)

    model = BertForMaskedLM(c).to(dev)
    init_weights(model, c["initializer_range"])
    with torch.no_grad():
        prior = unigram_log_prior(train, c["vocab_size"], special_list)
        model.cls.predictions.bias.copy_(torch.from_numpy(prior).float())
        if a.eval_only or a.init_from:
            load_safetensors(model, a.eval_only or a.init_from)
    if a.eval_only:
        print(json.dumps(evaluate(model, held_in, held_lab, ids["pad"])))
        return

    def train_step(m, opt, step, total, warm):
        idx = torch.randint(0, train_t.shape[0], (a.batch,), device=dev, generator=gen)
        inputs, labels = mask_batch(train_t[idx], special, ids["mask"], V, 0.15, gen)
        for g in opt.param_groups:
            g["lr"] = lr_at(step, total, warm, a.lr)
        loss, _, _ = m.mlm_loss(inputs, labels, ids["pad"])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss

    probe = None
    if a.budget > 0:
        # Timing probe on a throwaway copy (the real model's RNG and state stay untouched).
        m2 = copy.deepcopy(model)
        o2 = make_optimizer(m2, a.optimizer, a.lr)
        for s in range(20):
            train_step(m2, o2, s, 1000, 10)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t0, n = time.time(), 100 if dev.type == "cuda" else 5
        for s in range(n):
            train_step(m2, o2, s, 1000, 10)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        per_step = (time.time() - t0) / n
        del m2, o2
        evals = a.budget / per_step / a.eval_every
        total = max(1, int(a.budget / (per_step * 1.08) - evals))
        probe = {"seconds_per_step": per_step, "steps_chosen": total}
        print(f"[{a.name}] probe: {per_step*1e3:.2f} ms/step -> {total} steps in {a.budget:.0f} s", flush=True)
    else:
        total = a.steps
    # resolveWarmup: a fraction of the run, rounded up (the 2026-11-28 runs rounded to nearest).
    warm = max(1, math.ceil(a.warmup * total - 1e-9))
    opt = make_optimizer(model, a.optimizer, a.lr)
    deadline = time.time() + (a.budget * 1.15 if a.budget > 0 else float("inf"))

    curve = [{"step": 0, "seconds": 0.0, **evaluate(model, held_in, held_lab, ids["pad"])}]
    print(f"[{a.name}] step 0 {curve[-1]}", flush=True)
    t0, window, stopped = time.time(), [], None
    step = 0
    while step < total:
        loss = train_step(model, opt, step, total, warm)
        window.append(loss.detach())
        step += 1
        if step % a.eval_every == 0 or step == total:
            train_loss = torch.stack(window).mean().item()
            if not math.isfinite(train_loss):
                raise SystemExit(f"[{a.name}] non-finite training loss at step {step}")
            window = []
            e = evaluate(model, held_in, held_lab, ids["pad"])
            curve.append({"step": step, "seconds": time.time() - t0, "train_loss": train_loss, **e})
            print(f"[{a.name}] step {step}/{total} {curve[-1]}", flush=True)
            if time.time() > deadline and step < total:
                stopped = f"deadline: stopped at step {step} of {total}"
                print(f"[{a.name}] {stopped}", flush=True)
                break
    wall = time.time() - t0

    os.makedirs(a.out, exist_ok=True)
    save_f16(model, f"{a.out}/{a.name}.safetensors", safetensors_names(f"{a.model_dir}/model.safetensors"))
    record = {
        "name": a.name,
        "recipe": {
            "init_from": a.init_from,
            "optimizer": a.optimizer, "lr": a.lr, "batch": a.batch, "seq": L, "warmup": a.warmup,
            "warmup_steps": warm, "steps": total, "seed": a.seed, "dropout": 0,
            "weight_decay": 0.01, "betas": [0.9, 0.999], "eps": 1e-6, "mask_rate": 0.15,
        },
        "steps_done": step,
        "stopped": stopped,
        "sequences": step * a.batch,
        "tokens": step * a.batch * L,
        "train_sequences": int(train.shape[0]),
        "epochs": step * a.batch / train.shape[0],
        "train_seconds": wall,
        "total_seconds": time.time() - t_start,
        "probe": probe,
        "device": torch.cuda.get_device_name(0) if dev.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "heldout_eval": "first 256 held-out sequences masked as adaptmesh's evaluateMlm (seed 1, step 0)",
        "curve": curve,
    }
    with open(f"{a.out}/{a.name}.json", "w") as f:
        json.dump(record, f, indent=1)
    print(f"[{a.name}] done: {step} steps in {wall:.0f} s; final {curve[-1]}", flush=True)


if __name__ == "__main__":
    main()
