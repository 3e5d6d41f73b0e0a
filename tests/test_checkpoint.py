"""craft/checkpoint.py: a checkpoint is data, not code. No entry point imports what a checkpoint names."""

import subprocess
import sys

import pytest
import torch

from craft import LanguageModel
from craft.cli import main
from craft.errors import CraftError
from craft.export import main as export_main
from tests.bad_inputs import CANARY, tamper
from tests.helpers import make_text, python_cmd, tiny_args

REFUSED = "craft imports nothing a checkpoint names"


@pytest.fixture
def trained(tiny_run):
    return tiny_run


@pytest.fixture
def beside_canary(tmp_path, monkeypatch):
    """The current folder holds canary.py (it writes `imported` when imported) and is on sys.path,
    as it is for `python -m craft` run from that folder."""
    (tmp_path / "canary.py").write_text(CANARY)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    assert not (tmp_path / "imported").exists(), "a module named by the checkpoint was imported"
    assert "canary" not in sys.modules


TAMPERED = {"part": {"norm": "canary.Nope"}, "tokenizer": {"tokenizer": {"type": "zzz", "class_path": "canary.Nope"}}}
# Lightning's reserved keys: Lightning imports what they name when it rebuilds the module
# (lightning < 2.6.6 ran canary.f from `_instantiator`; 2.6.6 blocks it with a traceback).
RESERVED = {
    "instantiator": {"hparams": {"_instantiator": "canary.f"}},
    "class_path": {"hparams": {"_class_path": "canary.f"}},
    "instantiator with class_path": {
        "hparams": {"_instantiator": "lightning.pytorch.cli.instantiate_module", "_class_path": "canary.f"}
    },
}
ALL = {**TAMPERED, **RESERVED}


def named(what: str) -> str:
    return "canary.Nope" if what in TAMPERED else "canary.f"


def one_line_refusal(capsys, code, name="canary.Nope") -> str:
    assert code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert REFUSED in last and name in last
    return last


@pytest.mark.parametrize("what", ALL)
def test_predict_refuses_a_tampered_checkpoint(trained, beside_canary, capsys, what):
    ckpt = tamper(trained[0], beside_canary / "last.ckpt", **ALL[what])
    with pytest.raises(SystemExit) as e:
        main(["predict", "--ckpt_path", str(ckpt), "--data.prompts", '["a"]'])
    line = one_line_refusal(capsys, e.value.code, named(what))
    if what in TAMPERED:
        option = "--model.norm" if what == "part" else "--data.tokenizer"
        assert f"pass {option} canary.Nope yourself to trust it" in line


@pytest.mark.parametrize("what", ALL)
def test_fit_resume_refuses_a_tampered_checkpoint(trained, beside_canary, capsys, what):
    ckpt = tamper(trained[0], beside_canary / "last.ckpt", **ALL[what])
    args = tiny_args(trained[1], beside_canary / "logs", "--trainer.max_steps", "10", "--ckpt_path", str(ckpt))
    with pytest.raises(SystemExit) as e:
        main(["fit", *args])
    one_line_refusal(capsys, e.value.code, named(what))
    assert not (beside_canary / "logs").exists()


@pytest.mark.parametrize("what", RESERVED)
def test_init_from_and_validate_refuse_lightning_reserved_names(trained, beside_canary, capsys, what):
    ckpt = tamper(trained[0], beside_canary / "last.ckpt", **RESERVED[what])
    logs = beside_canary / "logs"
    runs = {
        "init_from": ["fit", *tiny_args(trained[1], logs, "--trainer.max_steps", "2", "--init_from", str(ckpt))],
        "validate": ["validate", *tiny_args(trained[1], logs), "--ckpt_path", str(ckpt)],
    }
    for args in runs.values():
        with pytest.raises(SystemExit) as e:
            main(args)
        one_line_refusal(capsys, e.value.code, "canary.f")
    assert not logs.exists()


@pytest.mark.parametrize("what", ALL)
def test_load_from_checkpoint_refuses_a_tampered_checkpoint(trained, beside_canary, what):
    ckpt = tamper(trained[0], beside_canary / "last.ckpt", **ALL[what])
    with pytest.raises(CraftError, match=REFUSED) as e:
        LanguageModel.load_from_checkpoint(ckpt)
    if what in TAMPERED:
        field = "norm" if what == "part" else "tokenizer"
        assert f"pass {field}='canary.Nope' to load_from_checkpoint" in str(e.value)


