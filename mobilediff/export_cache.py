"""A cache of exported and checked component graphs: exporting a component whose graph was made before (the same
weights, code, shapes and settings) copies that graph and its parity record instead of tracing, converting and
checking it again. Students of one teacher share its text encoder and VAE; a re-export that changes only the plan or
one component's quantization re-uses the rest.

Off unless ``MOBILEDIFF_EXPORT_CACHE`` names a folder. An entry's key is the sha256 of everything the graph depends
on: the component's I/O declaration and example dimensions; every submodule's class and, for mobilediff's own, its
source; every attribute of every submodule that is a plain value, a config or a tensor (bytes of every parameter and
buffer); the target, precision and quantization recipe (with the calibration rows of a calibrated one); the attention
budget; the parity seed; the graph's place in the bundle; mobilediff's sources; and the versions of torch and the
export stacks. A module whose state holds anything else (a function, a hook, an object of unknown kind) is never
cached: it is exported as if the cache were off. Entries are written whole into a side folder and renamed into place,
so concurrent exports (test workers, parallel fixture builds) never read half an entry; nothing is ever evicted.
"""
from __future__ import annotations

import dataclasses
import enum
import functools
import hashlib
import inspect
import json
import os
import re
import shutil
import uuid
from pathlib import Path

import torch

ENV = "MOBILEDIFF_EXPORT_CACHE"
ENTRY = "entry.json"
_TORCH_STATE = frozenset({"_parameters", "_buffers", "_modules", "_non_persistent_buffers_set", "training",
                          "_is_full_backward_hook", "_compiled_call_impl"})
_MAX_DEPTH = 6


class Uncacheable(Exception):
    """A value the key cannot describe faithfully: the component is exported without the cache."""


def cache_root() -> Path | None:
    value = os.environ.get(ENV, "").strip()
    return Path(value) if value else None


@functools.lru_cache(maxsize=1)
def _code_version() -> str:
    """sha256 over mobilediff's own sources and the export stacks' versions."""
    from importlib import metadata

    h = hashlib.sha256()
    root = Path(__file__).parent
    for path in sorted(root.rglob("*.py")):
        h.update(path.relative_to(root).as_posix().encode())
        h.update(path.read_bytes())
    for dist in ("torch", "onnx", "onnxscript", "onnxruntime", "executorch", "coremltools", "torchao", "diffusers",
                 "transformers"):
        try:
            h.update(f"{dist}={metadata.version(dist)}".encode())
        except metadata.PackageNotFoundError:
            h.update(f"{dist}=none".encode())
    return h.hexdigest()


def _tensor(h, t: torch.Tensor) -> None:
    t = t.detach()
    h.update(f"tensor:{t.dtype}:{tuple(t.shape)}:".encode())
    if t.numel():
        data = t.contiguous().cpu()
        if data.dtype == torch.bfloat16:
            data = data.view(torch.int16)
        h.update(data.numpy().tobytes())


def _value(h, v, depth: int = 0) -> None:
    """Feed ``v`` to ``h`` unambiguously, or raise Uncacheable."""
    if depth > _MAX_DEPTH:
        raise Uncacheable("nested too deep")
    if v is None or isinstance(v, (bool, int, float, str, bytes)):
        h.update(f"{type(v).__name__}:{v!r};".encode())
    elif isinstance(v, (torch.dtype, torch.device, torch.Size, Path)):
        h.update(f"{type(v).__name__}:{v};".encode())
    elif isinstance(v, re.Pattern):
        h.update(f"pattern:{v.flags}:{v.pattern!r};".encode())
    elif isinstance(v, enum.Enum):
        h.update(f"enum:{type(v).__qualname__}.{v.name};".encode())
    elif isinstance(v, torch.Tensor):
        _tensor(h, v)
    elif isinstance(v, (list, tuple, set, frozenset)):
        items = sorted(v, key=repr) if isinstance(v, (set, frozenset)) else v
        h.update(f"{type(v).__name__}[{len(items)}](".encode())
        for x in items:
            _value(h, x, depth + 1)
        h.update(b")")
    elif isinstance(v, dict):
        h.update(f"dict[{len(v)}](".encode())
        for k in sorted(v, key=repr):
            _value(h, k, depth + 1)
            _value(h, v[k], depth + 1)
        h.update(b")")
    elif inspect.isroutine(v) and _library_function(v):  # e.g. torch.nn.functional.silu kept as an attribute
        h.update(f"function:{v.__module__}.{v.__qualname__};".encode())
        if v.__module__.startswith("mobilediff"):
            h.update(inspect.getsource(v).encode())
    elif isinstance(v, torch.nn.Module):  # a module held outside the tree: its class and its own state
        h.update(f"module:{_class_name(type(v))};".encode())
        _module(h, v, depth + 1)
    elif hasattr(v, "to_json_string") and callable(v.to_json_string):  # a transformers config
        h.update(f"config:{_class_name(type(v))}:{v.to_json_string()};".encode())
    elif dataclasses.is_dataclass(v) and not isinstance(v, type):
        h.update(f"dataclass:{_class_name(type(v))}(".encode())
        _class_source(h, type(v))
        for f in dataclasses.fields(v):
            _value(h, f.name, depth + 1)
            _value(h, getattr(v, f.name), depth + 1)
        h.update(b")")
    elif type(v).__module__.split(".")[0] in ("diffusers", "transformers", "mobilediff") \
            and not inspect.isroutine(v) and not isinstance(v, type):
        # an attention processor and the like: its class (its code is the library's version) and its state
        h.update(f"object:{_class_name(type(v))}(".encode())
        _class_source(h, type(v))
        slots = {name: getattr(v, name, None) for cls in type(v).__mro__ for name in getattr(cls, "__slots__", ())}
        _value(h, {**slots, **getattr(v, "__dict__", {})}, depth + 1)
        h.update(b")")
    else:
        raise Uncacheable(f"{type(v).__module__}.{type(v).__qualname__}")


