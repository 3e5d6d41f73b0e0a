"""Every row of the bad-input table: a specific one-line message, the exit code, nothing damaged."""

import hashlib
import os
import shutil
import warnings
from pathlib import Path

import pytest

from craft.__main__ import main
from tests.bad_inputs import CASES, train_checkpoint


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("trained")
    cwd = os.getcwd()
    os.chdir(folder)
    try:
        train_checkpoint(folder)
    finally:
        os.chdir(cwd)
    return folder


def snapshot(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*") if p.is_file()
    }


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c.group}: {c.name}")
def test_bad_input(case, trained, tmp_path, monkeypatch, capsys):
    if case.needs_checkpoint:
        shutil.copytree(trained, tmp_path, dirs_exist_ok=True)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))  # as for `python -m craft` run from this folder
    args = case.args(tmp_path)
    before = snapshot(tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            main(args)
            code = 0
        except SystemExit as e:
            code = e.code
    out = capsys.readouterr()
    text = out.err + out.out + "\n".join(str(w.message) for w in caught)
    assert code == case.code, text[-3000:]
    assert case.expect in text
    assert "Traceback" not in text
    if code:
        assert out.err.strip().splitlines()[-1].startswith("craft: error:")
    after = snapshot(tmp_path)
    changed = [name for name, digest in before.items() if after.get(name) != digest]
    assert not changed, f"files damaged by a failed run: {changed}"
    assert not (tmp_path / "imported").exists(), "a module named by a checkpoint was imported"
