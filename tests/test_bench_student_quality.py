"""mobilediff.bench.student_quality on a tiny random teacher and two students of it (copies with a distillation
record: an LCM plan and a progressive 4-step plan): every row's fidelity is the PSNR/SSIM of its own images against
the teacher's DDIM-50 images (recomputed here from generate()), FD comes from the extractor given, the 4-step bars
are checked, and bad input is refused before any image is made."""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mobilediff.bench.student_quality import main
from mobilediff.errors import MobilediffError
from mobilediff.features import MODEL_TYPE, ClassifierConfig, ClassifierNet
from mobilediff.io import save_tensors

PROMPTS = ["a large red circle in the center on a white background", "a small blue square at the top left",
           "a green triangle on the right on a black background"]


def _extractor(root: Path) -> Path:
    torch.manual_seed(0)
    cfg = ClassifierConfig(channels=(16, 32), feature_dim=8, resolution=32, num_labels=2)
    root.mkdir()
    save_tensors(ClassifierNet(cfg).state_dict(), root / "model.safetensors")
    (root / "config.json").write_text(json.dumps({"model_type": MODEL_TYPE, "architecture": {
        "channels": [16, 32], "feature_dim": 8, "resolution": 32, "num_labels": 2}}))
    return root


def _references(root: Path, n: int = 12) -> Path:
    root.mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(root / f"{i}.png")
    return root


def _student(teacher: Path, folder: Path, sampler: str, steps: int, guidance: float) -> str:
    shutil.copytree(teacher, folder)
    (folder / "distillation.json").write_text(json.dumps({
        "method": "lcm" if sampler == "lcm" else "progressive",
        "sampling": {"sampler": sampler, "steps": steps, "guidance": guidance}}))
    return str(folder)


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_pipeline_dir):
    root = tmp_path_factory.mktemp("sq")
    (root / "prompts.txt").write_text("\n".join(PROMPTS) + "\n")
    lcm = _student(tiny_pipeline_dir, root / "lcm", "lcm", 4, 1.0)
    progressive = _student(tiny_pipeline_dir, root / "progressive", "ddim", 4, 1.0)
    args = ["--teacher", str(tiny_pipeline_dir), "--student", lcm, "--student", progressive,
            "--prompts", str(root / "prompts.txt"), "--steps", "1", "4", "--fd-features", str(_extractor(root / "fx")),
            "--reference-images", str(_references(root / "real")), "--grid", "2", "--out", str(root / "out"),
            "--name", "sq"]
    return root, main(args), {"lcm": lcm, "progressive": progressive}


def test_rows_and_files(run):
    root, result, st = run
    labels = [(r["label"], r["sampler"], r["steps"]) for r in result["rows"]]
    assert labels == [("teacher-ddim50", "ddim", 50), ("teacher-ddim", "ddim", 1), ("teacher-ddim", "ddim", 4),
                      (st["lcm"], "lcm", 1), (st["lcm"], "lcm", 4), (st["progressive"], "ddim", 4)]
    assert [r["nfe"] for r in result["rows"]] == [100, 2, 8, 1, 4, 4]  # CFG doubles the teacher's UNet calls
    for name in ("sq.json", "sq.md", "sq.png", "sq_grid.png"):
        assert (root / "out" / name).is_file()
    assert json.loads((root / "out" / "sq.json").read_text())["schema"]["name"] == "mobilediff.student_quality"
    ref = result["rows"][0]["metrics"]
    assert ref["psnr_db_vs_teacher"] is None and ref["ssim_vs_teacher"] == pytest.approx(1.0)  # itself: inf dB


def test_fidelity_is_against_the_teachers_own_images(run):
    from mobilediff.loading import load_pipeline
    from mobilediff.metrics import psnr, ssim
    from mobilediff.quality import NOISE_SEED
    from mobilediff.sampling import generate

    _, result, st = run
    seeds = [NOISE_SEED + i for i in range(len(PROMPTS))]
    teacher = generate(load_pipeline(result["settings"]["teacher"]), PROMPTS, seeds, 50, "ddim",
                       result["rows"][0]["guidance"])
    row = next(r for r in result["rows"] if r["label"] == st["lcm"] and r["steps"] == 4)
    student = generate(load_pipeline(st["lcm"]), PROMPTS, seeds, 4, "lcm", row["guidance"])
    assert row["metrics"]["psnr_db_vs_teacher"] == pytest.approx(float(psnr(student, teacher).mean()), abs=1e-4)
    assert row["metrics"]["ssim_vs_teacher"] == pytest.approx(float(ssim(student, teacher).mean()), abs=1e-5)


def test_bars_are_checked_per_student_at_four_steps(run):
    _, result, st = run
    fd = {t["student"]: t for t in result["targets"] if t["metric"] == "fd"}
    assert set(fd) == {st["lcm"], st["progressive"]}
    ref = result["rows"][0]["metrics"]["fd"]
    for student, t in fd.items():
        row = next(r for r in result["rows"] if r["label"] == student and r["steps"] == 4)
        assert t["ratio"] == pytest.approx(row["metrics"]["fd"] / ref)
        assert t["met"] == (t["ratio"] <= 1.5)


@pytest.mark.parametrize("extra, message", [
    (["--fd-features", "x"], "needs both --fd-features and --reference-images"),
    (["--name", "../x"], "plain file name stem"),
    (["--student", "/nonexistent/student"], "nonexistent/student"),
    (["--n", "1"], "--n"),
])
def test_bad_input_is_refused_before_work(extra, message, tmp_path, tiny_pipeline_dir):
    (tmp_path / "p.txt").write_text("\n".join(PROMPTS))
    args = ["--teacher", str(tiny_pipeline_dir), "--student", str(tiny_pipeline_dir), "--prompts", str(tmp_path / "p.txt"),
            "--out", str(tmp_path / "out"), *extra]
    with pytest.raises(MobilediffError, match=message):
        main(args)
    assert not (tmp_path / "out").exists()
