"""Checks adaptmesh's LoRA adapters against Hugging Face transformers + peft.
Run on the folders bench/peft_conformance/make.ts wrote (see bench/README.md,
"PEFT conformance"):

    python3 bench/peft_conformance/check.py OUT

Per case (bert, roberta, bert_no_pooler):
  1. PeftModel.from_pretrained(AutoModelForSequenceClassification(base), adapter)
     gives adaptmesh's logits (expected.json);
  2. the merged folder adaptmesh wrote loads in transformers alone and gives them;
  3. peft's own merge_and_unload gives them;
  4. peft writes an adapter of its own (non-zero B, moved head) into
     OUT/<case>/peft_saved with the logits it computes, for make.ts --verify.
Also writes OUT/tiny/peft_saved on the tiny test model (tests/fixtures/peft_tiny_bert).
Prints a JSON report; exit status 1 when a difference passes 1e-5.
"""
import json, os, sys
import torch
import transformers, peft
from transformers import AutoModelForSequenceClassification
from peft import LoraConfig, PeftModel, TaskType, get_peft_model

out = sys.argv[1] if len(sys.argv) > 1 else "bench/peft_conformance/out"
TOL = 1e-5
report = {"torch": torch.__version__, "transformers": transformers.__version__,
          "peft": peft.__version__, "tolerance": TOL}
ok = True


def inputs(e):
    kw = {"input_ids": torch.tensor(e["input_ids"]),
          "attention_mask": torch.tensor(e["attention_mask"])}
    if any(any(r) for r in e["token_type_ids"]):
        kw["token_type_ids"] = torch.tensor(e["token_type_ids"])
    return kw


def logits(model, e):
    with torch.no_grad():
        return model(**inputs(e)).logits


def diff(a, b):
    return float((torch.as_tensor(a, dtype=torch.float64)
                  - torch.as_tensor(b, dtype=torch.float64)).abs().max())


def base_model(d):
    return AutoModelForSequenceClassification.from_pretrained(f"{d}/base").eval()


def peft_save(d, e, lora, fresh_pooler, seed):
    """peft's own adapter on the base: random A and B, a moved head; saved with its logits."""
    torch.manual_seed(seed)
    cfg = LoraConfig(task_type=TaskType.SEQ_CLS, r=lora["r"], lora_alpha=lora["alpha"],
                     lora_dropout=lora["dropout"], target_modules=lora["targetModules"],
                     modules_to_save=["pooler"] if fresh_pooler else None)
    pm = get_peft_model(base_model(d), cfg)
    with torch.no_grad():
        for name, p in pm.named_parameters():
            if "lora_B" in name or "lora_A" in name:
                p.normal_(0, 0.2)
            elif "modules_to_save" in name:
                p.add_(torch.randn_like(p) * 0.05)
    pm.eval()
    got = logits(pm, e)
    pm.save_pretrained(f"{d}/peft_saved")
    with open(f"{d}/peft_saved/expected.json", "w") as f:
        json.dump({**{k: e[k] for k in ("input_ids", "token_type_ids", "attention_mask")},
                   "logits": got.tolist()}, f)
    return sorted(k for k in json.load(open(f"{d}/peft_saved/adapter_config.json"))
                  if k in ("r", "lora_alpha", "target_modules", "modules_to_save"))


for i, case in enumerate(["bert", "roberta", "bert_no_pooler"]):
    d = f"{out}/{case}"
    e = json.load(open(f"{d}/expected.json"))
    ours = torch.tensor(e["logits"]).reshape(len(e["input_ids"]), -1)
    base_logits = logits(base_model(d), e)
    pm = PeftModel.from_pretrained(base_model(d), f"{d}/adapter").eval()
    adapter = logits(pm, e)
    merged_ours = logits(AutoModelForSequenceClassification.from_pretrained(f"{d}/merged").eval(), e)
    merged_peft = logits(pm.merge_and_unload().eval(), e)
    trainable = sum(p.numel() for n, p in PeftModel.from_pretrained(
        base_model(d), f"{d}/adapter", is_trainable=True).named_parameters() if p.requires_grad)
    r = {
        "adapter_vs_adaptmesh": diff(adapter, ours),
        "adapter_vs_adaptmesh_tfjs": diff(adapter, torch.tensor(e["logits_tfjs"]).reshape(ours.shape)),
        "merged_folder_vs_adaptmesh": diff(merged_ours, ours),
        "peft_merge_and_unload_vs_adaptmesh": diff(merged_peft, ours),
        "adapter_moves_logits_by": diff(ours, base_logits),
        "peft_trainable_params": trainable,
        "adaptmesh_trainable_params": e["trainable_params"],
        "fresh_pooler": e["fresh_pooler"],
    }
    checked = [v for k, v in r.items() if k.endswith("adaptmesh") or k.endswith("tfjs")]
    ok &= all(v <= TOL for v in checked) and r["adapter_moves_logits_by"] > 1e-2
    ok &= trainable == e["trainable_params"]
    peft_save(d, e, e["lora"], e["fresh_pooler"], 100 + i)
    report[case] = r

# The tiny test model: peft writes the adapter tests/peft_test.ts reads.
d = f"{out}/tiny"
e = json.load(open(f"{d}/expected.json"))
peft_save(d, e, {"r": 4, "alpha": 8, "dropout": 0.1,
                 "targetModules": ["query", "value", "output.dense"]}, False, 7)
report["tiny_fixture"] = f"{d}/peft_saved"
report["ok"] = bool(ok)
print(json.dumps(report, indent=1))
sys.exit(0 if ok else 1)
