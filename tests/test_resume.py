"""Exact resume: k steps + resume to N equals N uninterrupted steps, bit for bit on CPU fp32."""

import json

import pytest
import torch

from craft.cli import main
from tests.conftest import ALL_COMPONENTS, scalars, tiny_args

STOP_AT_8 = '{"class_path": "tests.conftest.StopAtStep", "init_args": {"step": 8}}'


# Muon + AdamW with the warmup-stable-decay schedule and every component of the modern recipe.
MUON_AND_COMPONENTS = [
    *("--model.optimizer muon --model.schedule wsd --model.decay_fraction 0.5".split()),
    *(f"--model.{k} {str(v).lower()}" for k, v in ALL_COMPONENTS.items()),
]


@pytest.mark.parametrize(
    "windows_per_epoch, recipe",
    [
        pytest.param(None, [], id="adamw"),
        pytest.param(48, [], id="adamw-across-epochs"),  # 48 windows = 6 batches: resume crosses epochs
        pytest.param(None, MUON_AND_COMPONENTS, id="muon-wsd-components", marks=pytest.mark.slow),
    ],
)
def test_interrupted_and_resumed_run_equals_uninterrupted(corpus, tmp_path, windows_per_epoch, recipe):
    extra = ["--model.dropout", "0.1", "--samples.every_n_steps", "3", "--trainer.max_steps", "14"]
    if windows_per_epoch:
        extra += ["--data.windows_per_epoch", str(windows_per_epoch)]
    extra += [a for arg in recipe for a in arg.split()]
    full, split = tmp_path / "full", tmp_path / "split"
    main(["fit", *tiny_args(corpus, full), *extra])
    main(["fit", *tiny_args(corpus, split), *extra, "--trainer.callbacks+", STOP_AT_8])
    first = torch.load(split / "tiny" / "checkpoints" / "last.ckpt", weights_only=True)
    assert first["global_step"] == 8
    main(["fit", *tiny_args(corpus, split), *extra, "--ckpt_path", "last"])

    a = scalars(full / "tiny", "train/loss_step")
    b = scalars(split / "tiny", "train/loss_step")
    assert sorted(a) == sorted(b) == list(range(14))
    print("\nstep  uninterrupted  resumed")
    for step in range(8, 14):
        print(f"{step + 1:4d}  {a[step]:.7f}      {b[step]:.7f}")
    assert [a[s] for s in range(14)] == [b[s] for s in range(14)]  # bitwise equal floats
    lr = "lr-MuonAdamW/pg1" if recipe else "lr-AdamW/pg1"
    assert scalars(full / "tiny", lr) == scalars(split / "tiny", lr)

    wa = torch.load(full / "tiny" / "checkpoints" / "last.ckpt", weights_only=True)
    wb = torch.load(split / "tiny" / "checkpoints" / "last.ckpt", weights_only=True)
    assert wa["global_step"] == wb["global_step"] == 14
    for key, value in wa["state_dict"].items():
        assert torch.equal(value, wb["state_dict"][key]), key
    assert not list((split / "tiny").glob("version_*"))


def test_resuming_a_finished_run_trains_nothing_and_keeps_its_checkpoint(corpus, tmp_path, capsys):
    args = tiny_args(corpus, tmp_path, "--trainer.max_steps", "6")
    main(["fit", *args])
    last = tmp_path / "tiny" / "checkpoints" / "last.ckpt"
    before = last.read_bytes()
    main(["fit", *args, "--ckpt_path", "last"])  # already at max_steps: must end cleanly, not crash
    assert "no training steps ran" in capsys.readouterr().out
    assert last.read_bytes() == before
    summary = json.loads((tmp_path / "tiny" / "summary.json").read_text())
    assert summary["global_step"] == 6 and summary["steps_this_launch"] == 0
