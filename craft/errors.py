"""One exception type for problems the user can fix: the CLI prints it as a single line."""


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
