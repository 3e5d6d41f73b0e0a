"""fit --init_from: a new run from a trained model's weights, on another corpus."""

import lightning as L
import pytest

from craft import LanguageModel
from craft.cli import main
from craft.data import TextDataModule
from tests.helpers import make_text, scalars, tiny_args


def source_val_loss(ckpt, corpus) -> float:
    """The trained model's val loss on ``corpus``, as a validation run of the new run's data computes it."""
    lm = LanguageModel.load_from_checkpoint(ckpt, weights_only=True)
    dm = TextDataModule(str(corpus), tokenizer=lm.tokenizer, block_size=16, batch_size=8)
    trainer = L.Trainer(logger=False, limit_val_batches=2, enable_progress_bar=False, enable_model_summary=False)
    return trainer.validate(lm, datamodule=dm, verbose=False)[0]["val/loss"]


def test_init_from_starts_a_new_run_at_the_source_models_val_loss(tiny_run, tmp_path):
    ckpt, _ = tiny_run
    other = tmp_path / "other.txt"
    other.write_text(make_text(20_000, seed=11), encoding="utf-8")
    args = tiny_args(other, tmp_path / "logs", experiment="adapted", log_every=1)
    main(["fit", *args, "--init_from", str(ckpt), "--trainer.max_steps", "10"])

    run = tmp_path / "logs" / "adapted"
    val = scalars(run, "val/loss")
    # Step 0: the weights as they came; then every 5 steps (Lightning logs those at steps 4 and 9).
    assert sorted(val) == [0, 4, 9]
    assert val[0] == pytest.approx(source_val_loss(ckpt, other), abs=1e-6)
    lm = LanguageModel.load_from_checkpoint(run / "checkpoints" / "last.ckpt", weights_only=True)
    source = LanguageModel.load_from_checkpoint(ckpt, weights_only=True)
    assert lm.tokenizer.state() == source.tokenizer.state()
    assert lm.config == source.config
    assert val[9] < val[4] < val[0]  # and it trains on from there


def test_init_from_refuses_characters_outside_the_vocabulary_in_one_line(tiny_run, tmp_path, capsys):
    ckpt, _ = tiny_run
    other = tmp_path / "other.txt"
    other.write_text(make_text(5_000, seed=2) + " Straße €5", encoding="utf-8")
    with pytest.raises(SystemExit) as e:
        main(["fit", *tiny_args(other, tmp_path / "logs"), "--init_from", str(ckpt), "--trainer.max_steps", "2"])
    assert e.value.code == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("craft: error")]
    assert len(err) == 1 and str(other) in err[0]
    assert "character(s) outside the model's" in err[0] and "'ß' (1x)" in err[0] and "'€' (1x)" in err[0]
    assert not (tmp_path / "logs" / "tiny" / "checkpoints" / "last.ckpt").exists()


def test_init_from_and_ckpt_path_together_are_refused(tiny_run, tmp_path, capsys):
    ckpt, corpus = tiny_run
    with pytest.raises(SystemExit):
        main(["fit", *tiny_args(corpus, tmp_path / "logs"), "--init_from", str(ckpt), "--ckpt_path", str(ckpt)])
    assert "give one" in capsys.readouterr().err
