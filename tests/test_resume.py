"""Exact resume: k steps + resume to N equals N uninterrupted steps, bit for bit on CPU fp32."""

import json
import shutil

import pytest
import torch

from craft.cli import main
from tests.helpers import ALL_COMPONENTS, scalars, tiny_args

STOP_AT_8 = '{"class_path": "tests.helpers.StopAtStep", "init_args": {"step": 8}}'


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
    run = tmp_path / "tiny"
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    main(["fit", *args, "--ckpt_path", "last"])  # already at max_steps: must end cleanly, not crash
    assert "no training steps ran" in capsys.readouterr().out
    # Fault 39.5: summary.json was rewritten with nulls. Now no record of the run changes at all.
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before
    summary = json.loads((run / "summary.json").read_text())
    assert summary["global_step"] == 6 and summary["val_loss"] is not None


def records(run) -> dict:
    return {str(p.relative_to(run)): p.read_bytes() for p in run.rglob("*") if p.is_file()}


def refused(capsys, e, expect: str) -> str:
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    line = err.strip().splitlines()[-1]
    assert line.startswith("craft: error:") and expect in line, line
    return line


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(["--data.batch_size", "4"], id="batch_size"),  # the config alone shows it
        pytest.param(["--data.seed", "3"], id="seed"),
        pytest.param(["--data.windows_per_epoch", "96"], id="batches_per_epoch"),  # known once the corpus is read
    ],
)
def test_a_resume_with_another_batch_order_is_refused_every_time_and_changes_nothing(corpus, tmp_path, capsys, change):
    """Fault 39.3: such a resume was refused mid-epoch after config.yaml was overwritten, and from a
    checkpoint written at another point of the epoch it was accepted. Now it is refused from every
    checkpoint of the run, before any record is written."""
    base = tiny_args(corpus, tmp_path, "--data.windows_per_epoch", "48", "--trainer.max_steps", "13")
    main(["fit", *base, "--trainer.callbacks+", STOP_AT_8])
    run = tmp_path / "tiny"
    ckpts = sorted((run / "checkpoints").glob("*.ckpt"))
    assert len(ckpts) >= 2  # last.ckpt at step 8 and the top-k one from the validation at step 5
    before = records(run)
    for ckpt in ckpts:
        with pytest.raises(SystemExit) as e:
            main(["fit", *base, *change, "--ckpt_path", str(ckpt)])
        refused(capsys, e, "cannot resume exactly: the training batch order changed")
        assert records(run) == before, f"a refused resume from {ckpt.name} changed the run's records"
    main(["fit", *base, "--ckpt_path", "last"])  # the original settings still resume
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 13


def test_a_fresh_fit_into_a_folder_with_only_step_checkpoints_is_refused(corpus, tmp_path, capsys):
    """Fault 39.4: with last.ckpt gone, a fresh fit ran into the same folder and replaced its records."""
    args = tiny_args(corpus, tmp_path, "--trainer.max_steps", "6")
    main(["fit", *args])
    run = tmp_path / "tiny"
    (run / "checkpoints" / "last.ckpt").unlink()
    step = next((run / "checkpoints").glob("step*.ckpt"))
    before = records(run)
    with pytest.raises(SystemExit) as e:
        main(["fit", *args])
    line = refused(capsys, e, f"experiment 'tiny' already has a run in {run}")
    assert f"resume with --ckpt_path {step}" in line and "config.yaml" in line
    assert records(run) == before
    for path in run.iterdir():
        if path.name != "config.yaml":
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    with pytest.raises(SystemExit) as e:  # a config.yaml alone is still a run's record
        main(["fit", *args])
    assert "move that folder away" in refused(capsys, e, "already has a run in")


@pytest.mark.parametrize(
    "limits",
    [
        pytest.param(["--trainer.max_steps", "-1", "--trainer.max_epochs", "0"], id="max_epochs=0"),
        pytest.param(["--trainer.max_steps", "0"], id="max_steps=0"),
        pytest.param(["--trainer.max_steps", "-5"], id="max_steps=-5"),
        pytest.param(["--trainer.max_epochs", "-3"], id="max_epochs=-3"),
        pytest.param(["--trainer.limit_train_batches", "0"], id="limit_train_batches=0"),
    ],
)
def test_a_fit_that_would_train_nothing_is_refused_and_writes_nothing(corpus, tmp_path, capsys, limits):
    """Fault 39.6: it wrote a step-0 last.ckpt, reported last_checkpoint None, and locked the name."""
    with pytest.raises(SystemExit) as e:
        main(["fit", *tiny_args(corpus, tmp_path / "logs"), *limits])
    refused(capsys, e, "trains nothing")
    assert not (tmp_path / "logs").exists()
    main(["fit", *tiny_args(corpus, tmp_path / "logs", "--trainer.max_steps", "2")])  # the name is still free


def test_resuming_a_run_that_finished_its_epochs_changes_nothing(corpus, tmp_path, capsys):
    args = tiny_args(corpus, tmp_path, "--data.windows_per_epoch", "40", "--trainer.max_epochs", "1")
    main(["fit", *args, "--trainer.max_steps", "-1"])
    capsys.readouterr()
    run = tmp_path / "tiny"
    before = records(run)
    main(["fit", *args, "--trainer.max_steps", "-1", "--ckpt_path", "last"])
    assert "already reaches trainer.max_epochs 1" in capsys.readouterr().out
    assert records(run) == before
