"""Compares adaptmesh's tokenizer, checkpoints and logits with Hugging Face
transformers (the reference implementation). Run where transformers is
installed, on the folders bench/hf_conformance/make.ts wrote:

    python3 bench/hf_conformance/check.py OUT_DIR
"""
import json, sys
import torch
from transformers import (AutoModelForSequenceClassification, BertTokenizer,
                          BertTokenizerFast)

out = sys.argv[1] if len(sys.argv) > 1 else "bench/hf_conformance/out"
report = {"transformers": __import__("transformers").__version__, "torch": torch.__version__}
ok = True

# BERT: tokenization (slow Python tokenizer = the reference, and the fast one) and logits.
bert = f"{out}/bert"
slow = BertTokenizer(f"{bert}/vocab.txt", do_lower_case=True)
fast = BertTokenizerFast(f"{bert}/vocab.txt", do_lower_case=True)
model = AutoModelForSequenceClassification.from_pretrained(bert).eval()
cases = json.load(open(f"{bert}/expected.json"))
tok_mismatch, fast_mismatch, max_diff = [], [], 0.0
for i, c in enumerate(cases):
    kw = dict(truncation="longest_first", max_length=128)
    ref = slow(c["text"], c.get("text_pair"), **kw)
    if ref["input_ids"] != c["input_ids"] or ref["token_type_ids"] != c["token_type_ids"]:
        tok_mismatch.append({"case": i, "ours": slow.convert_ids_to_tokens(c["input_ids"]),
                             "reference": slow.convert_ids_to_tokens(ref["input_ids"])})
    f = fast(c["text"], c.get("text_pair"), **kw)
    if f["input_ids"] != c["input_ids"]:
        fast_mismatch.append(i)
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([c["input_ids"]]),
                       token_type_ids=torch.tensor([c["token_type_ids"]])).logits[0].tolist()
    max_diff = max(max_diff, max(abs(a - b) for a, b in zip(logits, c["logits"])))
report["bert"] = {"cases": len(cases), "tokenizer_mismatches_vs_BertTokenizer": tok_mismatch,
                  "cases_differing_from_BertTokenizerFast": fast_mismatch,
                  "max_abs_logit_diff": max_diff}
ok &= not tok_mismatch and max_diff < 1e-4

# RoBERTa: logits from token ids (position offset, no pooler, its head), with padding.
rob = f"{out}/roberta"
model = AutoModelForSequenceClassification.from_pretrained(rob).eval()
cases = json.load(open(f"{rob}/expected.json"))
max_diff = 0.0
for c in cases:
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([c["input_ids"]]),
                       attention_mask=torch.tensor([c["attention_mask"]])).logits[0].tolist()
    max_diff = max(max_diff, max(abs(a - b) for a, b in zip(logits, c["logits"])))
report["roberta"] = {"cases": len(cases), "max_abs_logit_diff": max_diff}
ok &= max_diff < 1e-4
report["ok"] = bool(ok)
print(json.dumps(report, indent=1, ensure_ascii=False))
sys.exit(0 if ok else 1)
