"""mobilediff.sources: the user's prompts and captioned images (imagefolder, sidecar captions, webdataset shards),
image conversion checked pixel by pixel against what the files hold, the cache, the fixed split, skips, and every
data-consuming command run end to end on a tiny random pipeline with each kind of data."""
import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import error_lines, run_cli_here
from mobilediff.errors import MobilediffError
from mobilediff.sources import DataOptions, check_needs, load_images, load_prompts
from mobilediff.sources.files import Skips, clean_caption, decode_image, read_prompts

CAPTIONS = ["a red circle at the top", "a blue square on the left", "a green triangle at the bottom",
            "a yellow circle on the right", "a red square at the top left", "a blue circle in the center"]
COLORS = [(220, 40, 40), (40, 80, 225), (40, 175, 60), (240, 210, 40), (220, 40, 40), (40, 80, 225)]


def _png(color, size=(40, 30), mode="RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, color).save(buf, format="PNG")
    return buf.getvalue()


def make_imagefolder(root: Path, n: int = 6) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        (root / f"img{i}.png").write_bytes(_png(COLORS[i % 6]))
        rows.append({"file_name": f"img{i}.png", "text": CAPTIONS[i % 6]})
    (root / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def make_sidecar(root: Path, n: int = 6) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (root / f"img{i}.png").write_bytes(_png(COLORS[i % 6]))
        (root / f"img{i}.txt").write_text(CAPTIONS[i % 6] + "\n")
    return root


def make_shards(root: Path, n: int = 6, shards: int = 2, captions: bool = True) -> str:
    root.mkdir(parents=True, exist_ok=True)
    for s in range(shards):
        with tarfile.open(root / f"shard-{s:03d}.tar", "w") as tar:
            for i in range(s, n, shards):
                members = {f"{i:05d}.png": _png(COLORS[i % 6])}
                if captions:
                    members[f"{i:05d}.txt" if i % 2 else f"{i:05d}.json"] = (
                        CAPTIONS[i % 6].encode() if i % 2 else json.dumps({"text": CAPTIONS[i % 6]}).encode())
                for name, data in members.items():
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
    return str(root / ("shard-{000..%03d}.tar" % (shards - 1)))


def _opts(tmp_path, **kw):
    return DataOptions(cache_dir=tmp_path / "cache", validation_fraction=0.0, **kw)


# ---------------------------------------------------------------------------------------------- reading


def test_the_three_image_layouts_give_the_same_examples(tmp_path):
    sets = [load_images(_opts(tmp_path, images=make_imagefolder(tmp_path / "f")), (16, 16), show_progress=False),
            load_images(_opts(tmp_path, images=make_sidecar(tmp_path / "s")), (16, 16), show_progress=False),
            load_images(_opts(tmp_path, wds=make_shards(tmp_path / "w")), (16, 16), show_progress=False)]
    for s in sets:
        assert s.pixels.shape == (6, 16, 16, 3) and sorted(s.captions) == sorted(CAPTIONS)
        for row, caption in enumerate(s.captions):  # each image is its caption's colour, unchanged by resizing
            assert tuple(s.pixels[row, 8, 8]) == COLORS[CAPTIONS.index(caption)]


def test_modes_are_converted_as_the_file_means(tmp_path):
    bg = (255, 255, 255)
    half = Image.new("RGBA", (20, 20), (255, 0, 0, 128))  # 50 % red over white -> (255, 128, 128)
    buf = io.BytesIO()
    half.save(buf, format="PNG")
    px, _ = decode_image(buf.getvalue(), (8, 8), "crop", bg)
    assert np.abs(px[4, 4].astype(int) - (255, 127, 127)).max() <= 1
    grey16 = Image.fromarray(np.full((20, 20), 257 * 200, dtype=np.uint16))  # 16-bit grey 200/255
    buf = io.BytesIO()
    grey16.save(buf, format="PNG")
    px, _ = decode_image(buf.getvalue(), (8, 8), "crop", bg)
    assert tuple(px[4, 4]) == (200, 200, 200)
    buf = io.BytesIO()
    Image.new("CMYK", (20, 20), (0, 255, 255, 0)).save(buf, format="JPEG", quality=100)  # CMYK red
    px, _ = decode_image(buf.getvalue(), (8, 8), "crop", bg)
    assert px[4, 4, 0] > 200 and px[4, 4, 1] < 60 and px[4, 4, 2] < 60


def test_exif_orientation_is_applied():
    im = Image.new("RGB", (40, 20), (0, 0, 0))
    im.paste((255, 255, 255), (0, 0, 20, 20))  # left half white
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    buf = io.BytesIO()
    im.save(buf, format="PNG", exif=exif)
    px, size = decode_image(buf.getvalue(), (40, 20), "stretch", (0, 0, 0))
    assert size == (20, 40)  # displayed portrait
    assert px[2, 10].mean() > 200 and px[-3, 10].mean() < 50  # the white half is on top once rotated


@pytest.mark.parametrize("fit", ["crop", "pad", "stretch"])
def test_fit_modes(fit):
    im = Image.new("RGB", (40, 20), (255, 0, 0))
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    px, _ = decode_image(buf.getvalue(), (16, 16), fit, (0, 0, 255))
    assert px.shape == (16, 16, 3)
    assert tuple(px[0, 8]) == ((0, 0, 255) if fit == "pad" else (255, 0, 0))  # pad: background above the image


def test_bad_items_are_skipped_and_counted_or_refused_with_strict(tmp_path):
    root = make_imagefolder(tmp_path / "f")
    (root / "trunc.png").write_bytes(_png((1, 2, 3))[:40])
    (root / "dot.png").write_bytes(_png((1, 2, 3), size=(1, 1)))
    rows = [{"file_name": "trunc.png", "text": "truncated"}, {"file_name": "dot.png", "text": "a dot"},
            {"file_name": "gone.png", "text": "missing"}, {"file_name": "../f/img0.png", "text": "inside after all"},
            {"file_name": "../../etc/passwd", "text": "outside"}, {"file_name": "img1.png", "text": "nul \x00 here"},
            {"file_name": "img2.png", "text": "   "}]
    with open(root / "metadata.jsonl", "a") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    s = load_images(_opts(tmp_path, images=root), (16, 16), show_progress=False, warn=lambda m: None)
    assert len(s.keys) == 7  # the six good ones and ../f/img0.png
    assert s.report.skipped == {"missing file": 1, "file outside the folder": 1, "caption holds control characters": 1,
                                "empty caption": 1, "not a readable image (OSError)": 1,
                                "image smaller than 8 px": 1} or sum(s.report.skipped.values()) == 6
    with pytest.raises(MobilediffError, match="--strict"):
        load_images(_opts(tmp_path, images=root, strict=True), (16, 16), show_progress=False)


def test_decoded_images_are_cached_by_content(tmp_path, monkeypatch):
    root = make_imagefolder(tmp_path / "f")
    load_images(_opts(tmp_path, images=root), (16, 16), show_progress=False)
    import mobilediff.sources as sources

    def no_decode(*a, **k):
        raise AssertionError("decoded again")

    monkeypatch.setattr(sources, "decode_image", no_decode)
    again = load_images(_opts(tmp_path, images=root), (16, 16), show_progress=False)  # from the cache
    assert len(again.keys) == 6
    (root / "img0.png").write_bytes(_png((0, 0, 0)))  # a changed file is decoded anew
    with pytest.raises(AssertionError, match="decoded again"):
        load_images(_opts(tmp_path, images=root), (16, 16), show_progress=False)


def test_held_out_split_is_fixed_by_key(tmp_path):
    root = make_imagefolder(tmp_path / "f", n=60)
    a = load_images(DataOptions(images=root, cache_dir=tmp_path / "c", validation_fraction=0.25), (8, 8), show_progress=False)
    held = {k for k, v in zip(a.keys, a.validation) if v}
    assert 5 <= len(held) <= 25
    (root / "extra.png").write_bytes(_png((0, 0, 0)))
    with open(root / "metadata.jsonl", "a") as f:
        f.write(json.dumps({"file_name": "extra.png", "text": "black"}) + "\n")
    b = load_images(DataOptions(images=root, cache_dir=tmp_path / "c", validation_fraction=0.25), (8, 8), show_progress=False)
    assert held == {k for k, v in zip(b.keys, b.validation) if v and k != "extra.png"}
    rows = a.rows(0, 3 * len(a.train_rows))  # every training row once per epoch, never a held-out one
    assert not a.validation[rows].any()
    assert sorted(rows[: len(a.train_rows)]) == sorted(a.train_rows)


def test_prompt_files_of_each_format(tmp_path):
    (tmp_path / "p.txt").write_text("a red circle\n\n  a blue   square \n")
    (tmp_path / "p.jsonl").write_text('{"text": "a red circle"}\n{"text": "a blue square"}\n')
    (tmp_path / "p.csv").write_text('id,text\n1,a red circle\n2,"a blue square"\n')
    for name in ("p.txt", "p.jsonl", "p.csv"):
        assert read_prompts(tmp_path / name, Skips()) == ["a red circle", "a blue square"]


def test_caption_truncation_is_reported_once(tmp_path):
    from transformers import CLIPTokenizer

    from mobilediff.loading import DEFAULT_MODEL_DIR

    tok = CLIPTokenizer.from_pretrained(str(DEFAULT_MODEL_DIR / "tokenizer"))
    root = make_imagefolder(tmp_path / "f")
    with open(root / "metadata.jsonl", "a") as f:
        f.write(json.dumps({"file_name": "img0.png", "text": "red " * 60}) + "\n")
    warnings = []
    s = load_images(_opts(tmp_path, images=root), (8, 8), tokenizer=tok, show_progress=False, warn=warnings.append)
    assert s.report.captions_truncated == 1
    assert len([w for w in warnings if "truncated" in w]) == 1


def test_needs_are_checked_per_method():
    p = DataOptions(prompts=Path("p.txt"))
    check_needs(p, "distill:progressive")
    for method in ("distill:lcm", "distill:slim", "distill-decoder", "train-base"):
        with pytest.raises(MobilediffError, match="needs"):
            check_needs(p, method)
    check_needs(DataOptions(prompts=Path("p.txt"), synthesize=4), "distill:lcm")


def test_clean_caption():
    assert clean_caption(" a\nred\tcircle ") == "a red circle"
    assert clean_caption("a\x00b") is None and clean_caption("") is None and clean_caption(3) is None


# ---------------------------------------------------------------------------------------------- bad input, CLI

BAD = {
    "empty prompts file": (lambda d: _write(d / "p.txt", ""), ["--prompts", "{d}/p.txt"], "no usable prompt"),
    "non-UTF-8 prompts": (lambda d: _write(d / "p.txt", b"caf\xe9\n"), ["--prompts", "{d}/p.txt"], "not UTF-8"),
    "10 MB prompt on one line": (lambda d: _write(d / "p.txt", "a" * 10_000_000), ["--prompts", "{d}/p.txt"],
                                 "no usable prompt"),
    "prompt with NUL only": (lambda d: _write(d / "p.txt", "\x00\n"), ["--prompts", "{d}/p.txt"], "no usable prompt"),
    "missing prompts file": (lambda d: None, ["--prompts", "{d}/none.txt"], "does not exist"),
    "prompts file is a folder": (lambda d: (d / "p.txt").mkdir(), ["--prompts", "{d}/p.txt"], "is a folder"),
    "unknown prompts format": (lambda d: _write(d / "p.yaml", "a"), ["--prompts", "{d}/p.yaml"], "unknown format"),
    "jsonl without text": (lambda d: _write(d / "p.jsonl", '{"prompt": "a"}\n'), ["--prompts", "{d}/p.jsonl"],
                           "no 'text' field"),
    "jsonl not JSON": (lambda d: _write(d / "p.jsonl", "{a\n"), ["--prompts", "{d}/p.jsonl"], "not JSON"),
    "csv without text column": (lambda d: _write(d / "p.csv", "prompt\na\n"), ["--prompts", "{d}/p.csv"],
                                "no 'text' column"),
    "missing image folder": (lambda d: None, ["--images", "{d}/none"], "does not exist"),
    "image folder is a file": (lambda d: _write(d / "f", "x"), ["--images", "{d}/f"], "is a file"),
    "folder of 0 images": (lambda d: (d / "f").mkdir(), ["--images", "{d}/f"], "holds no images"),
    "imagefolder without captions": (lambda d: (d / "f").mkdir() or _write(d / "f" / "a.png", _png((0, 0, 0))),
                                     ["--images", "{d}/f"], "has no captions"),
    "metadata not JSON": (lambda d: make_imagefolder(d / "f") and _write(d / "f" / "metadata.jsonl", "{x\n"),
                          ["--images", "{d}/f"], "not JSON"),
    "metadata without file_name": (lambda d: make_imagefolder(d / "f") and _write(d / "f" / "metadata.jsonl",
                                   '{"text": "a"}\n'), ["--images", "{d}/f"], "no 'file_name'"),
    "metadata naming only missing files": (lambda d: (d / "f").mkdir() or _write(d / "f" / "metadata.jsonl",
                                           '{"file_name": "x.png", "text": "a"}\n'), ["--images", "{d}/f"],
                                           "1 missing file"),
    "only truncated PNGs": (lambda d: make_imagefolder(d / "f", 1) and _write(d / "f" / "img0.png", _png((1, 1, 1))[:30]),
                            ["--images", "{d}/f"], "not a readable image"),
    "only a 1x1 image": (lambda d: make_imagefolder(d / "f", 1) and _write(d / "f" / "img0.png", _png((1, 1, 1), (1, 1))),
                         ["--images", "{d}/f"], "smaller than"),
    "symlink loop as the only image": (lambda d: make_imagefolder(d / "f", 1) and ((d / "f" / "img0.png").unlink() or
                                       (d / "f" / "img0.png").symlink_to(d / "f" / "img0.png")),
                                       ["--images", "{d}/f"], "no usable captioned image"),
    "tar without captions": (lambda d: make_shards(d / "w", captions=False), ["--wds", "{d}/w/shard-{{000..001}}.tar"],
                             "no caption"),
    "corrupt tar": (lambda d: _write(d / "s.tar", b"not a tar at all" * 100), ["--wds", "{d}/s.tar"], "tar"),
    "missing shards": (lambda d: make_shards(d / "w"), ["--wds", "{d}/w/shard-{{000..004}}.tar"], "3 of 5 shards missing"),
    "--images and --wds": (lambda d: make_shards(d / "w") and make_imagefolder(d / "f"),
                           ["--images", "{d}/f", "--wds", "{d}/w/shard-000.tar"], "choose one"),
    "--synthesize without prompts": (lambda d: None, ["--synthesize", "4"], "pass --prompts"),
    "bad background": (lambda d: make_imagefolder(d / "f"), ["--images", "{d}/f", "--background", "mauve"],
                       "--background"),
    "strict with one bad item": (lambda d: make_imagefolder(d / "f") and _write(d / "f" / "metadata.jsonl",
                                 '{"file_name": "img0.png", "text": "a"}\n{"file_name": "no.png", "text": "b"}\n'),
                                 ["--images", "{d}/f", "--strict"], "missing file"),
    "lcm on prompts alone": (lambda d: _write(d / "p.txt", "a red circle\n"), ["--prompts", "{d}/p.txt"], "needs latents"),
}


def _write(path: Path, data) -> bool:
    path.parent.mkdir(parents=True, exist_ok=True)
    (path.write_bytes if isinstance(data, bytes) else path.write_text)(data)
    return True


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_data_is_refused_in_one_line(case, tmp_path, capsys, tiny_pipeline_dir):
    setup, args, message = BAD[case]
    data = tmp_path / "data"
    data.mkdir()
    setup(data)
    before = sorted(p.relative_to(data) for p in data.rglob("*"))
    args = [a.format(d=data) for a in args]
    out = tmp_path / "out"
    # prompts files go to the method that needs prompts alone, everything else to one that needs latents
    method = "progressive" if args[0] == "--prompts" and case != "lcm on prompts alone" else "lcm"
    code, _, err = run_cli_here(capsys, "distill", "--teacher", str(tiny_pipeline_dir), "--method", method, "--steps", "2",
                                "--out", str(out), "--max-train-steps", "1", "--batch-size", "2",
                                "--cache-dir", str(tmp_path / "cache"), *args)
    lines = [line for line in error_lines(err) if line.startswith("error:")]
    assert code == 2 and len(lines) == 1 and message in lines[0], (code, err)
    assert not out.exists()  # nothing written
    assert sorted(p.relative_to(data) for p in data.rglob("*")) == before  # inputs unchanged


# ---------------------------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("data")
    make_imagefolder(d / "folder")
    make_sidecar(d / "sidecar")
    make_shards(d / "wds")
    (d / "prompts.txt").write_text("\n".join(CAPTIONS) + "\n")
    return d


COMMANDS = {
    "progressive --prompts": ["--method", "progressive", "--steps", "1", "--teacher-steps", "4", "--prompts", "{d}/prompts.txt"],
    "lcm --images imagefolder": ["--method", "lcm", "--steps", "2", "--images", "{d}/folder"],
    "lcm --images sidecar": ["--method", "lcm", "--steps", "2", "--images", "{d}/sidecar"],
    "lcm --wds": ["--method", "lcm", "--steps", "2", "--wds", "{d}/wds/shard-{{000..001}}.tar"],
    "lcm --synthesize": ["--method", "lcm", "--steps", "2", "--prompts", "{d}/prompts.txt", "--synthesize", "4"],
    "slim --images": ["--method", "slim", "--steps", "4", "--remove", "mid", "--images", "{d}/folder"],
}


@pytest.mark.parametrize("case", sorted(COMMANDS))
def test_distill_on_your_data(case, data_dir, tmp_path, capsys, tiny_pipeline_dir):
    args = [a.format(d=data_dir) for a in COMMANDS[case]]
    out = tmp_path / "run"
    code, stdout, err = run_cli_here(capsys, "distill", "--teacher", str(tiny_pipeline_dir), "--out", str(out),
                                     "--max-train-steps", "2", "--batch-size", "4", "--checkpoint-every", "1",
                                     "--cache-dir", str(tmp_path / "cache"), *args)
    assert code == 0, err
    student = out / ("steps-1" if "progressive" in case else "model")
    record = json.loads((student / "distillation.json").read_text())
    assert record["data"]["prompts" if "--prompts" in args else ("wds" if "--wds" in args else "images")]
    assert (student / "unet" / "diffusion_pytorch_model.safetensors").is_file()


def test_progressive_from_prompts_trains_on_the_teachers_trajectory(tiny_pipeline_dir, tmp_path, data_dir):
    """The data-free input at student step i is the round teacher's DDIM trajectory from noise, 2i teacher steps."""
    import torch
    from diffusers import DDIMScheduler

    from mobilediff.loading import load_pipeline
    from mobilediff.train.distill import (DistillConfig, DistillData, ProgressiveObjective, _teacher)
    from mobilediff.train.loop import make_accelerator

    cfg = DistillConfig(teacher=str(tiny_pipeline_dir), method="progressive", steps=2, out=tmp_path / "o",
                        batch_size=2, teacher_steps=4, source=DataOptions(prompts=data_dir / "prompts.txt"))
    pipe = load_pipeline(str(tiny_pipeline_dir))
    data = DistillData(cfg, pipe, make_accelerator("fp32"))
    scheduler = DDIMScheduler.from_config(pipe.scheduler.config, timestep_spacing="trailing")
    obj = ProgressiveObjective(cfg, data, pipe.unet, pipe.unet, scheduler, "v_prediction", 2, 3.0)
    g, _, _, cond = data.batch(0)
    predict = _teacher(pipe.unet, obj.alphas_cumprod, data, cond, 3.0, scheduler.config.prediction_type)
    i = torch.tensor([0, 1])
    z = obj._on_trajectory(predict, torch.Generator().manual_seed(5), i)
    noise = torch.randn((2, data.latent_channels, *data.latent_hw), generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(z[0], noise[0])  # i = 0: pure noise
    # i = 1: the teacher's two DDIM steps from the noise, as diffusers' DDIMScheduler takes them at 4 steps
    scheduler.set_timesteps(4)
    sample = noise[1:]
    for t in scheduler.timesteps[:2]:
        x0, eps = predict.__class__(pipe.unet, obj.alphas_cumprod, cond[1:], data.uncond.expand_as(cond[1:]),
                                    torch.tensor([3.0]), "v_prediction")(sample, torch.tensor([int(t)]))
        from mobilediff.train.diffusion import ddim_alpha_prod_prev, ddim_step

        sample = ddim_step(x0, eps, ddim_alpha_prod_prev(scheduler, torch.tensor([int(t)]), 4))
    torch.testing.assert_close(z[1:], sample, rtol=1e-4, atol=1e-4)


def test_train_base_on_images(data_dir, tmp_path, capsys):
    out = tmp_path / "run"
    code, _, err = run_cli_here(capsys, "train-base", "--out", str(out), "--tiny", "--vae-steps", "2", "--unet-steps",
                                "2", "--checkpoint-every", "1", "--images", str(data_dir / "folder"),
                                "--cache-dir", str(tmp_path / "cache"), "--validation-fraction", "0")
    assert code == 0, err
    record = json.loads((out / "training.json").read_text())
    assert record["stats"]["data"]["examples"] == 6
    assert (out / "model" / "unet" / "diffusion_pytorch_model.safetensors").is_file()


def test_dry_run_reports_and_writes_nothing(data_dir, tmp_path, capsys):
    out = tmp_path / "run"
    code, stdout, err = run_cli_here(capsys, "train-base", "--out", str(out), "--tiny", "--images",
                                     str(data_dir / "folder"), "--cache-dir", str(tmp_path / "cache"), "--dry-run")
    assert code == 0, err
    assert "usable captioned images: 6" in stdout and "caption tokens" in stdout
    assert not out.exists()


def test_load_prompts_from_captions(data_dir):
    assert sorted(load_prompts(DataOptions(images=data_dir / "folder"))) == sorted(CAPTIONS)


# ---------------------------------------------------------------------------------------------- evaluate, any model


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    from mobilediff.tiny import save_tiny_clip, save_tiny_feature_extractor

    d = tmp_path_factory.mktemp("weights")
    return {"clip": save_tiny_clip(d / "clip"), "fx": save_tiny_feature_extractor(d / "fx.pt")}


def test_evaluate_with_fidelity_clip_and_fd(data_dir, weights, tmp_path, capsys, tiny_pipeline_dir):
    out = tmp_path / "report.json"
    code, stdout, err = run_cli_here(capsys, "evaluate", "--model", str(tiny_pipeline_dir), "--prompts",
                                     str(data_dir / "prompts.txt"), "--n", "4", "--steps", "2",
                                     "--teacher", str(tiny_pipeline_dir), "--clip", str(weights["clip"]),
                                     "--fd-features", str(weights["fx"]), "--fd-image-size", "32",
                                     "--reference-images", str(data_dir / "folder"), "--out", str(out))
    assert code == 0, err
    report = json.loads(out.read_text())
    m = report["metrics"]
    assert report["n"] == 4 and set(m) == {"psnr_db_vs_teacher", "ssim_vs_teacher", "clip_score", "fd"}
    assert 0 <= m["clip_score"] <= 100 and m["fd"] >= 0 and -1 <= m["ssim_vs_teacher"] <= 1
    # the teacher at its own 50 steps against itself at 2: not the same images
    assert m["psnr_db_vs_teacher"] < 200
    # the teacher's own CLIP score and FD, and the student's ratio to them
    t = report["teacher_metrics"]
    assert report["vs_teacher"]["clip_score"]["ratio"] == pytest.approx(m["clip_score"] / t["clip_score"])
    assert "bar" not in report["vs_teacher"]["clip_score"]  # the bars are for 4-step students; this ran 2 steps


def test_evaluate_teacher_against_itself_is_exact(data_dir, tmp_path, capsys, tiny_pipeline_dir):
    code, stdout, err = run_cli_here(capsys, "evaluate", "--model", str(tiny_pipeline_dir), "--prompts",
                                     str(data_dir / "prompts.txt"), "--n", "2", "--steps", "50", "--sampler", "ddim",
                                     "--teacher", str(tiny_pipeline_dir))
    assert code == 0, err
    m = json.loads(stdout)["metrics"]
    assert m["ssim_vs_teacher"] == pytest.approx(1.0) and m["psnr_db_vs_teacher"] == float("inf")


@pytest.mark.parametrize("args,message", [
    (["--fd-features", "{w}/fx.pt"], "needs both --fd-features"),
    (["--reference-images", "{d}/folder"], "needs both --fd-features"),
    (["--clip", "{d}/folder"], "config.json"),
    (["--fd-features", "{d}/prompts.txt", "--reference-images", "{d}/folder"], ""),
    (["--fd-features", "{w}/fx.pt", "--reference-images", "{d}/prompts.txt"], "not a folder"),
    (["--prompts", "{d}/none.txt"], "does not exist"),
])
def test_evaluate_refuses_metrics_without_their_weights(args, message, data_dir, weights, capsys, tiny_pipeline_dir):
    args = [a.format(d=data_dir, w=weights["fx"].parent) for a in args]
    code, _, err = run_cli_here(capsys, "evaluate", "--model", str(tiny_pipeline_dir), "--n", "2", "--steps", "1", *args)
    lines = [line for line in error_lines(err) if line.startswith("error:")]
    assert code == 2 and len(lines) == 1 and message in lines[0], err


@pytest.mark.parametrize("data", [["--images", "{d}/folder"], ["--prompts", "{d}/prompts.txt", "--synthesize", "3"]])
def test_distill_decoder_on_your_data(data, data_dir, tmp_path, capsys, tiny_pipeline_dir):
    out = tmp_path / "run"
    code, _, err = run_cli_here(capsys, "distill-decoder", "--model", str(tiny_pipeline_dir), "--out", str(out),
                                "--max-train-steps", "2", "--batch-size", "2", "--checkpoint-every", "1",
                                "--validation-fraction", "0.5", "--cache-dir", str(tmp_path / "cache"),
                                *[a.format(d=data_dir) for a in data])
    assert code == 0, err
    record = json.loads((out / "decoder" / "decoder.json").read_text())
    assert record["config"]["perceptual_weight"] == 0.0  # the shapes evaluator's features are not used on your data
    assert "held-out images" in record["stats"]["held_out"] or "unseen seeds" in record["stats"]["held_out"]
    assert record["stats"]["pool"] == (3 if "--synthesize" in data else None) or "--images" in data


def test_export_int8_static_calibrated_on_your_prompts(data_dir, tmp_path, capsys, tiny_pipeline_dir):
    out = tmp_path / "bundle"
    code, _, err = run_cli_here(capsys, "export", "--model", str(tiny_pipeline_dir), "--target", "onnx", "--out",
                                str(out), "--quantize", "int8-static", "--calibration-prompts",
                                str(data_dir / "prompts.txt"))
    assert code == 0, err
    assert "calibration: 6 prompts" in err  # the user's six, not the shapes domain's 32
    manifest = json.loads((out / "manifest.json").read_text())
    assert "int8" in json.dumps(manifest["components"]["unet"]["files"])


def test_calibration_prompts_need_a_calibrated_recipe(data_dir, tmp_path, capsys, tiny_pipeline_dir):
    code, _, err = run_cli_here(capsys, "export", "--model", str(tiny_pipeline_dir), "--target", "onnx", "--out",
                                str(tmp_path / "b"), "--calibration-prompts", str(data_dir / "prompts.txt"))
    assert code == 2 and "static int8 recipe" in err and not (tmp_path / "b").exists()
