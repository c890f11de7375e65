"""The one error type the CLI turns into a single line and a non-zero exit."""


class MobilediffError(Exception):
    """Bad input or an impossible request; its message is one line that names the problem."""


def shorten(text: str, limit: int = 120) -> str:
    """``text`` cut to at most ``limit`` characters, an ellipsis marking the cut: a message that quotes user input
    (a prompt, a caption) stays one short line."""
    text = str(text)
    return text if len(text) <= limit else text[: limit - 1] + "…"
