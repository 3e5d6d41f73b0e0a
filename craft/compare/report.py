"""What a comparison writes: ``results.md`` (tables, samples) and ``results.png`` (curves with seed bands)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from craft.compare.runs import SAMPLES
from craft.compare.spec import Spec


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
