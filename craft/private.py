"""The only module where craft touches other libraries' private names; tests/test_private.py
fails loudly when any of them changes. pyproject.toml bounds ``lightning`` and ``torch`` below
their next minor release.

Lightning:

1. ``LightningCLI._parse_ckpt_path`` (Lightning >= 2.5.5) loads a ``--ckpt_path`` file's
   hyperparameters into the model config before any hook runs, checkpoint values winning over the
   command line (Lightning-AI/pytorch-lightning#20310; #21455 would flip the precedence). craft does
   its own checkpoint handling in the public ``before_instantiate_classes`` (``craft/cli.py``):
   generation settings come from the command line, the architecture from the checkpoint, and a
   checkpoint's names are checked before anything is imported (``craft/checkpoint.py``). So this
   merge is switched off.
2. ``fit_loop.epoch_loop._batches_that_stepped``: the step counter loggers use. Lightning restores
   it off by one for checkpoints saved at a validation or train end, so a resumed TensorBoard curve
   would skip or repeat a step. The closest upstream reports, about this counter on resume, are
   Lightning-AI/pytorch-lightning#12274 and #13163 (both closed; this off-by-one is still in 2.6).
   With one optimizer the counter always equals the global step.

PyTorch:

3. ``loader.boxed_run`` of a loaded AOTInductor package: runs the compiled step on a flat list of
   tensors, skipping the pytree flattening ``__call__`` does on every call (a measurable share of
   a ~100 µs decode step, benchmarks/README.md). ``torch._inductor.aoti_compile_and_package`` and
   ``aoti_load_package`` are the documented AOTInductor API, not private names, despite the path.
4. ``Tensor._version``: a tensor's in-place write counter. The generation ``Engine`` keys its
   compiled decode steps on each weight's (data pointer, version): equal while no weight was
   written, so a step is reused without hashing every weight on every ``generate`` call.

``torch.optim.Muon``'s bfloat16 Newton-Schulz is not patched: ``craft.optim.Muon`` subclasses it
with a step of its own (tests/test_optim.py holds it equal to torch's in bfloat16).
"""

from __future__ import annotations

from typing import Any

import lightning as L


class NoCheckpointHparamsMerge:
    """Mixin for a LightningCLI subclass: leave ``--ckpt_path`` hyperparameters out of the config."""

    def _parse_ckpt_path(self) -> None:
        return None


class LoggingStepSync(L.Callback):
    """Keep a resumed run's TensorBoard x axis on the global step (see point 2 above).

    Sets the logging-step counter before anything logs the first batch: register it before other
    callbacks that log in ``on_train_batch_start`` (the CLI does).
    """

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._pending = trainer.ckpt_path is not None

    def on_train_batch_start(self, trainer: L.Trainer, *args: Any) -> None:
        if getattr(self, "_pending", False):
            trainer.fit_loop.epoch_loop._batches_that_stepped = trainer.global_step
            self._pending = False


def boxed_runner(package: Any):
    """The flat-list runner of a loaded AOTInductor package (point 3), or None where this torch's
    package has none (callers then call the package itself)."""
    loader = getattr(package, "loader", None)
    return getattr(loader, "boxed_run", None)


def tensor_version(t: Any) -> tuple[int, int]:
    """Where a tensor's data is and how often it was written in place (point 4): equal while the
    tensor is unchanged."""
    return t.data_ptr(), t._version
