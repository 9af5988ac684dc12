"""The root of errortriage's exception hierarchy and the configuration error."""


class ErrortriageError(Exception):
    """Base class of every error errortriage raises on purpose."""


class ConfigError(ErrortriageError):
    """A setting is missing or invalid; the message names the variable and the fix."""