@pytest.mark.parametrize("what", ALL)
def test_export_refuses_a_tampered_checkpoint(trained, beside_canary, capsys, what):
    ckpt = tamper(trained[0], beside_canary / "last.ckpt", **ALL[what])
    with pytest.raises(SystemExit) as e:
        export_main(["--ckpt_path", str(ckpt), "--out", str(beside_canary / "out")])
    line = one_line_refusal(capsys, e.value.code, named(what))
    if what in TAMPERED:
        assert "to craft export yourself" in line
    assert not (beside_canary / "out").exists()


def test_a_datamodule_reserved_name_is_refused(trained, beside_canary):
    """Lightning's LightningDataModule.load_from_checkpoint reads its own section the same way."""
    checkpoint = torch.load(trained[0], weights_only=True)
    checkpoint["datamodule_hyper_parameters"] = {"_instantiator": "canary.f"}
    torch.save(checkpoint, beside_canary / "last.ckpt")
    with pytest.raises(CraftError, match=r"datamodule_hyper_parameters\['_instantiator'\] is 'canary.f'"):
        LanguageModel.load_from_checkpoint(beside_canary / "last.ckpt")


def test_the_untouched_checkpoint_holds_only_the_instantiator_craft_allows(trained):
    """What craft writes itself passes the reserved-key check: the allowlist is exactly that."""
    from craft.checkpoint import CRAFT_RESERVED

    hparams = torch.load(trained[0], weights_only=True)["hyper_parameters"]
    assert {k: v for k, v in hparams.items() if k.startswith("_")} == CRAFT_RESERVED
    assert LanguageModel.load_from_checkpoint(trained[0]).config.n_layers >= 1


def test_installed_lightning_blocks_an_instantiator_by_itself(trained, beside_canary):
    """The second line of defence: the pinned Lightning (>= 2.6.6) refuses on its own when called
    directly, bypassing craft's check. Fails on 2.6.1-2.6.5, which ran canary.f."""
    import lightning as L

    ckpt = tamper(trained[0], beside_canary / "last.ckpt", **RESERVED["instantiator"])
    with pytest.raises(ValueError, match="allowlist"):
        L.LightningModule.load_from_checkpoint.__func__(LanguageModel, ckpt, weights_only=True)


def test_the_lightning_pin_starts_at_the_release_with_the_allowlist():
    """pyproject's floor is the first Lightning that blocks `_instantiator`, and it is installed."""
    from importlib.metadata import version
    from pathlib import Path

    import tomllib
    from packaging.requirements import Requirement
    from packaging.version import Version

    project = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]
    pin = next(Requirement(r) for r in project["dependencies"] if Requirement(r).name == "lightning")
    floors = [Version(s.version) for s in pin.specifier if s.operator == ">="]
    assert floors and min(floors) >= Version("2.6.6"), pin
    for allowed_before in ("2.6.1", "2.6.4", "2.6.5"):
        assert not pin.specifier.contains(allowed_before), f"{pin} still allows {allowed_before}"
    assert pin.specifier.contains(version("lightning")), f"installed lightning {version('lightning')} is outside {pin}"


def test_python_m_craft_predict_from_the_checkpoints_folder_imports_nothing(trained, tmp_path):
    """The issue's scenario for real: `python -m craft` puts the current folder on sys.path."""
    (tmp_path / "canary.py").write_text(CANARY)
    tamper(trained[0], tmp_path / "last.ckpt", norm="canary.Nope")
    run = subprocess.run(
        [*python_cmd(), "predict", "--ckpt_path", "last.ckpt", "--data.prompts", '["a"]'],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
    )
    assert run.returncode == 2, run.stderr[-2000:]
    assert REFUSED in run.stderr and "Traceback" not in run.stderr
    assert not (tmp_path / "imported").exists()


@pytest.mark.parametrize("verb", ["export", "predict"])
def test_python_m_with_a_tampered_instantiator_runs_nothing(trained, tmp_path, verb):
    """The fault as reported: `python -m craft export` (and predict) on a checkpoint whose
    `_instantiator` is `canary.f`, from the folder that holds canary.py."""
    (tmp_path / "canary.py").write_text(CANARY)
    tamper(trained[0], tmp_path / "evil.ckpt", **RESERVED["instantiator"])
    args = ["--ckpt_path", "evil.ckpt", "--out", "out"] if verb == "export" else ["--ckpt_path", "evil.ckpt"]
    cmd = [sys.executable, "-m", "craft", verb, *args]
    run = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert run.returncode == 2, run.stderr[-2000:]
    assert "canary ran" not in run.stderr and "Traceback" not in run.stderr
    assert REFUSED in run.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "imported").exists() and not (tmp_path / "out").exists()


