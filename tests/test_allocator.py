"""`python -m craft` runs under tcmalloc where installed; CRAFT_ALLOCATOR picks or refuses it."""

import os
import subprocess
import sys

import pytest

from craft.allocator import _DONE, ENV, chosen_library, find_tcmalloc
from tests.helpers import python_cmd

# A process that asks for the allocator, then reports whether tcmalloc is mapped into it.
PROBE = (
    "from craft.allocator import reexec_with_allocator; reexec_with_allocator(); "
    "print('tcmalloc' in open('/proc/self/maps').read())"
)
linux_tcmalloc = pytest.mark.skipif(
    not sys.platform.startswith("linux") or find_tcmalloc() is None, reason="needs Linux with tcmalloc installed"
)


def env(**changes: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if k not in (ENV, _DONE, "LD_PRELOAD")}
    return {**base, **changes}


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="LD_PRELOAD is Linux's")
def test_which_library_each_setting_chooses():
    assert chosen_library(env()) == find_tcmalloc()
    assert chosen_library(env(CRAFT_ALLOCATOR="system")) is None
    assert chosen_library(env(CRAFT_ALLOCATOR="/opt/lib/libmine.so")) == "/opt/lib/libmine.so"
    assert chosen_library(env(LD_PRELOAD="/usr/lib/libjemalloc.so.2")) is None  # the user's choice stands
    assert chosen_library(env(**{_DONE: "libtcmalloc_minimal.so.4"})) is None  # the re-executed process


@linux_tcmalloc
def test_the_process_is_re_executed_under_tcmalloc_once():
    out = subprocess.run([sys.executable, "-c", PROBE], env=env(), capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "True"
    assert out.stderr.count("craft: using") == 1 and "CRAFT_ALLOCATOR=system" in out.stderr
    kept = subprocess.run(
        [sys.executable, "-c", PROBE], env=env(CRAFT_ALLOCATOR="system"), capture_output=True, text=True, timeout=60
    )
    assert kept.stdout.strip() == "False" and "craft: using" not in kept.stderr


@pytest.mark.slow  # a `craft fit --help` subprocess, which imports Lightning
@linux_tcmalloc
def test_the_cli_runs_under_tcmalloc():
    out = subprocess.run([*python_cmd(), "fit", "--help"], env=env(), capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "craft: using" in out.stderr and "--model.compiled_decode" in out.stdout


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="LD_PRELOAD is Linux's")
def test_a_missing_allocator_file_is_a_clear_error():
    out = subprocess.run(
        [*python_cmd(), "fit", "--help"],
        env=env(CRAFT_ALLOCATOR="/no/such/libtcmalloc.so"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2
    assert "CRAFT_ALLOCATOR=/no/such/libtcmalloc.so: no such file" in out.stderr


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="LD_PRELOAD is Linux's")
def test_the_tests_run_under_the_allocator_users_get():
    """Tests call the CLI in-process: they must run under what `python -m craft` would pick here."""
    users = find_tcmalloc() if os.environ.get(ENV, "auto") == "auto" else None
    loaded = "tcmalloc" in open("/proc/self/maps").read()
    assert loaded == (users is not None), (
        f"python -m craft would run under {users or 'glibc malloc'}, the tests under "
        f"{'tcmalloc' if loaded else 'glibc malloc'}: run them with make test (python -m craft.allocator pytest)"
    )
