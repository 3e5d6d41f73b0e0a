"""Every benchmark in one run, side by side: python benchmarks/run_all.py [--ckpt_path CKPT]

Runs each measurement in its own process (so each peak RSS is its own), one after another, on the
got_char shape with Python's docs as the corpus (written by craft; nothing is downloaded):

- the fp32 matmul ceiling of this machine (``torch.mm``, best of n = 1024 and 2048);
- got_char training through ``craft fit`` at dropout 0 and 0.1: tokens/s, MFU against that
  ceiling, peak RSS, RSS growth over the timed steps;
- the plain PyTorch loop (``benchmarks/plain_loop.py``): Lightning's overhead;
- options: torch.compile, bf16 autocast, 1 thread, 2 data-loader workers;
- every training and generation process runs under the allocator ``python -m craft`` picks
  (``craft/allocator.py``: tcmalloc where installed, via ``LD_PRELOAD``); where that is not glibc,
  training at dropout 0 and 0.1 also runs under glibc's malloc (``CRAFT_ALLOCATOR=system``);
- generation with and without the KV cache, batch 1, 8 and 32, and with the compiled decode step;
- attention with and without ``dropout_p`` (``benchmarks/attention_dropout.py``);
- with ``--ckpt_path``: ``benchmarks/export_runtime.py`` (PyTorch vs onnxruntime fp32 / int8).

Writes ``benchmarks/results/summary.md`` and ``summary.json``. Quote ratios, not absolute times:
a 2-core machine varies by several percent from one run to the next.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.memory import measured_child  # noqa: E402
from craft.allocator import ENV, chosen_library  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
CEILING = """
import json, torch
from craft.callbacks.throughput import measure_peak_flops
flops = measure_peak_flops(torch.device("cpu"), seconds=3.0, sizes=(1024, 2048))
print(json.dumps({"flops": flops, "threads": torch.get_num_threads()}))
"""


def child(cmd: list[str], env: dict[str, str] | None = None) -> dict:
    """One benchmark process (its last stdout line is JSON), with its own peak RSS and wall time."""
    return measured_child(cmd, {**os.environ, **(env or {})}, ROOT)


def export_runtime(cmd: list[str]) -> dict:
    """benchmarks/export_runtime.py prints a table and writes its figures to results/export_runtime.json."""
    subprocess.run(cmd, check=True, cwd=ROOT, capture_output=True)
    return json.loads((RESULTS / "export_runtime.json").read_text())


OPTIONS = {
    "train_compile": "torch.compile (inner model)",
    "train_bf16": "bf16-mixed autocast",
    "train_1_thread": "1 thread (OMP_NUM_THREADS=1)",
    "train_2_workers": "2 data-loader workers",
}
HEADLINE = ("train_dropout0", "plain_dropout0", "train_dropout0.1")
# Run in --repeats rounds too, each in its own process: batch-1 generation swings by up to 2x
# between minutes on a shared 2-core VM.
REPEATED = (*HEADLINE, "generation")


def all_rounds(r: dict, name: str) -> list[dict]:
    """The results of every round of ``name`` (the first round has the bare name)."""
    return [v for k, v in r.items() if k == name or k.startswith(name + "_r")]


def rounds(r: dict, name: str) -> list[float]:
    """tokens/s of every round of ``name``."""
    return [v["tokens_per_s"] for v in all_rounds(r, name)]


def median_figures(results: list[dict]) -> dict:
    """Each numeric figure's median over rounds, plus ``<figure>_range`` (min, max)."""
    out = dict(results[0])
    for key, value in results[0].items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            values = [res[key] for res in results]
            out[key] = statistics.median(values)
            out[key + "_range"] = (min(values), max(values))
    return out