DYT = ["--model.norm", "tests.custom_parts.DyT"]


@pytest.fixture(scope="module")
def dyt_run(tmp_path_factory):
    """A tiny run trained with a norm of the user's own, named by import path."""
    tmp = tmp_path_factory.mktemp("dyt")
    corpus = tmp / "corpus.txt"
    corpus.write_text(make_text(20_000), encoding="utf-8")
    main(["fit", *tiny_args(corpus, tmp / "logs", *DYT), "--trainer.max_steps", "5"])
    return tmp / "logs" / "tiny" / "checkpoints" / "last.ckpt", corpus


def test_checkpoint_with_a_custom_part_predicts_only_when_the_user_names_it(dyt_run, tmp_path, capsys):
    ckpt, corpus = dyt_run
    logs = ckpt.parents[2]
    dyt = DYT
    assert torch.load(ckpt, weights_only=True)["hyper_parameters"]["norm"] == "tests.custom_parts.DyT"
    predict = ["predict", *tiny_args(corpus, logs), "--ckpt_path", "last", "--data.prompts", '["the "]']
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        main(predict)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err == (
        "craft: error: the checkpoint's model.norm is 'tests.custom_parts.DyT', not a built-in norm "
        "(layernorm, rmsnorm, rmsnorm_free); craft imports nothing a checkpoint names: "
        "pass --model.norm tests.custom_parts.DyT yourself to trust it"
    )
    main([*predict, *dyt])
    assert "the " in capsys.readouterr().out
    lm = LanguageModel.load_from_checkpoint(ckpt, norm="tests.custom_parts.DyT")
    assert type(lm.model.ln_f).__name__ == "DyT" and len(lm.generate("the ", max_new_tokens=5)) == 5
    with pytest.raises(CraftError, match="pass norm='tests.custom_parts.DyT' to load_from_checkpoint"):
        LanguageModel.load_from_checkpoint(ckpt)


def test_custom_tokenizer_is_trusted_only_by_name(trained, tmp_path):
    """A tokenizer class of the user's own travels as its class_path and loads where it is named."""
    ckpt = tamper(
        trained[0],
        tmp_path / "custom.ckpt",
        tokenizer={**torch.load(trained[0], weights_only=True)["tokenizer"], "type": "upper_char", "class_path": NAME},
    )
    with pytest.raises(CraftError, match=f"pass tokenizer='{NAME}' to load_from_checkpoint"):
        LanguageModel.load_from_checkpoint(ckpt)
    lm = LanguageModel.load_from_checkpoint(ckpt, tokenizer=NAME)
    assert type(lm.tokenizer).__name__ == "UpperCharTokenizer"
    assert lm.tokenizer.state()["class_path"] == NAME


NAME = "tests.custom_tokenizer.UpperCharTokenizer"


def test_runtime_refuses_a_tokenizer_class(tmp_path):
    from craft.runtime import RunError, load_tokenizer

    with pytest.raises(RunError, match="imports nothing a file names"):
        load_tokenizer({"type": "zzz", "class_path": "canary.Nope"})
    assert "canary" not in sys.modules


def test_tampered_files_differ_only_in_strings(trained, tmp_path):
    """The tampered copies keep every tensor: only the named strings changed."""
    original = torch.load(trained[0], weights_only=True)
    copy = torch.load(tamper(trained[0], tmp_path / "t.ckpt", norm="canary.Nope"), weights_only=True)
    assert copy["hyper_parameters"]["norm"] == "canary.Nope"
    assert all(torch.equal(copy["state_dict"][k], v) for k, v in original["state_dict"].items())


@pytest.mark.slow
def test_a_custom_part_by_import_path_exports_and_runs_without_torch(dyt_run, tmp_path):
    """The DyT norm works in every path: eager generation, and an export whose graph craft.export
    checks against PyTorch before writing; the torch-free runtime then gives PyTorch's greedy text."""
    from craft.runtime import ExportedModel

    ckpt, _ = dyt_run
    export_main(["--ckpt_path", str(ckpt), "--out", str(tmp_path / "out"), *DYT])
    lm = LanguageModel.load_from_checkpoint(ckpt, norm="tests.custom_parts.DyT")
    expected = lm.generate("the ", max_new_tokens=30, temperature=0)
    assert ExportedModel(tmp_path / "out").generate("the ", max_new_tokens=30, temperature=0) == expected
