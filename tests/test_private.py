"""Guards for the private Lightning and PyTorch names craft relies on (craft/private.py), and a
check that no other craft module touches private Lightning or PyTorch names."""

import ast
import inspect
from pathlib import Path

import lightning as L
from lightning.pytorch.cli import LightningCLI

from craft.private import boxed_runner, tensor_version
from tests.helpers import ROOT


def test_lightning_still_merges_ckpt_hparams_through_parse_ckpt_path():
    """If this fails, Lightning renamed or dropped the hook craft switches off: re-check that a
    --ckpt_path file's hyperparameters no longer override the command line before changing it."""
    assert callable(getattr(LightningCLI, "_parse_ckpt_path", None)), "LightningCLI._parse_ckpt_path is gone"
    assert "self._parse_ckpt_path()" in inspect.getsource(LightningCLI.__init__)


def test_the_logging_step_counter_still_exists():
    trainer = L.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False)
    assert isinstance(trainer.fit_loop.epoch_loop._batches_that_stepped, int), "the logging-step counter moved"


def test_only_private_touches_private_lightning_names():
    """Attribute access `x._name` on a trainer, loop, CLI, connector or monitor object, anywhere in craft/."""
    suspects = ("trainer", "loop", "cli", "connector", "monitor", "throughput", "strategy", "super()")
    found = []
    for path in sorted((ROOT / "craft").rglob("*.py")):
        if path.name == "private.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
                owner = ast.unparse(node.value).lower()
                if any(s in owner for s in suspects) and owner != "self":
                    found.append(f"{Path(path).relative_to(ROOT)}:{node.lineno}: {ast.unparse(node)}")
    assert not found, found


def test_aoti_packages_still_run_a_flat_list_through_their_loader():
    """Point 3: ``AOTICompiledModel.__call__`` flattens its inputs and calls ``loader.boxed_run``;
    if either moves, the compiled step must go back to calling the package."""
    import torch
    from torch._inductor.package.package import AOTICompiledModel

    assert callable(getattr(torch._C._aoti.AOTIModelPackageLoader, "boxed_run", None)), "boxed_run is gone"
    assert "self.loader.boxed_run(" in inspect.getsource(AOTICompiledModel.__call__)
    assert boxed_runner(object()) is None  # a package without a loader: called as it is


def test_tensor_version_follows_in_place_writes_only():
    """Point 4: what the Engine keys its compiled steps on. An optimizer step, a state-dict load
    and a ``copy_`` change it; reading the weights, or a forward pass, does not."""
    import torch

    model = torch.nn.Linear(4, 4)
    before = [tensor_version(t) for t in model.state_dict().values()]
    model(torch.randn(2, 4))
    assert [tensor_version(t) for t in model.state_dict().values()] == before
    model.weight.sum().backward()
    torch.optim.SGD(model.parameters(), lr=0.1).step()
    after_step = [tensor_version(t) for t in model.state_dict().values()]
    assert after_step != before
    model.load_state_dict(torch.nn.Linear(4, 4).state_dict())
    assert [tensor_version(t) for t in model.state_dict().values()] != after_step


# The documented AOTInductor API, whose path only looks private (craft/private.py, point 3).
DOCUMENTED = {"torch._inductor.aoti_compile_and_package", "torch._inductor.aoti_load_package"}


def test_only_private_touches_private_torch_names():
    """``torch._x`` anywhere in a dotted name, an import of one, or a tensor's ``_version``."""
    found = []
    for path in sorted((ROOT / "craft").rglob("*.py")):
        if path.name == "private.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Attribute):  # each prefix too: torch._inductor of torch._inductor.x
                names.append(ast.unparse(node))
            if isinstance(node, ast.ImportFrom) and node.module:
                names += [f"{node.module}.{a.name}" for a in node.names]
            if isinstance(node, ast.Import):
                names += [a.name for a in node.names]
            for name in names:
                parts = name.split(".")
                private = any(p.startswith("_") and not p.startswith("__") for p in parts[1:])
                if (name.startswith("torch.") and private and not any(d.startswith(name) for d in DOCUMENTED)) or (
                    parts[-1] == "_version"
                ):
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {name}")
    assert not found, found
