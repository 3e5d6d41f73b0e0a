"""Guards for the private Lightning names craft relies on (craft/lightning_private.py), and a check
that no other craft module touches private Lightning state."""

import ast
import inspect
from pathlib import Path

import lightning as L
from lightning.pytorch.cli import LightningCLI

from tests.conftest import ROOT


def test_lightning_still_merges_ckpt_hparams_through_parse_ckpt_path():
    """If this fails, Lightning renamed or dropped the hook craft switches off: re-check that a
    --ckpt_path file's hyperparameters no longer override the command line before changing it."""
    assert callable(getattr(LightningCLI, "_parse_ckpt_path", None)), "LightningCLI._parse_ckpt_path is gone"
    assert "self._parse_ckpt_path()" in inspect.getsource(LightningCLI.__init__)


def test_the_logging_step_counter_still_exists():
    trainer = L.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False)
    assert isinstance(trainer.fit_loop.epoch_loop._batches_that_stepped, int), "the logging-step counter moved"


def test_only_lightning_private_touches_private_lightning_names():
    """Attribute access `x._name` on a trainer, loop, CLI, connector or monitor object, anywhere in craft/."""
    suspects = ("trainer", "loop", "cli", "connector", "monitor", "throughput", "strategy", "super()")
    found = []
    for path in sorted((ROOT / "craft").rglob("*.py")):
        if path.name == "lightning_private.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
                owner = ast.unparse(node.value).lower()
                if any(s in owner for s in suspects) and owner != "self":
                    found.append(f"{Path(path).relative_to(ROOT)}:{node.lineno}: {ast.unparse(node)}")
    assert not found, found