def _library_function(f) -> bool:
    """A named module-level function of torch, the model libraries or mobilediff (not a lambda, closure or bound
    method of some object): its name and version say what it computes."""
    module = getattr(f, "__module__", None) or ""
    qualname = getattr(f, "__qualname__", "")
    return (module.split(".")[0] in ("torch", "diffusers", "transformers", "mobilediff") and "<" not in qualname
            and getattr(f, "__self__", None) is None or inspect.ismodule(getattr(f, "__self__", None)))


def _class_name(cls) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _class_source(h, cls) -> None:
    """mobilediff's own classes by their source (the rest by their library's version, in :func:`_code_version`)."""
    for klass in cls.__mro__:
        if klass.__module__.startswith("mobilediff"):
            try:
                h.update(inspect.getsource(klass).encode())
            except (OSError, TypeError):
                raise Uncacheable(f"no source for {_class_name(klass)}") from None


def _module(h, module: torch.nn.Module, depth: int = 0) -> None:
    for name, m in module.named_modules(remove_duplicate=False):
        h.update(f"[{name}]{_class_name(type(m))};".encode())
        _class_source(h, type(m))
        for k in sorted(vars(m)):
            if k in _TORCH_STATE:
                continue
            v = vars(m)[k]
            if k.startswith("_") and "hooks" in k:
                if v and "forward" in k:  # a registered forward hook changes what the module computes
                    raise Uncacheable(f"{name or 'module'} has {k}")
                continue
            h.update(f"{k}=".encode())
            _value(h, v, depth + 1)
        for pname, p in m._parameters.items():
            h.update(f"param:{pname};".encode())
            if p is not None:
                _tensor(h, p)
        for bname, b in m._buffers.items():
            h.update(f"buffer:{bname}:{bname in m._non_persistent_buffers_set};".encode())
            if b is not None:
                _tensor(h, b)


def component_key(spec, target: str, precision: str, rel_path: str, recipe, calibration, attention_budget_mib,
                  seed: int) -> str | None:
    """The cache key of one component export, or None when its module cannot be described (exported uncached)."""
    h = hashlib.sha256()
    try:
        h.update(_code_version().encode())
        _value(h, {"spec": spec.to_dict(), "name": spec.name, "ranges": dataclasses.asdict(spec.ranges),
                   "target": target, "precision": precision, "path": rel_path, "budget": attention_budget_mib,
                   "seed": seed})
        _value(h, recipe)
        _value(h, _settings(target))
        if recipe is not None and recipe.calibrated and spec.name in recipe.components:
            _value(h, calibration.batches(spec.name))
        _module(h, spec.module)
    except Uncacheable:
        return None
    return h.hexdigest()


def _settings(target: str) -> dict:
    """The target module's settings (its upper-case constants of plain values: e.g. ONNX's external-data threshold),
    which a caller may change for a run."""
    from mobilediff.targets import get_target

    mod = get_target(target)
    return {k: v for k, v in sorted(vars(mod).items())
            if k.isupper() and isinstance(v, (bool, int, float, str, tuple, type(None)))}


def _copy(src: Path, dst: Path) -> None:
    """A graph file, or a graph folder (a Core ML package), to ``dst``."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    if src.is_dir():
        shutil.copytree(src, dst)
    else:
        shutil.copy2(src, dst)


def restore(key: str, bundle: Path) -> dict | None:
    """Copy a cached entry's files into ``bundle``; returns its record {"facts", "parity", "seconds"}, or None (a
    miss, or an entry that cannot be read: exported anew)."""
    root = cache_root()
    entry = root / key if root is not None else None
    if entry is None or not (entry / ENTRY).is_file():
        return None
    try:
        record = json.loads((entry / ENTRY).read_text())
        for rel in record["files"]:
            _copy(entry / "files" / rel, bundle / rel)
    except (OSError, ValueError, KeyError):
        return None
    return record


def store(key: str, bundle: Path, files: list[str], facts: dict, parity: dict, seconds: float) -> None:
    """Keep an export's files and record under ``key`` (written aside, then renamed into place; a failure to write
    the cache never fails the export)."""
    root = cache_root()
    if root is None:
        return
    tmp = root / f".{key}.{uuid.uuid4().hex}.partial"
    try:
        for rel in files:
            _copy(bundle / rel, tmp / "files" / rel)
        (tmp / ENTRY).write_text(json.dumps({"files": files, "facts": facts, "parity": parity, "seconds": seconds}))
        os.rename(tmp, root / key)
    except (OSError, TypeError, ValueError):
        pass  # another process stored the same entry first, or the cache folder is not writable
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
