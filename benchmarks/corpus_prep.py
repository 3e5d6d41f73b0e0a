"""Preparing corpora of 100 MB and 1 GB: throughput, peak memory, and the start of a cached run.

    python benchmarks/corpus_prep.py [--sizes 100,1000] [--baseline /path/to/older/craft]

Builds its corpora itself, nothing downloaded: the Python standard library's source and pydoc's
text, shuffled by line and repeated to each size (``data/bench_corpus_<MB>mb.txt``, kept for
reuse; built in a child process, because Linux counts a parent's peak memory at the moment of the
fork in the child's ``ru_maxrss``). Each measurement runs in its own process, so its peak RSS
(from ``wait4``) is its own:

- char and BPE (vocab 4096; on 1 GB trained on a 100 MB sample) preparation: MB/s and peak RSS;
- with ``--baseline``, the same on the smallest size with an older craft checkout (``PYTHONPATH``),
  for the before/after table;
- a ``fit`` on the prepared largest corpus: seconds from the end of the imports to the first training
  step (the cache is found from file sizes and times, nothing is re-read);
- training tokens/s (got_char shape) on the largest corpus against pydoc given the same vocabulary
  (one extra line of the large corpus's characters), alternated ``--train-rounds`` times, each run's
  figure from its median step; the data path alone, milliseconds per batch from each loader; and
  the same model in one process with steps alternating between the two corpora (``--alternate-rounds``),
  which the machine's drift between processes cannot skew.

Prints a markdown table and writes ``benchmarks/results/corpus_prep.{md,json}``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path
from statistics import median

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.memory import measured_child  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
VAL_CHARS = 1_000_000  # held out per corpus: a 10% split of 1 GB would make validation the run

PREPARE = """
import json, sys, time
t0 = time.perf_counter()
from craft.data import TextDataModule
from craft.data.tokenizers import BPETokenizer
t1 = time.perf_counter()
kind, path, cache, sample, new = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5] == "1"
VAL_CHARS = int(sys.argv[6])
extra = {"val_chars": VAL_CHARS} if new else {}
tok = None
if kind == "bpe":
    tok = BPETokenizer(4096, sample_chars=sample or None) if new else BPETokenizer(4096)
dm = TextDataModule(path, tokenizer=tok, cache_dir=cache, **extra)
dm.prepare_data()
t2 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "prepare_s": t2 - t1, "vocab": dm.tokenizer.vocab_size}))
"""

LOADER = """
import json, sys, time
from craft.data import TextDataModule
pydoc, large, cache, val_chars = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
out = {}
for name, path, val in (("pydoc", pydoc, {}), ("large", large, {"val_chars": val_chars})):
    dm = TextDataModule(path, block_size=256, batch_size=64, cache_dir=cache, **val)
    dm.setup("fit")
    times = []
    for _ in range(5):  # pydoc's epoch is about 25 batches: draw 20 from a fresh iterator each time
        it = iter(dm.train_dataloader())
        next(it)
        t = time.perf_counter()
        for _ in range(20):
            next(it)
        times.append((time.perf_counter() - t) / 20 * 1e3)
    out[name + "_ms"] = min(times)
print(json.dumps(out))
"""

ALTERNATE = """
import json, statistics, sys, time
import torch
from craft.data import TextDataModule
from craft.data.tokenizers import CharTokenizer
from craft.model import GPT, GPTConfig
pydoc, large, cache, val_chars, rounds = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
vocab = None
loaders = {}
for name, path, val in (("large", large, {"val_chars": val_chars}), ("pydoc", pydoc, {})):
    dm = TextDataModule(path, tokenizer=CharTokenizer(vocab) if vocab else None, block_size=256, batch_size=64,
        cache_dir=cache, **val)
    dm.setup("fit")
    vocab = vocab or dm.tokenizer.vocab
    loaders[name] = (dm, iter(dm.train_dataloader()))
