"""Training tokens/s of a craft config through the real CLI (Lightning loop, logging, checkpoints).

    python benchmarks/train_throughput.py --config configs/got_char.yaml --steps 60 [extra CLI args]
    python benchmarks/train_throughput.py --config configs/got_char.yaml --steps 60 --compare-monitors \
        --repeats 2 --samples.every_n_steps 50

Times optimizer steps after `--warmup` steps (sample generation included) and reports tokens/s.
With `--compare-monitors` it alternates runs with craft's sample generation and throughput monitor
and runs with both removed (`--repeats` pairs), and prints the overhead of the monitors.
Runs in a throwaway log folder, so it never touches your experiments.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from statistics import median

import lightning as L
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.memory import peak_rss_bytes, rss_bytes  # noqa: E402
from craft.callbacks import SampleGeneration, TokenThroughput  # noqa: E402
from craft.cli import CraftCLI  # noqa: E402


class StepTimer(L.Callback):
    def __init__(self) -> None:
        self.times: list[float] = []
        self.tokens: list[int] = []
        self.rss: list[int] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize()  # time finished steps, not queued kernels
        self.times.append(time.perf_counter())
        self.tokens.append(batch[0].numel())
        self.rss.append(rss_bytes())


def measure(config: list[str], steps: int, warmup: int, extra: list[str], monitors: bool = True) -> dict:
    timer = StepTimer()
    with tempfile.TemporaryDirectory() as logs:
        cli = CraftCLI(
            args=[
                *(a for c in config for a in ("--config", c)),
                "--log_dir",
                logs,
                "--trainer.max_steps",
                str(steps),
                "--trainer.enable_progress_bar",
                "false",
                *extra,
            ],
            run=False,
        )
        if not monitors:
            cli.trainer.callbacks[:] = [
                c for c in cli.trainer.callbacks if not isinstance(c, (SampleGeneration, TokenThroughput))
            ]
        cli.trainer.callbacks.append(timer)  # last: its clock includes every other callback's work
        cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    t, n = timer.times[warmup:], timer.tokens[warmup + 1 :]
    return {
        "config": config,
        "monitors": monitors,
        "steps_timed": len(t) - 1,
        "tokens_per_s": round(sum(n) / (t[-1] - t[0]), 1),
        # The same from the median step: robust to the odd slow step of a shared machine.
        "tokens_per_s_median_step": round(median(n) / median(b - a for a, b in zip(t, t[1:], strict=False)), 1),
        "peak_rss": peak_rss_bytes(),
        # Memory growth over the timed steps (a leak would show here, not in the peak).
        "rss_growth": timer.rss[-1] - timer.rss[warmup],
        "params": cli.model.model.num_params(),
        "flops_per_token": cli.model.model.flops_per_token(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", nargs="+", required=True, help="one config or several, stacked in order")
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--compare-monitors", action="store_true")
    p.add_argument("--repeats", type=int, default=1, help="with --compare-monitors: on/off pairs, alternating")
    args, extra = p.parse_known_args()
    if not args.compare_monitors:
        print(json.dumps(measure(args.config, args.steps, args.warmup, extra)))
        return
    on, off = [], []
    for _ in range(args.repeats):  # alternate, so drift of the machine hits both sides alike
        on.append(measure(args.config, args.steps, args.warmup, extra)["tokens_per_s"])
        off.append(measure(args.config, args.steps, args.warmup, extra, monitors=False)["tokens_per_s"])
        print(json.dumps({"on": on[-1], "off": off[-1]}), flush=True)
    overhead = 1 - sum(on) / sum(off)
    print(json.dumps({"tokens_per_s_on": on, "tokens_per_s_off": off, "monitor_overhead": round(overhead, 4)}))


if __name__ == "__main__":
    main()
