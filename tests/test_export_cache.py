"""The export cache (mobilediff.export_cache): a component exported before is copied with its parity record, never
for other weights, code-relevant attributes or settings; modules it cannot describe are exported uncached."""
from __future__ import annotations

import json

import pytest
import torch

from mobilediff import export_cache
from mobilediff.components import declare, latent_geometry
from mobilediff.exporter import export_component
from mobilediff.targets import onnx as onnx_target
from mobilediff.tiny import tiny_pipeline


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv(export_cache.ENV, str(tmp_path / "cache"))
    return tmp_path / "cache"


def decoder_spec(seed: int = 0):
    pipe = tiny_pipeline(seed)
    return declare(pipe, latent_geometry(pipe))["vae_decoder"]


def no_export(*args, **kwargs):
    raise AssertionError("exported although the cache holds this component")


def test_a_second_export_is_copied_with_its_parity(cache, tmp_path, monkeypatch):
    first = export_component(decoder_spec(), "onnx", "fp32", tmp_path / "a")
    assert len([p for p in cache.iterdir() if not p.name.startswith(".")]) == 1
    monkeypatch.setattr(onnx_target, "export", no_export)
    monkeypatch.setattr(onnx_target, "validate", no_export)
    second = export_component(decoder_spec(), "onnx", "fp32", tmp_path / "b")
    assert json.loads(json.dumps(first)) == second  # the same file (sha256), facts and parity record
    assert (tmp_path / "b" / second["path"]).read_bytes() == (tmp_path / "a" / first["path"]).read_bytes()


def test_other_weights_settings_or_attributes_miss(cache, tmp_path, monkeypatch):
    spec = decoder_spec()
    key = export_cache.component_key(spec, "onnx", "fp32", "p", None, None, 64.0, 0)
    assert key == export_cache.component_key(decoder_spec(), "onnx", "fp32", "p", None, None, 64.0, 0)
    others = {export_cache.component_key(decoder_spec(1), "onnx", "fp32", "p", None, None, 64.0, 0),  # weights
              export_cache.component_key(spec, "executorch", "fp32", "p", None, None, 64.0, 0),  # target
              export_cache.component_key(spec, "onnx", "fp16", "p", None, None, 64.0, 0),  # precision
              export_cache.component_key(spec, "onnx", "fp32", "p", None, None, None, 0),  # attention budget
              export_cache.component_key(spec, "onnx", "fp32", "p", None, None, 64.0, 1)}  # parity seed
    monkeypatch.setattr(onnx_target, "EXTERNAL_DATA_MIN_BYTES", 0)  # a target's setting changed for a run
    others.add(export_cache.component_key(spec, "onnx", "fp32", "p", None, None, 64.0, 0))
    monkeypatch.undo()
    assert key not in others and len(others) == 6
    with torch.no_grad():
        next(spec.module.parameters()).view(-1)[0] += 1e-6  # one weight, barely
    changed = export_cache.component_key(spec, "onnx", "fp32", "p", None, None, 64.0, 0)
    spec.module.vae.config_attr_for_test = 2  # a plain attribute a forward could read
    assert len({key, changed, export_cache.component_key(spec, "onnx", "fp32", "p", None, None, 64.0, 0)}) == 3


def test_hooks_and_functions_are_never_cached(cache, tmp_path):
    spec = decoder_spec()
    handle = spec.module.vae.decoder.register_forward_hook(lambda m, i, o: o * 2)
    assert export_cache.component_key(spec, "onnx", "fp32", "p", None, None, 64.0, 0) is None
    handle.remove()
    assert export_cache.component_key(spec, "onnx", "fp32", "p", None, None, 64.0, 0) is not None
    spec.module.vae.decoder.scale_fn = lambda x: x * 2
    assert export_cache.component_key(spec, "onnx", "fp32", "p", None, None, 64.0, 0) is None
    spec.module.vae.decoder.scale_fn = torch.nn.functional.silu  # a library function, named
    assert export_cache.component_key(spec, "onnx", "fp32", "p", None, None, 64.0, 0) is not None


def test_a_torn_entry_is_exported_anew_and_no_cache_means_none(cache, tmp_path, monkeypatch):
    spec = decoder_spec()
    key = export_cache.component_key(spec, "onnx", "fp32", "vae_decoder/model.onnx", None, None, 64.0, 0)
    (cache / key / "files").mkdir(parents=True)  # no entry.json: a crash mid-write elsewhere
    entry = export_component(spec, "onnx", "fp32", tmp_path / "a")
    assert entry["parity"]["psnr_db"] > 60
    monkeypatch.delenv(export_cache.ENV)
    assert export_cache.cache_root() is None and export_cache.restore(key, tmp_path / "b") is None
