"""One command: every verb under `python -m craft`, one flag style, one error prefix."""

import re
import subprocess
import sys

import pytest

from craft.__main__ import VERBS, main
from tests.helpers import ROOT


def craft(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "craft", *args], capture_output=True, text=True, cwd=ROOT, **kw)


def test_help_lists_every_verb():
    done = craft("--help")
    assert done.returncode == 0, done.stderr
    listed = re.findall(r"^  (\w+) ", done.stdout, flags=re.M)
    assert listed == ["fit", "validate", "test", "predict", "export", "compare", "run"] == list(VERBS)
    assert "craft: using" not in done.stderr  # help starts no allocator re-exec


def test_an_unknown_verb_is_one_line(capsys):
    with pytest.raises(SystemExit) as e:
        main(["trian", "--config", "x.yaml"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "craft: error: unknown verb 'trian': use one of fit, validate, test, predict, export, compare, run "
        "(python -m craft --help)"
    ]


@pytest.mark.parametrize(
    "argv, expect",
    [
        (["export", "--ckpt_path", "x.ckpt"], "the following arguments are required: --out"),
        (["compare"], "the following arguments are required: spec"),
        (["run", "folder", "--max_new_tokens", "many"], "argument --max_new_tokens: invalid int value: 'many'"),
        (["run", "no_such_folder"], "no_such_folder is not an exported craft model (no manifest.json)"),
    ],
)
def test_every_verb_reports_a_mistake_as_one_craft_line(argv, expect, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("craft: error: ") and expect in err[0], err


def test_no_hyphenated_flags_anywhere():
    """One flag style, LightningCLI's: underscores (`--max_new_tokens`, not `--max-new-tokens`)."""
    found = [
        f"{path.relative_to(ROOT)}:{n}"
        for path in (ROOT / "craft").rglob("*.py")
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if re.search(r'add_argument\(\s*"--[a-z]*-', line)
    ]
    assert not found


@pytest.mark.parametrize("module, verb", [("craft.export", "export"), ("craft.compare", "compare")])
def test_the_old_entry_points_still_work_and_say_the_new_spelling(module, verb):
    done = subprocess.run([sys.executable, "-m", module], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert lines[0].startswith(f"craft: note: 'python -m {module}' is now 'python -m craft {verb}'")
    assert lines[-1].startswith("craft: error: the following arguments are required")


def test_the_runtime_takes_the_old_flag_spelling_for_one_release(capsys):
    with pytest.raises(SystemExit):
        main(["run", "no_such_folder", "--max-new-tokens", "5", "--top-k=3"])
    err = capsys.readouterr().err.strip().splitlines()
    assert err[:2] == ["craft: note: --max-new-tokens is now --max_new_tokens", "craft: note: --top-k is now --top_k"]
    assert err[-1].startswith("craft: error: no_such_folder is not an exported craft model")


def test_the_dispatcher_and_run_import_no_torch(tmp_path):
    """`craft run` is for machines without PyTorch: reaching it imports nothing heavy (the export
    tests run it end to end with torch blocked)."""
    from tests.test_export import without_torch

    done = craft("run", "--help", env=without_torch(tmp_path))
    assert done.returncode == 0, done.stderr
    assert "--max_new_tokens" in done.stdout and "--top_k" in done.stdout
