"""Every shipped config and overlay preset trains a few steps, checkpoints, reloads and generates."""

import pytest
import torch

from craft import LanguageModel
from craft.cli import CraftCLI, main
from tests.helpers import ROOT

RUNS = {
    "got_char": ["configs/got_char.yaml"],
    "got_char_modern": ["configs/got_char_modern.yaml"],
    "got_bpe": ["configs/got_bpe.yaml"],
    "quickstart": ["configs/quickstart.yaml"],
    "quickstart+modern": ["configs/quickstart.yaml", "configs/presets/modern.yaml"],
    "quickstart+bpe+modern": ["configs/quickstart.yaml", "configs/presets/bpe.yaml", "configs/presets/modern.yaml"],
}


def short_run(configs: list[str], corpus, log_dir) -> list[str]:
    args = [a for c in configs for a in ("--config", str(ROOT / c))]
    return [
        *args,
        "--experiment",
        "preset",
        "--log_dir",
        str(log_dir),
        "--data.path",
        str(corpus),
        "--data.batch_size",
        "4",
        "--trainer.max_steps",
        "3",
        "--trainer.enable_progress_bar",
        "false",
        "--trainer.enable_model_summary",
        "false",
    ]


@pytest.mark.slow
@pytest.mark.parametrize("name", RUNS)
def test_preset_trains_reloads_and_generates(name, corpus, tmp_path, capsys):
    configs = RUNS[name]
    main(["fit", *short_run(configs, corpus, tmp_path / "logs")])
    ckpt_path = tmp_path / "logs" / "preset" / "checkpoints" / "last.ckpt"
    ckpt = torch.load(ckpt_path, weights_only=True)
    assert ckpt["global_step"] == 3
    hp = ckpt["hyper_parameters"]
    modern = "modern" in name  # the others are the speedrun recipe, the configs' default
    assert (hp["norm"], hp["mlp"], hp["positions"], hp["optimizer"]) == (
        ("rmsnorm", "swiglu", "rotary", "adamw") if modern else ("rmsnorm_free", "relu2", "rotary", "muon")
    )
    assert ckpt["tokenizer"]["type"] == ("bpe" if "bpe" in name else "char")

    # The checkpoint's tokenizer is the one the training data module built: same ids, same text back.
    lm = LanguageModel.load_from_checkpoint(ckpt_path, weights_only=True)
    trained = CraftCLI(args=short_run(configs, corpus, tmp_path / "other"), run=False).datamodule.tokenizer
    text = corpus.read_text() + (" Ünïcödé 🎉" if "bpe" in name else "")  # BPE encodes any text
    assert lm.tokenizer.state() == trained.state()
    assert lm.tokenizer.encode(text) == trained.encode(text)
    assert lm.tokenizer.decode(lm.tokenizer.encode(text)) == text

    corpus.rename(tmp_path / "moved.txt")  # predict needs only the checkpoint
    capsys.readouterr()
    main(
        [
            "predict",
            *short_run(configs, corpus, tmp_path / "logs"),
            "--ckpt_path",
            "last",
            "--model.sampling.max_new_tokens",
            "30",
            "--model.sampling.temperature",
            "0",
            "--data.prompts",
            '["The king"]',
        ]
    )
    out = capsys.readouterr().out
    expected = lm.generate("The king", max_new_tokens=30, temperature=0)
    assert f"The king{expected}" in out


class _Resolved(Exception):
    def __init__(self, config) -> None:
        self.config = config


class _ParseOnly(CraftCLI):
    """The CLI up to the point where it would build anything: the resolved config."""

    def before_instantiate_classes(self) -> None:
        raise _Resolved(self.config[self.subcommand])


def resolved(*configs: str):
    with pytest.raises(_Resolved) as e:
        _ParseOnly(args=["fit", *(a for c in configs for a in ("--config", str(ROOT / c)))])
    config = e.value.config.clone()
    del config["experiment"], config["config"], config["checkpoint.dirpath"]  # the run's name differs
    return config


def in_use(config):
    """The resolved config less the fields its optimizer and schedule never read."""
    config = config.clone()
    if config["model.optimizer"] != "muon":
        del config["model.muon_lr"], config["model.muon_momentum"], config["model.muon_adjust_lr"]
    if config["model.schedule"] != "wsd":
        del config["model.decay_fraction"]
    return config


@pytest.mark.parametrize("name, overlay", [("got_char_modern", "modern"), ("got_bpe", "bpe")])
def test_named_config_is_got_char_plus_its_overlay(name, overlay):
    """The names users type stay, but cannot drift from got_char.yaml and the preset they stand for."""
    named = in_use(resolved(f"configs/{name}.yaml"))
    assert named == in_use(resolved("configs/got_char.yaml", f"configs/presets/{overlay}.yaml"))


@pytest.mark.parametrize("config", ["configs/quickstart.yaml", "configs/got_char.yaml"])
def test_newcomers_get_the_speedrun_recipe(config):
    """The quickstart and the headline run train the best recipe: their own YAML is exactly the
    preset's fields, so the preset's studies (docs/speedrun.md, docs/got_char/) are about them."""
    assert resolved(config) == resolved(config, "configs/presets/speedrun.yaml")


RECIPE_FIELDS = [
    "norm",
    "mlp",
    "positions",
    "bias",
    "qk_norm",
    "tie_head",
    "softcap",
    "zero_init",
    "value_embeds",
    "scalars",
    "unet",
    "optimizer",
    "lr",
    "min_lr",
    "warmup_steps",
    "lr_mults",
    "schedule",
]


@pytest.mark.parametrize("recipe", ["classic", "modern", "speedrun"])
def test_a_recipe_overlay_means_the_same_on_any_base(recipe):
    """Stacked on any config, even one that chose another recipe first, a recipe overlay resolves to
    exactly its own fields: it sets everything it depends on."""
    import yaml

    overlay = f"configs/presets/{recipe}.yaml"
    own = yaml.safe_load((ROOT / overlay).read_text())["model"]
    assert set(RECIPE_FIELDS) <= set(own)
    other = "classic" if recipe == "speedrun" else "speedrun"
    for base in (
        ["configs/quickstart.yaml"],
        ["configs/got_char.yaml"],
        ["configs/got_char.yaml", f"configs/presets/{other}.yaml"],
    ):
        config = resolved(*base, overlay)
        assert {f: config[f"model.{f}"] for f in own} == own, base
