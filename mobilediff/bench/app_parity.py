"""The demo apps' engines against Python on the same bundles, seeds and goldens: each engine's ``check-goldens``,
its ``generate`` at every reference seed compared with Python's ``generate --bundle`` image and timed beside it, and
the APK build. ``benchmarks/app_parity.py`` runs :func:`main`; the apps are those of this checkout."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from mobilediff.bench import bars
from mobilediff.bench.envelope import Parser, command_line, write_results
from mobilediff.errors import MobilediffError

REPO = Path(__file__).resolve().parents[2]  # the checkout: its android_demo/ and ios_demo/

# app -> (folder, backends its engine runs on this machine)
APPS = {"android": ("android_demo", ("onnx", "executorch")), "ios": ("ios_demo", ("onnx", "executorch"))}
MIN_PSNR_DB = bars.bar("app_image_psnr_db").value
REPEATS = 3  # timed images per (model, backend, seed), after one untimed warm-up; the median is reported


def _run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, **kw)


def _last_line(text: str) -> str:
    lines = [l for l in text.strip().splitlines() if l.strip()]
    return lines[-1][-300:] if lines else "(no output)"


def _psnr(got: np.ndarray, ref: np.ndarray) -> float | None:
    from mobilediff.parity import psnr

    p = psnr(torch.from_numpy(got), torch.from_numpy(ref))
    return None if math.isinf(p) else p


def check_goldens(app: str, engine: Path, model: str, folder: Path, work: Path) -> list[dict]:
    out = work / f"{app}_{model}_goldens.json"
    r = _run([str(engine), "check-goldens", "--bundle", str(folder / "bundle"), "--goldens", str(folder / "goldens"),
              "--backend", "onnx", "--model", model, "--json", str(out)])
    if not out.is_file():
        return [{"app": app, "check": "goldens", "backend": "onnx", "model": model, "seed": None, "psnr_db": None,
                 "max_abs_error": None, "passed": False, "detail": f"check-goldens failed: {_last_line(r.stderr)}"}]
    return [{"app": app, **row} for row in json.loads(out.read_text())]


def image_options(ref: dict, folder: Path) -> list[str]:
    """The engine options of an image-to-image / inpainting reference row, or of one made with run-time adapters
    (``--lora NAME:SCALE`` each; none for a plain text-to-image one)."""
    if ref.get("adapters"):
        return [opt for name, scale in ref["adapters"] for opt in ("--lora", f"{name}:{scale:g}")]
    if not ref.get("mode"):
        return []
    opts = ["--init-image", str(folder / ref["init_image"]), "--strength", f"{ref['strength']:g}",
            "--steps", str(ref["steps"]), "--sampler", ref["sampler"]]
    return opts + (["--mask", str(folder / ref["mask"])] if ref.get("mask") else [])


def python_ms(bundle: Path, runtime: str, prompt: str, seed: int, ref: dict | None = None,
              folder: Path | None = None) -> float:
    """Python's `generate --bundle` time for one image, measured as the engines are: one untimed image, then the
    median of REPEATS (``ref``: an image reference row, its init image and mask under ``folder``)."""
    from mobilediff.engine import BundleRunner
    from mobilediff.image_input import load_init_image, load_mask

    runner = BundleRunner(bundle, runtime, adapters=[tuple(a) for a in (ref or {}).get("adapters", [])])
    kw = {}
    if ref and ref.get("mode"):
        g = runner.geometry
        kw = {"steps": ref["steps"], "sampler": ref["sampler"], "strength": ref["strength"],
              "init_image": load_init_image(folder / ref["init_image"], g.height, g.width),
              "mask": load_mask(folder / ref["mask"], g.height, g.width, g.vae_scale_factor) if ref.get("mask")
              else None}
    runner.generate(prompt, seed, **kw)
    times = []
    for _ in range(REPEATS):
        t0 = time.perf_counter()
        runner.generate(prompt, seed, **kw)
        times.append((time.perf_counter() - t0) * 1000)
    return float(np.median(times))


def engine_runtime(result: dict, backend: str) -> str | None:
    """The runtime and version an engine's ``generate --json`` says it ran on ("onnxruntime 1.29.0")."""
    if result.get("runtime"):
        return str(result["runtime"])
    version = result.get("runtime_version")
    return f"{'onnxruntime' if backend == 'onnx' else backend} {version}" if version else None


