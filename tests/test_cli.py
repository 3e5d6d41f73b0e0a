"""End-to-end runs through `python -m craft`: real Trainer, real files on disk."""

import importlib.util
import os
import shutil
import subprocess

import pytest
import torch
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from craft import LanguageModel
from craft.cli import CraftCLI, main
from craft.trackers import TRACKERS
from tests.helpers import ROOT, python_cmd, scalars, tiny_args


def test_fit_writes_events_config_and_last_ckpt(corpus, tmp_path):
    main(["fit", *tiny_args(corpus, tmp_path / "logs"), "--trainer.max_steps", "12"])
    run = tmp_path / "logs" / "tiny"
    assert (run / "config.yaml").exists()
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 12
    assert ckpt["tokenizer"]["type"] == "char"
    losses = scalars(run, "train/loss_step")
    assert len(losses) >= 10
    assert "val/loss" in EventAccumulator(str(run)).Reload().Tags()["scalars"]
    assert any(p.name.startswith("step") for p in (run / "checkpoints").iterdir())  # a top-k checkpoint


def test_resume_continues_global_step_and_curve(corpus, tmp_path):
    logs = tmp_path / "logs"
    main(["fit", *tiny_args(corpus, logs), "--trainer.max_steps", "10"])
    main(["fit", *tiny_args(corpus, logs), "--trainer.max_steps", "20", "--ckpt_path", "last"])
    run = logs / "tiny"
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 20
    steps = sorted(scalars(run, "train/loss_step"))
    assert steps[-1] >= 18 and min(steps) <= 1
    assert not list(run.glob("version_*"))  # same run folder, no new TensorBoard run


def test_fresh_fit_refuses_to_overwrite_and_last_requires_a_checkpoint(corpus, tmp_path, capsys):
    logs = tmp_path / "logs"
    with pytest.raises(SystemExit) as e:
        main(["fit", *tiny_args(corpus, logs), "--trainer.max_steps", "2", "--ckpt_path", "last"])
    assert e.value.code == 2
    assert f"no last.ckpt in {logs / 'tiny' / 'checkpoints'}" in capsys.readouterr().err
    main(["fit", *tiny_args(corpus, logs), "--trainer.max_steps", "5"])
    before = (logs / "tiny" / "checkpoints" / "last.ckpt").read_bytes()
    with pytest.raises(SystemExit):
        main(["fit", *tiny_args(corpus, logs), "--trainer.max_steps", "5"])
    assert "already has a run in" in capsys.readouterr().err
    assert (logs / "tiny" / "checkpoints" / "last.ckpt").read_bytes() == before


BAD_EXPERIMENTS = ["../../x", "..", ".", "", "a/b", "/tmp/abs", "a\\b", " x", "x\0y"]


@pytest.mark.parametrize("name", BAD_EXPERIMENTS, ids=repr)
@pytest.mark.parametrize("subcommand", ["fit", "predict"])
def test_an_experiment_name_is_one_folder_name(corpus, tmp_path, capsys, name, subcommand):
    """Fault 39.2: `--experiment ../../x` wrote outside --log_dir. Now it is refused in one line
    and nothing is written anywhere under the folder that holds --log_dir."""
    root = tmp_path / "a" / "b"
    root.mkdir(parents=True)
    args = tiny_args(corpus, root / "logs", "--trainer.max_steps", "2", experiment=name)
    if subcommand == "predict":
        args += ["--ckpt_path", "last"]
    with pytest.raises(SystemExit) as e:
        main([subcommand, *args])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith(f"craft: error: --experiment {name!r} is not one folder name")
    assert [p for p in tmp_path.rglob("*") if p.is_file() and p != corpus] == []


def test_a_dotted_experiment_name_is_fine(corpus, tmp_path):
    main(["fit", *tiny_args(corpus, tmp_path / "logs", "--trainer.max_steps", "2", experiment="run-1.a_b")])
    assert (tmp_path / "logs" / "run-1.a_b" / "checkpoints" / "last.ckpt").is_file()


