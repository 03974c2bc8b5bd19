#!/usr/bin/env python3
"""transformers' decode rate, the baseline of scripts/gpu-check.sh's step decode-throughput.

Makes a random-weight model of Qwen2.5-0.5B's shape (hidden 896, 24 layers, 14 heads, 2 kv heads,
head dim 64, intermediate 4864, vocab 151936, tied embeddings, rope_theta 1e6) in bfloat16 on the
device, saves it with save_pretrained (safetensors) into --model-dir for our engine to load, and
times transformers' `generate` on it: greedy, batch 64, prompts of 32 tokens, exactly 256 new
tokens per row (min_new_tokens = max_new_tokens, so no row stops early). One warm-up call of 8
tokens first; the timed call includes the prefill, as ours does. The result (prompts included, so
our side runs the very same requests) goes to --result as JSON.

    python3 decode_baseline.py --model-dir DIR --result FILE [--device cuda] [--small] [--check]

--small: a tiny model and batch for a CPU rehearsal; --check parses the arguments and exits.
"""
import argparse
import json
import os
import sys
import time

QWEN25_05B = dict(hidden_size=896, num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2, head_dim=64,
                  intermediate_size=4864, vocab_size=151936)
SMALL = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
             intermediate_size=128, vocab_size=1024)
# tokens of generated text kept per row, for an agreement check against our greedy tokens
KEPT_TOKENS = 16


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", required=True, help="where the random model is saved")
    parser.add_argument("--result", required=True, help="JSON file for the measurement")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--small", action="store_true", help="tiny shapes (CPU rehearsal)")
    parser.add_argument("--check", action="store_true", help="parse the arguments and exit")
    return parser.parse_args()


def synchronize(device):
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main():
    args = parse_args()
    if args.check:
        return
    import torch
    import transformers
    from transformers import Qwen2Config, Qwen2ForCausalLM

    transformers.utils.logging.disable_progress_bar()
    shape = SMALL if args.small else QWEN25_05B
    batch, prompt_tokens, new_tokens = (4, 8, 16) if args.small else (64, 32, 256)
    config = Qwen2Config(**shape, tie_word_embeddings=True, rope_theta=1e6, rms_norm_eps=1e-6, max_position_embeddings=4096,
                         use_sliding_window=False)
    torch.manual_seed(0)
    started = time.perf_counter()
    with torch.device(args.device):
        model = Qwen2ForCausalLM(config)
    model = model.to(torch.bfloat16).eval()
    model.save_pretrained(args.model_dir, safe_serialization=True)
    setup_seconds = time.perf_counter() - started

    vocab = shape["vocab_size"]
    prompts = [[(b * 7919 + t * 104729) % vocab for t in range(prompt_tokens)] for b in range(batch)]
    input_ids = torch.tensor(prompts, device=args.device)
    attention_mask = torch.ones_like(input_ids)

    def generate(tokens):
        with torch.no_grad():
            return model.generate(input_ids=input_ids, attention_mask=attention_mask, do_sample=False,
                                  max_new_tokens=tokens, min_new_tokens=tokens, pad_token_id=0)

    generate(8)  # warm-up: kernels, cuBLAS handles, the allocator's first blocks
    synchronize(args.device)
    start = time.perf_counter()
    output = generate(new_tokens)
    synchronize(args.device)
    seconds = time.perf_counter() - start
    generated = output[:, prompt_tokens:]
    if generated.shape[1] != new_tokens:
        raise SystemExit(f"transformers generated {generated.shape[1]} tokens per row, expected {new_tokens}")

    result = {
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "device": args.device,
        "deviceName": torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu",
        "dtype": "bfloat16",
        "attention": model.config._attn_implementation,
        "model": {"architecture": "Qwen2ForCausalLM", **shape, "tie_word_embeddings": True, "rope_theta": 1e6,
                  "parameters": sum(p.numel() for p in model.parameters())},
        "setupSeconds": setup_seconds,
        "batch": batch,
        "promptTokens": prompt_tokens,
        "newTokens": new_tokens,
        "prompts": prompts,
        "seconds": seconds,
        "tokensPerSecond": batch * new_tokens / seconds,
        "firstTokens": generated[:, :KEPT_TOKENS].tolist(),
    }
    tmp = args.result + ".tmp"
    with open(tmp, "w") as f:
        json.dump(result, f)
    os.replace(tmp, args.result)
    print(f"transformers generate: {result['tokensPerSecond']:.0f} tokens/s ({batch} x {new_tokens} in {seconds:.2f} s)", file=sys.stderr)


if __name__ == "__main__":
    main()
