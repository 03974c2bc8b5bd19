#!/usr/bin/env python3
"""transformers' own bf16 logits on the hf-parity fixtures' inputs (scripts/gpu-check.sh, step hf-parity-bf16).

For each family of test/fixtures/hf-parity/ it loads the fixture's checkpoint with
AutoModelForCausalLM in bfloat16 on the device, runs the three committed cases (same ids, masks
and positions as the fp32 fixture) and writes, per case, the bf16 logits as fp32 numbers, and the
max |Δ| of transformers in fp32 on the same device against the fixture (made on CPU).
scripts/gpu-check/hf-parity.js compares our engine's bf16 logits against these.

    python3 hf_bf16_logits.py --fixtures DIR --out FILE [--device cuda] [--check]

--check parses the arguments and exits (the dry run: no torch needed).
"""
import argparse
import json
import math
import os
import sys

FAMILIES = ["llama3", "qwen2", "qwen3"]


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fixtures", required=True, help="test/fixtures/hf-parity")
    parser.add_argument("--out", required=True, help="JSON file for the logits")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--check", action="store_true", help="parse the arguments and exit")
    return parser.parse_args()


def load(model_dir, dtype, device):
    from transformers import AutoModelForCausalLM

    # `dtype` is the argument's name from transformers 4.56 on (`torch_dtype` before, deprecated in 5).
    return AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype).to(device).eval()


def kept_positions(case, logits):
    """[B, T, 1] True where the attention mask is 1 (padding logits are unspecified, NaN on some kernels)."""
    import torch

    if "attention_mask" not in case:
        return torch.ones(logits.shape[:2] + (1,), dtype=torch.bool)
    return torch.tensor(case["attention_mask"]).bool().unsqueeze(-1)


def max_masked_delta(logits, case):
    """Max |Δ| against the fixture's fp32 logits where the attention mask is 1."""
    import torch

    delta = (logits - torch.tensor(case["logits"])).abs()
    return delta[kept_positions(case, logits).expand_as(delta)].max().item()


def as_json_logits(logits, case):
    """Nested lists, padding positions 0, a non-finite value as null (JSON has no NaN; hf-parity.js reads null as NaN)."""
    logits = logits.masked_fill(~kept_positions(case, logits), 0.0)
    return [[[x if math.isfinite(x) else None for x in position] for position in row] for row in logits.tolist()]


def case_logits(model, case, device):
    import torch

    def tensor(key):
        return torch.tensor(case[key], device=device) if key in case else None

    with torch.no_grad():
        out = model(input_ids=tensor("input_ids"), attention_mask=tensor("attention_mask"), position_ids=tensor("position_ids"))
    return out.logits.float().cpu()


def main():
    args = parse_args()
    if args.check:
        return
    import torch
    import transformers

    transformers.utils.logging.disable_progress_bar()
    families = {}
    for family in FAMILIES:
        model_dir = os.path.join(args.fixtures, family)
        with open(os.path.join(model_dir, "expected.json")) as f:
            expected = json.load(f)
        bf16 = load(model_dir, torch.bfloat16, args.device)
        # transformers in fp32 on this device against the committed (CPU) fixture: the floor the
        # fp32 step's 1e-4 stands on, should ours miss it here.
        fp32 = load(model_dir, torch.float32, args.device)
        families[family] = {
            "attention": bf16.config._attn_implementation,
            "cases": [
                {
                    "name": c["name"],
                    "logits": as_json_logits(case_logits(bf16, c, args.device), c),
                    "fp32MaxAbsDeltaToFixture": max_masked_delta(case_logits(fp32, c, args.device), c),
                }
                for c in expected["cases"]
            ],
        }
        del bf16, fp32
    result = {
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "device": args.device,
        "dtype": "bfloat16",
        "families": families,
    }
    tmp = args.out + ".tmp"
    with open(tmp, "w") as f:
        json.dump(result, f)
    os.replace(tmp, args.out)
    print(f"hf bf16 logits of {', '.join(FAMILIES)} on {args.device} -> {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
