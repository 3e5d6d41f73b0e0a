"""`--model.compile true` (torch.compile of the inner transformer) and its checkpoints.

The trap (shared/lightning-notes.md): compiling by wrapping a module renames its parameters
(`_orig_mod.`), so a compiled run's checkpoint no longer loads into an uncompiled model. craft
compiles in place; this test trains compiled and shows the checkpoint works both ways.
"""

import pytest
import torch

from craft import LanguageModel
from craft.cli import CraftCLI, main
from tests.helpers import scalars, tiny_args

pytestmark = pytest.mark.slow  # torch.compile


def test_compiled_checkpoint_loads_without_compile_and_back(corpus, tmp_path):
    logs = tmp_path / "logs"
    ckpt_path = logs / "tiny" / "checkpoints" / "last.ckpt"
    main(["fit", *tiny_args(corpus, logs, "--model.compile", "true"), "--trainer.max_steps", "5"])
    ckpt = torch.load(ckpt_path, weights_only=True)
    assert ckpt["hyper_parameters"]["compile"] is True
    eager = LanguageModel.load_from_checkpoint(ckpt_path, compile=False, weights_only=True)
    assert set(ckpt["state_dict"]) == set(eager.state_dict())  # no `_orig_mod.` prefixes

    # The uncompiled model reproduces the loss the compiled run logged on the same validation batches.
    cli = CraftCLI(args=["validate", *tiny_args(corpus, logs), "--ckpt_path", "last"])
    assert cli.model.hparams.compile is False
    eager_loss = cli.trainer.callback_metrics["val/loss"].item()
    assert eager_loss == pytest.approx(scalars(logs / "tiny", "val/loss")[4], rel=1e-4)

    # Resume eagerly, then compiled again: both directions load the other's checkpoint.
    for compile_, steps in (("false", 7), ("true", 9)):
        main(
            [
                "fit",
                *tiny_args(corpus, logs, "--model.compile", compile_),
                "--trainer.max_steps",
                str(steps),
                "--ckpt_path",
                "last",
            ]
        )
        assert torch.load(ckpt_path, weights_only=True)["global_step"] == steps
