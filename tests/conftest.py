import os
import sys

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing is ever downloaded
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
# one export cache for the whole run (mobilediff.export_cache): the same tiny components exported by many tests are
# traced, converted and checked once. Made by the controlling process (its workers and their subprocesses inherit the
# variable), removed when the run ends; tests of the cache itself, and tests that change what an export does, set
# their own value or clear it.
_OWN_EXPORT_CACHE = None
if "MOBILEDIFF_EXPORT_CACHE" not in os.environ and not os.environ.get("PYTEST_XDIST_WORKER"):
    import tempfile

    _OWN_EXPORT_CACHE = tempfile.mkdtemp(prefix="mobilediff-test-exports-")
    os.environ["MOBILEDIFF_EXPORT_CACHE"] = _OWN_EXPORT_CACHE


def pytest_sessionfinish(session):
    if _OWN_EXPORT_CACHE is not None and not hasattr(session.config, "workerinput"):
        import shutil

        shutil.rmtree(_OWN_EXPORT_CACHE, ignore_errors=True)


if os.environ.get("PYTEST_XDIST_WORKER"):
    # pytest-xdist runs one worker per core: one torch thread each (subprocesses too) instead of oversubscribing
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_pipeline_dir(tmp_path_factory):
    from mobilediff.tiny import save_tiny_pipeline

    return save_tiny_pipeline(tmp_path_factory.mktemp("tiny") / "pipe", seed=0)


def run_cli(*args):
    """Run `mobilediff ARGS` in a subprocess; return (exit code, stdout, stderr)."""
    import subprocess

    p = subprocess.run([sys.executable, "-m", "mobilediff.cli", *map(str, args)], capture_output=True, text=True,
                       timeout=600)
    return p.returncode, p.stdout, p.stderr


def run_cli_here(capsys, *args):
    """Run `mobilediff ARGS` in this process (no interpreter start-up: seconds cheaper than :func:`run_cli`);
    return (exit code, stdout, stderr)."""
    from mobilediff.cli import main

    capsys.readouterr()
    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    out = capsys.readouterr()
    return code, out.out, out.err


def kohya_layout(src, dst, alpha: float):
    """A diffusers/PEFT-layout UNet adapter file ``src`` renamed as kohya/A1111 files name it
    (lora_unet_<module path with _>.lora_down/up + alpha), written to ``dst``; returns ``dst``."""
    import torch
    from safetensors.torch import load_file, save_file

    kohya = {}
    for k, v in load_file(str(src)).items():
        name = "lora_unet_" + k[len("unet."):].rsplit(".lora_", 1)[0].replace(".", "_")
        if ".lora_A." in k:
            kohya[f"{name}.lora_down.weight"], kohya[f"{name}.alpha"] = v, torch.tensor(float(alpha))
        else:
            kohya[f"{name}.lora_up.weight"] = v
    save_file(kohya, str(dst))
    return dst


def error_lines(stderr: str) -> list[str]:
    """The lines of stderr that are ours (library import chatter aside)."""
    return [line for line in stderr.splitlines() if line.startswith(("error:", "warning:"))]


# The slowest files first (measured: `python -m pytest --durations=0`, summed per file), the rest in their usual
# order: pytest-xdist's --dist loadfile hands whole files to its two workers in this order, and starting the long
# ones first lets both workers finish together instead of one running a long file alone at the end.
SLOWEST_FIRST = ("test_export.py", "test_bench_device.py", "test_architectures.py", "test_multiprocess.py",
                 "test_quantize.py", "test_bench_quantization.py", "test_bench_real_architectures.py", "test_image_modes.py",
                 "test_train_distill.py", "test_train_base.py", "test_transformer_pipelines.py", "test_default_model.py",
                 "test_train_decoder.py",
                 "test_bench_scaling.py", "test_sources.py", "test_output_races.py", "test_non_square.py",
                 "test_goldens.py", "test_bad_inputs.py", "test_metrics.py", "test_coreml.py")


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(SLOWEST_FIRST)}
    order = {id(item): i for i, item in enumerate(items)}
    items.sort(key=lambda item: (rank.get(item.path.name, len(rank)), order[id(item)]))


def poison_loss_at(monkeypatch, step: int) -> None:
    """Make the training loop see a non-finite loss at global step ``step`` (what a diverged run looks like to it):
    the loop's finiteness check is handed NaN there, before the backward pass and any checkpoint of that step."""
    import mobilediff.train.loop as loop

    real = loop.check_finite

    def check_finite(loss, at, run_dir):
        return real(loss * float("nan") if at == step else loss, at, run_dir)

    monkeypatch.setattr(loop, "check_finite", check_finite)
