"""Compare configs at the same training budget: ``python -m craft compare configs/compare/quickstart.yaml``.

A comparison file names a base config, overlays per run, and a budget in training tokens (and
optionally a wall-clock cap in seconds). Each run is a real ``python -m craft fit`` (same corpus,
validation at evenly spaced points), repeated over several seeds (default 3). Per config the
results give params, tokens/s, the mean ± std of the final val bpc, the tokens and seconds at which
it first reaches a target bpc (by default the baseline's mean; seconds of training, the clock
stopped while validating, as in modded-nanogpt's speedrun), Welch's t-test p-value of its
difference from the baseline, and the val bpc after int8 ONNX export. With ``lr_grid`` each config
first runs its learning rates (``lr`` and ``muon_lr`` times each factor) on the first seed, and the
best factor then runs on the other seeds; with ``lr_grid_extend``, a best factor at the grid's edge
first grows the grid past it, one factor at a time. The results go to ``<out>/results.md`` (tables, samples,
plot with seed bands) and ``results.json``. Runs already finished are reused and interrupted ones
resumed, so a long study can be re-run after a stop and only does the missing work. Each finished
run also leaves a small record in ``<records>/<run>.json`` (default ``<out>/runs``: its plan, summary,
val curve and, for a config's first seed, its sample and int8 score). Commit the records and a study
carries on from them on another machine or a fresh clone, where ``logs/`` and its checkpoints are gone.
"""

from __future__ import annotations

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

from craft.errors import CraftError, OneLineParser, old_entry_point, run_verb
from craft.sampling import SamplingConfig

# Each config's sample: craft's sampling defaults with seed 0, the seed every committed record used.
SAMPLES = SamplingConfig(seed=0)


@dataclass
class Spec:
    base: list[str]
    runs: dict[str, Any]  # name -> overlays, or {overlays: [...], tokens: N, args: [...], seeds: [...]}
    tokens: int
    log_dir: str = "logs/compare"
    out: str = "docs"
    title: str = "Comparison"
    evals: int = 6
    args: list[str] = field(default_factory=list)
    prompt: str = "The "
    sample_tokens: int = 200
    seeds: int | list[int] = 3  # a count (1337, 1338, ...) or the seeds themselves
    seconds: float | None = None  # a wall-clock cap per run, besides the token budget
    baseline: str | None = None  # the run the others are tested against (default: the first)
    target_bpc: float | str | None = "baseline"  # a bpc, or "baseline": the baseline's mean final bpc
    lr_grid: list[float] = field(default_factory=lambda: [1.0])  # factors on lr and muon_lr
    lr_grid_extend: int = 0  # times a grid whose best is at its edge grows one factor past it
    int8: bool = True  # also score each config's first seed after int8 ONNX export
    int8_windows: int = 64  # validation windows for that score
    records: str | None = None  # where each finished run's record goes (default: <out>/runs)

    @classmethod
    def load(cls, path: Path) -> Spec:
        try:
            raw = yaml.safe_load(path.read_text())
            spec = cls(**raw)
        except (OSError, yaml.YAMLError, TypeError) as e:
            raise CraftError(f"cannot read comparison file {path}: {e}") from None
        if spec.baseline is not None and spec.baseline not in spec.runs:
            raise CraftError(f"baseline {spec.baseline!r} is not one of the runs {list(spec.runs)}")
        if not spec.lr_grid or any(f <= 0 for f in spec.lr_grid):
            raise CraftError(f"lr_grid must list positive factors, got {spec.lr_grid!r}")
        if not isinstance(spec.lr_grid_extend, int) or spec.lr_grid_extend < 0:
            raise CraftError(f"lr_grid_extend must be a count >= 0, got {spec.lr_grid_extend!r}")
        spec.lr_grid = [float(f) for f in spec.lr_grid]  # 1 and 1.0 name one run and one column
        return spec

    def record_file(self, experiment: str) -> Path:
        return Path(self.records or Path(self.out) / "runs") / f"{experiment}.json"

    @property
    def seed_list(self) -> list[int]:
        return list(range(1337, 1337 + self.seeds)) if isinstance(self.seeds, int) else list(self.seeds)

    def run(self, name: str) -> tuple[list[str], int, list[str]]:
        """A run's overlays, token budget and extra arguments."""
        r = self.runs[name]
        if isinstance(r, dict):
            return list(r.get("overlays", [])), int(r.get("tokens", self.tokens)), list(r.get("args", []))
        return list(r), self.tokens, []