def _mib(n) -> float | None:
    return None if n is None else round(n / 2**20, 1)


def end_to_end(app: str, engine: Path, backends, model: str, folder: Path, entry: dict, work: Path) -> list[dict]:
    from safetensors.numpy import load_file

    rows = []
    for ref in entry["references"]:
        backend, seed = ref["runtime"], ref["seed"]
        if backend not in backends:
            continue
        mode = ref.get("mode") or ("lora" if ref.get("adapters") else None)
        stem = f"{app}_{model}_{backend}_{seed}" + (f"_{Path(ref['raw']).stem}" if mode else "")
        png, rec = work / f"{stem}.png", work / f"{stem}.json"
        r = _run([str(engine), "generate", "--bundle", str(folder / "bundle"), "--backend", backend,
                  "--prompt", ref["prompt"], "--seed", str(seed), "--warmup", "1", "--repeats", str(REPEATS),
                  *image_options(ref, folder), "--out", str(png), "--json", str(rec)])
        row = {"app": app, "check": mode or "end_to_end", "backend": backend, "model": model, "seed": seed}
        if r.returncode != 0 or not rec.is_file():
            rows.append({**row, "psnr_db": None, "max_abs_error": None, "passed": False,
                         "detail": f"generate failed: {_last_line(r.stderr)}"})
            continue
        result = json.loads(rec.read_text())
        expected = load_file(str(folder / ref["raw"]))["image"]  # (H, W, 3) in [-1, 1]
        if expected.shape[-1] != 3:  # a planar (1, 3, H, W) or (3, H, W) reference
            expected = np.moveaxis(expected.reshape(expected.shape[-3:]), 0, -1)
        got = np.fromfile(result["image_raw"], dtype="<f4").reshape(expected.shape)
        psnr = _psnr(got, expected)
        plan = f"{result['sampler']}-{result['steps']}, guidance {result['guidance']:g}" + (
            f", strength {ref['strength']:g}" + (", lower half masked" if ref.get("mask") else "")
            if ref.get("mode") else "") + "".join(f", {n}:{s:g}" for n, s in ref.get("adapters", []))
        row.update(runtime=engine_runtime(result, backend), graph_files=result.get("files"),
                   peak_memory_mib=_mib(result.get("peak_memory_bytes", result.get("peak_rss_bytes"))))
        rows.append({**row, "psnr_db": psnr, "max_abs_error": float(np.abs(got - expected).max()),
                     "passed": psnr is None or bars.check("app_image_psnr_db", psnr), "plan": plan,
                     "engine_ms": round(result["ms_total"], 1), "engine_component_ms": result["ms"],
                     "python_ms": round(python_ms(folder / "bundle", backend, ref["prompt"], seed, ref, folder), 1),
                     "detail": f"{plan}; bar >= {MIN_PSNR_DB:g} dB vs Python's generate --bundle"})
    return rows


def image_grid(models: dict, fixtures: Path, work: Path, apps) -> bytes | None:
    """A PNG of every image-to-image / inpainting reference and every one made with run-time adapters: init image,
    mask (none for adapters), Python's image, then each app's engine image (same bundle, seed and options), one row
    each; None when the fixtures have none."""
    import io

    from PIL import Image, ImageDraw

    rows = []
    for model, entry in models.items():
        for ref in entry["references"]:
            if not ref.get("mode") and not ref.get("adapters"):
                continue
            folder = fixtures / model
            stem = f"{model}_{ref['runtime']}_{ref['seed']}_{Path(ref['raw']).stem}"
            if ref.get("adapters"):
                cells = [None, None, folder / ref["png"]]
                label = (f"{model} {ref['runtime']}: run-time adapters "
                         f"{' + '.join(f'{n}:{s:g}' for n, s in ref['adapters'])} seed {ref['seed']}")
            else:
                cells = [folder / ref["init_image"], folder / ref["mask"] if ref.get("mask") else None,
                         folder / ref["png"]]
                label = (f"{model} {ref['runtime']}: {ref['mode']} {ref['sampler']}-{ref['steps']} strength "
                         f"{ref['strength']:g} seed {ref['seed']}")
            cells += [work / f"{app}_{stem}.png" for app in apps]
            rows.append((label, cells))
    if not rows:
        return None
    side, pad, head = 128, 4, 14
    heads = ["init", "mask (white: repaint)", "Python", *apps]
    canvas = Image.new("RGB", (len(heads) * (side + pad) + pad, head + len(rows) * (side + head + pad)), "white")
    draw = ImageDraw.Draw(canvas)
    for j, h in enumerate(heads):
        draw.text((pad + j * (side + pad), 1), h, fill="black")
    for i, (label, cells) in enumerate(rows):
        y = head + i * (side + head + pad)
        draw.text((pad, y), label, fill="black")
        for j, cell in enumerate(cells):
            x0 = pad + j * (side + pad)
            if cell is not None and cell.is_file():
                with Image.open(cell) as im:
                    canvas.paste(im.convert("RGB").resize((side, side), Image.NEAREST), (x0, y + head))
                draw.rectangle((x0 - 1, y + head - 1, x0 + side, y + head + side), outline="gray")
    buf = io.BytesIO()
    canvas.save(buf, format="PNG")
    return buf.getvalue()


