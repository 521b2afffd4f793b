"""The one exception a user can cause. The CLI turns it into one line and exit code 2."""


class CircuitsError(ValueError):
    """Bad input: unknown protocol or key, a value out of range, an impossible task."""