# -- statistics ----------------------------------------------------------------------------------


def mean_std(values: list[float]) -> tuple[float, float]:
    """The mean and the sample standard deviation (n - 1; 0 for one value)."""
    n = len(values)
    mean = sum(values) / n
    return mean, (sum((v - mean) ** 2 for v in values) / (n - 1)) ** 0.5 if n > 1 else 0.0


def welch_p(a: list[float], b: list[float]) -> float | None:
    """Two-sided p-value of Welch's t-test (unequal variances) of mean(a) = mean(b); None below 2 each."""
    if len(a) < 2 or len(b) < 2:
        return None
    from scipy import stats

    p = float(stats.ttest_ind(a, b, equal_var=False).pvalue)
    return None if p != p else p  # nan when both samples have no spread


def reach(curve: dict[str, list[float]], target: float) -> tuple[float, float] | None:
    """(tokens, seconds) at which the val bpc curve first reaches ``target``, interpolated linearly
    between evaluations; None if it never does."""
    bpc, tokens, seconds = curve["val_bpc"], curve["tokens"], curve["seconds"]
    for i, b in enumerate(bpc):
        if b <= target:
            if i == 0:
                return tokens[0], seconds[0]
            f = (bpc[i - 1] - target) / (bpc[i - 1] - b)
            return (tokens[i - 1] + f * (tokens[i] - tokens[i - 1]), seconds[i - 1] + f * (seconds[i] - seconds[i - 1]))
    return None


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


def read_record(spec: Spec, experiment: str) -> dict[str, Any] | None:
    file = spec.record_file(experiment)
    if not file.exists():
        return None
    try:
        return json.loads(file.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise CraftError(f"cannot read the record {file}: {e}; move it away to run {experiment!r} again") from None


def write_record(spec: Spec, experiment: str, record: dict[str, Any]) -> None:
    file = spec.record_file(experiment)
    file.parent.mkdir(parents=True, exist_ok=True)
    tmp = file.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=1) + "\n")
    tmp.replace(file)


