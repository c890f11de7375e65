"""mobilediff.features: a domain classifier trained on an imagefolder's label column, used as the feature extractor
of a Fréchet distance; its refusals of bad labels, bad folders and bad weights."""
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import error_lines, run_cli_here
from mobilediff.errors import MobilediffError
from mobilediff.features import ClassifierConfig, ClassifierNet, _augment, _label_set
from mobilediff.io import save_tensors
from mobilediff.metrics import FeatureExtractor, fd

# two labels that differ in what a CNN sees at once: a filled disc against a horizontal bar
KINDS = {"disc": lambda x, y, r: (x - 16) ** 2 + (y - 16) ** 2 < r * r, "bar": lambda x, y, r: abs(y - 16) < r / 3}


def _png(kind: str, i: int) -> bytes:
    y, x = np.mgrid[0:32, 0:32]
    mask = KINDS[kind](x, y, 6 + i % 5)
    colour = np.array([(200, 40, 40), (40, 90, 210), (30, 160, 60)][i % 3], dtype=np.uint8)
    image = np.where(mask[..., None], colour, np.uint8(255)).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def make_labelled(root: Path, n: int = 24, field: str = "kind") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        kind = ("disc", "bar")[i % 2]
        (root / f"{i}.png").write_bytes(_png(kind, i))
        rows.append({"file_name": f"{i}.png", "text": f"a {kind}", field: kind})
    (root / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def _train(capsys, data: Path, out: Path, *extra: str):
    return run_cli_here(capsys, "train-features", "--images", str(data), "--label", "kind", "--out", str(out),
                        "--steps", "40", "--batch-size", "16", "--resolution", "32", "--validation-fraction", "0.2",
                        "--cache-dir", str(out.parent / "cache"), *extra)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("features")
    data = make_labelled(root / "data")
    from mobilediff.features import train_classifier
    from mobilediff.sources import DataOptions

    opts = DataOptions(images=data, validation_fraction=0.2, cache_dir=root / "cache")
    record = train_classifier(opts, "kind", root / "out", steps=60, batch_size=16,
                              cfg=ClassifierConfig(channels=(16, 32), feature_dim=16, resolution=32),
                              progress=False)
    return data, root / "out", record


def test_trained_classifier_separates_its_labels_and_is_a_feature_extractor(trained):
    data, out, record = trained
    assert record["labels"] == ["bar", "disc"]
    assert record["train_images"] + record["validation_images"] == 24
    assert record["train_accuracy"] == 1.0  # two labels a 2-level CNN tells apart at a glance
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "mobilediff-classifier" and config["architecture"]["num_labels"] == 2
    fx = FeatureExtractor.load(out)
    assert (fx.kind, fx.dim, fx.preprocess.crop) == ("classifier", 16, (32, 32))
    discs = torch.stack([torch.from_numpy(np.array(Image.open(io.BytesIO(_png("disc", i))))) for i in range(0, 8)])
    bars = torch.stack([torch.from_numpy(np.array(Image.open(io.BytesIO(_png("bar", i))))) for i in range(0, 8)])
    to_unit = lambda u8: u8.permute(0, 3, 1, 2).float() / 127.5 - 1  # noqa: E731
    discs, bars = to_unit(discs), to_unit(bars)
    # the features are the network's own: the same images give the features its forward pass gives
    net = ClassifierNet(ClassifierConfig(channels=(16, 32), feature_dim=16, resolution=32, num_labels=2))
    from mobilediff.io import load_tensors

    net.load_state_dict(load_tensors(out / "model.safetensors"))
    np.testing.assert_allclose(fx.features(discs), net.eval().features(discs).detach().double().numpy(), rtol=1e-5, atol=1e-6)
    # a set against itself is ~0 apart; discs against bars are far apart (the labels it learned)
    same = fd(fx, discs[:4], discs[4:])
    apart = fd(fx, discs, bars)
    assert apart > 10 * max(same, 1e-3), (same, apart)
    # other sizes are resized to the classifier's own
    assert fx.features(torch.nn.functional.interpolate(discs, size=(48, 80))).shape == (8, 16)


def test_label_set_pools_rare_labels_and_needs_two():
    assert _label_set(["a", "a", "b", "b", "c"]) == ["a", "b", "other"]
    assert _label_set(["a", "a", "other", "b", "b"]) == ["a", "b", "other"]
    with pytest.raises(MobilediffError, match="at least 2 labels"):
        _label_set(["a", "a", "a"])


def test_augment_keeps_shape_and_content():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(5, 3, 16, 16) * 2 - 1
    y = _augment(x, g, 2)
    assert y.shape == x.shape and y.min() >= x.min() and y.max() <= x.max()  # shifts and flips only move pixels
    flat = torch.full((2, 3, 8, 8), 0.25)
    assert torch.equal(_augment(flat, g, 2), flat)


def test_cli_trains_and_prints_the_record(tmp_path, capsys):
    data = make_labelled(tmp_path / "data")
    code, out, err = _train(capsys, data, tmp_path / "f")
    assert code == 0, err
    record = json.loads(out)
    assert record["steps"] == 40 and record["label_field"] == "kind" and "labels" not in record
    assert FeatureExtractor.load(tmp_path / "f").kind == "classifier"


def _no_metadata(d: Path):
    make_labelled(d)
    for i in range(24):
        (d / f"{i}.txt").write_text("a thing")
    (d / "metadata.jsonl").unlink()


def _no_field(d: Path):
    make_labelled(d, field="other_field")


def _one_label(d: Path):
    make_labelled(d)
    rows = [json.loads(line) for line in (d / "metadata.jsonl").read_text().splitlines()]
    (d / "metadata.jsonl").write_text("".join(json.dumps({**r, "kind": "disc"}) + "\n" for r in rows))


def _bad_label(d: Path):
    make_labelled(d)
    rows = [json.loads(line) for line in (d / "metadata.jsonl").read_text().splitlines()]
    rows[3]["kind"] = ["a", "list"]
    (d / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


BAD = {
    "no metadata.jsonl": (_no_metadata, "--label needs an imagefolder with metadata.jsonl"),
    "no row has the label": (_no_field, "has a 'kind' field"),
    "a single label": (_one_label, "at least 2 labels"),
    "a label that is a list": (_bad_label, "must be a non-empty string or number"),
    "no folder": (lambda d: None, "does not exist"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_labels_are_refused_in_one_line(case, tmp_path, capsys):
    setup, message = BAD[case]
    data = tmp_path / "data"
    setup(data)
    before = sorted(p.relative_to(data) for p in data.rglob("*")) if data.exists() else None
    if case == "no folder":
        data = tmp_path / "missing"
    code, _, err = _train(capsys, data, tmp_path / "out")
    lines = [line for line in error_lines(err) if line.startswith("error:")]
    assert code == 2 and len(lines) == 1 and message in lines[0], (code, err)
    assert not (tmp_path / "out").exists()
    if before is not None:
        assert sorted(p.relative_to(data) for p in data.rglob("*")) == before


def test_existing_out_is_refused_and_untouched(tmp_path, capsys):
    data = make_labelled(tmp_path / "data")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "mine.txt").write_text("keep")
    code, _, err = _train(capsys, data, tmp_path / "out")
    assert code == 2 and "already exists" in err
    assert (tmp_path / "out" / "mine.txt").read_text() == "keep"


def test_classifier_folder_with_foreign_weights_is_refused(trained, tmp_path):
    _, out, _ = trained
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "config.json").write_text((out / "config.json").read_text())
    save_tensors({"weight": torch.zeros(3)}, bad / "model.safetensors")
    with pytest.raises(MobilediffError, match="do not fit the architecture"):
        FeatureExtractor.load(bad)
    config = json.loads((out / "config.json").read_text())
    config["architecture"]["channels"] = [3]
    (bad / "config.json").write_text(json.dumps(config))
    with pytest.raises(MobilediffError, match="multiples of 8"):
        FeatureExtractor.load(bad)
    with pytest.raises(MobilediffError, match="takes 32x32 images"):
        FeatureExtractor.load(out, image_size=64)
