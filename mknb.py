import nbformat as nbf

cells = []
md = lambda s: cells.append(nbf.v4.new_markdown_cell(s))
code = lambda s: cells.append(nbf.v4.new_code_cell(s))
md("""# Analyze craft runs

Point `LOGS` at a folder of experiments (default: the repo's `logs/`). This notebook lists the runs,
plots train/val loss against step and wall time, tokens/s and learning rate, compares runs on one
chart, and prints the logged text samples by step. It reads TensorBoard event files with
TensorBoard's own `EventAccumulator`.

Environment variables: `CRAFT_LOGS` (folder of runs), `CRAFT_FIGURES` (if set, the loss figure is
saved there as `loss_curves.png`).""")
code("""import os
from pathlib import Path

import matplotlib

if os.environ.get("CRAFT_FIGURES") or not os.environ.get("DISPLAY"):
    matplotlib.use("Agg")
import matplotlib.pyplot as plt
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

LOGS = Path(os.environ.get("CRAFT_LOGS", "../logs"))
FIGURES = os.environ.get("CRAFT_FIGURES")""")
code("""def find_runs(root: Path) -> list[Path]:
    \"\"\"Every folder under `root` that holds TensorBoard event files.\"\"\"
    return sorted({p.parent for p in root.rglob("events.out.tfevents.*")})


def load_run(path: Path) -> dict:
    acc = EventAccumulator(str(path), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    tags = acc.Tags()
    scalars = {t: acc.Scalars(t) for t in tags["scalars"]}
    samples = {
        t: [(e.step, e.tensor_proto.string_val[0].decode()) for e in acc.Tensors(t)]
        for t in tags["tensors"] if t.startswith("samples/")
    }
    return {"name": path.relative_to(LOGS).as_posix(), "scalars": scalars, "samples": samples}


runs = [load_run(p) for p in find_runs(LOGS)]
for r in runs:
    s = r["scalars"]
    last_val = s["val/loss"][-1].value if "val/loss" in s else float("nan")
    steps = s["train/loss_step"][-1].step + 1 if "train/loss_step" in s else 0
    print(f"{r['name']:40s} steps={steps:6d} val/loss={last_val:.4f}")
assert runs, f"no runs under {LOGS}\"""")
code("""def xy(events, wall=False):
    if not events:
        return [], []
    t0 = events[0].wall_time
    return [(e.wall_time - t0) / 60 if wall else e.step for e in events], [e.value for e in events]


run = max(runs, key=lambda r: len(r["scalars"].get("train/loss_step", [])))
s = run["scalars"]
fig, axes = plt.subplots(1, 2, figsize=(11, 4))
for ax, wall in zip(axes, (False, True), strict=True):
    ax.plot(*xy(s.get("train/loss_step", []), wall), label="train/loss (step)", alpha=0.7)
    if "train/loss_epoch" in s:
        ax.plot(*xy(s["train/loss_epoch"], wall), "o-", label="train/loss (epoch)")
    if "val/loss" in s:
        ax.plot(*xy(s["val/loss"], wall), "s-", label="val/loss")
    ax.set_xlabel("wall time (min)" if wall else "step")
    ax.set_ylabel("loss (nats/token)")
    ax.legend()
fig.suptitle(f"{run['name']}: loss")
fig.tight_layout()
if FIGURES:
    Path(FIGURES).mkdir(parents=True, exist_ok=True)
    fig.savefig(Path(FIGURES) / "loss_curves.png", dpi=110)""")
code("""fig, (a, b) = plt.subplots(1, 2, figsize=(11, 3.5))
a.plot(*xy(s.get("train/tokens_per_sec", [])))
a.set_xlabel("step")
a.set_ylabel("train tokens/s")
lr_tag = next((t for t in s if t.startswith("lr-")), None)
if lr_tag:
    b.plot(*xy(s[lr_tag]))
b.set_xlabel("step")
b.set_ylabel("learning rate")
fig.tight_layout()""")
code("""fig, ax = plt.subplots(figsize=(6, 4))
for r in runs:
    metric = "val/bpc" if "val/bpc" in r["scalars"] else "train/loss_step"
    ax.plot(*xy(r["scalars"].get(metric, [])), label=f"{r['name']} ({metric})")
ax.set_xlabel("step")
ax.set_ylabel("val bits per character")
ax.legend(fontsize=8)
ax.set_title("runs compared")""")
code("""for tag, entries in run["samples"].items():
    for step, text in entries:
        print(f"=== {tag.removesuffix('/text_summary')} at step {step}\\n{text.strip('`').strip()}\\n")""")

nb = nbf.v4.new_notebook(cells=cells, metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})
nbf.write(nb, "notebooks/analyze_runs.ipynb")
