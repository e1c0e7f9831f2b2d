"""Errors shared across the package."""

import errno


class ConfigError(ValueError):
    """An impossible or unknown config value; the message names the key (`config.a.b=...`).

    Raised before anything long starts: by `config_checks.validate`, or, for what only the data
    can tell (an answer count no answer reaches, a tokenizer file that is not there), while the
    input is set up, before the first step.
    """


class MissingConfigFile(ConfigError, FileNotFoundError):
    """A config key names a file or directory that is not there (`config.init_from`,
    `config.data.tokenizer.path`): a config error that is also a missing file."""


def is_disk_full(error: BaseException) -> bool:
    """Whether `error`, or an error it was raised from, is the disk running out of space."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno == errno.ENOSPC:
            return True
        if 'No space left on device' in str(error):  # tensorstore reports it as text
            return True
        error = error.__cause__ or error.__context__
    return False
