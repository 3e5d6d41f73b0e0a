"""LanguageModel: metrics that must mean the same thing for every tokenizer."""

import math

import lightning as L
import pytest
import torch

from craft import LanguageModel
from craft.data import TextDataModule
from craft.data.tokenizers import BPETokenizer, CharTokenizer


@pytest.mark.parametrize("tokenizer", [CharTokenizer(), BPETokenizer(vocab_size=320)], ids=["char", "bpe"])
def test_uniform_model_gets_the_expected_bits_per_character(corpus, tokenizer):
    block = 16
    dm = TextDataModule(str(corpus), block_size=block, batch_size=8, tokenizer=tokenizer)
    V = dm.prepare_vocab()
    lm = LanguageModel(vocab_size=V, block_size=block, d_model=32, n_layers=2, n_head=4, d_hid=64)
    with torch.no_grad():
        lm.model.tok_emb.weight.zero_()  # the tied head then gives all-zero logits: uniform over V
    trainer = L.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False, accelerator="cpu")
    (metrics,) = trainer.validate(lm, dm)
    # Validation scores the targets of non-overlapping windows: tokens 1 .. n*block of the val split.
    n = len(range(0, len(dm.val_ids) - block, block))
    targets = dm.val_ids[1 : 1 + n * block].tolist()
    chars = len(dm.tokenizer.decode(targets))  # the corpus is ASCII: every token decodes on its own
    assert metrics["val/loss"] == pytest.approx(math.log(V), rel=1e-5)
    assert metrics["val/bpc"] == pytest.approx(math.log2(V) * len(targets) / chars, rel=1e-5)
    if isinstance(tokenizer, BPETokenizer):
        assert chars > 1.5 * len(targets)  # BPE tokens span several characters, and bpc knows it


def test_every_architecture_field_is_a_documented_model_argument_with_the_configs_default():
    """GPTConfig is the one source: LanguageModel's arguments (what --help and --print_config show)
    and the architecture checks of resume, predict and export all follow from its fields."""
    import dataclasses
    import inspect

    from jsonargparse import ArgumentParser

    from craft.model import GPTConfig
    from craft.model.config import ARCHITECTURE_FIELDS

    parser = ArgumentParser()
    parser.add_class_arguments(LanguageModel, "model")
    help_text = parser.format_help()
    defaults = parser.get_defaults().model
    doc = GPTConfig.__doc__
    for f in dataclasses.fields(GPTConfig):
        assert f"--model.{f.name}" in help_text, f"GPTConfig.{f.name} is not an argument of LanguageModel"
        if f.default is not dataclasses.MISSING:
            assert defaults[f.name] == f.default, f.name
        assert f"        {f.name}: " in doc, f"GPTConfig's docstring does not document {f.name}"
    assert "norm" not in inspect.signature(LanguageModel.__init__).parameters  # not listed twice
    assert set(ARCHITECTURE_FIELDS) == {f.name for f in dataclasses.fields(GPTConfig)} - {"dropout"}
    lm = LanguageModel(vocab_size=11, block_size=8, d_model=16, n_layers=1, n_head=2, d_hid=32, bias=False)
    assert lm.config == GPTConfig(vocab_size=11, block_size=8, d_model=16, n_layers=1, n_head=2, d_hid=32, bias=False)


def test_generation_settings_are_validated_when_the_model_is_built():
    from craft.callbacks import SampleGeneration
    from craft.errors import ConfigError

    with pytest.raises(ConfigError, match="max_new_tokens must be >= 0, got -5"):
        LanguageModel(vocab_size=11, sampling={"max_new_tokens": -5})
    with pytest.raises(ConfigError, match="temperature must be >= 0"):
        SampleGeneration(sampling={"temperature": -1})


def test_checkpoints_from_before_the_sampling_config_keep_their_settings():
    """Their sampling fields sat at the top of the hyperparameters: they become the config."""
    lm = LanguageModel(vocab_size=11, d_model=16, n_layers=1, n_head=2, d_hid=32, temperature=0.5, top_k=7)
    assert (lm.sampling.temperature, lm.sampling.top_k, lm.sampling.seed) == (0.5, 7, 1337)
    assert "temperature" not in lm.hparams and lm.hparams["sampling"]["top_k"] == 7
    again = LanguageModel(**lm.hparams)  # what load_from_checkpoint does with the saved hyperparameters
    assert again.sampling == lm.sampling


def test_a_checkpoint_run_builds_its_tokenizer_once(tiny_run, tmp_path, monkeypatch):
    """predict/validate/test: the CLI builds the data module's tokenizer from the checkpoint's
    state; loading the checkpoint keeps that one instead of building a second."""
    from craft.cli import CraftCLI
    from craft.data.tokenizers import Tokenizer
    from tests.helpers import tiny_args

    ckpt, corpus = tiny_run
    built = []
    original = Tokenizer.from_state
    monkeypatch.setattr(Tokenizer, "from_state", staticmethod(lambda state: built.append(1) or original(state)))
    cli = CraftCLI(args=["validate", *tiny_args(corpus, tmp_path / "logs"), "--ckpt_path", str(ckpt)])
    assert cli.model.tokenizer is cli.datamodule.tokenizer and built == []


def test_a_checkpoint_saved_before_the_sampling_config_loads(tiny_run, tmp_path):
    """Its hyperparameters hold the sampling fields at the top, beside LightningCLI's instantiator
    (which refuses fields the class no longer has): load_from_checkpoint still builds it."""
    ckpt = torch.load(tiny_run[0], weights_only=True)
    hp = ckpt["hyper_parameters"]
    assert "_instantiator" in hp
    old = {**{k: v for k, v in hp.items() if k != "sampling"}, "temperature": 0.5, "top_k": 7, "max_new_tokens": 9}
    torch.save({**ckpt, "hyper_parameters": old}, tmp_path / "old.ckpt")
    lm = LanguageModel.load_from_checkpoint(tmp_path / "old.ckpt")
    assert (lm.sampling.temperature, lm.sampling.top_k, lm.sampling.max_new_tokens) == (0.5, 7, 9)
    assert not lm.training and lm.tokenizer.state() == ckpt["tokenizer"]
    new = LanguageModel.load_from_checkpoint(tiny_run[0])
    assert all(torch.equal(a, b) for a, b in zip(lm.state_dict().values(), new.state_dict().values(), strict=True))
