"""The shared fixtures; everything else tests share is in ``tests/helpers.py``."""

from pathlib import Path

import pytest

from tests.helpers import make_text, tiny_args


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    path = tmp_path / "corpus.txt"
    path.write_text(make_text(40_000), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> tuple[Path, Path]:
    """One tiny run trained once per test session (10 steps): its checkpoint and its corpus.

    Read it, or copy it (``shutil.copytree``) before writing next to it: other tests share it.
    """
    from craft.cli import main

    folder = tmp_path_factory.mktemp("tiny_run")
    corpus = folder / "corpus.txt"
    corpus.write_text(make_text(40_000), encoding="utf-8")
    main(["fit", *tiny_args(corpus, folder / "logs"), "--trainer.max_steps", "10"])
    return folder / "logs" / "tiny" / "checkpoints" / "last.ckpt", corpus
