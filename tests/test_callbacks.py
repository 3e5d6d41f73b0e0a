"""Callbacks tested through real tiny runs: TensorBoard event files are read back."""

import json

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from craft.callbacks.samples import markdown_code_block
from craft.cli import main
from tests.helpers import tiny_args


def events(run_dir):
    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    return acc


def test_run_logs_losses_rates_lr_and_samples(corpus, tmp_path, capsys):
    logs = tmp_path / "logs"
    main(
        [
            "fit",
            *tiny_args(corpus, logs),
            "--trainer.max_steps",
            "12",
            "--samples.every_n_steps",
            "5",
            "--samples.sampling.max_new_tokens",
            "40",
            "--throughput.window_size",
            "2",
            "--throughput.peak_flops",  # measured by the matmul probe, which tiny_args skips
            "null",
        ]
    )
    acc = events(logs / "tiny")
    scalars = set(acc.Tags()["scalars"])
    for tag in (
        "train/loss_step",
        "train/loss_epoch",
        "val/loss",
        "val/bpc",
        "val/ppl",
        "train/tokens_per_sec",
        "train/mfu",
        "val/tokens_per_sec",
        "lr-AdamW/pg1",
        "hardware/peak_flops",
        "hp/val_bpc",
    ):
        assert tag in scalars, tag
    assert all(0 < e.value < 1.5 for e in acc.Scalars("train/mfu"))
    assert all(e.value > 0 for e in acc.Scalars("train/tokens_per_sec"))
    samples = acc.Tensors("samples/0/text_summary")
    assert [s.step for s in samples] == [5, 10, 12]  # every 5 steps and at the end
    text = samples[-1].tensor_proto.string_val[0].decode()
    assert text.startswith("```\n") and text.endswith("\n```")
    assert "\n" in text[4:-4] or len(text) > 40
    assert "sample at step 10" in capsys.readouterr().out
    summary = json.loads((logs / "tiny" / "summary.json").read_text())
    assert summary["global_step"] == 12
    assert summary["tokens_seen"] == 12 * 8 * 16
    assert summary["val_bpc"] == pytest.approx(acc.Scalars("val/bpc")[-1].value, abs=1e-3)
    assert summary["last_checkpoint"].endswith("last.ckpt")
    assert summary["peak_flops_source"] == "measured matmul" and summary["peak_flops"] > 1e9


def test_training_clock_leaves_validation_out_and_survives_a_resume(corpus, tmp_path):
    from craft.compare import val_curve

    logs = tmp_path / "logs"
    # Each validation: 2 batches, each made 0.5 s slower. The clock must leave that second out.
    slow = '{"class_path": "tests.helpers.SlowValidation", "init_args": {"seconds": 0.5}}'
    main(["fit", *tiny_args(corpus, logs), "--trainer.callbacks+", slow, "--trainer.max_steps", "10"])
    resumed = ["--trainer.max_steps", "15", "--ckpt_path", "last"]
    main(["fit", *tiny_args(corpus, logs), "--trainer.callbacks+", slow, *resumed])
    acc = events(logs / "tiny")
    clock = acc.Scalars("time/train_seconds")
    val = acc.Scalars("val/bpc")
    assert [e.step for e in clock] == [e.step for e in val] == [4, 9, 14]
    seconds = val_curve(logs / "tiny", tokens_per_step=8 * 16)["seconds"]
    assert seconds == [e.value for e in clock]
    assert 0 < seconds[0] < seconds[1] < seconds[2]  # the resumed launch counts on from its checkpoint
    # Between the first two validations (one launch) the wall clock also ran the second validation.
    assert seconds[1] - seconds[0] < val[1].wall_time - val[0].wall_time - 0.9


def test_lr_follows_warmup_then_cosine(corpus, tmp_path):
    logs = tmp_path / "logs"
    main(
        [
            "fit",
            *tiny_args(corpus, logs),
            "--trainer.max_steps",
            "20",
            "--model.lr",
            "0.01",
            "--model.min_lr",
            "0.001",
            "--model.warmup_steps",
            "4",
        ]
    )
    lrs = [e.value for e in events(logs / "tiny").Scalars("lr-AdamW/pg1")]
    assert lrs[:4] == sorted(lrs[:4]) and max(lrs) == pytest.approx(0.01, rel=1e-6)
    assert lrs[4:] == sorted(lrs[4:], reverse=True) and lrs[-1] >= 0.001


def test_sampling_does_not_change_training(corpus, tmp_path):
    """Sampling uses its own generator and restores train mode: losses are bitwise identical."""
    losses = {}
    for name, every in (("with", "3"), ("without", "0")):
        logs = tmp_path / name
        main(
            [
                "fit",
                *tiny_args(corpus, logs),
                "--trainer.max_steps",
                "10",
                "--model.dropout",
                "0.1",
                "--samples.every_n_steps",
                every,
                "--samples.at_end",
                "false" if every == "0" else "true",
            ]
        )
        losses[name] = [(e.step, e.value) for e in events(logs / "tiny").Scalars("train/loss_step")]
    assert len(losses["with"]) == 10
    assert losses["with"] == losses["without"]


def test_throughput_arithmetic_with_a_controlled_clock(corpus, tmp_path, monkeypatch):
    """Every clock read advances 0.5 s, so each batch takes exactly 0.5 s of 'training'."""
    import craft.callbacks.throughput as tm

    class Clock:
        now = 0.0

        def perf_counter(self):
            Clock.now += 0.5
            return Clock.now

    monkeypatch.setattr(tm, "time", Clock())
    logs = tmp_path / "logs"
    main(
        [
            "fit",
            *tiny_args(corpus, logs),
            "--trainer.max_steps",
            "8",
            "--trainer.limit_val_batches",
            "0",
            "--samples.every_n_steps",
            "0",
            "--samples.at_end",
            "false",
            "--throughput.window_size",
            "3",
            "--throughput.peak_flops",
            "1e9",
        ]
    )
    acc = events(logs / "tiny")
    tokens_per_batch = 8 * 16
    rates = [e.value for e in acc.Scalars("train/tokens_per_sec")]
    assert rates and all(r == pytest.approx(tokens_per_batch / 0.5) for r in rates)
    from craft import LanguageModel

    lm = LanguageModel.load_from_checkpoint(logs / "tiny" / "checkpoints" / "last.ckpt")
    expected_mfu = tokens_per_batch * lm.model.flops_per_token() / 0.5 / 1e9
    assert all(e.value == pytest.approx(expected_mfu, rel=1e-6) for e in acc.Scalars("train/mfu"))
    assert acc.Scalars("hardware/peak_flops")[0].value == pytest.approx(1e9)


def test_markdown_fence_survives_backticks():
    text = "a ``` b\n* not a bullet"
    block = markdown_code_block(text)
    assert block.startswith("````\n") and block.endswith("\n````") and text in block


def test_tiny_run_always_has_a_train_curve(corpus, tmp_path):
    logs = tmp_path / "logs"
    main(["fit", *tiny_args(corpus, logs, log_every=None), "--trainer.max_steps", "6"])  # Lightning's default: 50
    assert len(events(logs / "tiny").Scalars("train/loss_step")) >= 3


def test_lightnings_every_n_train_steps_is_refused_with_craft_s_name_for_it():
    from craft.callbacks import CraftCheckpoint
    from craft.errors import ConfigError

    with pytest.raises(ConfigError, match="every_n_train_steps is not used by craft.*last_every_n_steps"):
        CraftCheckpoint(every_n_train_steps=7)
    assert CraftCheckpoint(last_every_n_steps=7).last_every_n_steps == 7
