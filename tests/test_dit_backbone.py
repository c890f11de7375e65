"""train-base --backbone dit: a PixArt transformer trained with the family's objective against a CLIP text encoder,
written as a PixArtAlphaPipeline that the loader, the exporter (format 2, clip-bpe tokenizer, caption masks) and the
bundle engine take; and the backbone study's tables (mobilediff.bench.backbones)."""
import json

import pytest
import torch

from conftest import error_lines, run_cli_here
from mobilediff.bundle import read_manifest
from mobilediff.engine import BundleRunner, bundle_tokenizer
from mobilediff.errors import MobilediffError
from mobilediff.exporter import export_bundle
from mobilediff.loading import load_pipeline
from mobilediff.parity import psnr
from mobilediff.sampling import generate

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::UserWarning", "ignore::DeprecationWarning")
PROMPT = "a red circle at the top left"


@pytest.fixture(scope="module")
def dit_run(tmp_path_factory):
    from mobilediff.cli import cli
    from click.testing import CliRunner

    out = tmp_path_factory.mktemp("dit") / "run"
    res = CliRunner().invoke(cli, ["train-base", "--out", str(out), "--tiny", "--backbone", "dit", "--vae-steps", "2",
                                   "--unet-steps", "3", "--checkpoint-every", "2"])
    assert res.exit_code == 0, res.output
    return out


@pytest.fixture(scope="module")
def dit_bundle(dit_run, tmp_path_factory):
    pipe = load_pipeline(dit_run / "model", transformers=True)
    return export_bundle(pipe, "onnx", tmp_path_factory.mktemp("dit-bundle") / "b", source="tiny-dit",
                         model_dir=dit_run / "model", ort_format=False)


def test_run_writes_a_pixart_pipeline_with_the_runs_clip_encoder(dit_run):
    index = json.loads((dit_run / "model" / "model_index.json").read_text())
    assert index["_class_name"] == "PixArtAlphaPipeline"
    assert index["transformer"] == ["diffusers", "PixArtTransformer2DModel"]
    assert index["text_encoder"] == ["transformers", "CLIPTextModel"]
    assert "Diffusion transformer (PixArt blocks: 2 x width 32" in (dit_run / "model" / "TRAINING.md").read_text()
    pipe = load_pipeline(dit_run / "model", transformers=True)
    assert pipe.transformer.config.caption_channels == pipe.text_encoder.config.hidden_size


def test_training_forward_is_the_pipelines_conditioning(dit_run):
    """The Denoiser's rebuilt caption mask and call equal PixArtAlphaPipeline.encode_prompt + transformer."""
    from mobilediff.train.base import Denoiser

    pipe = load_pipeline(dit_run / "model", transformers=True)
    tok = pipe.tokenizer
    ids = tok([PROMPT], padding="max_length", max_length=tok.model_max_length, return_tensors="pt")
    emb, mask, *_ = pipe.encode_prompt(PROMPT, do_classifier_free_guidance=False,
                                       max_sequence_length=tok.model_max_length, clean_caption=False)
    x, t = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(0)), torch.tensor([500])
    with torch.no_grad():
        ours = Denoiser(pipe.text_encoder, pipe.transformer)(ids.input_ids, x, t)[0]
        theirs = pipe.transformer(x, encoder_hidden_states=emb, timestep=t, encoder_attention_mask=mask,
                                  added_cond_kwargs={"resolution": None, "aspect_ratio": None}).sample
    assert torch.equal(ours, theirs)
    assert mask.sum() < tok.model_max_length  # the padding is masked


def test_bundle_is_format_2_clip_bpe_with_masks_and_generates_the_pipelines_image(dit_run, dit_bundle):
    m = read_manifest(dit_bundle)
    assert m.format_version == 2 and m.tokenizer.kind == "clip-bpe" and m.tokenizer.bos_id is not None
    assert [i.name for i in m.component("text_encoder").inputs] == ["input_ids", "attention_mask"]
    assert m.component("unet").inputs[-1].name == "encoder_attention_mask"
    pipe = load_pipeline(dit_run / "model", transformers=True)
    runner = BundleRunner(dit_bundle, "onnx")
    for sampler, steps, scale in (("ddim", 1, 1.0), ("dpmpp", 4, 4.5)):  # one step: the sampler's own step
        got = runner.generate(PROMPT, seed=3, steps=steps, sampler=sampler, guidance=scale)
        want = generate(pipe, [PROMPT], [3], steps, sampler, scale)
        assert psnr(got, want) >= 60, (sampler, steps, psnr(got, want))


def test_clip_caption_mask_is_the_tokenizers_attention_mask(dit_run, dit_bundle):
    tok = load_pipeline(dit_run / "model", transformers=True).tokenizer
    ours = bundle_tokenizer(dit_bundle, read_manifest(dit_bundle))
    assert ours.masked
    for prompt in ("", PROMPT, "a " * 40, "a <|endoftext|> red"):
        enc = tok([prompt], padding="max_length", max_length=tok.model_max_length, truncation=True)
        ids, mask = ours.inputs(prompt)
        assert ids[0].tolist() == enc.input_ids[0] and mask[0].tolist() == enc.attention_mask[0]


