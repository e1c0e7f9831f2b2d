"""Errors shared across the package."""


class ConfigError(ValueError):
    """An impossible or unknown config value; the message names the key (`config.a.b=...`).

    Raised before anything long starts: by `config_checks.validate`, or, for what only the data
    can tell (an answer count no answer reaches, a tokenizer file that is not there), while the
    input is set up, before the first step.
    """


class MissingConfigFile(ConfigError, FileNotFoundError):
    """A config key names a file or directory that is not there (`config.init_from`,
    `config.data.tokenizer.path`): a config error that is also a missing file."""
