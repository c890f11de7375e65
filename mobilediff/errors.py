"""The one error type the CLI turns into a single line and a non-zero exit."""


class MobilediffError(Exception):
    """Bad input or an impossible request; its message is one line that names the problem."""
