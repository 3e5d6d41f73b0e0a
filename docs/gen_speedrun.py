"""Write the records and ablation tables of docs/speedrun.md from craft.compare's results.

python docs/gen_speedrun.py

Reads docs/speedrun/results.json (``python -m craft compare configs/compare/speedrun.yaml``) and,
where it exists, docs/ablation/results.json (``... configs/compare/ablation.yaml``), or else its MLP
rows alone, docs/ablation/mlp/results.json (``... configs/compare/mlp.yaml``). A verdict needs
p < 0.05: "helps" or "hurts" by the sign of the bpc difference, else "neutral".
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from craft.compare import bpc_cell, welch_p  # noqa: E402

DOCS = ROOT / "docs"
P = 0.05
SPEC = "configs/compare/speedrun.yaml"  # what writes docs/speedrun/results.json


def load(name: str) -> list[dict] | None:
    path = DOCS / name / "results.json"
    return json.loads(path.read_text())["configs"] if path.exists() else None


def cell(value, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def records(configs: list[dict]) -> list[str]:
    base = next(c for c in configs if c["name"] == c["baseline"])
    # The baseline's whole run, to its last evaluation: the budget the shares below are of.
    base_seconds = sum(r["curve"]["seconds"][-1] for r in base["seeds"]) / len(base["seeds"])
    out = [
        f"Target: **{base['target']:.4f} bpc**, the mean final val bpc of `{base['name']}` "
        f"({len(base['seeds'])} seeds at {base['tokens'] / 1e6:.2f}M tokens).",
        "",
        f"Shares are of the baseline's budget: {base['tokens'] / 1e6:.2f}M tokens, {base_seconds:.0f} s.",
        "",
        "| record | what changed | params | tokens | tokens to target | seconds to target | val bpc (mean ± std) "
        "| p vs baseline | command |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for c in configs:
        t = c["to_target"]
        n = len(c["seeds"])
        reached = "" if t["reached"] == n else f" ({t['reached']}/{n} seeds)"
        tokens = f"{t['tokens'] / 1e6:.2f}M{reached}" if t["tokens"] else f"not reached{reached}"
        share = f" ({t['tokens'] / base['tokens']:.0%})" if t["tokens"] else ""
        seconds = f"{t['seconds']:.0f}" if t["seconds"] else "—"
        seconds_share = f" ({t['seconds'] / base_seconds:.0%})" if t["seconds"] else ""
        p = "baseline" if c is base else cell(c["p"], ".2g")
        command = f"`python -m craft compare {SPEC}`"
        out.append(
            f"| {c['name']} | {c['overlays']} | {c['params']:,} | {c['tokens'] / 1e6:.2f}M | {tokens}{share} | "
            f"{seconds}{seconds_share} | {bpc_cell(c)} | {p} | {command} |"
        )
    return out


def finals(c: dict) -> list[float]:
    return [r["val_bpc"] for r in c["seeds"]]


def verdict(c: dict, against: dict, removed: bool) -> tuple[float | None, str]:
    """(p, verdict) for the component a row adds (to modern) or removes (from the recipe)."""
    p = welch_p(finals(c), finals(against))
    if p is None:
        return None, "—"
    if p >= P:
        return p, "neutral"
    lower = c["bpc_mean"] < against["bpc_mean"]
    helps = not lower if removed else lower  # without a helping component the recipe is worse
    return p, "helps" if helps else "hurts"


def ablations(configs: list[dict] | None, mlp: list[dict] | None) -> list[str]:
    out = []
    if configs is None:
        out.append("Not run yet: `python -m craft compare configs/compare/ablation.yaml` (about 4.5 hours).")
        if mlp is None:
            return out
        out += ["Its MLP rows alone (`python -m craft compare configs/compare/mlp.yaml`, 25 minutes):", ""]
        configs = mlp
    by_name = {c["name"]: c for c in configs}
    modern, best = by_name["modern"], by_name.get("speedrun")
    out += [
        "`add_X`: the modern preset with X alone, against the modern preset. `remove_X`: the speedrun",
        "recipe without X, against the recipe. Welch's t-test over 3 seeds each; a verdict needs p < 0.05.",
        "",
        "| row | val bpc (mean ± std) | Δ bpc | against | p | verdict on the component |",
        "|---|---:|---:|---|---:|---|",
    ]
    for c in configs:
        if c["name"] in ("modern", "speedrun"):
            out.append(f"| {c['name']} | {bpc_cell(c)} | | | | |")
            continue
        removed = c["name"].startswith("remove_")
        against = best if removed else modern
        p, v = verdict(c, against, removed)
        d = c["bpc_mean"] - against["bpc_mean"]
        out.append(f"| {c['name']} | {bpc_cell(c)} | {d:+.4f} | {against['name']} | {cell(p, '.2g')} | {v} |")
    return out


def main() -> None:
    path = DOCS / "speedrun.md"
    text = path.read_text()
    speedrun = load("speedrun")
    if speedrun is None:
        raise SystemExit(
            "docs/speedrun/results.json is missing: run python -m craft compare configs/compare/speedrun.yaml"
        )
    tables = (("records", records(speedrun)), ("ablations", ablations(load("ablation"), load("ablation/mlp"))))
    for tag, rows in tables:
        block = "\n".join([f"<!-- {tag}: python docs/gen_speedrun.py -->", *rows, f"<!-- end {tag} -->"])
        text = re.sub(rf"<!-- {tag}: .*?<!-- end {tag} -->", lambda _, b=block: b, text, flags=re.S)
    path.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