def apk_row(folder: Path) -> dict:
    t0 = time.perf_counter()
    r = _run([str(REPO / folder / "scripts" / "build-apk.sh")])
    apk = REPO / folder / "build" / "apk" / "mobilediff-demo.apk"
    ok = r.returncode == 0 and apk.is_file() and "Verifies" in r.stdout
    row = {"app": "android", "check": "apk", "backend": None, "model": None, "seed": None, "psnr_db": None,
           "max_abs_error": None, "passed": ok, "apk_bytes": apk.stat().st_size if apk.is_file() else None,
           "build_seconds": round(time.perf_counter() - t0, 1)}
    if not ok:
        return {**row, "detail": f"build-apk.sh failed: {_last_line(r.stderr or r.stdout)}"}
    # the static link check build-apk.sh ran (android_demo/scripts/check-apk.py): what the APK packages
    check = json.loads((apk.parent / "check-apk.json").read_text())
    abis = check["abis"]
    packaged = [f"{rt['name']} {rt['version']}" for rt in check["runtimes_json"]["runtimes"]]
    natives = ", ".join(f"{abi} {a['natives_with_export']}/{a['native_methods']}" for abi, a in abis.items())
    return {**row, "runtime": "; ".join(packaged) or None, "apk_check": check,
            "detail": f"signed, apksigner verify (v2+v3), min SDK 26; packages {', '.join(packaged) or 'no runtime'} "
                      f"for {', '.join(abis)} (16 KB-aligned); JNI exports for native methods: {natives}; "
                      f"not packaged: {', '.join(n['name'] for n in check['runtimes_json'].get('not_packaged', [])) or '-'}"}


def _fmt(x) -> str:
    if x is None:
        return "-"
    return f"{x:.1f}" if isinstance(x, float) else str(x)


def _sci(x) -> str:
    return "-" if x is None else f"{x:.2e}"


def _detail(row: dict) -> str:
    files = row.get("graph_files") or {}
    forms = sorted({Path(str(f.get("path", "") if isinstance(f, dict) else f)).suffix.lstrip(".")
                    for f in files.values()} - {""}) if isinstance(files, dict) else []
    return row.get("detail", "") + (f"; graphs: {', '.join(forms)}" if forms else "")


def markdown(result: dict) -> str:
    m = result["machine"]
    md = ["# App parity: demo app engines vs Python", "",
          f"Generated by `{result['command']}` in {result['wall_seconds'] / 60:.1f} min on {m['cpu']} "
          f"({m['cores']} cores, shared with other work: 1-min load average {result['load_average_1min']['start']} at "
          f"the start, {result['load_average_1min']['end']} at the end, so milliseconds are indicative only; "
          f"{result['timing']}). Bars: token ids identical; noise max abs <= 1e-6; sampler latents (every "
          f"step, real ONNX graphs) >= 60 dB, replay on recorded outputs max abs <= 1e-5; end-to-end images "
          f">= {MIN_PSNR_DB:g} dB against Python's `generate --bundle` at the same seed (PSNR '-' = identical). "
          f"Runtime: what the engine reports it ran on; peak MiB: the engine process's peak resident memory "
          f"(VmHWM) over its generate runs; graphs: the file forms it loaded (ort = ONNX Runtime's mobile format).", "",
          "| app | check | backend | runtime | model | seed | PSNR dB | max abs | passed | engine ms | Python ms | "
          "peak MiB | detail |",
          "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        md.append(f"| {r['app']} | {r['check']} | {r['backend'] or '-'} | {r.get('runtime') or '-'} | "
                  f"{r['model'] or '-'} | {_fmt(r['seed'])} | {_fmt(r['psnr_db'])} | {_sci(r['max_abs_error'])} | "
                  f"{'yes' if r['passed'] else 'NO'} | {_fmt(r.get('engine_ms'))} | {_fmt(r.get('python_ms'))} | "
                  f"{_fmt(r.get('peak_memory_mib'))} | {_detail(r)} |")
    return "\n".join(md) + "\n"