def run_one(
    spec: Spec, experiment: str, configs: list[str], steps: int, extra: list[str], tokens_per_step: int
) -> dict[str, Any]:
    run_dir = Path(spec.log_dir) / experiment
    summary_file, done_file = run_dir / "summary.json", run_dir / "compare_done.json"
    # What the run is: a finished run is reused only if its whole config and arguments are the same.
    plan = {"steps": steps, "seconds": spec.seconds, "args": [*spec.args, *extra], "config": merged_config(configs)}
    if done_file.exists() and json.loads(done_file.read_text()) != plan:
        # Resuming would train nothing (the run is at its end) and overwrite its summary with an empty one.
        raise CraftError(
            f"run {experiment!r} in {run_dir} finished with another config, arguments or budget than this "
            "comparison asks for: move that folder away (or delete it) to run it again"
        )
    record = read_record(spec, experiment)
    if record is not None and record.get("plan") != plan:
        raise CraftError(
            f"the record {spec.record_file(experiment)} is of a run with another config, arguments or budget "
            f"than this comparison asks for: move it away (or delete it) to run {experiment!r} again"
        )
    if done_file.exists() and summary_file.exists():
        print(f"craft: {experiment}: finished earlier, reusing {summary_file}", flush=True)
    elif record is not None:
        print(f"craft: {experiment}: finished earlier, reusing {spec.record_file(experiment)}", flush=True)
        summary = record["summary"]
        return {"experiment": experiment, "configs": configs, "steps": steps, **summary, "curve": record["curve"]}
    else:
        cmd = [sys.executable, "-m", "craft", "fit"]
        cmd += [a for c in configs for a in ("--config", c)]
        cmd += ["--experiment", experiment, "--log_dir", spec.log_dir, "--trainer.max_steps", str(steps)]
        cmd += ["--trainer.max_epochs", "-1", "--trainer.val_check_interval", str(steps // spec.evals)]
        cmd += ["--trainer.check_val_every_n_epoch", "null", "--trainer.limit_val_batches", "1.0"]
        if spec.seconds:
            cmd += ["--trainer.max_time", json.dumps({"seconds": spec.seconds})]
        cmd += [*spec.args, *extra]
        if (run_dir / "checkpoints" / "last.ckpt").exists():
            cmd += ["--ckpt_path", "last"]
        print("craft: " + " ".join(cmd[1:]), flush=True)
        if subprocess.run(cmd).returncode != 0:
            raise CraftError(f"run {experiment!r} failed (see above); re-run the comparison to resume it")
        done_file.write_text(json.dumps(plan) + "\n")
    summary = json.loads(summary_file.read_text())
    for key in ("last_checkpoint", "best_checkpoint"):  # relative: results.json is committed and shared
        if summary.get(key):
            summary[key] = os.path.relpath(summary[key])
    curve = val_curve(run_dir, tokens_per_step)
    if record is None or record["summary"] != summary or record["curve"] != curve:
        write_record(spec, experiment, {"plan": plan, "summary": summary, "curve": curve})
    return {"experiment": experiment, "configs": configs, "steps": steps, **summary, "curve": curve}


def first_seed_scores(spec: Spec, c: dict[str, Any]) -> None:
    """The config's sample (and int8 score) from its first seed's checkpoint, kept in that run's
    record: once measured, a later study reads them from there, with or without the checkpoint."""
    first = c["seeds"][0]
    record = read_record(spec, first["experiment"]) or {}
    want = {"prompt": spec.prompt, "tokens": spec.sample_tokens}
    if record.get("sample", {}).get("asked") == want:
        c["sample"] = record["sample"]["text"]
    else:
        c["sample"] = sample(checkpoint_of(first), spec)
        record["sample"] = {"asked": want, "text": c["sample"]}
    if spec.int8:
        if record.get("int8", {}).get("windows_asked") == spec.int8_windows:
            c["int8"] = record["int8"]["scores"]
        else:
            c["int8"] = int8_bpc(checkpoint_of(first), first["data"], spec.int8_windows)
            record["int8"] = {"windows_asked": spec.int8_windows, "scores": c["int8"]}
    if "plan" in record:  # a run that has a record (every run of this version does)
        write_record(spec, first["experiment"], record)


def checkpoint_of(run: dict[str, Any]) -> str:
    ckpt = run.get("last_checkpoint")
    if not ckpt or not Path(ckpt).exists():
        raise CraftError(
            f"run {run['experiment']!r} has no checkpoint here ({ckpt}) and its record no sample or int8 score "
            "for these settings: move its record and log folder away to train it again"
        )
    return ckpt


def sample(ckpt: str, spec: Spec) -> str:
    from craft.module import LanguageModel

    lm = LanguageModel.load_from_checkpoint(ckpt, weights_only=True, map_location="cpu")
    return spec.prompt + lm.generate_all([spec.prompt], SAMPLES.with_(max_new_tokens=spec.sample_tokens))[0]


def data_section(configs: list[str], args: list[str]) -> dict[str, Any]:
    """The run's ``data:`` settings: its YAML files' section with the ``--data.*`` flags applied."""
    data = dict(merged_config(configs).get("data", {}))
    for flag, value in zip(args[::2], args[1::2], strict=False):
        if flag.startswith("--data."):
            data[flag.removeprefix("--data.")] = yaml.safe_load(value)
    return data


def int8_bpc(ckpt: str, data: dict[str, Any], windows: int) -> dict[str, float]:
    """Val bpc of the checkpoint in PyTorch and after int8 ONNX export (craft.runtime), on the
    first ``windows`` full validation windows of the run's own corpus and split (``data``)."""
    import tempfile

    import numpy as np
    import torch

    from craft.data.datamodule import TextDataModule
    from craft.data.tokenizers import Tokenizer
    from craft.export import export
    from craft.module import LanguageModel
    from craft.runtime import ExportedModel
    from craft.scoring import bpc_onnx, bpc_torch, val_windows

    checkpoint = torch.load(ckpt, map_location="cpu", weights_only=True)
    lm = LanguageModel.load_from_checkpoint(ckpt, map_location="cpu", weights_only=True).eval()
    keep = ("path", "val_fraction", "seed", "builtin_corpus", "text_field", "separator", "val_chars")
    dm = TextDataModule(
        **{k: data[k] for k in keep if k in data},
        block_size=lm.config.block_size,
        tokenizer=Tokenizer.from_state(checkpoint["tokenizer"]),
    )
    dm.setup("validate")
    w = val_windows(np.asarray(dm.val_ids, dtype=np.int64), lm.config.block_size, windows)
    lengths = np.asarray(lm.tokenizer.token_char_lengths())
    with tempfile.TemporaryDirectory() as tmp:
        export(Path(ckpt), Path(tmp) / "onnx", int8=True)
        rt = ExportedModel(Path(tmp) / "onnx", int8=True)
        return {"torch": bpc_torch(lm, w, lengths), "int8": bpc_onnx(rt, w, lengths), "windows": len(w)}


def val_curve(run_dir: Path, tokens_per_step: int) -> dict[str, list[float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    acc.Reload()
    events = acc.Scalars("val/bpc")
    if "time/train_seconds" in acc.Tags()["scalars"]:
        # The training clock, validation excluded (TokenThroughput), logged with each val/bpc at its step.
        trained = {e.step: e.value for e in acc.Scalars("time/train_seconds")}
        seconds = [trained[e.step] for e in events]
    else:  # runs from before the clock existed: wall time from the first logged step, validation in
        first = acc.Scalars("train/loss_step")[0].wall_time
        seconds = [e.wall_time - first for e in events]
    return {
        # Lightning logs at the index of the last optimizer step: step s means s + 1 steps trained.
        "tokens": [(e.step + 1) * tokens_per_step for e in events],
        "seconds": seconds,
        "val_bpc": [e.value for e in events],
    }


def plot(configs: list[dict[str, Any]], path: Path, title: str) -> None:
    """Val bpc against tokens and against seconds (each config's mean over seeds, with a band from the
    lowest to the highest seed), and below them each config's final val bpc: mean ± std, its seeds as
    dots, the baseline's mean as a line, so a study of many configs still reads at a glance. Takes the
    configs after ``summarize``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n, baseline = len(configs), configs[0].get("baseline")
    palette = plt.get_cmap("tab10" if n <= 10 else "tab20").colors
    fig = plt.figure(figsize=(11, 4.2 + 0.25 * n + 0.8))
    grid = fig.add_gridspec(2, 2, height_ratios=[4.2, 0.25 * n + 0.8])
    by_tokens = fig.add_subplot(grid[0, 0])
    by_time = fig.add_subplot(grid[0, 1], sharey=by_tokens)
    finals = fig.add_subplot(grid[1, :])
    for i, c in enumerate(configs):
        color, style = palette[i % len(palette)], "-" if i < len(palette) else "--"
        curves = [r["curve"] for r in c["seeds"]]
        k = min(len(curve["val_bpc"]) for curve in curves)
        bpc = [[curve["val_bpc"][j] for curve in curves] for j in range(k)]
        mean = [sum(b) / len(b) for b in bpc]
        low, high = [min(b) for b in bpc], [max(b) for b in bpc]
        tokens = [t / 1e6 for t in curves[0]["tokens"][:k]]
        seconds = [sum(curve["seconds"][j] for curve in curves) / len(curves) for j in range(k)]
        label = f"{c['name']} ({len(curves)} seed{'s' if len(curves) > 1 else ''})"
        for ax, x in ((by_tokens, tokens), (by_time, seconds)):
            ax.plot(x, mean, style, color=color, marker="o", markersize=3, label=label)
            if len(curves) > 1:
                ax.fill_between(x, low, high, color=color, alpha=0.15)
        last = [r["val_bpc"] for r in c["seeds"]]
        y = n - 1 - i  # the first config on top
        finals.errorbar(c["bpc_mean"], y, xerr=c["bpc_std"], fmt="o", color=color, capsize=3)
        finals.scatter(last, [y] * len(last), s=10, color=color, alpha=0.5)
        if c["name"] == baseline:
            finals.axvline(c["bpc_mean"], color="grey", linestyle=":", label=f"{baseline} (baseline) mean")
    by_tokens.set(xlabel="training tokens (millions)", ylabel="val bits per character", title=title)
    by_time.set(xlabel="training seconds (validation excluded, this machine)", title="same runs against time")
    finals.set(
        yticks=range(n),
        yticklabels=[c["name"] for c in reversed(configs)],
        ylim=(-0.7, n - 0.3),
        xlabel="final val bpc: mean ± std over seeds (dots: the seeds)",
    )
    for ax in (by_tokens, by_time, finals):
        ax.grid(alpha=0.3)
    if n <= 8:
        by_tokens.legend(fontsize=8)
    else:  # too many to sit over the curves
        by_time.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    if any(c["name"] == baseline for c in configs):
        finals.legend(fontsize=8, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def bpc_cell(c: dict[str, Any]) -> str:
    """A config's final val bpc: mean ± std over its seeds, or the one value where it has one seed."""
    if len(c["seeds"]) < 2:
        return f"{c['bpc_mean']:.4f} (1 seed)"
    return f"{c['bpc_mean']:.4f} ± {c['bpc_std']:.4f}"


def fmt(value: float | None, spec: str = ".3f") -> str:
    return "—" if value is None else format(value, spec)


def markdown(spec: Spec, spec_path: Path, configs: list[dict[str, Any]], machine: dict[str, str]) -> str:
    seeds = spec.seed_list
    lines = [
        f"# {spec.title}",
        "",
        f"Made by `python -m craft compare {spec_path}` ({machine['date']}; {machine['machine']}).",
        f"Each config trains on its token budget ({spec.tokens:,} unless its row says otherwise)"
        + (f", at most {spec.seconds:g} s each" if spec.seconds else "")
        + f", with seeds {', '.join(map(str, seeds))} (unless a run names its own).",
        "Val bpc (bits per character of the held-out text) compares across tokenizers. `± std` is the",
        "sample standard deviation over seeds; `p` is Welch's t-test",
        f"of the final val bpc against the baseline, **{configs[0]['baseline']}**. "
        + (
            f"The target is {configs[0]['target']:.4f} bpc "
            f"({'the baseline mean' if spec.target_bpc == 'baseline' else 'given'}): "
            "tokens and seconds to it are means over the seeds that reach it (interpolated between evaluations; "
            "seconds of training, validation excluded)."
            if configs[0]["target"] is not None
            else ""
        ),
        (
            f"The int8 column scores the first seed's model on the first {spec.int8_windows} validation windows, "
            "in PyTorch and after int8 ONNX export: Δ is the cost of the export, and its bpc is of those windows "
            "alone, not of the whole validation text."
            if spec.int8
            else ""
        ),
        "",
        "| config | overlays | params | tokens | seeds | tokens/s | val bpc (mean ± std) | p vs baseline "
        "| tokens to target | seconds to target | int8 ONNX bpc (Δ vs PyTorch) | lr factor |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for c in configs:
        t = c["to_target"]
        reached = f" ({t['reached']}/{len(c['seeds'])})" if t["reached"] < len(c["seeds"]) else ""
        int8 = c.get("int8")
        int8_cell = f"{int8['int8']:.3f} ({int8['int8'] - int8['torch']:+.4f})" if int8 else "—"
        lines.append(
            f"| {c['name']} | {c['overlays'] or '(base)'} | {c['params']:,} | {c['tokens'] / 1e6:.2f}M | "
            f"{len(c['seeds'])} | {c['tokens_per_sec']:,.0f} | {bpc_cell(c)} | "
            f"{'baseline' if c['name'] == c['baseline'] else fmt(c['p'], '.2g')} | "
            f"{fmt(t['tokens'] and t['tokens'] / 1e6, '.2f')}{'M' if t['tokens'] else ''}{reached} | "
            f"{fmt(t['seconds'], '.0f')} | {int8_cell} | {c['lr_factor']:g} |"
        )
    grids = [c for c in configs if len(c["grid"]) > 1]
    if grids:
        lines += [
            "",
            f"LR grid, on seed {seeds[0]} (final val bpc per factor on lr and muon_lr; the best is used):",
            "",
        ]
        factors = sorted({float(f) for c in grids for f in c["grid"]})  # the grid, and what extended it
        lines += [
            "| config | " + " | ".join(f"x{f:g}" for f in factors) + " |",
            "|---|" + "---:|" * len(factors),
        ]
        for c in grids:
            lines.append(f"| {c['name']} | " + " | ".join(fmt(c["grid"].get(str(f))) for f in factors) + " |")
    lines += ["", "![val bpc against training tokens and time](results.png)", "", "## Samples", ""]
    lines += [
        f"Prompt `{spec.prompt!r}`, {spec.sample_tokens} new tokens, temperature {SAMPLES.temperature}, "
        f"top-k {SAMPLES.top_k}, seed {SAMPLES.seed}, first seed's model.",
        "",
    ]
    for c in configs:
        lines += [f"**{c['name']}**", "", "```text", c["sample"], "```", ""]
    return "\n".join(lines)


def base_lrs(configs: list[str]) -> tuple[float, float]:
    """The config's lr and muon_lr (LanguageModel's defaults where the YAML does not set them)."""
    import inspect

    from craft.module import LanguageModel

    defaults = inspect.signature(LanguageModel.__init__).parameters
    model = merged_config(configs).get("model", {})
    return model.get("lr", defaults["lr"].default), model.get("muon_lr", defaults["muon_lr"].default)


def run_config(spec: Spec, name: str) -> dict[str, Any]:
    """Every run of one config: the LR grid on the first seed, then the best factor on the others."""
    overlays, tokens, extra = spec.run(name)
    configs = [*spec.base, *overlays]
    for c in configs:
        if not Path(c).is_file():
            raise CraftError(f"run {name!r}: config {c} not found")
    cfg = merged_config(configs)
    data, trainer = cfg.get("data", {}), cfg.get("trainer", {})
    tokens_per_step = data["batch_size"] * data["block_size"] * trainer.get("accumulate_grad_batches", 1)
    steps = tokens // tokens_per_step // spec.evals * spec.evals
    if steps < spec.evals:
        raise CraftError(f"tokens={tokens} is less than {spec.evals} steps of {tokens_per_step} tokens")
    lr, muon_lr = base_lrs(configs)
    own = spec.runs[name].get("seeds") if isinstance(spec.runs[name], dict) else None
    seeds = spec.seed_list if own is None else list(own)

    def one(seed: int, factor: float) -> dict[str, Any]:
        experiment = f"{name}-s{seed}" + (f"-lr{factor:g}" if len(spec.lr_grid) > 1 else "")
        args = ["--seed_everything", str(seed), *extra]
        if factor != 1.0:
            args += ["--model.lr", f"{lr * factor:.6g}", "--model.muon_lr", f"{muon_lr * factor:.6g}"]
        r = run_one(spec, experiment, configs, steps, args, tokens_per_step)
        r["seed"], r["lr_factor"] = seed, factor
        r["data"] = data_section(configs, [*spec.args, *args])
        return r

    grid = {f: one(seeds[0], f) for f in spec.lr_grid}
    best = min(grid, key=lambda f: grid[f]["val_bpc"])
    for _ in range(spec.lr_grid_extend if len(grid) > 1 else 0):
        # The best at an edge of the grid says nothing about the factors past it: try one more there,
        # at the ratio of that edge to its neighbour.
        factors = sorted(grid)
        if best not in (factors[0], factors[-1]):
            break
        edge, neighbour = (factors[0], factors[1]) if best == factors[0] else (factors[-1], factors[-2])
        factor = float(f"{edge * edge / neighbour:.6g}")
        grid[factor] = one(seeds[0], factor)
        best = min(grid, key=lambda f: grid[f]["val_bpc"])
    runs = [grid[best], *(one(seed, best) for seed in seeds[1:])]
    return {
        "name": name,
        "overlays": ", ".join(Path(c).stem for c in overlays),
        "configs": configs,
        "tokens": steps * tokens_per_step,
        "params": runs[0]["params"],
        "lr_factor": best,
        "lr": lr * best,
        "muon_lr": muon_lr * best,
        "grid": {str(f): grid[f]["val_bpc"] for f in sorted(grid)},
        "seeds": runs,
    }


def summarize(spec: Spec, configs: list[dict[str, Any]]) -> None:
    """Add each config's statistics against the baseline, in place."""
    baseline = next(c for c in configs if c["name"] == (spec.baseline or configs[0]["name"]))
    base_bpc = [r["val_bpc"] for r in baseline["seeds"]]
    target = spec.target_bpc
    if target == "baseline":
        target = mean_std(base_bpc)[0]
    for c in configs:
        bpc = [r["val_bpc"] for r in c["seeds"]]
        c["bpc_mean"], c["bpc_std"] = mean_std(bpc)
        c["tokens_per_sec"] = mean_std([r["mean_tokens_per_sec"] or 0.0 for r in c["seeds"]])[0]
        c["baseline"], c["target"] = baseline["name"], target
        c["p"] = None if c is baseline else welch_p(bpc, base_bpc)
        hits = [h for r in c["seeds"] if target is not None and (h := reach(r["curve"], target)) is not None]
        c["to_target"] = {
            "reached": len(hits),
            "tokens": mean_std([h[0] for h in hits])[0] if hits else None,
            "seconds": mean_std([h[1] for h in hits])[0] if hits else None,
            "per_seed": hits,
        }


def main(argv: list[str] | None = None, prog: str = "python -m craft compare") -> None:
    parser = OneLineParser(prog=prog, description=__doc__.splitlines()[0])
    parser.add_argument("spec", type=Path, help="comparison file, e.g. configs/compare/quickstart.yaml")
    args = parser.parse_args(argv)
    run_verb(lambda: study(args.spec))


def study(spec_path: Path) -> None:
    """Run (or reuse) every run of the study in ``spec_path`` and write its table, JSON and plot."""
    spec = Spec.load(spec_path)
    started = time.strftime("%Y-%m-%d")
    configs = []
    for name in spec.runs:
        configs.append(run_config(spec, name))
        first_seed_scores(spec, configs[-1])  # now, while the checkpoint is surely here
    summarize(spec, configs)
    out = Path(spec.out)
    out.mkdir(parents=True, exist_ok=True)
    import torch

    from craft.data.corpus import stdlib_version

    machine = {
        "date": started,
        "machine": f"{os.cpu_count()} CPU cores ({platform.machine()}), torch {torch.__version__}, "
        f"Python {platform.python_version()} (the stdlib corpus is {stdlib_version()}'s)",
    }
    plot(configs, out / "results.png", spec.title)
    (out / "results.json").write_text(json.dumps({"machine": machine, "configs": configs}, indent=2) + "\n")
    (out / "results.md").write_text(markdown(spec, spec_path, configs, machine) + "\n")
    print(f"craft: wrote {out / 'results.md'}, results.json and results.png")


if __name__ == "__main__":
    old_entry_point("craft.compare", "compare")
    main()
