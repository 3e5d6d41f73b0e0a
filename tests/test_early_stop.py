"""configs/presets/early_stop.yaml: Lightning's EarlyStopping with step-based validation and resume."""

import pytest
import torch

from craft.cli import main
from tests.helpers import ROOT, tiny_args

PRESET = ["--config", str(ROOT / "configs" / "presets" / "early_stop.yaml")]
# Never "improves" by 10 nats: the first validation sets the best score, each later one counts.
NEVER_ENOUGH = ["--trainer.callbacks.init_args.min_delta", "10", "--trainer.callbacks.init_args.patience", "2"]


def run(corpus, logs, *extra):
    main(["fit", *PRESET, *tiny_args(corpus, logs, *NEVER_ENOUGH, *extra)])
    return torch.load(logs / "tiny" / "checkpoints" / "last.ckpt", weights_only=True)


def early_stopping(ckpt) -> dict:
    (state,) = (v for k, v in ckpt["callbacks"].items() if k.startswith("EarlyStopping"))
    return state


@pytest.mark.slow
def test_early_stopping_stops_at_step_based_validation_and_resumes_its_count(tiny_run, tmp_path):
    _, corpus = tiny_run
    # Validation every 5 steps: best at 5, no improvement at 10 and 15 -> stops at 15 of 50.
    whole = run(corpus, tmp_path / "whole", "--trainer.max_steps", "50")
    assert whole["global_step"] == 15
    assert early_stopping(whole)["wait_count"] == 2

    # Cut at step 10 (one validation counted), then resumed: stops at 15 too, so the count came back.
    cut = run(corpus, tmp_path / "cut", "--trainer.max_steps", "10")
    assert cut["global_step"] == 10 and early_stopping(cut)["wait_count"] == 1
    resumed = run(corpus, tmp_path / "cut", "--trainer.max_steps", "50", "--ckpt_path", "last")
    assert resumed["global_step"] == 15
    # The best score is still the one of step 5 before the cut (a fresh callback would have taken 15's).
    assert early_stopping(resumed)["best_score"] == early_stopping(cut)["best_score"]
