"""PyTorch vs onnxruntime fp32 vs onnxruntime int8 for one checkpoint, side by side in one run.

    python benchmarks/export_runtime.py --ckpt_path logs/bench_got_char/checkpoints/last.ckpt \
        --data.path data/pydoc_topics.txt [--new-tokens 500 --repeats 3 --val-windows 40]

Reports file sizes, generation tokens/s at batch 1 (KV cache in every runtime; PyTorch also without
a cache), val bits per character of each on the same validation windows of the corpus, and the
installed size of the runtime's dependencies against PyTorch's. Writes
``benchmarks/results/export_runtime.{md,json}``.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import tempfile
import time
from importlib import metadata
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from packaging.requirements import Requirement

from craft.data import TextDataModule, Tokenizer
from craft.export import export
from craft.generation import SamplingConfig, generate
from craft.module import LanguageModel
from craft.runtime import ExportedModel

RESULTS = Path(__file__).resolve().parent / "results"


def installed_bytes(root: str) -> tuple[int, list[str]]:
    """Bytes on disk of a distribution and everything it requires (no extras), from pip's RECORDs."""
    seen: dict[str, int] = {}
    todo = [root]
    while todo:
        name = todo.pop()
        key = name.lower().replace("_", "-")
        if key in seen:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        seen[key] = sum(f.size or 0 for f in dist.files or [])
        for req in dist.requires or []:
            r = Requirement(req)
            if r.marker is None or r.marker.evaluate({"extra": ""}):
                todo.append(r.name)
    return sum(seen.values()), sorted(seen)


def interleaved_tokens_per_sec(contenders: dict, new_tokens: int, repeats: int) -> dict[str, float]:
    """Median tokens/s of each contender, timing them in turn within every round: drift of a busy
    machine then hits all of them alike instead of whichever happened to run during it."""
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(repeats):
        for name, fn in contenders.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: new_tokens / statistics.median(t) for name, t in times.items()}


def bpc_torch(lm: LanguageModel, windows: np.ndarray, char_lengths: np.ndarray) -> float:
    x, y = torch.from_numpy(windows[:, :-1]), torch.from_numpy(windows[:, 1:])
    with torch.no_grad():
        logits, _ = lm.model(x, all_logits=True)
        nats = torch.nn.functional.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="sum").item()
    return nats / char_lengths[windows[:, 1:]].sum() / math.log(2)


