"""One exception type for problems the user can fix: the CLI prints it as a single line."""

import argparse


class CraftError(Exception):
    """A problem with the user's input, config, corpus or checkpoint, with what to do about it."""


class ConfigError(CraftError, ValueError):
    """An invalid combination of settings."""


class NothingToDo(Exception):
    """The command's work is already done (a resume of a finished run): say so and exit 0,
    touching no file."""


class CraftWarning(UserWarning):
    """Something was fixed up for the user (a cropped prompt, a clamped top_k); the run goes on."""


def note(message: str) -> None:
    """One of craft's own one-line notes, on stderr, from the first process only (DDP)."""
    import sys

    from lightning_utilities.core.rank_zero import rank_zero_only

    if getattr(rank_zero_only, "rank", 0) == 0:
        print(f"craft: {message}", file=sys.stderr, flush=True)


class OneLineParser(argparse.ArgumentParser):
    """argparse for craft's own verbs (export, compare): a mistake is one ``craft: error:`` line
    naming the verb's ``--help``, as LightningCLI's verbs report theirs (``craft/cli.py``)."""

    def error(self, message: str):
        self.exit(2, f"craft: error: {' '.join(message.split())} (options: {self.prog} --help)\n")


def run_verb(action):
    """``action()``'s result; a ``CraftError`` becomes one ``craft: error:`` line and exit code 2
    (``CRAFT_DEBUG=1`` shows the traceback)."""
    import os
    import sys

    try:
        return action()
    except CraftError as e:
        if os.environ.get("CRAFT_DEBUG", "") not in ("", "0", "false"):
            raise
        print(f"craft: error: {e}", file=sys.stderr)
        sys.exit(2)


def old_entry_point(module: str, verb: str) -> None:
    """``python -m craft.<module>`` still works for one release, and says the new spelling."""
    import sys

    print(
        f"craft: note: 'python -m {module}' is now 'python -m craft {verb}' (the old name goes in 0.2)", file=sys.stderr
    )
