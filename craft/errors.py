"""One exception type for problems the user can fix: the CLI prints it as a single line."""


class CraftError(Exception):
    """A problem with the user's input, config, corpus or checkpoint, with what to do about it."""


class ConfigError(CraftError, ValueError):
    """An invalid combination of settings."""
