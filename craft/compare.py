"""Compare configs at the same training budget: ``python -m craft.compare configs/compare/quickstart.yaml``.

A comparison file names a base config, overlays per run, and a budget in training tokens. Each run
is a real ``python -m craft fit`` (same corpus, same seed, validation on the whole held-out text at
evenly spaced points); the results go to ``<out>/results.md`` (table, samples, plot) and
``results.json``. Runs already finished are reused and interrupted ones resumed, so the command can
be re-run after a stop and only does the missing work.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from craft.errors import CraftError


@dataclass
class Spec:
    base: list[str]
    runs: dict[str, list[str]]
    tokens: int
    log_dir: str = "logs/compare"
    out: str = "docs"
    title: str = "Comparison"
    evals: int = 6
    args: list[str] = field(default_factory=list)
    prompt: str = "The "
    sample_tokens: int = 200

    @classmethod
    def load(cls, path: Path) -> Spec:
        try:
            raw = yaml.safe_load(path.read_text())
            return cls(**raw)
        except (OSError, yaml.YAMLError, TypeError) as e:
            raise CraftError(f"cannot read comparison file {path}: {e}") from None


def merged_config(files: list[str]) -> dict[str, Any]:
    """The YAML files merged in order (later wins), enough to read batch and block sizes."""
    out: dict[str, Any] = {}

    def merge(into: dict, new: dict) -> None:
        for k, v in new.items():
            if isinstance(v, dict) and isinstance(into.get(k), dict):
                merge(into[k], v)
            else:
                into[k] = v

    for f in files:
        merge(out, yaml.safe_load(Path(f).read_text()) or {})
    return out


def run_one(spec: Spec, name: str, configs: list[str], steps: int) -> dict[str, Any]:
    run_dir = Path(spec.log_dir) / name
    summary_file = run_dir / "summary.json"
    if summary_file.exists() and json.loads(summary_file.read_text())["global_step"] >= steps:
        print(f"craft.compare: {name}: finished earlier, reusing {summary_file}", flush=True)
    else:
        cmd = [sys.executable, "-m", "craft", "fit"]
        cmd += [a for c in configs for a in ("--config", c)]
        cmd += ["--experiment", name, "--log_dir", spec.log_dir, "--trainer.max_steps", str(steps)]
        cmd += ["--trainer.max_epochs", "-1", "--trainer.val_check_interval", str(steps // spec.evals)]
        cmd += ["--trainer.check_val_every_n_epoch", "null", "--trainer.limit_val_batches", "1.0"]
        cmd += spec.args
        if (run_dir / "checkpoints" / "last.ckpt").exists():
            cmd += ["--ckpt_path", "last"]
        print("craft.compare: " + " ".join(cmd[1:]), flush=True)
        if subprocess.run(cmd).returncode != 0:
            raise CraftError(f"run {name!r} failed (see above); re-run the comparison to resume it")
    summary = json.loads(summary_file.read_text())
    for key in ("last_checkpoint", "best_checkpoint"):  # relative: results.json is committed and shared
        if summary.get(key):
            summary[key] = os.path.relpath(summary[key])
    return {"name": name, "configs": configs, "steps": steps, **summary}


def sample(ckpt: str, spec: Spec) -> str:
    from craft.module import LanguageModel

    lm = LanguageModel.load_from_checkpoint(ckpt, weights_only=True, map_location="cpu")
    return spec.prompt + lm.generate(spec.prompt, max_new_tokens=spec.sample_tokens, temperature=0.8, seed=0)


def val_curve(run_dir: Path, tokens_per_step: int) -> dict[str, list[float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    acc.Reload()
    events = acc.Scalars("val/bpc")
    first = acc.Scalars("train/loss_step")[0].wall_time
    return {
        # Lightning logs at the index of the last optimizer step: step s means s + 1 steps trained.
        "tokens": [(e.step + 1) * tokens_per_step for e in events],
        "seconds": [e.wall_time - first for e in events],
        "val_bpc": [e.value for e in events],
    }


def plot(results: list[dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (by_tokens, by_time) = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for r in results:
        c = r["curve"]
        by_tokens.plot([t / 1e6 for t in c["tokens"]], c["val_bpc"], marker="o", label=r["name"])
        by_time.plot(c["seconds"], c["val_bpc"], marker="o", label=r["name"])
    by_tokens.set(xlabel="training tokens (millions)", ylabel="val bits per character", title=title)
    by_time.set(xlabel="training seconds (wall clock, this machine)", title="same runs against time")
    for ax in (by_tokens, by_time):
        ax.grid(alpha=0.3)
    by_tokens.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def markdown(spec: Spec, spec_path: Path, results: list[dict[str, Any]], machine: dict[str, str]) -> str:
    lines = [
        f"# {spec.title}",
        "",
        f"Made by `python -m craft.compare {spec_path}` ({machine['date']}; {machine['machine']}).",
        f"Every run trains on {spec.tokens:,} tokens (same corpus, seed and schedule length) and is validated",
        "on the whole held-out text, the same characters for every tokenizer, so `val bpc` (bits per",
        "character) compares across tokenizers; `val loss` is per token and does not.",
        "",
        "| run | overlays | params | tokens/s | train s | val loss | val bpc | best val bpc (at tokens) "
        "| sample (start) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in results:
        overlays = ", ".join(Path(c).stem for c in r["configs"][len(spec.base) :]) or "(base)"
        start = r["sample"][:60].replace("\n", "⏎").replace("|", "\\|")
        c = r["curve"]
        best = min(range(len(c["val_bpc"])), key=c["val_bpc"].__getitem__)
        lines.append(
            f"| {r['name']} | {overlays} | {r['params']:,} | {r['mean_tokens_per_sec']:,.0f} | "
            f"{r['wall_seconds']:.0f} | {r['val_loss']:.3f} | {r['val_bpc']:.3f} | "
            f"{c['val_bpc'][best]:.3f} ({c['tokens'][best] / 1e6:.2f}M) | `{start}` |"
        )
    lines += ["", "![val bpc against training tokens and time](results.png)", "", "## Samples", ""]
    lines += [f"Prompt `{spec.prompt!r}`, {spec.sample_tokens} new tokens, temperature 0.8, seed 0.", ""]
    for r in results:
        lines += [f"**{r['name']}**", "", "```text", r["sample"], "```", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m craft.compare", description=__doc__.splitlines()[0])
    parser.add_argument("spec", type=Path, help="comparison file, e.g. configs/compare/quickstart.yaml")
    args = parser.parse_args(argv)
    try:
        spec = Spec.load(args.spec)
        results = []
        started = time.strftime("%Y-%m-%d")
        for name, overlays in spec.runs.items():
            configs = [*spec.base, *overlays]
            for c in configs:
                if not Path(c).is_file():
                    raise CraftError(f"run {name!r}: config {c} not found")
            cfg = merged_config(configs)
            data, trainer = cfg.get("data", {}), cfg.get("trainer", {})
            tokens_per_step = data["batch_size"] * data["block_size"] * trainer.get("accumulate_grad_batches", 1)
            steps = spec.tokens // tokens_per_step // spec.evals * spec.evals
            if steps < spec.evals:
                raise CraftError(f"tokens={spec.tokens} is less than {spec.evals} steps of {tokens_per_step} tokens")
            r = run_one(spec, name, configs, steps)
            r["curve"] = val_curve(Path(spec.log_dir) / name, tokens_per_step)
            r["sample"] = sample(r["last_checkpoint"], spec)
            results.append(r)
        out = Path(spec.out)
        out.mkdir(parents=True, exist_ok=True)
        import torch

        machine = {
            "date": started,
            "machine": f"{os.cpu_count()} CPU cores ({platform.machine()}), torch {torch.__version__}, "
            f"Python {platform.python_version()}",
        }
        plot(results, out / "results.png", spec.title)
        (out / "results.json").write_text(json.dumps({"machine": machine, "runs": results}, indent=2) + "\n")
        (out / "results.md").write_text(markdown(spec, args.spec, results, machine) + "\n")
        print(f"craft.compare: wrote {out / 'results.md'}, results.json and results.png")
    except CraftError as e:
        print(f"craft.compare: error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
