"""The store of measured configurations rebuilt from result files: every importer of :mod:`mobilediff.configurations`
over the files a results folder holds, written as one ``configurations.jsonl``. ``benchmarks/configurations.py`` runs
:func:`main`, the command over :func:`build`."""
from __future__ import annotations

import json
import struct
from pathlib import Path

from mobilediff.bench.envelope import Parser, record_path
from mobilediff.configurations import (STORE_NAME, Configuration, from_baseline_quality, from_distillation,
                                       from_quantization, from_run_device, from_scaling, write_store)
from mobilediff.errors import MobilediffError


def _read(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise MobilediffError(f"corrupt {path}: {e}") from None


def _meta(path: Path):
    meta = path.with_name(path.stem + "_meta.json")
    return _read(meta) if meta.is_file() else None


def safetensors_params(path: Path) -> int:
    """Parameters in a safetensors file, from its header alone (no weights read)."""
    with open(path, "rb") as f:
        (size,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(size))
    total = 0
    for name, t in header.items():
        if name != "__metadata__":
            n = 1
            for d in t["shape"]:
                n *= d
            total += n
    return total


def model_info(name: str, _seen: tuple[str, ...] = ()) -> dict:
    """Base model (its distillation record's teacher, followed to the root), UNet parameters and method of a model
    named as the result files name it (a registry name or a folder); empty where it is not on this machine."""
    from mobilediff.card import distillation_record
    from mobilediff.loading import resolve_model

    folder = resolve_model(name)
    if not (folder / "model_index.json").is_file() or name in _seen:
        return {}
    try:
        record = distillation_record(folder)
    except MobilediffError:
        record = None
    unet = sorted((folder / "unet").glob("*.safetensors"))
    out = {"unet_params": safetensors_params(unet[0]) if len(unet) == 1 else None,
           "method": record["method"] if record else "teacher", "base_model": name}
    teacher = (record or {}).get("teacher")
    if isinstance(teacher, str) and teacher:
        out["base_model"] = model_info(teacher, _seen + (name,)).get("base_model") or teacher
    return out


def build(results: Path, info=model_info) -> tuple[list[Configuration], list[tuple[str, int]]]:
    """Every configuration the result files in ``results`` hold: scaling.json, every run_device.json under it,
    quantization.json, distillation.json and baseline_quality.json (each with its ``_meta.json`` where it has one);
    files that are not there are skipped. Returns the rows and (file, rows) per file read. Raises MobilediffError
    on a corrupt file or a folder with none of them."""
    results = Path(results)
    if not results.is_dir():
        raise MobilediffError(f"--results {results}: not a folder")
    rows, counts = [], []
    memo: dict[str, dict] = {}

    def cached(name: str) -> dict:
        if name not in memo:
            memo[name] = info(name) if info else {}
        return memo[name]

    def add(path: Path, made: list[Configuration]) -> None:
        rows.extend(made)
        counts.append((record_path(path), len(made)))

    f = results / "scaling.json"
    if f.is_file():
        add(f, from_scaling(_read(f), _meta(f), record_path(f)))
    for f in sorted(results.rglob("run_device.json")):
        add(f, from_run_device(_read(f), record_path(f), cached))
    f = results / "quantization.json"
    if f.is_file():
        add(f, from_quantization(_read(f), record_path(f), cached))
    f = results / "distillation.json"
    if f.is_file():
        add(f, from_distillation(_read(f), _meta(f), record_path(f), cached))
    f = results / "baseline_quality.json"
    if f.is_file():
        add(f, from_baseline_quality(_read(f), _meta(f), record_path(f), cached))
    if not counts:
        raise MobilediffError(f"no result files in {results} (scaling.json, run_device.json, quantization.json, "
                              f"distillation.json, baseline_quality.json)")
    return rows, counts


def main(argv: list[str] | None = None, doc: str = "", results: Path | None = None) -> None:
    """The command line of ``benchmarks/configurations.py``: the store rebuilt from ``--results`` and written to
    ``--out``, the rows per file printed. ``doc``: the script's docstring (its ``--help``); ``results``: the default
    results folder."""
    from mobilediff.io import check_output

    ap = Parser(doc, folders=())
    ap.add_argument("--results", type=Path, default=results, required=results is None,
                    help="folder of result files (default benchmarks/results)")
    ap.add_argument("--out", type=Path, default=None, help=f"the store to write (default RESULTS/{STORE_NAME})")
    args = ap.parse_args(argv)
    out = args.out if args.out is not None else args.results / STORE_NAME
    check_output(out)
    rows, counts = build(args.results)
    write_store(rows, out)
    for file, n in counts:
        print(f"{n:4d} rows from {file}")
    usable = sum(1 for r in rows if r.latency_ms is not None and r.prompt_accuracy is not None)
    print(f"wrote {len(rows)} rows to {out} ({usable} with a latency and a prompt accuracy)")
