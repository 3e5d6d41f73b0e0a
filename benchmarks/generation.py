"""Generation tokens/s of a model shape: KV cache vs no cache, at several batch sizes, side by side.

    python benchmarks/generation.py --config configs/got_char.yaml [--ckpt_path ...] --new-tokens 500

Greedy, from a one-token prompt, in eval mode; median of ``--repeats``. Also the compiled decode
step (``craft.generate.compiled``, ``--model.compiled_decode true``) at ``--compiled-batches``, with
its compile time and its speed beside the eager cached path measured just before it. Weights do not change the
speed, so without a checkpoint a freshly initialised model of the config's shape (vocab 100) is used.
Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.memory import peak_rss_bytes  # noqa: E402
from craft.compare import merged_config  # noqa: E402
from craft.generate import SamplingConfig, generate  # noqa: E402
from craft.generate.compiled import compile_step  # noqa: E402
from craft.model import GPT, GPTConfig  # noqa: E402


def untrained_model(config: list[str]) -> GPT:
    """A freshly initialised model of a config's shape (vocab 100): weights do not change speed."""
    cfg = merged_config(config)
    torch.manual_seed(0)
    return GPT(GPTConfig.from_section(cfg["model"], vocab_size=100, block_size=cfg["data"]["block_size"], dropout=0.0))


def rate(model: GPT, batch: int, new_tokens: int, repeats: int, use_cache: bool, step=None) -> float:
    device = next(model.parameters()).device
    prompt = torch.zeros(batch, 1, dtype=torch.long, device=device)
    generate(model, prompt, SamplingConfig(temperature=0, max_new_tokens=20), use_cache=use_cache, step=step)  # warm-up
    greedy = SamplingConfig(temperature=0, max_new_tokens=new_tokens)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        generate(model, prompt, greedy, use_cache=use_cache, step=step)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return batch * new_tokens / statistics.median(times)


class CountOps(TorchDispatchMode):
    """Counts the ATen kernels dispatched: the unit of PyTorch's fixed per-call overhead."""

    def __init__(self) -> None:
        super().__init__()
        self.n = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.n += 1
        return func(*args, **(kwargs or {}))


def kernels_per_token(model: GPT) -> float:
    """ATen kernels per cached batch-1 decode step (sampling included), from the difference of two lengths."""
    prompt = torch.zeros(1, 1, dtype=torch.long, device=next(model.parameters()).device)
    lengths, counts = (20, 60), []
    for n in lengths:
        with CountOps() as c:
            generate(model, prompt, SamplingConfig(temperature=0, max_new_tokens=n))
        counts.append(c.n)
    return (counts[1] - counts[0]) / (lengths[1] - lengths[0])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", nargs="+", required=True, help="one config or several, stacked in order")
    p.add_argument("--ckpt_path", default=None)
    p.add_argument("--new-tokens", type=int, default=500)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--batches", default="1,8,32")
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    p.add_argument(
        "--compiled-batches", default="1", help="batch sizes to also run with the compiled decode step ('' for none)"
    )
    args = p.parse_args()
    if args.ckpt_path:
        from craft.module import LanguageModel

        model = LanguageModel.load_from_checkpoint(args.ckpt_path, map_location="cpu", weights_only=True).model
    else:
        model = untrained_model(args.config)
    model.eval().to(args.device)
    out = {"params": model.num_params(), "new_tokens": args.new_tokens, "device": args.device}
    out["threads"] = torch.get_num_threads()
    out["uncached_batch1"] = rate(model, 1, args.new_tokens, args.repeats, use_cache=False)
    for b in (int(x) for x in args.batches.split(",")):
        out[f"cached_batch{b}"] = rate(model, b, args.new_tokens, args.repeats, use_cache=True)
    out["cache_speedup_batch1"] = out["cached_batch1"] / out["uncached_batch1"]
    # The compiled decode step (`--model.compiled_decode true`), compiled into a throwaway folder so
    # the compile time is measured, not a cached package's load time.
    for b in (int(x) for x in args.compiled_batches.split(",") if x and args.device == "cpu"):
        with tempfile.TemporaryDirectory() as folder:
            start = time.perf_counter()
            step = compile_step(model, b, Path(folder))
            out[f"compile_s_batch{b}"] = time.perf_counter() - start
        cached = rate(model, b, args.new_tokens, args.repeats, use_cache=True)  # eager, beside it
        out[f"compiled_batch{b}"] = rate(model, b, args.new_tokens, args.repeats, use_cache=True, step=step)
        out[f"compiled_speedup_batch{b}"] = out[f"compiled_batch{b}"] / cached
        if b == 1:
            out["compiled_vs_uncached_batch1"] = out["compiled_batch1"] / out["uncached_batch1"]
    # Why batch 1 is slow on a small CPU: each new token is a few hundred tiny kernels, so the time
    # per token is the kernel count times PyTorch's fixed cost per kernel call, not arithmetic.
    out["kernels_per_token"] = kernels_per_token(model)
    out["us_per_kernel_batch1"] = 1e6 / out["cached_batch1"] / out["kernels_per_token"]
    out["peak_rss"] = peak_rss_bytes()
    print(json.dumps({k: round(v, 2) if isinstance(v, float) else v for k, v in out.items()}))


if __name__ == "__main__":
    main()
