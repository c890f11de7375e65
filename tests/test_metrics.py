"""mobilediff.metrics: PSNR/SSIM against independent NumPy/SciPy references, CLIP score with a tiny random CLIP, FD
with tiny TorchScript and Hugging Face extractors, and every refusal (one-line MobilediffError naming the problem).

Every model here is built in the test, seeded, in tmp_path: nothing is downloaded."""
import json
import pickle
import shutil
import subprocess
import sys
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from mobilediff.errors import MobilediffError
from mobilediff.metrics import (ClipScorer, FeatureExtractor, ImagePreprocess, MetricSet, fd, psnr, ssim)

TOKENIZER = Path(__file__).resolve().parents[1] / "mobilediff" / "assets" / "default_model" / "tokenizer"
PROJECTION = 16  # projection_dim of the tiny CLIP: its feature size


def _images(n, h=24, w=20, seed=0):
    """(n, 3, h, w) float in [-1, 1], seeded."""
    return torch.rand(n, 3, h, w, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def _refuses(match, fn, *args, **kwargs):
    """Assert fn raises a one-line MobilediffError whose message contains ``match`` (a regex)."""
    with pytest.raises(MobilediffError, match=match) as e:
        fn(*args, **kwargs)
    assert "\n" not in str(e.value)
    return str(e.value)


# ---- tiny models built in code --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    from mobilediff.tiny import save_tiny_clip

    # the project's real CLIP BPE tokenizer (model_max_length 32) beside a tiny random CLIPModel
    return save_tiny_clip(tmp_path_factory.mktemp("clip") / "clip", projection_dim=PROJECTION)


@pytest.fixture(scope="module")
def clip(clip_dir):
    return ClipScorer.load(clip_dir)


@pytest.fixture(scope="module")
def dino_dir(tmp_path_factory):
    from transformers import Dinov2Config, Dinov2Model

    folder = tmp_path_factory.mktemp("dino") / "dino"
    torch.manual_seed(0)
    Dinov2Model(Dinov2Config(hidden_size=32, num_hidden_layers=1, num_attention_heads=4, mlp_ratio=2, image_size=32,
                             patch_size=8)).save_pretrained(folder, safe_serialization=True)
    return folder


def _copy(folder: Path, tmp_path: Path, name: str = "copy") -> Path:
    out = tmp_path / name
    shutil.copytree(folder, out)
    return out


class ConvFeatures(torch.nn.Module):
    """A tiny Inception stand-in: (B, 3, S, S) in [0, 255] -> (B, 8)."""

    def __init__(self):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(3, 8, 3, stride=2)
        self.conv2 = torch.nn.Conv2d(8, 8, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv1(x / 127.5 - 1))
        return torch.tanh(self.conv2(x)).mean((2, 3))


class InputStats(torch.nn.Module):
    """Features that reveal what the extractor was fed: (min, max, height, width) of each input image."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        size = torch.tensor([x.shape[2], x.shape[3]], dtype=x.dtype).expand(n, 2)
        return torch.cat([x.amin((1, 2, 3)).unsqueeze(1), x.amax((1, 2, 3)).unsqueeze(1), size], dim=1)


class WithReturnFeatures(torch.nn.Module):
    """Like the StyleGAN/clean-fid Inception: class probabilities by default, features with return_features=True."""

    def forward(self, img: torch.Tensor, return_features: bool = False) -> torch.Tensor:
        features = img.mean((2, 3))  # (B, 3)
        if return_features:
            return features
        return features.softmax(-1).sum(-1)  # 1-D: refused if the extractor forgot the flag


class OneChannel(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x).mean((2, 3))


class OneDimensional(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean((1, 2, 3))


class FirstOnly(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:1].mean((2, 3))


class NotFinite(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean((2, 3)) / 0.0


class FailsOnThree(torch.nn.Module):
    """Passes the load-time probe (2 images), fails on a later batch of 3."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] == 3:
            raise RuntimeError("batches of three are not supported")
        return x.mean((2, 3))


class ReturnsTuple(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x.mean((2, 3)), x.amax((2, 3))


def _script(module: torch.nn.Module, path: Path) -> Path:
    with warnings.catch_warnings():  # torch.jit is deprecated upstream; clean-fid's file is TorchScript all the same
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.script(module), str(path))
    return path


@pytest.fixture(scope="module")
def conv_pt(tmp_path_factory):
    torch.manual_seed(0)
    return _script(ConvFeatures(), tmp_path_factory.mktemp("ts") / "conv.pt")


@pytest.fixture(scope="module")
def conv_fx(conv_pt):
    return FeatureExtractor.load(conv_pt, image_size=32)


# ---- PSNR and SSIM --------------------------------------------------------------------------------------------------
def _numpy_ssim(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """SSIM written independently: scipy's Gaussian filter (radius int(3.5 * 1.5 + 0.5) = 5, i.e. 11 taps) per
    image and channel, the 5-pixel border dropped ('valid'), luminance times contrast-structure."""
    from scipy.ndimage import gaussian_filter

    x, y = (x.astype(np.float64) + 1) / 2, (y.astype(np.float64) + 1) / 2
    c1, c2 = 0.01**2, 0.03**2
    out = np.zeros(len(x))
    for b in range(len(x)):
        for c in range(3):
            def blur(a):
                return gaussian_filter(a, sigma=1.5, truncate=3.5, mode="constant")[5:-5, 5:-5]

            mx, my = blur(x[b, c]), blur(y[b, c])
            vx, vy = blur(x[b, c] ** 2) - mx**2, blur(y[b, c] ** 2) - my**2
            cov = blur(x[b, c] * y[b, c]) - mx * my
            luminance = (2 * mx * my + c1) / (mx**2 + my**2 + c1)
            contrast_structure = (2 * cov + c2) / (vx + vy + c2)
            out[b] += (luminance * contrast_structure).mean() / 3
    return out


def test_ssim_of_an_image_with_itself_is_one_and_psnr_is_infinite():
    x = _images(3)
    assert torch.allclose(ssim(x, x), torch.ones(3, dtype=torch.float64), atol=1e-12)
    assert torch.isinf(psnr(x, x)).all() and (psnr(x, x) > 0).all()


def test_ssim_matches_a_scipy_reference():
    x = _images(3, 24, 20, seed=1)
    y = (x + 1.0 * _images(3, 24, 20, seed=2)).clamp(-1, 1)  # correlated, so SSIM sits well inside (0, 1)
    got = ssim(x, y)
    assert got.shape == (3,) and got.dtype == torch.float64
    np.testing.assert_allclose(got.numpy(), _numpy_ssim(x.numpy(), y.numpy()), rtol=0, atol=1e-10)
    assert 0.05 < got.min() and got.max() < 0.95
    assert torch.allclose(ssim(y, x), got, atol=1e-12)  # symmetric


def test_ssim_of_an_image_smaller_than_the_window_uses_the_clipped_window():
    # 6 x 6 image: a 6 x 6 window of the sigma-1.5 Gaussian at offsets -2.5..2.5, one valid position
    x, y = _images(2, 6, 6, seed=3), _images(2, 6, 6, seed=4)
    g = np.exp(-((np.arange(6) - 2.5) ** 2) / (2 * 1.5**2))
    w = np.outer(g, g) / np.outer(g, g).sum()
    a, b = (x.numpy().astype(np.float64) + 1) / 2, (y.numpy().astype(np.float64) + 1) / 2
    mx, my = (w * a).sum((2, 3)), (w * b).sum((2, 3))  # (B, 3)
    vx, vy = (w * (a - mx[..., None, None]) ** 2).sum((2, 3)), (w * (b - my[..., None, None]) ** 2).sum((2, 3))
    cov = (w * (a - mx[..., None, None]) * (b - my[..., None, None])).sum((2, 3))
    c1, c2 = 0.01**2, 0.03**2
    want = (((2 * mx * my + c1) * (2 * cov + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))).mean(1)
    np.testing.assert_allclose(ssim(x, y).numpy(), want, rtol=0, atol=1e-10)
    assert ssim(_images(1, 1, 40), _images(1, 1, 40)).item() == pytest.approx(1.0)  # a one-pixel-high image works


def test_psnr_closed_form_and_numpy_reference():
    ref = _images(2, 16, 16, seed=5) * 0.5  # in [-0.5, 0.5], so an offset of 0.2 is never clipped
    # offset 0.2 in [-1, 1] units is 0.1 in [0, 1]: PSNR = -20 log10(0.1) = 20 dB
    np.testing.assert_allclose(psnr(ref + 0.2, ref).numpy(), [20.0, 20.0], atol=1e-9)
    x, y = _images(2, seed=6).numpy(), _images(2, seed=7).numpy()
    mse = (((x.astype(np.float64) - y) / 2) ** 2).reshape(2, -1).mean(1)
    np.testing.assert_allclose(psnr(torch.from_numpy(x), torch.from_numpy(y)).numpy(), 10 * np.log10(1 / mse),
                               atol=1e-9)
    # values outside [-1, 1] are clipped, as saving the image would
    assert torch.isinf(psnr(torch.full((1, 3, 4, 4), 1.5), torch.ones(1, 3, 4, 4))).all()


def test_fidelity_refusals():
    x = _images(2, 16, 16)
    message = _refuses("differ in shape", psnr, x, _images(2, 16, 12))
    assert "(2, 3, 16, 16)" in message and "(2, 3, 16, 12)" in message
    _refuses(r"\(2, 3, 16, 16\).*\(3, 3, 16, 16\)", ssim, x, _images(3, 16, 16))
    bad = x.clone()
    bad[0, 0, 0, 0] = float("nan")
    _refuses("reference contain NaN or infinite", ssim, x, bad)
    bad[0, 0, 0, 0] = float("inf")
    _refuses("images contain NaN or infinite", psnr, bad, x)
    _refuses(r"shape \(B, 3, H, W\).*\(3, 16, 16\)", psnr, x[0], x[0])
    as_uint8 = torch.zeros(1, 3, 4, 4, dtype=torch.uint8)
    _refuses("float tensor", ssim, as_uint8, as_uint8)
    _refuses("torch tensor", psnr, x.numpy(), x)


# ---- CLIP score -----------------------------------------------------------------------------------------------------
PROMPTS = ["a red circle on a white background", "a photo of a cat", "", "a blue square " * 40]


def test_clip_score_is_in_range_deterministic_and_batch_independent(clip, clip_dir):
    images = _images(4, 40, 56, seed=8)  # not square: resized to 32 x 43, centre-cropped to 32 x 32
    scores = clip.score(images, PROMPTS)
    assert scores.shape == (4,) and scores.dtype == torch.float32
    assert ((scores >= 0) & (scores <= 100)).all()
    assert torch.equal(scores, clip.score(images, PROMPTS))
    assert torch.equal(scores, ClipScorer.load(clip_dir).score(images, PROMPTS))
    # one prompt per pass pads differently from four per pass; the end-token embedding must not notice
    assert torch.allclose(scores, clip.score(images, PROMPTS, batch_size=1), atol=1e-4)
    assert clip.max_length == 32


def test_clip_score_equals_clip_models_own_forward(clip):
    images, prompts = _images(3, 32, 32, seed=9), PROMPTS[:3]
    tokens = clip.tokenizer(prompts, padding="max_length", max_length=32, return_tensors="pt")
    # CLIP's normalisation done by hand here: 32 x 32 input needs no resize or crop
    mean = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(1, 3, 1, 1)
    std = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(1, 3, 1, 1)
    with torch.no_grad():
        out = clip.model(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"],
                         pixel_values=((images + 1) / 2 - mean) / std)
    want = 100 * (out.image_embeds * out.text_embeds).sum(-1).clamp(min=0)  # forward's embeddings are unit vectors
    assert torch.allclose(clip.score(images, prompts), want, atol=1e-4)


def test_clip_preprocessing_follows_preprocessor_config(clip_dir, tmp_path):
    folder = _copy(clip_dir, tmp_path)
    (folder / "preprocessor_config.json").write_text(json.dumps({"image_mean": [0.5, 0.5, 0.5],
                                                                 "image_std": [0.5, 0.5, 0.5]}))
    scorer = ClipScorer.load(folder)
    assert scorer.preprocess == ImagePreprocess(resize=32, crop=(32, 32), mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    x = _images(2, 32, 32, seed=10)
    assert torch.allclose(scorer.preprocess(x), x, atol=1e-6)  # mean/std 0.5 undo the [0, 1] mapping exactly
    assert scorer.preprocess(_images(1, 40, 80)).shape == (1, 3, 32, 32)


def test_image_preprocess_resizes_the_shorter_side_then_centre_crops():
    p = ImagePreprocess(resize=16, crop=(16, 16), mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    assert p.resized_size(32, 64) == (16, 32) and p.resized_size(60, 20) == (48, 16)
    # a left-to-right ramp: the crop keeps the middle, so the mean stays 0.5
    ramp = torch.linspace(-1, 1, 64).view(1, 1, 1, 64).expand(1, 3, 32, 64)
    out = p(ramp)
    assert out.shape == (1, 3, 16, 16) and out.mean().item() == pytest.approx(0.5, abs=1e-3)
    assert 0.2 < out.min() and out.max() < 0.8  # the outer quarters were cropped away
    _refuses("cannot centre-crop 20x20", ImagePreprocess(resize=(16, 16), crop=(20, 20), mean=(0.0,) * 3,
                                                         std=(1.0,) * 3), ramp)


def test_clip_score_refusals(clip):
    _refuses("one prompt per image: got 2 images and 1 prompts", clip.score, _images(2), ["a"])
    _refuses("one prompt per image", clip.score, _images(1), "a")
    _refuses("list of strings", clip.score, _images(1), [3])
    _refuses("batch_size", clip.score, _images(1), ["a"], batch_size=0)


def _drop_tensor(folder: Path, name: str) -> None:
    from safetensors.torch import load_file, save_file

    tensors = load_file(folder / "model.safetensors")
    del tensors[name]
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})


def test_clip_load_refusals(clip_dir, dino_dir, tmp_path):
    _refuses("does not exist", ClipScorer.load, tmp_path / "nowhere")
    _refuses("is a file", ClipScorer.load, clip_dir / "config.json")
    folder = _copy(clip_dir, tmp_path, "no_config")
    (folder / "config.json").unlink()
    _refuses("no config.json", ClipScorer.load, folder)
    folder = _copy(clip_dir, tmp_path, "bad_config")
    (folder / "config.json").write_text("{not json")
    _refuses("corrupt model config", ClipScorer.load, folder)
    (folder / "config.json").write_text("[1, 2]")
    _refuses("corrupt model config.*JSON object", ClipScorer.load, folder)
    _refuses("'dinov2' model, not a CLIP model", ClipScorer.load, dino_dir)
    folder = _copy(clip_dir, tmp_path, "no_weights")
    (folder / "model.safetensors").unlink()
    _refuses("no model.safetensors", ClipScorer.load, folder)
    torch.save({}, folder / "pytorch_model.bin")
    _refuses(r"only pickle weights \(pytorch_model.bin\)", ClipScorer.load, folder)
    folder = _copy(clip_dir, tmp_path, "corrupt_weights")
    (folder / "model.safetensors").write_bytes(b"\x00" * 64)
    _refuses("could not load the weights", ClipScorer.load, folder)
    folder = _copy(clip_dir, tmp_path, "partial_weights")
    _drop_tensor(folder, "visual_projection.weight")
    _refuses("lack 1 tensor.*visual_projection.weight", ClipScorer.load, folder)
    folder = _copy(clip_dir, tmp_path, "no_tokenizer")
    (folder / "merges.txt").unlink()
    _refuses("no CLIP tokenizer.*vocab.json and merges.txt", ClipScorer.load, folder)
    (folder / "merges.txt").write_text("#version: 0.2\n")  # no merges: every word falls apart into unknowns
    (folder / "vocab.json").write_text(json.dumps({"<|startoftext|>": 0, "<|endoftext|>": 1}))
    _refuses("does not know the words", ClipScorer.load, folder)
    folder = _copy(clip_dir, tmp_path, "bad_preprocessor")
    (folder / "preprocessor_config.json").write_text("{")
    _refuses("corrupt preprocessor config", ClipScorer.load, folder)


# ---- feature extractors and FD --------------------------------------------------------------------------------------
def test_torchscript_features_and_fd(conv_fx):
    images = _images(12, 24, 24, seed=11)
    features = conv_fx.features(images)
    assert features.shape == (12, 8) and features.dtype == np.float64 and conv_fx.dim == 8
    np.testing.assert_array_equal(features, conv_fx.features(images, batch_size=5))  # batching changes nothing
    assert fd(conv_fx, images, images) == pytest.approx(0.0, abs=1e-6)
    shifted = (images + 0.5).clamp(-1, 1)
    other = _images(12, 24, 24, seed=12)  # same distribution, different draw
    assert fd(conv_fx, images, shifted) > 10 * fd(conv_fx, images, other) > 0
    assert fd(conv_fx, images, _images(5, 40, 30, seed=13)) >= 0  # sizes may differ between the sets


def test_torchscript_gets_0_255_images_at_299_by_default(tmp_path):
    path = _script(InputStats(), tmp_path / "stats.pt")
    images = torch.stack([torch.full((3, 20, 30), -1.0), torch.full((3, 20, 30), 1.0)])
    np.testing.assert_allclose(FeatureExtractor.load(path).features(images),
                               [[0, 0, 299, 299], [255, 255, 299, 299]], atol=1e-3)
    np.testing.assert_allclose(FeatureExtractor.load(path, image_size=48).features(images)[:, 2:], [[48, 48]] * 2)


def test_torchscript_with_return_features_is_asked_for_features(tmp_path):
    fx = FeatureExtractor.load(_script(WithReturnFeatures(), tmp_path / "inception_like.pt"), image_size=8)
    assert fx.dim == 3
    np.testing.assert_allclose(fx.features(torch.zeros(2, 3, 8, 8)), np.full((2, 3), 127.5), atol=1e-4)


def test_feature_extractor_file_refusals(tmp_path):
    _refuses("does not exist", FeatureExtractor.load, tmp_path / "missing.pt")
    torch.save(ConvFeatures(), tmp_path / "module.pt")
    _refuses("torch.save wrote it", FeatureExtractor.load, tmp_path / "module.pt")
    torch.save(ConvFeatures().state_dict(), tmp_path / "state.pt")
    _refuses("torch.save wrote it", FeatureExtractor.load, tmp_path / "state.pt")
    (tmp_path / "plain.pkl").write_bytes(pickle.dumps({"a": 1}))
    _refuses("is a pickle file", FeatureExtractor.load, tmp_path / "plain.pkl")
    torch.save({}, tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)
    _refuses("is a pickle file", FeatureExtractor.load, tmp_path / "legacy.pt")
    (tmp_path / "noise.pt").write_bytes(b"not a model at all")
    _refuses("not a TorchScript archive", FeatureExtractor.load, tmp_path / "noise.pt")
    with zipfile.ZipFile(tmp_path / "other.zip", "w") as z:
        z.writestr("readme.txt", "hello")
    _refuses("zip archive but not a TorchScript one", FeatureExtractor.load, tmp_path / "other.zip")
    _refuses("image_size must be a positive integer", FeatureExtractor.load, tmp_path / "other.zip", image_size=0)


@pytest.mark.parametrize("module, match", [
    (OneChannel, r"fails on a \(2, 3, 16, 16\) probe: RuntimeError: Given groups=1.*1 channels"),
    (OneDimensional, r"returned shape \(2,\) for 2 images"),
    (FirstOnly, r"returned shape \(1, 3\) for 2 images"),
    (NotFinite, "NaN or infinite features"),
    (ReturnsTuple, "returned a tuple"),
])
def test_feature_extractor_probe_refusals(tmp_path, module, match):
    _refuses(match, FeatureExtractor.load, _script(module(), tmp_path / "m.pt"), image_size=16)


def test_feature_extractor_failing_after_the_probe_is_refused_in_one_line(tmp_path):
    fx = FeatureExtractor.load(_script(FailsOnThree(), tmp_path / "m.pt"), image_size=8)
    assert fx.features(_images(4), batch_size=2).shape == (4, 3)
    _refuses("fails on a batch of 3 images: .*batches of three are not supported", fx.features, _images(3))


def test_clip_folder_as_feature_extractor(clip, clip_dir):
    fx = FeatureExtractor.load(clip_dir)
    assert fx.kind == "clip" and fx.dim == PROJECTION
    images = _images(3, 32, 32, seed=14)
    np.testing.assert_allclose(fx.features(images), clip.image_embeds(images).double().numpy(), atol=1e-6)
    _refuses("takes 32x32 images; image_size 64", FeatureExtractor.load, clip_dir, image_size=64)


def test_vision_folder_as_feature_extractor(dino_dir, tmp_path):
    fx = FeatureExtractor.load(dino_dir)
    assert fx.kind == "vision" and fx.dim == 32
    assert fx.preprocess.crop == (32, 32) and fx.preprocess.mean == (0.48145466, 0.4578275, 0.40821073)
    images = _images(4, 48, 40, seed=15)
    assert fx.features(images).shape == (4, 32)
    assert fd(fx, images, images) == pytest.approx(0.0, abs=1e-6)
    assert FeatureExtractor.load(dino_dir, image_size=24).preprocess.crop == (24, 24)
    folder = _copy(dino_dir, tmp_path)  # DINOv2's own preprocessing: resize 256 crop 224, scaled down here
    (folder / "preprocessor_config.json").write_text(json.dumps({
        "size": {"shortest_edge": 40}, "crop_size": {"height": 32, "width": 32},
        "image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225]}))
    fx = FeatureExtractor.load(folder)
    assert fx.preprocess == ImagePreprocess(resize=40, crop=(32, 32), mean=(0.485, 0.456, 0.406),
                                            std=(0.229, 0.224, 0.225))
    (folder / "preprocessor_config.json").write_text(json.dumps({"size": {"shortest_edge": 24}, "crop_size": 32}))
    _refuses("crops 32x32 from images whose shorter side is resized to 24", FeatureExtractor.load, folder)
    (folder / "preprocessor_config.json").write_text(json.dumps({"size": "large"}))
    _refuses("unsupported size 'large'", FeatureExtractor.load, folder)


def test_vision_folder_refusals(dino_dir, tmp_path):
    folder = _copy(dino_dir, tmp_path, "pickled")
    (folder / "model.safetensors").unlink()
    torch.save({}, folder / "pytorch_model.bin")
    _refuses("only pickle weights", FeatureExtractor.load, folder)
    folder = _copy(dino_dir, tmp_path, "partial")
    _drop_tensor(folder, "layernorm.weight")
    _refuses("lack 1 tensor", FeatureExtractor.load, folder)
    folder = _copy(dino_dir, tmp_path, "no_config")
    (folder / "config.json").unlink()
    _refuses("no config.json", FeatureExtractor.load, folder)


def test_fd_refuses_fewer_than_two_images(conv_fx):
    _refuses("at least 2 images on each side, got 1 images and 3", fd, conv_fx, _images(1), _images(3))
    _refuses("at least 2 images on each side, got 3 images and 1", fd, conv_fx, _images(3), _images(1))


# ---- MetricSet ------------------------------------------------------------------------------------------------------
def test_metric_set_computes_what_it_can(clip, conv_fx):
    images, teacher = _images(4, 32, 32, seed=16), _images(4, 32, 32, seed=17)
    prompts = PROMPTS
    assert MetricSet().compute(images) == {}
    only_teacher = MetricSet().compute(images, teacher=teacher)
    assert set(only_teacher) == {"psnr_db_vs_teacher", "ssim_vs_teacher"}
    assert only_teacher["psnr_db_vs_teacher"] == pytest.approx(psnr(images, teacher).mean().item())
    assert MetricSet().compute(images, teacher=images)["psnr_db_vs_teacher"] == float("inf")
    reference = conv_fx.features(_images(6, 32, 32, seed=18))
    metrics = MetricSet(clip=clip, fd_features=conv_fx, fd_reference=reference, batch_size=3)
    results = metrics.compute(images, prompts, teacher)
    assert set(results) == {"psnr_db_vs_teacher", "ssim_vs_teacher", "clip_score", "fd"}
    assert all(isinstance(v, float) for v in results.values())
    assert results["clip_score"] == pytest.approx(clip.score(images, prompts).mean().item(), abs=1e-4)
    assert results["fd"] == pytest.approx(fd(conv_fx, images, _images(6, 32, 32, seed=18)))
    assert results["ssim_vs_teacher"] == pytest.approx(ssim(images, teacher).mean().item())


def test_metric_set_refusals(clip, conv_fx):
    _refuses("needs the prompts", MetricSet(clip=clip).compute, _images(2))
    _refuses("give both or neither", MetricSet, fd_features=conv_fx)
    _refuses("give both or neither", MetricSet, fd_reference=np.zeros((3, 8)))
    _refuses(r"shape \(M, 8\), got \(3, 5\)", MetricSet, fd_features=conv_fx, fd_reference=np.zeros((3, 5)))
    _refuses("at least 2", MetricSet, fd_features=conv_fx, fd_reference=np.zeros((1, 8)))
    _refuses("NaN or infinite", MetricSet, fd_features=conv_fx, fd_reference=np.full((3, 8), np.nan))
    metrics = MetricSet(fd_features=conv_fx, fd_reference=np.random.default_rng(0).normal(size=(4, 8)))
    _refuses("at least 2 images", metrics.compute, _images(1))
    _refuses("differ in shape", MetricSet().compute, _images(2), teacher=_images(3))


def test_import_has_no_heavy_side_effects():
    code = "import sys, mobilediff.metrics; print(sorted(m for m in ('transformers', 'scipy') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