def test_python_m_craft_refuses_a_traversing_experiment(corpus, tmp_path):
    logs = tmp_path / "deep" / "logs"
    run = subprocess.run(
        [*python_cmd(), "fit", *tiny_args(corpus, logs, "--trainer.max_steps", "2", experiment="../../x")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
    )
    assert run.returncode == 2 and "Traceback" not in run.stderr, run.stderr[-2000:]
    assert run.stderr.strip().splitlines()[-1].startswith("craft: error: --experiment '../../x' is not one folder name")
    assert not any(tmp_path.rglob("*.ckpt")) and not (tmp_path / "x").exists() and not (tmp_path.parent / "x").exists()


@pytest.mark.slow  # a fit and a predict subprocess
def test_predict_from_checkpoint_without_corpus(corpus, tmp_path):
    logs = tmp_path / "logs"
    main(["fit", *tiny_args(corpus, logs), "--trainer.max_steps", "10"])
    corpus.rename(tmp_path / "moved_away.txt")
    out = subprocess.run(
        [*python_cmd(), "predict", *tiny_args(corpus, logs), "--ckpt_path", "last", "--data.prompts", '["The king"]'],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    assert "The king" in out.stdout
    assert not corpus.exists()
    samples = list((logs / "tiny" / "samples").glob("predict-*.txt"))
    assert len(samples) == 1 and "The king" in samples[0].read_text()


def test_python_api_loads_checkpoint_and_generates(corpus, tmp_path):
    logs = tmp_path / "logs"
    main(["fit", *tiny_args(corpus, logs), "--trainer.max_steps", "5"])
    lm = LanguageModel.load_from_checkpoint(logs / "tiny" / "checkpoints" / "last.ckpt")
    text = lm.generate("the ", max_new_tokens=30, temperature=0)
    assert len(text) == 30
    assert text == lm.generate("the ", max_new_tokens=30, temperature=0)


def test_resume_with_a_different_architecture_names_the_field(corpus, tmp_path, capsys):
    logs = tmp_path / "logs"
    main(["fit", *tiny_args(corpus, logs), "--trainer.max_steps", "5"])
    with pytest.raises(SystemExit):
        main(
            [
                "fit",
                *tiny_args(corpus, logs),
                "--trainer.max_steps",
                "10",
                "--ckpt_path",
                "last",
                "--model.d_hid",
                "128",
            ]
        )
    assert "model.d_hid: checkpoint 64 vs config 128" in capsys.readouterr().err


@pytest.mark.parametrize("config", sorted((ROOT / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_instantiates(config, corpus, tmp_path):
    cli = CraftCLI(args=["--config", str(config), "--data.path", str(corpus), "--log_dir", str(tmp_path)], run=False)
    assert isinstance(cli.model, LanguageModel)
    assert cli.model.config.vocab_size == cli.datamodule.vocab_size
    assert cli.model.config.block_size == cli.datamodule.block_size


@pytest.mark.parametrize("preset", sorted((ROOT / "configs" / "presets").glob("*.yaml")), ids=lambda p: p.name)
def test_every_preset_overlays_a_config(preset, corpus, tmp_path):
    library = TRACKERS.get(yaml.safe_load(preset.read_text()).get("tracker"))
    if library and importlib.util.find_spec(library) is None:
        pytest.skip(f"the {preset.name} preset needs {library}: pip install craft[trackers]")
    configs = ["--config", str(ROOT / "configs" / "quickstart.yaml"), "--config", str(preset)]
    cli = CraftCLI(args=[*configs, "--data.path", str(corpus), "--log_dir", str(tmp_path)], run=False)
    for key, value in (yaml.safe_load(preset.read_text()).get("model") or {}).items():
        assert cli.model.hparams[key] == value, key


@pytest.mark.parametrize("config", sorted((ROOT / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_print_config_works(config, capsys):
    with pytest.raises(SystemExit) as e:
        main(["fit", "--config", str(config), "--print_config"])
    out = capsys.readouterr().out
    assert e.value.code in (0, None)
    assert "model:" in out and "vocab_size" not in out.split("model:")[1].split("data:")[0]


def test_resume_from_an_older_checkpoint_purges_the_replayed_steps(corpus, tmp_path):
    """A run interrupted after its last checkpoint logged steps that the resume trains again:
    TensorBoard must show each step once, with the resumed run's values."""
    logs = tmp_path / "logs"
    last = logs / "tiny" / "checkpoints" / "last.ckpt"
    main(["fit", *tiny_args(corpus, logs), "--trainer.max_steps", "5"])
    saved = last.read_bytes()
    main(["fit", *tiny_args(corpus, logs), "--trainer.max_steps", "9", "--ckpt_path", "last"])
    last.write_bytes(saved)  # as if the process died after logging steps 5..8 but before saving them
    main(["fit", *tiny_args(corpus, logs), "--trainer.max_steps", "12", "--ckpt_path", "last"])
    steps = list(scalars(logs / "tiny", "train/loss_step"))
    assert steps == list(range(12))


@pytest.mark.slow  # two predict subprocesses
def test_predict_prints_the_text_and_crafts_own_notes_only(tiny_run, tmp_path):
    """No Lightning banners, tips, progress bars or library deprecations around the generated text;
    CRAFT_DEBUG=1 brings them back."""
    ckpt = tmp_path / "last.ckpt"
    shutil.copy(tiny_run[0], ckpt)  # predict writes its samples beside the checkpoint's folder
    args = [*python_cmd(), "predict", "--ckpt_path", str(ckpt), "--data.prompts", '["the "]']
    args += ["--model.sampling.max_new_tokens", "20", "--model.sampling.top_k", "5"]
    args += ["--model.sampling.temperature", "0"]
    run = subprocess.run(args, capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("--- prompt: 'the '\nthe ") and len(run.stdout.strip().splitlines()) == 2
    noise = [line for line in run.stderr.splitlines() if line.strip() and not line.startswith("craft: ")]
    assert not noise, run.stderr
    assert "GFLOP/s" not in run.stderr  # the FLOP probe runs for fit only
    debug = subprocess.run(
        args, capture_output=True, text=True, cwd=tmp_path, timeout=300, env={**os.environ, "CRAFT_DEBUG": "1"}
    )
    assert "GPU available" in debug.stderr + debug.stdout and debug.stdout.count("--- prompt") == 1


def test_test_scores_the_held_out_test_split_and_refuses_any_other(corpus, tmp_path, capsys):
    """``craft test`` reports test/* on the corpus's last ``test_fraction``, which training and
    validation never saw; a checkpoint is tested only with the fraction it was trained with."""
    logs = tmp_path / "logs"
    held_out = ["--data.test_fraction", "0.1"]
    main(["fit", *tiny_args(corpus, logs, *held_out), "--trainer.max_steps", "10"])
    args = [*tiny_args(corpus, logs, *held_out), "--ckpt_path", "last", "--trainer.limit_test_batches", "2"]
    tested = CraftCLI(args=["test", *args]).trainer.callback_metrics
    validated = CraftCLI(args=["validate", *tiny_args(corpus, logs, *held_out), "--ckpt_path", "last"])
    assert {"test/loss", "test/bpc", "test/ppl"} <= set(tested) and not any(k.startswith("val/") for k in tested)
    assert float(tested["test/bpc"]) != float(validated.trainer.callback_metrics["val/bpc"])
    dm = validated.datamodule
    text = corpus.read_text()
    test_text = dm.tokenizer.decode(dm.test_parts[0].tolist())
    val_text = dm.tokenizer.decode(dm.val_parts[0].tolist())
    assert dm.tokenizer.decode(dm.train_parts[0].tolist()) + val_text + test_text == text
    assert 0.08 < len(test_text) / len(text) < 0.12 and 0.08 < len(val_text) / len(text) < 0.12
    capsys.readouterr()
    with pytest.raises(SystemExit):  # no test split now: said in one line
        main(["test", *tiny_args(corpus, logs), "--ckpt_path", "last"])
    assert "this data has no test split: train with --data.test_fraction" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # another fraction: the test text was partly trained on
        main(["test", *tiny_args(corpus, logs, "--data.test_fraction", "0.2"), "--ckpt_path", "last"])
    assert "trained with data.test_fraction 0.1, not 0.2" in capsys.readouterr().err
