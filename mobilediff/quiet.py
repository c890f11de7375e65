"""Library noise a user cannot act on kept off the terminal: diffusers' and transformers' notices, torch.onnx's
missing-torchvision lines, deprecation warnings of the export stacks. mobilediff's own warnings are unaffected."""
from __future__ import annotations

import contextlib
import logging
import os
import warnings

# loggers whose INFO/WARNING lines describe the libraries' internals, not the user's input
_LOGGERS = ("torchao", "diffusers", "transformers", "torch.onnx", "torch._export", "torch.export", "onnxscript",
            "executorch", "coremltools", "torch.utils._pytree", "accelerate")
# warning categories raised inside those libraries on every run (deprecations of their own internals)
_CATEGORIES = (FutureWarning, DeprecationWarning)


def quiet_libraries() -> None:
    """Silence library chatter for the rest of the process (the CLI, benchmark scripts and fixtures call it once)."""
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
    os.environ.setdefault("TORCH_CPP_LOG_LEVEL", "ERROR")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    # torch configures its own loggers ("onnx", "export") when it is imported: ask it, through its variable, for
    # errors only (an explicit TORCH_LOGS of the user's wins)
    os.environ.setdefault("TORCH_LOGS", "-onnx,-export")
    for name in _LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    for category in _CATEGORIES:
        warnings.filterwarnings("ignore", category=category)
    # torch.export / onnx conversion UserWarnings about tracing internals (never about the user's model or input)
    for module in ("torch", "onnxscript", "executorch", "coremltools", "torchao", "diffusers", "transformers"):
        warnings.filterwarnings("ignore", category=UserWarning, module=module)
    try:  # transformers and diffusers keep their own verbosity switches beside the logging module
        import diffusers.utils.logging as dlog
        import transformers.utils.logging as tlog

        dlog.set_verbosity_error()
        tlog.set_verbosity_error()
        dlog.disable_progress_bar()
        tlog.disable_progress_bar()
    except ImportError:  # pragma: no cover - both are dependencies
        pass


@contextlib.contextmanager
def quiet_stderr():
    """Send file descriptor 2 to /dev/null for the duration (native libraries that write to it directly, e.g.
    ExecuTorch's CPU-info probe when a program loads); Python's own sys.stderr is flushed first and restored."""
    import sys

    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
