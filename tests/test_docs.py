"""The docs name only what exists: every craft/, tests/, configs/, docs/, benchmarks/ and
notebooks/ path in README.md, docs/**/*.md and benchmarks/README.md is a file or folder here."""

import re

from tests.helpers import ROOT

PATH = re.compile(r"(?<![\w/.<-])((?:craft|tests|configs|docs|benchmarks|notebooks)/[\w./-]*[\w/])")


def test_every_path_the_docs_name_exists():
    docs = [ROOT / "README.md", ROOT / "benchmarks" / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    missing, named = [], 0
    for doc in docs:
        for n, line in enumerate(doc.read_text(encoding="utf-8").splitlines(), 1):
            for path in PATH.findall(line):
                named += 1
                if not ((ROOT / path).exists() or (doc.parent / path).exists()):  # from the root, or the doc
                    missing.append(f"{doc.relative_to(ROOT)}:{n}: {path}")
    assert named > 100  # the pattern still finds the docs' paths
    assert not missing, missing
