"""What tests share: tiny corpora and runs, CLI arguments, event-file readers, test callbacks.

Imported as ``tests.helpers`` everywhere; ``conftest.py`` holds only the fixtures."""

import random
import sys
import time
from pathlib import Path

import lightning as L
import torch

ROOT = Path(__file__).resolve().parents[1]
WORDS = (
    "the king of winter rode north with his men and the wolves followed them through snow "
    "a lord must pay his debts said the queen while dragons flew over the narrow sea"
).split()


def make_text(n_chars: int, seed: int = 0) -> str:
    """Deterministic pseudo-prose with newlines, enough structure for a tiny model to learn."""
    rng = random.Random(seed)
    out, size = [], 0
    while size < n_chars:
        line = " ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 12))).capitalize() + ".\n"
        out.append(line)
        size += len(line)
    return "".join(out)[:n_chars]


TINY_MODEL = ["--model.d_model", "32", "--model.n_layers", "2", "--model.n_head", "4", "--model.d_hid", "64"]


def tiny_args(
    corpus: Path, log_dir: Path, *extra: str, experiment: str = "tiny", log_every: int | None = 1
) -> list[str]:
    """CLI arguments for a tiny, fast run on `corpus` writing under `log_dir`."""
    return [
        "--experiment",
        experiment,
        "--log_dir",
        str(log_dir),
        "--seed_everything",
        "7",
        *TINY_MODEL,
        "--model.warmup_steps",
        "2",
        "--model.sampling.max_new_tokens",
        "20",
        "--data.path",
        str(corpus),
        "--data.block_size",
        "16",
        "--data.batch_size",
        "8",
        "--trainer.val_check_interval",
        "5",
        "--trainer.check_val_every_n_epoch",
        "null",
        "--trainer.limit_val_batches",
        "2",
        *(["--trainer.log_every_n_steps", str(log_every)] if log_every is not None else []),
        "--trainer.enable_progress_bar",
        "false",
        "--trainer.enable_model_summary",
        "false",
        "--checkpoint.last_every_n_steps",
        "5",
        "--throughput.peak_flops",  # skip the matmul probe each fit would run (tests/test_callbacks.py runs it)
        "1e11",
        *extra,
    ]


def scalars(run_dir: Path, tag: str) -> dict[int, float]:
    """A run's TensorBoard scalar ``tag`` read back from its event files, as {step: value}."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    acc.Reload()
    return {e.step: e.value for e in acc.Scalars(tag)}


def python_cmd() -> list[str]:
    return [sys.executable, "-m", "craft"]


class StopAtStep(L.Callback):
    """Stand-in for an interruption: stop training cleanly once `step` optimizer steps are done."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, *args) -> None:
        if trainer.global_step >= self.step:
            trainer.should_stop = True


class SlowValidation(L.Callback):
    """Makes every validation batch (sanity check aside) take ``seconds`` longer: a validation of
    known cost."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def on_validation_batch_end(self, trainer, *args) -> None:
        if not trainer.sanity_checking:
            time.sleep(self.seconds)


class SignalDuring(L.Callback):
    """Sends this process a real signal while it is in `phase` ("training", "validation" or
    "sample generation"), once, from a timer thread `delay` seconds after the phase starts."""

    def __init__(self, phase: str, signum: int = 2, delay: float = 0.3, after_step: int = 3) -> None:
        self.phase, self.signum, self.delay, self.after_step = phase, signum, delay, after_step
        self.sent = False

    def _send(self, trainer, delay: float) -> None:
        import os
        import threading

        if self.sent or trainer.global_step < self.after_step or trainer.sanity_checking:
            return
        self.sent = True
        threading.Timer(delay, os.kill, (os.getpid(), self.signum)).start()

    def on_train_batch_start(self, trainer, *args) -> None:
        if self.phase == "training":
            self._send(trainer, 0.0)

    def on_validation_start(self, trainer, *args) -> None:
        if self.phase == "validation":
            self._send(trainer, self.delay)

    def on_train_batch_end(self, trainer, *args) -> None:
        # Runs before craft's SampleGeneration in the same hook, which then generates for seconds.
        if self.phase == "sample generation" and trainer.global_step % 2 == 0:
            self._send(trainer, self.delay)


# Each component alone on the classic block, and all of them together (nanochat's recipe).
COMPONENTS = [
    {"qk_norm": True},
    {"tie_head": False},
    {"softcap": 3.0},  # low enough to bend this tiny model's logits
    {"zero_init": True},
    {"bias": False},
    {"value_embeds": True},
    {"scalars": True},
    {"unet": True},
]
ALL_COMPONENTS = {
    "norm": "rmsnorm_free",
    "mlp": "relu2",
    "positions": "rotary",
    **{k: v for c in COMPONENTS for k, v in c.items()},
}


def perturbed(m: torch.nn.Module) -> torch.nn.Module:
    """``m`` with every parameter moved off its init, so zero-initialised projections, gates and
    scalars take part in what a test compares."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    return m