def gb(n: int) -> str:
    return f"{n / 1e9:.2f}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    # The classic block: the figures in benchmarks/README.md and the README are of it (got_char's
    # default until 2026-12-04; the speedrun recipe's own speed: benchmarks/optimizer_cost.py).
    p.add_argument("--config", nargs="+", default=["configs/got_char.yaml", "configs/presets/classic.yaml"])
    p.add_argument("--data.path", dest="data_path", default="data/pydoc_topics.txt")
    p.add_argument("--steps", type=int, default=40, help="training steps per measurement (first --warmup not timed)")
    p.add_argument("--warmup", type=int, default=8)
    p.add_argument("--ckpt_path", default=None, help="a trained checkpoint for the export/runtime comparison")
    p.add_argument("--resume", action="store_true", help="reuse measurements saved by an interrupted run")
    p.add_argument("--repeats", type=int, default=3, help="rounds of craft fit, plain loop, dropout 0.1 and generation")
    p.add_argument(
        "--allocator",
        default="auto",
        help="as CRAFT_ALLOCATOR: 'auto' (python -m craft's choice: tcmalloc where installed), 'system', or a library",
    )
    args = p.parse_args()
    py = sys.executable
    data = ["--data.path", args.data_path, "--data.builtin_corpus", "pydoc"]
    train = [py, "benchmarks/train_throughput.py", "--config", *args.config, "--steps", str(args.steps)]
    train += ["--warmup", str(args.warmup), *data, "--samples.every_n_steps", "0", "--samples.at_end", "false"]
    short = [*train[: train.index("--steps")], "--steps", "8", "--warmup", "3", *train[train.index("--warmup") + 2 :]]
    plain = [py, "benchmarks/plain_loop.py", "--config", *args.config, "--data.path", args.data_path]
    plain += ["--steps", str(args.steps), "--warmup", str(args.warmup)]

    r: dict = {}
    # The benchmark scripts run craft in-process, so they get craft's allocator the way
    # `python -m craft` gives it to itself: preloaded.
    allocator = chosen_library({**os.environ, ENV: args.allocator})
    craft_env = {"LD_PRELOAD": allocator} if allocator else {}
    one_thread = {**craft_env, "OMP_NUM_THREADS": "1"}
    bf16 = ["--model.dropout", "0.0", "--trainer.precision", "bf16-mixed"]
    steps = [
        ("ceiling", lambda: child([py, "-c", CEILING])),
        ("train_dropout0", lambda: child([*train, "--model.dropout", "0.0"], craft_env)),
        ("plain_dropout0", lambda: child([*plain, "--model.dropout", "0.0"], craft_env)),
        ("train_dropout0.1", lambda: child([*train, "--model.dropout", "0.1"], craft_env)),
        ("train_compile", lambda: child([*train, "--model.dropout", "0.0", "--model.compile", "true"], craft_env)),
        # bf16 without AMX is many times slower on CPU: a short run is enough to say so.
        ("train_bf16", lambda: child([*short, *bf16], craft_env)),
        ("train_1_thread", lambda: child([*train, "--model.dropout", "0.0"], one_thread)),
        ("train_2_workers", lambda: child([*train, "--model.dropout", "0.0", "--data.num_workers", "2"], craft_env)),
        ("generation", lambda: child([py, "benchmarks/generation.py", "--config", *args.config], craft_env)),
        ("attention_dropout", lambda: child([py, "benchmarks/attention_dropout.py"])),
    ]
    # This machine drifts by several percent between minutes: the headline trio runs in --repeats
    # rounds, each running the three in turn, and the table shows each one's median (and the range).
    repeated = {name: fn for name, fn in steps if name in REPEATED}
    steps += [(f"{name}_r{i}", repeated[name]) for i in range(2, args.repeats + 1) for name in REPEATED]
    if allocator:  # the same training under glibc's malloc, as CRAFT_ALLOCATOR=system runs it
        for d in ("0", "0.1"):
            cmd = [*train, "--model.dropout", d]
            steps.append((f"train_dropout{d}_glibc", lambda cmd=cmd: child(cmd)))
    if args.ckpt_path:
        export_cmd = [py, "benchmarks/export_runtime.py", "--ckpt_path", args.ckpt_path, "--data.path", args.data_path]
        steps.append(("export_runtime", lambda: export_runtime(export_cmd)))
    RESULTS.mkdir(exist_ok=True)
    partial = RESULTS / "summary.partial.json"
    done = json.loads(partial.read_text()) if args.resume and partial.exists() else {}
    for name, fn in steps:
        if name in done:
            r[name] = done[name]
            continue
        print(f"run_all: {name} ...", flush=True)
        r[name] = fn()
        print(f"run_all: {name}: {json.dumps(r[name])}", flush=True)
        partial.write_text(json.dumps(r, indent=2))  # a crash later keeps what was measured

    flops_per_token = r["train_dropout0"]["flops_per_token"]
    ceiling = r["ceiling"]["flops"]

    tps = {name: statistics.median(rounds(r, name)) for name in HEADLINE}

    def spread(name: str) -> str:
        v = rounds(r, name)
        return f"{tps[name]:,.0f} tok/s" + (f" ({min(v):,.0f}-{max(v):,.0f})" if len(v) > 1 else "")

    base = tps["train_dropout0"]
    mfu = base * flops_per_token / ceiling
    gen = median_figures(all_rounds(r, "generation"))

    def gen_spread(key: str) -> str:
        lo, hi = gen[key + "_range"]
        return f"{gen[key]:,.0f} tok/s" + (f" ({lo:,.0f}-{hi:,.0f})" if lo != hi else "")

    alloc = f", {allocator}" if allocator else ", glibc malloc"

    def peak(name: str) -> str:  # the highest of the rounds
        return gb(max(v["peak_rss_process"] for v in all_rounds(r, name)))

    rows = [
        ("fp32 matmul ceiling (torch.mm)", f"{ceiling / 1e9:.0f} GFLOP/s", "", ""),
        (
            f"got_char training, dropout 0 (craft fit{alloc})",
            spread("train_dropout0"),
            f"MFU {mfu:.1%}",
            "≥ 55%",
        ),
        (
            "plain PyTorch loop, dropout 0",
            spread("plain_dropout0"),
            f"craft / plain {base / tps['plain_dropout0']:.3f}",
            "≥ 0.95",
        ),
        (
            "got_char training, dropout 0.1",
            spread("train_dropout0.1"),
            f"vs dropout 0 {tps['train_dropout0.1'] / base:.3f}",
            "≥ 0.85",
        ),
        (
            "peak RSS, training dropout 0 / 0.1 (highest round)",
            f"{peak('train_dropout0')} / {peak('train_dropout0.1')} GB",
            "",
            "< 1.5 GB",
        ),
        (
            "RSS growth over the timed steps (dropout 0)",
            f"{r['train_dropout0']['rss_growth'] / 1e6:+.1f} MB",
            f"over {args.steps - args.warmup} steps",
            "no growth",
        ),
        *(
            (label, f"{r[name]['tokens_per_s']:,.0f} tok/s", f"{r[name]['tokens_per_s'] / base:.3f}x", "")
            for name, label in OPTIONS.items()
        ),
        (
            "generation, batch 1, KV cache (eager)",
            gen_spread("cached_batch1"),
            f"{gen['cache_speedup_batch1']:.1f}x uncached",
            "",
        ),
        ("generation, batch 1, no cache", gen_spread("uncached_batch1"), "", ""),
        (
            "generation, batch 1, compiled decode step (`--model.compiled_decode true`)",
            gen_spread("compiled_batch1"),
            f"{gen['compiled_vs_uncached_batch1']:.1f}x uncached; {gen['compiled_speedup_batch1']:.2f}x eager cache",
            "≥ 2,000 tok/s; ≥ 10x",
        ),
        ("compiling that step (once per checkpoint; cached)", f"{gen['compile_s_batch1']:.0f} s", "", ""),
        (
            "generation, batch 8 / 32, KV cache",
            f"{gen['cached_batch8']:,.0f} / {gen['cached_batch32']:,.0f} tok/s",
            "",
            "",
        ),
        ("peak RSS, generation (highest round)", f"{gen['peak_rss_process_range'][1] / 1e9:.2f} GB", "", ""),
        (
            "generation, batch 1: ATen kernels per token",
            f"{gen['kernels_per_token']:.0f}",
            f"{gen['us_per_kernel_batch1']:.1f} µs per kernel",
            "",
        ),
    ]
    a = r["attention_dropout"]["ms_forward_backward"]
    rows.append(
        (
            "one layer's attention fwd+bwd, dropout_p 0 / 0.1",
            f"{a['dropout_0']:,.0f} / {a['dropout_0.1']:,.0f} ms",
            f"{r['attention_dropout']['slowdown']:.1f}x slower",
            "(why attention weights are never dropped)",
        )
    )
    if "train_dropout0_glibc" in r:
        t0, t1 = r["train_dropout0_glibc"], r["train_dropout0.1_glibc"]
        rows += [
            (
                f"training under glibc malloc ({ENV}=system), dropout 0 / 0.1",
                f"{t0['tokens_per_s']:,.0f} / {t1['tokens_per_s']:,.0f} tok/s",
                f"MFU {t0['tokens_per_s'] * flops_per_token / ceiling:.1%}; "
                f"dropout 0.1 vs 0 {t1['tokens_per_s'] / t0['tokens_per_s']:.3f}",
                "",
            ),
            (
                "peak RSS under glibc malloc, dropout 0 / 0.1",
                f"{gb(t0['peak_rss_process'])} / {gb(t1['peak_rss_process'])} GB",
                "",
                "",
            ),
        ]
    if "export_runtime" in r:
        e = r["export_runtime"]
        t = e["tokens_per_sec"]
        fp32, int8 = e["model_bytes"]["fp32"], e["model_bytes"]["int8"]
        rows += [
            (f"generation, {k}", f"{v:,.0f} tok/s", f"{e['vs_compiled'][k]:.2f}x compiled step", "")
            for k, v in t.items()
            if not k.startswith("PyTorch, compiled")
        ]
        rows.append(("model file fp32 / int8", f"{fp32 / 1e6:.2f} / {int8 / 1e6:.2f} MB", "", "int8 ≤ 1.5 MB"))
    import lightning

    machine = {
        "cpu": next(
            (line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
            platform.processor(),
        ),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "lightning": lightning.__version__,
        "date": time.strftime("%Y-%m-%d"),
        "allocator": allocator or "glibc malloc",
    }
    partial.unlink()
    (RESULTS / "summary.json").write_text(json.dumps({"machine": machine, "results": r}, indent=2) + "\n")
    lines = [
        f"Machine: {machine['cpu']}, {machine['cores']} cores; Python {machine['python']}, torch {machine['torch']}, "
        f"lightning {machine['lightning']}; {machine['date']}.",
        f"Made by `python benchmarks/run_all.py{' --ckpt_path ' + args.ckpt_path if args.ckpt_path else ''}`: "
        f"{args.steps} training steps per measurement, the first {args.warmup} not timed; craft fit, "
        f"plain loop, dropout 0.1 and generation are medians of {args.repeats} rounds, each measurement "
        "in its own process, the rounds in turn (range in brackets).",
        "",
        "| measurement | figure | ratio | target |",
        "|---|---:|---:|---|",
        *[f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows],
    ]
    (RESULTS / "summary.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
