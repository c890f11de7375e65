"""LoRA adapters merged before generate and export (--lora FILE[:SCALE]): the merged model against the adapter
applied by PEFT, a bundle against the PyTorch path, and the adapters refused before anything is loaded."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import error_lines, kohya_layout, run_cli_here
from mobilediff.errors import MobilediffError


def make_adapter(pipe, folder: Path, rank: int = 4, alpha: int = 8, seed: int = 0, name: str = "a") -> Path:
    """A random LoRA on ``pipe``'s UNet attention projections, saved as diffusers saves one (with PEFT's alpha in
    the header); the adapter stays active on ``pipe`` (the reference)."""
    from diffusers import StableDiffusionPipeline
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    torch.manual_seed(seed)
    pipe.unet.add_adapter(LoraConfig(r=rank, lora_alpha=alpha, target_modules=["to_q", "to_k", "to_v", "to_out.0"],
                                     init_lora_weights=False), adapter_name=name)
    folder.mkdir(parents=True, exist_ok=True)
    StableDiffusionPipeline.save_lora_weights(folder, unet_lora_layers=get_peft_model_state_dict(pipe.unet, adapter_name=name),
                                              unet_lora_adapter_metadata=pipe.unet.peft_config[name].to_dict(),
                                              weight_name=f"{name}.safetensors")
    return folder / f"{name}.safetensors"


def _unet_out(pipe):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(1, 4, 16, 16, generator=g)
    e = torch.randn(1, 77, pipe.text_encoder.config.hidden_size, generator=g)
    with torch.no_grad():
        return pipe.unet(x, torch.tensor([500.0]), encoder_hidden_states=e).sample


@pytest.mark.parametrize("scales", [(1.0,), (0.5,), (1.0, -0.7)], ids=["one", "half", "two-mixed"])
def test_merged_adapters_equal_peft_applying_them(tmp_path, scales):
    from mobilediff.lora import Adapter, apply_adapters
    from mobilediff.tiny import tiny_pipeline

    ref = tiny_pipeline()
    files = [make_adapter(ref, tmp_path, seed=i, name=f"a{i}") for i in range(len(scales))]
    ref.unet.set_adapters([f"a{i}" for i in range(len(scales))], weights=list(scales))
    want, base = _unet_out(ref), _unet_out(tiny_pipeline())
    pipe = tiny_pipeline()
    records = apply_adapters(pipe, [Adapter(f, s) for f, s in zip(files, scales)])
    got = _unet_out(pipe)
    assert (got - want).abs().max() < 1e-5 * max(1.0, float(want.abs().max()))
    assert (got - base).abs().max() > 1e-2  # the adapter changed the model
    assert [r["scale"] for r in records] == list(scales) and records[0]["rank"] == [4]
    assert not any("lora" in n for n, _ in pipe.unet.named_modules())  # a plain model again


def test_export_with_an_adapter_matches_the_pytorch_path(tiny_pipeline_dir, tmp_path, capsys):
    from mobilediff.loading import load_pipeline

    adapter = make_adapter(load_pipeline(tiny_pipeline_dir), tmp_path / "lora")
    code, _, err = run_cli_here(capsys, "export", "--model", tiny_pipeline_dir, "--target", "onnx", "--no-ort-format",
                                "--lora", f"{adapter}:0.8", "--out", tmp_path / "b")
    assert code == 0, err
    m = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert m["source"]["adapters"][0]["file"] == "a.safetensors" and m["source"]["adapters"][0]["scale"] == 0.8
    common = ["--prompt", "a red circle", "--seed", "2", "--steps", "4", "--scale", "1"]
    for args, png in ((["--model", tiny_pipeline_dir, "--lora", f"{adapter}:0.8"], "m.png"),
                      (["--bundle", tmp_path / "b"], "b.png"), (["--model", tiny_pipeline_dir], "base.png")):
        code, _, err = run_cli_here(capsys, "generate", *args, *common, "--out", tmp_path / png)
        assert code == 0, err
    m_, b_, base = (np.asarray(Image.open(tmp_path / p)).astype(int) for p in ("m.png", "b.png", "base.png"))
    assert np.abs(m_ - b_).max() <= 1
    assert np.abs(m_ - base).max() > 2  # the adapter is in the bundle


def _edited(adapter: Path, out: Path, edit) -> Path:
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(adapter), "pt") as f:
        tensors, meta = {k: f.get_tensor(k) for k in f.keys()}, f.metadata()
    save_file(edit(tensors), str(out), metadata=meta)
    return out


def test_adapters_that_do_not_fit_are_refused_before_the_model_changes(tmp_path):
    from mobilediff.lora import Adapter, apply_adapters, parse_adapter
    from mobilediff.tiny import tiny_pipeline, tiny_variant_pipeline

    other = make_adapter(tiny_variant_pipeline("sd2"), tmp_path / "sd2")  # another architecture's attention sizes
    own = make_adapter(tiny_pipeline(), tmp_path / "own")

    def rank_mismatch(t):
        k = next(k for k in t if "lora_B" in k)
        return {**t, k: torch.randn(t[k].shape[0], t[k].shape[1] + 2)}

    cases = [
        (other, "an adapter for another architecture"),
        (_edited(own, tmp_path / "r.safetensors", rank_mismatch), "rank mismatch at unet."),
        (_edited(own, tmp_path / "n.safetensors", lambda t: {"foo.weight": torch.zeros(2)}), "no UNet or text encoder"),
        (_edited(own, tmp_path / "h.safetensors", lambda t: {k: v for k, v in t.items() if "lora_B" not in k}),
         "has only its down matrix"),
        (tmp_path / "missing.safetensors", "no such file"),
    ]
    (tmp_path / "a.bin").write_bytes(b"\x80\x04not really")
    cases.append((tmp_path / "a.bin", "a pickle file (.bin) is never loaded"))
    (tmp_path / "c.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    cases.append((tmp_path / "c.safetensors", "is not a readable safetensors file"))
    pipe = tiny_pipeline()
    before = _unet_out(pipe)
    for path, message in cases:
        with pytest.raises(MobilediffError) as e:
            apply_adapters(pipe, [Adapter(path, 1.0)])
        assert message in str(e.value), (path, str(e.value))
    assert torch.equal(_unet_out(pipe), before)
    assert parse_adapter("x.safetensors:0.25").scale == 0.25 and parse_adapter("x.safetensors").scale == 1.0
    for bad, message in (("x.safetensors:big", "must be a number"), ("x.safetensors:nan", "finite")):
        with pytest.raises(MobilediffError, match=message):
            parse_adapter(bad)


def test_cli_refuses_a_pickle_adapter(tiny_pipeline_dir, tmp_path, capsys):
    (tmp_path / "a.pt").write_bytes(b"\x80\x04")
    code, _, err = run_cli_here(capsys, "export", "--model", tiny_pipeline_dir, "--target", "onnx", "--lora",
                                tmp_path / "a.pt", "--out", tmp_path / "b")
    assert code == 2 and error_lines(err) == [f"error: --lora {tmp_path / 'a.pt'}: a pickle file (.pt) is never loaded; "
                                              f"convert the adapter to safetensors"]
    assert not (tmp_path / "b").exists()


def test_a_kohya_layout_adapter_merges_to_the_same_model(tmp_path):
    """The same adapter renamed as kohya/A1111 files name it (lora_unet_<path with _>.lora_down/up + alpha)."""
    from mobilediff.lora import Adapter, apply_adapters
    from mobilediff.tiny import tiny_pipeline

    ref = tiny_pipeline()
    own = make_adapter(ref, tmp_path, rank=4, alpha=4)
    kohya_layout(own, tmp_path / "kohya.safetensors", alpha=4)
    pipe = tiny_pipeline()
    apply_adapters(pipe, [Adapter(tmp_path / "kohya.safetensors")])
    want = _unet_out(ref)
    assert (_unet_out(pipe) - want).abs().max() < 1e-5 * max(1.0, float(want.abs().max()))


def test_train_lora_writes_an_adapter_that_generate_reads_and_resumes(tiny_pipeline_dir, tmp_path, capsys):
    from safetensors import safe_open

    args = ["train-lora", "--model", tiny_pipeline_dir, "--out", tmp_path / "run", "--batch-size", "4",
            "--latent-cache", "16", "--checkpoint-every", "3", "--rank", "2"]
    code, out, err = run_cli_here(capsys, *args, "--max-train-steps", "3")
    assert code == 0, err
    adapter = tmp_path / "run" / "adapter" / "adapter.safetensors"
    with safe_open(str(adapter), "pt") as f:
        keys, meta = list(f.keys()), f.metadata()
        assert all(k.startswith("unet.") and ".lora_" in k for k in keys)
        assert {f.get_tensor(k).shape[0] for k in keys if "lora_A" in k} == {2}
    assert "lora_adapter_metadata" in meta
    record = json.loads((tmp_path / "run" / "adapter" / "training.json").read_text())
    assert record["method"] == "lora" and record["rank"] == 2 and record["stats"]["train_steps"] == 3
    code, _, err = run_cli_here(capsys, *args, "--max-train-steps", "5", "--resume", "latest")
    assert code == 0, err
    assert json.loads((tmp_path / "run" / "adapter" / "training.json").read_text())["stats"]["train_steps"] == 5
    code, _, err = run_cli_here(capsys, "generate", "--model", tiny_pipeline_dir, "--lora", f"{adapter}:0.5",
                                "--prompt", "a red circle", "--steps", "2", "--out", tmp_path / "x.png")
    assert code == 0, err


def test_adapter_data_builders_swap_colours_and_make_grayscale(tmp_path):
    from mobilediff.adapters import SWAP_SEED, adapter_path, main, monochrome, swap_colours
    from mobilediff.data import COLORS, ShapesDataset, render, to_uint8

    assert swap_colours(tmp_path / "s", n=6) == 6
    rows = [json.loads(line) for line in (tmp_path / "s" / "metadata.jsonl").read_text().splitlines()]
    scenes = ShapesDataset(seed=SWAP_SEED).scenes(0, 6)
    assert [r["text"] for r in rows] == [s.caption for s in scenes]  # the captions are the scenes' own
    red, blue = COLORS.index("red"), COLORS.index("blue")
    changed = [i for i, s in enumerate(scenes) if any(o.color in (red, blue) for o in s.objects)]
    plain = to_uint8(render(scenes))
    for i in range(6):
        got = np.asarray(Image.open(tmp_path / "s" / rows[i]["file_name"]))
        assert (np.abs(got.astype(int) - plain[i]).max() > 50) == (i in changed)
    folder = tmp_path / "img"
    folder.mkdir()
    Image.new("RGBA", (8, 8), (255, 0, 0, 255)).save(folder / "a.png")
    (folder / "metadata.jsonl").write_text(json.dumps({"file_name": "a.png", "text": "red"}) + "\n")
    assert monochrome(folder, tmp_path / "m") == 1
    gray = np.asarray(Image.open(tmp_path / "m" / "a.png"))
    assert gray.shape == (8, 8, 3) and (gray[..., 0] == gray[..., 2]).all() and gray[0, 0, 0] == 76  # 601 luma of red
    with pytest.raises(MobilediffError, match="no embedded adapter 'default:nope'"):
        adapter_path("default:nope")
    assert main(["swap-colours", "--out", str(tmp_path / "x"), "--swap", "red,red"]) == 2
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("name,model,method,rank", [("default:swap-red-blue", "default", "lora", 4),
                                                    ("default:emoji-monochrome", "default:emoji", "lora", 4),
                                                    ("default:lcm-lora", "default", "lcm-lora", 8)])
def test_embedded_adapters_fit_their_models_and_record_their_training(name, model, method, rank):
    from mobilediff.adapters import adapter_path
    from mobilediff.loading import load_pipeline
    from mobilediff.lora import check_adapter, read_adapter

    path = adapter_path(name)
    summary = check_adapter(load_pipeline(model), read_adapter(path), path)
    assert summary["components"] == ["unet"] and summary["rank"] == [rank]
    record = json.loads((path.parent / "training.json").read_text())
    assert record["method"] == method and record["teacher"] == model
    assert "/work/" not in json.dumps(record)  # paths as given, relative to the run folder
    assert (path.parent / "TRAINING.md").is_file()
