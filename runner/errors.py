"""The one error the composition root raises for bad input."""


class ConfigError(ValueError):
    """A problem with the user's config or data, reported as one line before any compute."""
