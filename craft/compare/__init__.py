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
import time
from pathlib import Path

from craft.compare.report import bpc_cell, markdown, plot
from craft.compare.runs import first_seed_scores, run_config, run_one, summarize, val_curve
from craft.compare.spec import Spec, merged_config
from craft.compare.stats import mean_std, reach, welch_p
from craft.errors import OneLineParser, run_verb

__all__ = ["Spec", "bpc_cell", "main", "mean_std", "merged_config", "reach", "run_one", "study", "val_curve", "welch_p"]


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
