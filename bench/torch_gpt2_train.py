#!/usr/bin/env python3
"""The PyTorch anchor for bench/gpu_train_compare.sh: GPT-2 training steps with
Hugging Face's GPT2LMHeadModel (SDPA attention, no dropout, as kiln's model),
torch.compile, bf16 autocast over fp32 master weights, fused AdamW and
gradient clipping at 1.0 -- the step kiln's gpt_cuda_bench times (forward,
backward, norm, clipped AdamW) on random tokens.

Prints one line per batch size:
  torch B=16 T=1024 ms/step mean 41.46 median 41.40 best 41.30 peak_gib 12.3 loss 10.99
Timing: CUDA events around each step after the warm-up steps (which include
the compilation). Needs a CUDA device; without one it says so and exits 0.

Usage: torch_gpt2_train.py [--batch 8,16,64] [--seq 1024] [--steps 20]
                           [--warmup 5] [--layers 12 --heads 12 --channels 768]
"""
import argparse
import statistics
import sys


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", default="8,16,64", help="comma-separated batch sizes")
    p.add_argument("--seq", type=int, default=1024)
    p.add_argument("--steps", type=int, default=20, help="timed steps per batch size")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps (compilation included)")
    p.add_argument("--layers", type=int, default=12)
    p.add_argument("--heads", type=int, default=12)
    p.add_argument("--channels", type=int, default=768)
    p.add_argument("--vocab", type=int, default=50257)
    args = p.parse_args()
    batches = [int(b) for b in args.batch.split(",") if b]
    if not batches or min(batches) < 1 or args.steps < 1 or args.warmup < 1:
        p.error("--batch needs positive sizes; --steps and --warmup must be >= 1")

    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    if not torch.cuda.is_available():
        print("torch_gpt2_train: no CUDA device: nothing to measure")
        return 0
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    config = GPT2Config(
        n_layer=args.layers, n_head=args.heads, n_embd=args.channels, n_positions=args.seq,
        vocab_size=args.vocab, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
        use_cache=False)
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name(0)}, "
          f"transformers GPT2LMHeadModel with sdpa", flush=True)
    for B in batches:
        torch.manual_seed(1337)
        model = GPT2LMHeadModel._from_config(config, attn_implementation="sdpa").cuda()
        model.train()
        opt = torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=0.1, fused=True)
        def forward_loss(inputs, targets):
            logits = model(input_ids=inputs).logits
            return torch.nn.functional.cross_entropy(
                logits.view(-1, logits.size(-1)).float(), targets.view(-1))

        # The loss is compiled with the model, as nanoGPT does, so the float
        # cross-entropy over the logits is fused rather than run eagerly.
        compiled = torch.compile(forward_loss)
        gen = torch.Generator(device="cuda").manual_seed(1)
        x = torch.randint(0, args.vocab, (B, args.seq), device="cuda", generator=gen)
        y = torch.randint(0, args.vocab, (B, args.seq), device="cuda", generator=gen)

        def step():
            with torch.autocast(device_type="cuda", dtype=torch.bfloat16):
                loss = compiled(x, y)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            return loss

        for _ in range(args.warmup):
            step()
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        times = []
        loss = None
        for _ in range(args.steps):
            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            start.record()
            loss = step()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        peak = torch.cuda.max_memory_allocated() / 2**30
        print(f"torch B={B} T={args.seq} ms/step mean {statistics.mean(times):.2f} "
              f"median {statistics.median(times):.2f} best {min(times):.2f} "
              f"peak_gib {peak:.1f} loss {loss.item():.3f}", flush=True)
        del model, opt, compiled
        torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    sys.exit(main())
