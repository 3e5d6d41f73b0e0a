"""Running a comparison: each run a real ``craft fit`` (reused or resumed when it exists), its record,
and its config's first-seed sample and int8 score."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from craft.compare.spec import Spec, base_lrs, data_section, merged_config
from craft.compare.stats import mean_std, reach, welch_p
from craft.errors import CraftError
from craft.sampling import SamplingConfig

# Each config's sample: craft's sampling defaults with seed 0, the seed every committed record used.
SAMPLES = SamplingConfig(seed=0)


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
