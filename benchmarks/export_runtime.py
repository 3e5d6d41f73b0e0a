"""Every way to run one checkpoint, side by side in one run: PyTorch, the torch-free runtime, a browser.

    python benchmarks/export_runtime.py --ckpt_path logs/bench_got_char/checkpoints/last.ckpt \
        --data.path data/pydoc_topics.txt [--new-tokens 500 --repeats 5 --val-windows 40]

Generation at batch 1, greedy, from a one-character prompt: PyTorch eager with its KV cache, the
compiled decode step (``craft/model/decode.py``), the torch-free runtime (``craft/runtime.py``) in
fp32 and int8 at 1 and 2 threads, all timed in turn in every round of one process; then the page of
``craft.export --web`` in headless Chromium (onnxruntime-web, WASM), when Chromium, node and
``craft/web``'s packages are installed. Also: each file's size, val bits per character on the same
validation windows, peak RSS of a runtime process that cannot import torch, the runtime's
whole-process rate as a user sees it (2,000 minus 10 new tokens, its default settings), and
onnxruntime's profile of one token. Writes ``benchmarks/results/export_runtime.{md,json}`` and
``benchmarks/results/export_profile.md``.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import functools
import http.server
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from importlib import metadata
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from packaging.requirements import Requirement

from craft.data import TextDataModule, Tokenizer
from craft.export import export
from craft.generate import SamplingConfig, generate
from craft.generate.compiled import compile_step
from craft.module import LanguageModel
from craft.runtime import ExportedModel
from craft.scoring import bpc_onnx, bpc_torch, val_windows  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
DRIVER = ROOT / "tests" / "browser" / "drive.mjs"
BLOCK_TORCH = "import sys; sys.modules['torch'] = None; import runpy; sys.argv = sys.argv[1:]; "
EAGER, COMPILED = "PyTorch eager, KV cache", "PyTorch, compiled decode step"


def runtime_row(int8: bool, threads: int) -> str:
    default = " (default)" if threads == 1 else ""
    return f"torch-free runtime {'int8' if int8 else 'fp32'}, {threads} thread{'s' if threads > 1 else ''}{default}"


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


def interleaved_tokens_per_sec(contenders: dict, new_tokens: int, repeats: int) -> dict[str, list[float]]:
    """Tokens/s of each contender in every round, timing them in turn within each round: drift of a
    busy machine then hits all of them alike instead of whichever happened to run during it."""
    rates: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(repeats):
        for name, fn in contenders.items():
            start = time.perf_counter()
            fn()
            rates[name].append(new_tokens / (time.perf_counter() - start))
    return rates


# The child writes its own peak RSS (VmHWM) on exit: the rusage of a forked child also counts the
# parent's pages it held between fork and exec (this process holds torch: about 640 MB).
PEAK_RSS_AT_EXIT = (
    "import atexit, os; atexit.register(lambda: open(os.environ['CRAFT_PEAK_RSS'], 'w').write("
    "next(line for line in open('/proc/self/status') if line.startswith('VmHWM'))));"
)


def runtime_process(folder: Path, new_tokens: int, *flags: str) -> tuple[float, int]:
    """``python -m craft run`` in a child that cannot import torch, greedy from a newline:
    (seconds, the child's peak RSS in bytes)."""
    cmd = [
        sys.executable,
        "-c",
        PEAK_RSS_AT_EXIT + BLOCK_TORCH + "runpy.run_module('craft', run_name='__main__')",
    ]
    cmd += ["run", str(folder), "--prompt", "\n", "--max_new_tokens", str(new_tokens), "--temperature", "0"]
    with tempfile.NamedTemporaryFile("r") as peak:
        start = time.perf_counter()
        done = subprocess.run(
            [*cmd, *flags], capture_output=True, text=True, cwd=ROOT, env={**os.environ, "CRAFT_PEAK_RSS": peak.name}
        )
        seconds = time.perf_counter() - start
        if done.returncode:
            raise RuntimeError(f"craft.runtime failed: {done.stderr.strip().splitlines()[-1:]}")
        kib = int(peak.read().split()[1])  # "VmHWM:   71216 kB"
    return seconds, kib * 1024


@contextlib.contextmanager
def static_server(folder: Path):
    handler = functools.partial(QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


def browser_missing() -> str | None:
    """Why the browser rows cannot run here, or None."""
    chromium = os.environ.get("CHROMIUM", "/usr/bin/chromium")
    if not Path(chromium).exists():
        return f"no Chromium at {chromium} (apt-get install chromium)"
    if shutil.which("node") is None:
        return "no node (apt-get install nodejs npm)"
    if not (ROOT / "craft" / "web" / "node_modules" / "playwright-core").is_dir():
        return "craft/web's packages are not installed (npm ci --prefix craft/web)"
    return None


def browser_run(url: str, screenshot: Path | None = None, timeout: float = 300) -> dict:
    cmd = ["node", str(DRIVER), url, *([str(screenshot)] if screenshot else [])]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    if done.returncode != 0:
        raise RuntimeError(f"the browser driver failed: {done.stderr.strip()[-500:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def profile_one_token(folder: Path, tokens: int = 300) -> dict:
    """onnxruntime's profiler over ``tokens`` int8 decode steps at the runtime's default settings:
    time per op type per token, and the session's own time per token."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.enable_profiling = True
    with tempfile.TemporaryDirectory() as tmp:
        options.profile_file_prefix = str(Path(tmp) / "ort")
        rt = ExportedModel(folder, int8=True)
        rt.session = ort.InferenceSession(str(folder / "model.int8.onnx"), options, providers=["CPUExecutionProvider"])
        list(rt.stream(np.zeros((1, 1), dtype=np.int64), SamplingConfig(temperature=0, max_new_tokens=tokens)))
        events = json.loads(Path(rt.session.end_profiling()).read_text())
    per_op: dict[str, float] = collections.defaultdict(float)
    nodes: collections.Counter = collections.Counter()
    runs = [e["dur"] for e in events if e.get("cat") == "Session" and e["name"] == "model_run"]
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            per_op[e["args"]["op_name"]] += e["dur"]
            nodes[e["args"]["op_name"]] += 1
    steps = len(runs)
    return {
        "tokens": steps,
        "model_run_us": statistics.median(runs),
        "per_op_us": {op: t / steps for op, t in sorted(per_op.items(), key=lambda kv: -kv[1])},
        "nodes": {op: nodes[op] // steps for op in per_op},
    }


def position_cost(folder: Path, rounds: int = 15) -> dict:
    """What a token costs the int8 runtime at its defaults, without the profiler (best of ``rounds``):
    one in-place step at a few cache lengths, and the prefill of the newest half-window that each
    slide of the window runs. From them the ceiling of the sliding window's steady state, where
    every cycle is one such prefill and a step at each of the filled lengths block/2 .. block-1
    (``ExportedModel.stream``): the rate the runtime would reach if Python cost nothing."""
    rt = ExportedModel(folder, int8=True)
    run = rt.decoder(1)
    token = np.zeros((1, 1), dtype=np.int64)
    block = rt.block_size
    keep = max(1, block // 2)
    window = np.zeros((1, keep), dtype=np.int64)
    positions = sorted({0, *range(keep, block, max(1, (block - keep) // 4)), block - 1})
    step: dict[int, float] = {}
    prefill = 1e9
    for _ in range(rounds):
        for pos in positions:
            start = time.perf_counter()
            for _ in range(100):
                run(token, pos)
            step[pos] = min(step.get(pos, 1e9), (time.perf_counter() - start) / 100 * 1e6)
        start = time.perf_counter()
        for _ in range(5):
            run(window, 0)
        prefill = min(prefill, (time.perf_counter() - start) / 5 * 1e6)
    # The steps of a cycle: linear between the measured lengths.
    xs = [q for q in positions if q >= keep]
    cycle_steps = float(np.interp(np.arange(keep, block), xs, [step[q] for q in xs]).sum())
    return {
        "step_us": step,
        "prefill_tokens": keep,
        "prefill_us": prefill,
        "cycle_tokens": block - keep + 1,
        "ceiling_tokens_per_sec": (block - keep + 1) / ((prefill + cycle_steps) / 1e6),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ckpt_path", type=Path, required=True)
    p.add_argument("--data.path", dest="data_path", required=True, help="the corpus the model was trained on")
    p.add_argument("--val-fraction", type=float, default=0.1, help="as the run's data.val_fraction")
    p.add_argument("--new-tokens", type=int, default=500)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--val-windows", type=int, default=None, help="validation windows to score (default: all)")
    p.add_argument("--no-compile", action="store_true", help="leave out the compiled decode step (needs a compiler)")
    p.add_argument("--screenshot", type=Path, default=None, help="also save the page generating text here (PNG)")
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
    windows = val_windows(val, block, args.val_windows)
    char_lengths = np.asarray(lm.tokenizer.token_char_lengths())
    notes: list[str] = []

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "export"
        web_missing = browser_missing()
        manifest = export(args.ckpt_path, out, int8=True, web=web_missing is None)
        rss = runtime_process(out, args.new_tokens, "--int8")[1]
        whole = {k: min(runtime_process(out, k, "--int8")[0] for _ in range(3)) for k in (10, 2000)}
        cli_rate = 1990 / (whole[2000] - whole[10])
        prompt = torch.tensor([lm.tokenizer.encode("\n")])
        greedy = SamplingConfig(temperature=0, max_new_tokens=args.new_tokens)
        runtimes = {runtime_row(q, t): ExportedModel(out, int8=q, threads=t) for q in (False, True) for t in (1, 2)}
        contenders = {EAGER: lambda: generate(lm.model, prompt, greedy)}
        if not args.no_compile:
            try:
                with tempfile.TemporaryDirectory() as folder:
                    step = compile_step(lm.model, 1, Path(folder))
                contenders[COMPILED] = lambda: generate(lm.model, prompt, greedy, step=step)
            except RuntimeError as e:
                notes.append(f"compiled decode step left out: {e}")
        for name, rt in runtimes.items():
            contenders[name] = lambda rt=rt: list(rt.stream(prompt.numpy(), greedy))
        expected = lm.tokenizer.decode(generate(lm.model, prompt, greedy)[0, 1:].tolist())
        same_text = {
            name: rt.generate("\n", max_new_tokens=args.new_tokens, temperature=0) == expected
            for name, rt in runtimes.items()
        }
        for fn in contenders.values():  # warm-up: first calls allocate and pick kernels
            fn()
        rounds = interleaved_tokens_per_sec(contenders, args.new_tokens, args.repeats)
        speed = {k: statistics.median(v) for k, v in rounds.items()}
        browser: dict[str, dict] = {}
        if web_missing is None:
            with static_server(out) as url:
                for q in ("fp32", "int8"):
                    query = f"?prompt=%0A&max_new_tokens={args.new_tokens}&temperature=0&model={q}&autorun=1"
                    runs = [browser_run(url + query) for _ in range(3)]
                    name = f"headless Chromium {q}, WASM, 1 thread"
                    browser[name] = {
                        "rates": [r["tokens_per_sec"] for r in runs],
                        "same_text": runs[0]["text"] == expected,
                    }
                    speed[name] = statistics.median(browser[name]["rates"])
                if args.screenshot:  # the manifest's own sampling settings, as a visitor first sees the page
                    shot = browser_run(url + "?prompt=The%20&max_new_tokens=400&autorun=1", args.screenshot)
                    notes.append(f"screenshot {args.screenshot}: {shot['status']}")
        else:
            notes.append(f"browser rows left out: {web_missing}")
        bpc = {"PyTorch": bpc_torch(lm, windows, char_lengths)}
        bpc["fp32"] = bpc_onnx(runtimes[runtime_row(False, 1)], windows, char_lengths)
        bpc["int8"] = bpc_onnx(runtimes[runtime_row(True, 1)], windows, char_lengths)
        profile = profile_one_token(out)
        positions = position_cost(out)
        nodes_in = {f: len(onnx.load(str(out / f)).graph.node) for f in ("model.onnx", "model.int8.onnx")}

    sizes = {
        EAGER: lm.model.num_params() * 4,
        "fp32": manifest["files"]["model.onnx"],
        "int8": manifest["files"]["model.int8.onnx"],
    }
    runtime_bytes, runtime_dists = installed_bytes("onnxruntime")
    torch_bytes, torch_dists = installed_bytes("torch")
    base = speed.get(COMPILED, speed[EAGER])
    result = {
        "machine": f"{os.cpu_count()} cores, {platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"onnxruntime {ort.__version__}",
        "checkpoint": str(args.ckpt_path),
        "params": lm.model.num_params(),
        "new_tokens": args.new_tokens,
        "repeats": args.repeats,
        "val_tokens": int(windows[:, 1:].size),
        "tokens_per_sec": speed,
        "rounds": rounds,
        "vs_compiled": {k: v / base for k, v in speed.items()},
        "greedy_text_equals_pytorch": {**same_text, **{k: v["same_text"] for k, v in browser.items()}},
        "browser": browser,
        "val_bpc": bpc,
        "model_bytes": sizes,
        "graph_nodes": nodes_in,
        "runtime_peak_rss": rss,
        "runtime_cli_tokens_per_sec": cli_rate,
        "token_cost": positions,
        "profile": profile,
        "installed_bytes": {"numpy + onnxruntime": runtime_bytes, "torch": torch_bytes},
        "installed_dists": {"numpy + onnxruntime": runtime_dists, "torch": torch_dists},
        "notes": notes,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "export_runtime.json").write_text(json.dumps(result, indent=2) + "\n")
    ref = bpc["PyTorch"]
    rows = [
        f"Checkpoint `{args.ckpt_path}` ({result['params']:,} params), {result['machine']}.",
        f"Generation: batch 1, {args.new_tokens} new tokens, greedy from a newline; median of {args.repeats} rounds, "
        "every contender timed in turn within each round (the browser rows: 3 page loads after them). Val bpc on "
        f"{result['val_tokens']:,} validation tokens.",
        "",
        "| runtime | model file | tokens/s | vs compiled step | val bpc (− PyTorch's) | greedy text = PyTorch's |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for name, rate in speed.items():
        kind = "int8" if "int8" in name else "fp32"
        size = sizes[EAGER] if name.startswith("PyTorch") else sizes[kind]
        b = bpc["PyTorch"] if name == EAGER else bpc[kind] if name.startswith("torch-free") else None
        b_text = f"{b:.4f} ({b - ref:+.4f})" if b is not None else ""
        same = result["greedy_text_equals_pytorch"].get(name)
        rows.append(
            f"| {name} | {size / 1e6:.2f} MB | {rate:,.0f} | {rate / base:.2f}x | {b_text} | "
            f"{'' if same is None else 'yes' if same else 'no'} |"
        )
    rows += [
        "",
        f"- The runtime as a user runs it (`python -m craft run DIR --int8`, default settings, whole process, "
        f"2,000 minus 10 new tokens): **{cli_rate:,.0f} tokens/s**; peak RSS of such a process (torch not importable): "
        f"**{rss / 1e6:.0f} MB**.",
        f"- The int8 kernels' own ceiling in the sliding window's steady state (a prefill of the newest "
        f"{positions['prefill_tokens']} tokens, then a step at each filled length up to the block; no Python): "
        f"{positions['ceiling_tokens_per_sec']:,.0f} tokens/s (`benchmarks/results/export_profile.md`).",
        f"- Graph nodes: fp32 {nodes_in['model.onnx']}, int8 {nodes_in['model.int8.onnx']}.",
        f"- Installed size: numpy + onnxruntime and their requirements {runtime_bytes / 1e6:.0f} MB "
        f"({', '.join(runtime_dists)}); torch and its requirements {torch_bytes / 1e6:.0f} MB.",
        *(f"- {note}" for note in notes),
    ]
    (RESULTS / "export_runtime.md").write_text("\n".join(rows) + "\n")
    prof = [
        f"Where a token's time goes: `{args.ckpt_path}`, int8, 1 thread, {profile['tokens']} greedy tokens, "
        f"onnxruntime {ort.__version__}'s profiler (it adds microseconds to every node: small nodes read high).",
        "",
        f"Session time per token (median, profiled): {profile['model_run_us']:.0f} µs. Without the profiler, one "
        "in-place step costs (best of 15 x 100 calls): "
        + ", ".join(f"{us:.0f} µs with {pos + 1} filled slots" for pos, us in positions["step_us"].items())
        + ": the attention over the filled slots is the part that grows. Each slide of the window prefills "
        f"the newest {positions['prefill_tokens']} tokens again: {positions['prefill_us'] / 1e3:.2f} ms. In the "
        f"window's steady state (a prefill, then {positions['cycle_tokens'] - 1} steps at {positions['prefill_tokens']}"
        f"+ filled slots) these kernels alone allow **{positions['ceiling_tokens_per_sec']:,.0f} tokens/s**: the "
        "whole-process rate cannot pass it whatever the Python around them costs.",
        "",
        "| op | nodes | µs per token | share |",
        "|---|---:|---:|---:|",
    ]
    total = sum(profile["per_op_us"].values())
    for op, us in profile["per_op_us"].items():
        prof.append(f"| {op} | {profile['nodes'][op]} | {us:.1f} | {us / total:.0%} |")
    (RESULTS / "export_profile.md").write_text("\n".join(prof) + "\n")
    print("\n".join(rows))
    print()
    print("\n".join(prof))


if __name__ == "__main__":
    main()
