"""Training tokens/s of a craft config through the real CLI (Lightning loop, logging, checkpoints).

    python benchmarks/train_throughput.py --config configs/got_char.yaml --steps 60 [extra CLI args]

Times optimizer steps after a warm-up of `--warmup` steps and reports tokens/s (batch x block per step).
Runs in a throwaway log folder, so it never touches your experiments.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import lightning as L
import torch

from craft.cli import CraftCLI


class StepTimer(L.Callback):
    def __init__(self) -> None:
        self.times: list[float] = []
        self.tokens: list[int] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.times.append(time.perf_counter())
        self.tokens.append(batch[0].numel())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True)
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--warmup", type=int, default=10)
    args, extra = p.parse_known_args()
    timer = StepTimer()
    with tempfile.TemporaryDirectory() as logs:
        cli = CraftCLI(
            args=[
                "--config",
                args.config,
                "--log_dir",
                logs,
                "--trainer.max_steps",
                str(args.steps),
                "--trainer.enable_progress_bar",
                "false",
                *extra,
            ],
            run=False,
        )
        cli.trainer.callbacks.append(timer)
        cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    t, n = timer.times[args.warmup :], timer.tokens[args.warmup + 1 :]
    result = {
        "config": args.config,
        "steps_timed": len(t) - 1,
        "tokens_per_s": round(sum(n) / (t[-1] - t[0]), 1),
        "params": cli.model.model.num_params(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