def bpc_onnx(rt: ExportedModel, windows: np.ndarray, char_lengths: np.ndarray) -> float:
    nats = 0.0
    for w in windows:
        logits, _ = rt.step(w[None, :-1], np.arange(len(w) - 1), rt.empty_cache(1))
        z = logits[0].astype(np.float64)
        z -= z.max(-1, keepdims=True)
        logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
        nats -= logp[np.arange(len(w) - 1), w[1:]].sum()
    return nats / char_lengths[windows[:, 1:]].sum() / math.log(2)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ckpt_path", type=Path, required=True)
    p.add_argument("--data.path", dest="data_path", required=True, help="the corpus the model was trained on")
    p.add_argument("--val-fraction", type=float, default=0.1, help="as the run's data.val_fraction")
    p.add_argument("--new-tokens", type=int, default=500)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--val-windows", type=int, default=None, help="validation windows to score (default: all)")
    args = p.parse_args()

    ckpt = torch.load(args.ckpt_path, map_location="cpu", weights_only=True)
    lm = LanguageModel.load_from_checkpoint(args.ckpt_path, map_location="cpu", weights_only=True).eval()
    block = lm.config.block_size
    dm = TextDataModule(
        args.data_path,
        block_size=block,
        tokenizer=Tokenizer.from_state(ckpt["tokenizer"]),
        val_fraction=args.val_fraction,
    )
    dm.setup("validate")
    val = np.asarray(dm.val_ids, dtype=np.int64)
    n = min(args.val_windows or len(val), (len(val) - 1) // block)
    windows = np.stack([val[i * block : i * block + block + 1] for i in range(n)])
    char_lengths = np.asarray(lm.tokenizer.token_char_lengths())

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "export"
        manifest = export(args.ckpt_path, out, int8=True)
        runtimes = {"onnxruntime fp32": ExportedModel(out), "onnxruntime int8": ExportedModel(out, int8=True)}
        prompt = torch.tensor([lm.tokenizer.encode("\n")])
        greedy = SamplingConfig(temperature=0, max_new_tokens=args.new_tokens)
        contenders = {
            "PyTorch fp32, KV cache": lambda: generate(lm.model, prompt, greedy),
            "PyTorch fp32, no cache": lambda: generate(lm.model, prompt, greedy, use_cache=False),
            **{
                name: (lambda rt=rt: list(rt.stream(prompt.numpy(), args.new_tokens, temperature=0)))
                for name, rt in runtimes.items()
            },
        }
        for fn in contenders.values():  # warm-up: first calls allocate and pick kernels
            fn()
        speed = interleaved_tokens_per_sec(contenders, args.new_tokens, args.repeats)
        bpc = {"PyTorch fp32, KV cache": bpc_torch(lm, windows, char_lengths)}
        bpc.update({name: bpc_onnx(rt, windows, char_lengths) for name, rt in runtimes.items()})
        sizes = {
            "PyTorch fp32, KV cache": lm.model.num_params() * 4,  # fp32 weights, the tied head counted once
            "onnxruntime fp32": manifest["files"]["model.onnx"],
            "onnxruntime int8": manifest["files"]["model.int8.onnx"],
        }
    runtime_bytes, runtime_dists = installed_bytes("onnxruntime")
    torch_bytes, torch_dists = installed_bytes("torch")
    base = speed["PyTorch fp32, KV cache"]
    result = {
        "machine": f"{torch.get_num_threads()} threads, {platform.processor() or platform.machine()}, "
        f"torch {torch.__version__}, onnxruntime {ort.__version__}",
        "checkpoint": str(args.ckpt_path),
        "params": lm.model.num_params(),
        "new_tokens": args.new_tokens,
        "val_tokens": int(windows[:, 1:].size),
        "tokens_per_sec": speed,
        "speedup_vs_pytorch_cached": {k: v / base for k, v in speed.items()},
        "val_bpc": bpc,
        "model_bytes": sizes,
        "installed_bytes": {"numpy + onnxruntime": runtime_bytes, "torch": torch_bytes},
        "installed_dists": {"numpy + onnxruntime": runtime_dists, "torch": torch_dists},
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "export_runtime.json").write_text(json.dumps(result, indent=2) + "\n")
    rows = [
        f"Checkpoint `{args.ckpt_path}` ({result['params']:,} params), {result['machine']}.",
        f"Generation: batch 1, {args.new_tokens} new tokens, greedy, median of {args.repeats} interleaved rounds; "
        f"val bpc on {result['val_tokens']:,} validation tokens.",
        "",
        "| runtime | model file | tokens/s | vs PyTorch (KV cache) | val bpc | bpc - PyTorch's |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name in contenders:
        size = f"{sizes[name] / 1e6:.2f} MB" if name in sizes else ""
        b = f"{bpc[name]:.4f} | {bpc[name] - bpc['PyTorch fp32, KV cache']:+.4f}" if name in bpc else " |"
        rows.append(f"| {name} | {size} | {speed[name]:,.0f} | {speed[name] / base:.2f}x | {b} |")
    rows += [
        "",
        f"Installed size: numpy + onnxruntime and their requirements {runtime_bytes / 1e6:.0f} MB "
        f"({', '.join(runtime_dists)}); torch and its requirements {torch_bytes / 1e6:.0f} MB.",
    ]
    (RESULTS / "export_runtime.md").write_text("\n".join(rows) + "\n")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