torch.manual_seed(0)
model = GPT(GPTConfig(vocab_size=len(vocab), block_size=256, d_model=128, n_layers=6, n_head=8, d_hid=512))
opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
times = {name: [] for name in loaders}
for r in range(rounds + 2):  # two warm-up rounds
    for name, (dm, it) in loaders.items():
        t = time.perf_counter()
        try:
            x, y = next(it)
        except StopIteration:  # pydoc's epoch is short
            it = iter(dm.train_dataloader())
            loaders[name] = (dm, it)
            x, y = next(it)
        _, loss = model(x, y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if r >= 2:
            times[name].append(time.perf_counter() - t)
out = {f"{k}_tok_s": 64 * 256 / statistics.median(v) for k, v in times.items()}
out["steps"] = times
print(json.dumps(out))
"""

STARTUP = """
import json, sys, time, tempfile
t0 = time.perf_counter()
import lightning as L
from craft.cli import CraftCLI
t1 = time.perf_counter()
first = []
class FirstStep(L.Callback):
    def on_train_batch_start(self, *a):
        first.append(time.perf_counter())
path, cache, val_chars = sys.argv[1], sys.argv[2], sys.argv[3]
args = ["--config", "configs/quickstart.yaml", "--data.path", path, "--data.cache_dir", cache,
    "--data.val_chars", val_chars, "--trainer.max_steps", "1", "--trainer.enable_progress_bar", "false",
    "--samples.every_n_steps", "0", "--samples.at_end", "false"]
with tempfile.TemporaryDirectory() as logs:
    cli = CraftCLI(args=[*args, "--log_dir", logs], run=False)
    cli.trainer.callbacks.append(FirstStep())
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
print(json.dumps({"import_s": t1 - t0, "to_first_step_s": first[0] - t1}))
"""


def child(cmd: list[str], env: dict[str, str] | None = None, cwd: Path = ROOT) -> dict:
    """One measurement; ``cwd`` decides which craft ``python -c`` imports (its folder comes first)."""
    return measured_child(cmd, env, cwd)


def source_lines() -> list[str]:
    """Lines of the standard library's .py files (no site-packages) and of pydoc's topics."""
    from pydoc_data.topics import topics

    stdlib = Path(sysconfig.get_paths()["stdlib"])
    lines: list[str] = []
    for f in sorted(stdlib.rglob("*.py")):
        if "site-packages" in f.parts:
            continue
        try:
            lines += f.read_text(encoding="utf-8").splitlines(keepends=True)
        except (UnicodeDecodeError, OSError):
            continue
    for key in sorted(topics):
        lines += (topics[key].strip() + "\n\n").splitlines(keepends=True)
    return lines


def build_corpus(mb: int, lines: list[str]) -> Path:
    path = ROOT / "data" / f"bench_corpus_{mb}mb.txt"
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = random.Random(mb)
    target, written = mb * 1_000_000, 0
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        while written < target:
            rng.shuffle(lines)
            for line in lines:
                f.write(line)
                written += len(line.encode("utf-8"))
                if written >= target:
                    break
    os.replace(tmp, path)
    return path


def env_with(tree: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(tree)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="100,1000", help="corpus sizes in MB, comma-separated")
    p.add_argument("--baseline", default=None, help="an older craft checkout to measure on the smallest size")
    p.add_argument("--sample-mb", type=int, default=100, help="BPE training sample on corpora larger than this")
    p.add_argument("--train-steps", type=int, default=30)
    p.add_argument("--train-rounds", type=int, default=3, help="alternated pairs of training runs")
    p.add_argument("--alternate-rounds", type=int, default=20, help="alternated pairs of steps in one process")
    p.add_argument("--kinds", default="char,bpe", help="tokenizers to measure: char, bpe or both")
    p.add_argument("--build", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    if args.build:  # in a child: this process's peak memory would count in every later child's
        lines = source_lines()
        for mb in sizes:
            build_corpus(mb, lines)
        return
    subprocess.run([sys.executable, __file__, "--build", "--sizes", args.sizes], check=True)
    corpora = {mb: ROOT / "data" / f"bench_corpus_{mb}mb.txt" for mb in sizes}
    py = [sys.executable, "-m", "craft.allocator", sys.executable]
    here = env_with(ROOT)
    rows, results = [], {}
    cache_root = Path(tempfile.mkdtemp(prefix="craft-prep-"))

    def prep(name: str, kind: str, mb: int, env: dict, new: bool = True, cwd: Path = ROOT) -> dict:
        cache = cache_root / name
        shutil.rmtree(cache, ignore_errors=True)
        sample = args.sample_mb * 1_000_000 if kind == "bpe" and mb > args.sample_mb else 0
        argv = [kind, str(corpora[mb]), str(cache), str(sample), "1" if new else "0", str(VAL_CHARS)]
        r = child([*py, "-c", PREPARE, *argv], env, cwd)
        size = corpora[mb].stat().st_size
        r["mb_per_s"] = size / 1e6 / r["prepare_s"]
        results[name] = r
        print(f"{name}: {json.dumps(r)}", file=sys.stderr, flush=True)
        return r

    try:
        smallest = min(sizes)
        if args.baseline:
            for kind in args.kinds.split(","):
                tree = Path(args.baseline).resolve()
                r = prep(f"baseline_{kind}_{smallest}mb", kind, smallest, env_with(tree), new=False, cwd=tree)
                rows.append((f"{kind}, {smallest} MB, before (`{args.baseline}`)", r))
        for mb in sizes:
            for kind in args.kinds.split(","):
                r = prep(f"{kind}_{mb}mb", kind, mb, here)
                sampled = kind == "bpe" and mb > args.sample_mb
                label = f"{kind}, {mb} MB" + (f" (BPE trained on a {args.sample_mb} MB sample)" if sampled else "")
                rows.append((label, r))
        largest = max(sizes)
        # The start of a run on the prepared largest corpus (char, as prepared above).
        prepared = cache_root / f"char_{largest}mb"
        start = child([*py, "-c", STARTUP, str(corpora[largest]), str(prepared), str(VAL_CHARS)], here)
        results["startup"] = start
        print(f"startup: {json.dumps(start)}", file=sys.stderr, flush=True)
        # Training speed: the largest corpus against pydoc, got_char shape, alternated. pydoc gets
        # one more line holding every character of the large corpus, so both runs have the same
        # vocabulary, hence the same model: only the data path differs.
        vocab = json.loads(next(prepared.glob("*/meta.json")).read_text())["tokenizer"]["vocab"]
        pydoc = cache_root / "pydoc_same_vocab.txt"
        pydoc_text = (ROOT / "data" / "pydoc_topics.txt").read_text(encoding="utf-8")
        pydoc.write_text(pydoc_text + "\n" + "".join(vocab) + "\n", encoding="utf-8")
        results["vocab"] = len(vocab)
        train = [*py, "benchmarks/train_throughput.py", "--config", "configs/got_char.yaml"]
        train += ["--steps", str(args.train_steps), "--warmup", "6", "--samples.every_n_steps", "0"]
        train += ["--samples.at_end", "false"]
        speeds: dict[str, list[float]] = {"pydoc": [], "large": []}
        for _ in range(args.train_rounds):
            for which, extra in (
                ("pydoc", ["--data.path", str(pydoc)]),
                (
                    "large",
                    ["--data.path", str(corpora[largest]), "--data.cache_dir", str(prepared)]
                    + ["--data.val_chars", str(VAL_CHARS)],
                ),
            ):
                speeds[which].append(child([*train, *extra], here)["tokens_per_s_median_step"])
        results["train_tokens_per_s"] = speeds
        # The data path alone: milliseconds to draw one got_char batch from each corpus.
        loader = child([*py, "-c", LOADER, str(pydoc), str(corpora[largest]), str(prepared), str(VAL_CHARS)], here)
        results["loader_ms_per_batch"] = loader
        # The same model in one process, steps alternating between a batch of each corpus (drawing
        # the batch included): the VM's drift between processes cannot favour either side.
        alternate = child(
            [*py, "-c", ALTERNATE, str(pydoc), str(corpora[largest]), str(prepared), str(VAL_CHARS)]
            + [str(args.alternate_rounds)],
            here,
        )
        results["alternated_steps"] = alternate
    finally:
        shutil.rmtree(cache_root, ignore_errors=True)

    def gb(n: float) -> str:
        return f"{n / 1e9:.2f} GB"

    table = [
        "| preparation | MB/s | seconds | peak RSS |",
        "|---|---:|---:|---:|",
        *(
            f"| {label} | {r['mb_per_s']:.1f} | {r['prepare_s']:.1f} | {gb(r['peak_rss_process'])} |"
            for label, r in rows
        ),
        "",
        "| run on the prepared corpus | figure |",
        "|---|---:|",
        f"| {largest} MB char, prepared: end of imports to the first training step (quickstart config) "
        f"| {start['to_first_step_s']:.2f} s |",
        f"| imports (Python, torch, Lightning, craft) | {start['import_s']:.2f} s |",
        f"| got_char training tok/s, pydoc (vocab {len(vocab)}) | {', '.join(f'{s:,.0f}' for s in speeds['pydoc'])} |",
        f"| got_char training tok/s, {largest} MB corpus (vocab {len(vocab)}, alternated) "
        f"| {', '.join(f'{s:,.0f}' for s in speeds['large'])} |",
        f"| ratio of medians, {largest} MB / pydoc | {median(speeds['large']) / median(speeds['pydoc']):.3f} |",
        f"| one batch from the loader (64 x 256), pydoc / {largest} MB | {loader['pydoc_ms']:.2f} ms"
        f" / {loader['large_ms']:.2f} ms |",
        f"| one process, {args.alternate_rounds} steps each alternated (batch drawn + step), median tok/s, "
        f"pydoc / {largest} MB | {alternate['pydoc_tok_s']:,.0f} / {alternate['large_tok_s']:,.0f} |",
        f"| ratio, {largest} MB / pydoc, alternated in one process "
        f"| {alternate['large_tok_s'] / alternate['pydoc_tok_s']:.3f} |",
    ]
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "corpus_prep.json").write_text(json.dumps(results, indent=1))
    (RESULTS / "corpus_prep.md").write_text("\n".join(table) + "\n")
    print("\n".join(table))


if __name__ == "__main__":
    main()
