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
    # transformers and diffusers keep their own verbosity and progress-bar switches beside the logging module: set
    # when each is imported (now if it already is), so a command that never loads a model never pays their import
    for name in _SWITCHES:
        _after_import(name, _silence)


# library logging modules whose own switches quiet_libraries sets once they are imported
_SWITCHES = ("diffusers.utils.logging", "transformers.utils.logging")


def _silence(module) -> None:
    module.set_verbosity_error()
    module.disable_progress_bar()


def _after_import(name: str, action) -> None:
    """Call ``action(module)`` once module ``name`` is imported: at once when it already is, otherwise right after
    its import finishes (a finder ahead of the others on sys.meta_path wraps that module's loader, then leaves)."""
    import importlib.abc
    import importlib.util
    import sys

    if name in sys.modules:
        action(sys.modules[name])
        return

    class Finder(importlib.abc.MetaPathFinder):
        def find_spec(self, fullname, path, target=None):
            if fullname != name:
                return None
            sys.meta_path.remove(self)  # find the real spec without this finder, and never act twice
            spec = importlib.util.find_spec(fullname)
            if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
                return spec
            exec_module = spec.loader.exec_module

            def exec_and_act(module):
                exec_module(module)
                action(module)

            spec.loader.exec_module = exec_and_act
            return spec

    sys.meta_path.insert(0, Finder())


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
