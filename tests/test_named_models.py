"""Names of the embedded models: the default model and its students, and the UNet-size family generated from the
folders on disk (a size that is not there is not registered)."""
from __future__ import annotations

from pathlib import Path

from mobilediff.loading import (DEFAULT_MODEL_DIR, DEFAULT_STUDENTS, NAMED_MODELS, family_names, find_family,
                                resolve_model)


def pipeline_folder(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "model_index.json").write_text("{}")
    return path


def test_the_default_names_stay():
    assert resolve_model("default") == DEFAULT_MODEL_DIR and resolve_model(None) == DEFAULT_MODEL_DIR
    assert NAMED_MODELS["default:lcm"] == DEFAULT_STUDENTS / "lcm"
    assert NAMED_MODELS["default:progressive-4"] == DEFAULT_STUDENTS / "progressive" / "steps-4"
    assert NAMED_MODELS["default:slim-4"] == DEFAULT_STUDENTS / "slim-4"
    assert resolve_model("some/folder") == Path("some/folder")


def test_the_family_is_what_is_on_disk(tmp_path):
    root = tmp_path / "family"
    assert find_family(root) == []  # no family folder yet
    for size in ("m", "xs", "s"):
        pipeline_folder(root / f"unet-{size}")
    for kind in ("progressive-1", "progressive-4", "lcm"):
        pipeline_folder(root / "unet-xs" / "students" / kind)
    pipeline_folder(root / "unet-s" / "students" / "lcm")
    (root / "unet-l").mkdir()  # a size still training: no pipeline yet
    (root / "unet-s" / "students" / "progressive-1").mkdir()  # an empty student folder
    pipeline_folder(root / "unet-Bad_Name")  # cannot be spelled as a name
    family = find_family(root)
    assert [m.size for m in family] == ["xs", "s", "m"]  # smallest first
    names = family_names(family)
    assert names == {
        "default:unet-xs": root / "unet-xs", "default:unet-s": root / "unet-s", "default:unet-m": root / "unet-m",
        "default:unet-xs:lcm": root / "unet-xs" / "students" / "lcm",
        "default:unet-xs:progressive-1": root / "unet-xs" / "students" / "progressive-1",
        "default:unet-xs:progressive-4": root / "unet-xs" / "students" / "progressive-4",
        "default:unet-s:lcm": root / "unet-s" / "students" / "lcm"}
    assert family[0].student_name("lcm") == "default:unet-xs:lcm"


def test_registered_family_names_resolve():
    """Every committed family member and student resolves by name, is a complete pipeline folder and borrows only
    components whose files match their recorded sha256 (shared_components checks them)."""
    from mobilediff.loading import check_pipeline_dir, shared_components

    family = find_family()
    assert [m.size for m in family] == ["xs", "s", "m", "l"] and all(m.students for m in family)  # never an empty loop
    for m in family:
        assert resolve_model(m.name) == m.path and (m.path / "model_index.json").is_file()
        for kind, path in [(None, m.path), *m.students.items()]:
            if kind is not None:
                assert resolve_model(m.student_name(kind)) == path
            check_pipeline_dir(path)
            assert set(shared_components(path)) <= {"text_encoder", "tokenizer", "vae"}


def test_the_embedded_tiny_decoder_fits_the_default_model_and_decodes_its_latents():
    """'default:tiny' is the default model's tiny decoder: it fits the default model's latent space (and its
    students', which share the VAE), costs <= 0.15 GFLOP (the issue's bar, measured here, not read from its record),
    and decodes the VAE's own latents of fresh samples close to the VAE decoder's images."""
    import torch

    from mobilediff.data import ShapesConfig, ShapesDataset
    from mobilediff.decoder import (NAMED_DECODERS, check_decoder_dir, check_fits, decoder_gflop, latent_space,
                                    load_decoder, resolve_decoder, vae_folder)
    from mobilediff.loading import load_pipeline

    d = resolve_decoder("default:tiny")
    assert d == NAMED_DECODERS["default:tiny"] and resolve_decoder("x/y") == Path("x/y") and resolve_decoder(None) is None
    for model in ("default", "default:progressive-4", "default:lcm"):
        check_fits(d, check_decoder_dir(d), latent_space(vae_folder(resolve_model(model))))
    tiny = load_decoder(d)
    assert decoder_gflop(tiny, (4, 16, 16)) <= 0.15
    vae = load_pipeline("default").vae.eval()
    images, _, _ = ShapesDataset(seed=77, config=ShapesConfig(resolution=64, supersample=2)).batch(0, 16)
    with torch.no_grad():
        z = vae.encode(images).latent_dist.mean * vae.config.scaling_factor
        target = vae.decode(z / vae.config.scaling_factor).sample.clamp(-1, 1)
        got = tiny.decode(z).sample.clamp(-1, 1)
    psnr = float(10 * torch.log10(4.0 / torch.nn.functional.mse_loss(got, target)))
    assert psnr >= 28, psnr  # 32.9 dB at training's held-out check (decoder.json)


def test_a_teachers_weight_hash_ignores_the_students_stored_inside_it(tmp_path):
    """A family member keeps its students in students/<kind>/ (pipelines of their own): distilling or replacing a
    student must not change the teacher's identity (the row cache of the scaling study, a bundle's source check)."""
    from mobilediff.io import tree_sha256

    teacher = pipeline_folder(tmp_path / "unet-m")
    (teacher / "unet").mkdir()
    (teacher / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"teacher weights")
    before = tree_sha256(teacher)
    student = pipeline_folder(teacher / "students" / "lcm")
    (student / "unet").mkdir()
    (student / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"student weights")
    assert tree_sha256(teacher) == before
    assert tree_sha256(student) != before
    (teacher / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"retrained teacher")
    assert tree_sha256(teacher) != before  # its own weights still count
