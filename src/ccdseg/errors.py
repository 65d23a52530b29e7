"""Exceptions whose message is the one line a user sees."""


class CcdsegError(Exception):
    """Base class: the CLI prints ``str(error)`` as one line, without a traceback."""


class ConfigError(CcdsegError, ValueError):
    """A configuration value is missing, of the wrong type or out of range."""


class InputError(CcdsegError):
    """An input file cannot be used; the message names the file and the reason."""

    def __init__(self, path, reason):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{path}: {reason}")


class ModelFileError(InputError):
    """A model file is missing, corrupt or not a ccdseg model."""


class OutputError(CcdsegError):
    """An output cannot be written (exists without overwrite, unwritable directory, disk full)."""