def test_clip_caption_mask_with_a_padding_token_other_than_eos(tmp_path):
    from mobilediff.bundle import Tokenizer
    from mobilediff.engine import BundleTokenizer
    from mobilediff.tiny import write_tiny_tokenizer
    from transformers import CLIPTokenizer

    folder = write_tiny_tokenizer(tmp_path / "tok", 12, pad_token="!")
    tok = CLIPTokenizer.from_pretrained(str(folder))
    files = tuple(f"tok/{n}" for n in ("vocab.json", "merges.txt"))
    ours = BundleTokenizer(tmp_path, Tokenizer(max_length=12, bos_id=tok.bos_token_id, eos_id=tok.eos_token_id,
                                               pad_id=tok.pad_token_id, files=files))
    assert tok.pad_token_id != tok.eos_token_id
    for prompt in ("a red circle", "a <|endoftext|> red", ""):  # the EOS id spelled out is the prompt's
        enc = tok([prompt], padding="max_length", max_length=12)
        ids, mask = ours.ids_and_mask(prompt)
        assert ids[0].tolist() == enc.input_ids[0] and mask[0].tolist() == enc.attention_mask[0], prompt


def test_resuming_a_unet_run_as_a_dit_is_refused(dit_run, capsys):
    code, _, stderr = run_cli_here(capsys, "train-base", "--out", dit_run, "--tiny", "--vae-steps", 2,
                                   "--unet-steps", 4, "--resume", "latest")
    assert code != 0 and len(error_lines(stderr)) == 1 and "does not fit this run" in stderr


@pytest.mark.parametrize("flags, message", [
    (["--dit-width", "64"], "--dit-width needs --backbone dit"),
    (["--backbone", "dit", "--unet-channels", "8,8"], "--unet-channels and --backbone dit conflict"),
    (["--backbone", "dit", "--dit-width", "30", "--dit-heads", "4"], "--dit-width 30 is not a multiple of --dit-heads 4"),
])
def test_impossible_dit_options_are_refused_before_anything_is_written(tmp_path, capsys, flags, message):
    out = tmp_path / "run"
    code, _, stderr = run_cli_here(capsys, "train-base", "--out", out, "--tiny", *flags)
    assert code != 0 and len(error_lines(stderr)) == 1 and message in stderr, stderr
    assert not out.exists()


def _row(label, sampler, steps, guidance, acc, ms):
    return {"pipeline": label, "sampler": sampler, "steps": steps, "guidance": guidance, "prompt_accuracy": acc,
            "fd": 1.0 - acc, "latency_ms": ms}


def test_budget_table_starts_where_both_fit_and_needs_the_margin_to_win():
    from mobilediff.bench.backbones import budget_table, equal_steps

    rows = [_row("u", "ddim", 1, 1.0, 0.50, 10.0), _row("u", "ddim", 4, 1.0, 0.80, 40.0),
            _row("d", "ddim", 1, 1.0, 0.51, 20.0), _row("d", "ddim", 4, 3.5, 0.90, 80.0),
            _row("d", "ddim", 4, 1.0, 0.70, 80.0)]
    table = budget_table(rows, ("u", "d"), margin=0.02)
    assert table[0]["budget"] == pytest.approx(20.0) and table[-1]["budget"] == pytest.approx(80.0)
    assert table[0]["winner"] == "tie"  # 0.50 against 0.51: within the margin
    assert table[-1]["winner"] == "d" and table[-1]["best"]["d"]["config"] == "ddim-4 g3.5"
    middle = [r for r in table if 40.0 <= r["budget"] < 80.0]
    assert middle and all(r["winner"] == "u" for r in middle)
    steps = {(e["sampler"], e["steps"]): e for e in equal_steps(rows, ("u", "d"))}
    assert steps[("ddim", 4)]["d"]["guidance"] == 3.5 and steps[("ddim", 4)]["u"]["prompt_accuracy"] == 0.80


def test_training_record_is_read_and_a_corrupt_one_refused(tmp_path):
    from mobilediff.bench.backbones import training_record

    (tmp_path / "training.json").write_text(json.dumps({
        "config": {"batch_size": 64, "lr": 6e-4, "model": {"backbone": "dit"}, "freeze_text_encoder": True},
        "stats": {"unet_steps": 5000, "unet_seconds": 3600.0}, "machine": {"torch_threads": 1}}))
    rec = training_record(tmp_path)
    assert (rec["steps"], rec["batch"], rec["backbone"], rec["threads"]) == (5000, 64, "dit", 1)
    (tmp_path / "training.json").write_text("{")
    with pytest.raises(MobilediffError, match="training record"):
        training_record(tmp_path)


def test_a_masked_text_encoder_without_the_denoisers_mask_input_is_refused(dit_bundle, tmp_path):
    import shutil

    copy = tmp_path / "b"
    shutil.copytree(dit_bundle, copy)
    m = json.loads((copy / "manifest.json").read_text())
    m["components"]["unet"]["inputs"] = m["components"]["unet"]["inputs"][:3]
    (copy / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(MobilediffError, match="encoder_attention_mask as input 4"):
        read_manifest(copy)


def test_the_embedded_transformer_loads_with_the_default_models_borrowed_components():
    from mobilediff.loading import DIT_FAMILY, NAMED_MODELS, load_pipeline as load

    assert [m.name for m in DIT_FAMILY] == ["default:dit-l", "default:dit-l-flow"]  # the second: flow matching
    from mobilediff.bench.backbones import default_pairs
    from mobilediff.samplers import is_flow

    assert default_pairs() == [("default:unet-l", "default:dit-l")]  # the backbone study's pair: equal training
    assert is_flow(load("default:dit-l-flow", transformers=True).scheduler.config)
    assert not is_flow(load("default:dit-l", transformers=True).scheduler.config)
    pipe = load("default:dit-l", transformers=True)
    default = load("default")
    assert type(pipe).__name__ == "PixArtAlphaPipeline" and pipe.transformer.dtype == torch.float32
    for a, b in zip(pipe.text_encoder.parameters(), default.text_encoder.parameters()):
        assert torch.equal(a, b)  # borrowed, not copied
    with pytest.raises(MobilediffError, match="needs a UNet pipeline"):
        load("default:dit-l")