def main(argv: list[str] | None = None, doc: str = "", results: Path | None = None) -> None:
    """The command line of ``benchmarks/app_parity.py``: ``argv`` (None: ``sys.argv[1:]``) parsed, every app's engine
    checked on every fixture model, written to ``--out``. ``doc``: the script's docstring (its ``--help``);
    ``results``: the default ``--out`` (None: ``--out`` is required)."""
    from mobilediff.bench.envelope import library_versions, machine_info

    ap = Parser(doc)
    ap.add_argument("--fixtures", type=Path,
                    default=Path(os.environ.get("MOBILEDIFF_FIXTURES", REPO / "android_demo" / "build" / "fixtures")),
                    help="fixtures folder, made or reused by python -m mobilediff.fixtures (default: $MOBILEDIFF_FIXTURES, "
                         "else android_demo/build/fixtures)")
    ap.add_argument("--app", action="append", choices=sorted(APPS), help="only these apps (default: every app with engine.sh)")
    ap.add_out(results, None)
    ap.add_argument("--no-apk", action="store_true", help="skip the APK build row")
    ap.add_argument("--fixtures-ready", action="store_true", help="use --fixtures as it is (do not run the fixtures module)")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    load_start = round(os.getloadavg()[0], 1)
    if not args.fixtures_ready:
        subprocess.run([sys.executable, "-m", "mobilediff.fixtures", str(args.fixtures), "--all-runtimes"], check=True)
    index_file = args.fixtures / "index.json"
    try:
        index = json.loads(index_file.read_text())
        models = index["models"]
        if not isinstance(models, dict):
            raise TypeError("'models' is not an object")
    except FileNotFoundError:
        raise MobilediffError(f"--fixtures {args.fixtures}: no index.json (run python -m mobilediff.fixtures "
                              f"{args.fixtures} first, or drop --fixtures-ready)") from None
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as e:
        raise MobilediffError(f"corrupt {index_file}: {type(e).__name__}: {e}") from None
    rows = []
    with tempfile.TemporaryDirectory(prefix="app_parity_") as tmp:
        work = Path(tmp)
        for app in args.app or sorted(APPS):
            folder, backends = APPS[app]
            engine = REPO / folder / "scripts" / "engine.sh"
            if not engine.is_file():
                continue
            for model, entry in index["models"].items():
                print(f"app_parity: {app} {model}", file=sys.stderr)
                if entry.get("goldens"):  # an inpainting UNet's fixture has no text-to-image goldens
                    rows += check_goldens(app, engine, model, args.fixtures / model, work)
                rows += end_to_end(app, engine, backends, model, args.fixtures / model, entry, work)
            if app == "android" and not args.no_apk:
                rows.append(apk_row(Path(folder)))
        grid = image_grid(index["models"], args.fixtures, work, args.app or sorted(APPS))
    result = {"command": command_line("app_parity", argv),
              "wall_seconds": round(time.perf_counter() - t0, 1), "machine": machine_info(),
              "load_average_1min": {"start": load_start, "end": round(os.getloadavg()[0], 1)},
              "timing": f"median of {REPEATS} images after one untimed warm-up, engine and Python alike",
              "versions": library_versions(), "fixtures": {m: e.get("weights_sha256") for m, e in index["models"].items()},
              "rows": rows}
    files = {"app_parity.md": markdown(result), "app_parity.json": result}
    if grid is not None:
        files["app_parity_images.png"] = grid
    write_results(args.out, files)
    failed = [r for r in rows if not r["passed"]]
    print(f"wrote {args.out / 'app_parity.json'}: {len(rows)} rows, {len(failed)} failed")
