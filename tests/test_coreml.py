"""Core ML target on the tiny pipeline: export, structural validation, tampering, parity (macOS only)."""
import dataclasses
import platform

import pytest
import torch

from mobilediff.components import declare, latent_geometry
from mobilediff.errors import MobilediffError
from mobilediff.targets import coreml
from mobilediff.tiny import tiny_pipeline

# coremltools' own torch frontend calls a deprecated registry method once per graph node
pytestmark = pytest.mark.filterwarnings("ignore:Function _TORCH_OPS_REGISTRY:DeprecationWarning")
ON_MAC = platform.system() == "Darwin"
CASES = [("text_encoder", "fp32"), ("unet", "fp32"), ("vae_decoder", "fp32"), ("unet", "fp16")]


@pytest.fixture(scope="module")
def specs():
    pipe = tiny_pipeline()
    return declare(pipe, latent_geometry(pipe))


@pytest.fixture(scope="module")
def exported(specs, tmp_path_factory):
    """exported(name, precision) -> (package path, export facts); each package is converted once."""
    root = tmp_path_factory.mktemp("coreml")
    cache = {}

    def get(name: str, precision: str):
        if (name, precision) not in cache:
            path = root / f"{name}-{precision}.{coreml.EXT}"
            cache[name, precision] = path, coreml.export(specs[name], path, precision)
        return cache[name, precision]

    return get


@pytest.fixture(scope="module")
def reference(specs):
    """reference(name) -> (example inputs, PyTorch outputs); each component runs once."""
    cache = {}

    def get(name: str):
        if name not in cache:
            inputs = specs[name].example_inputs()
            with torch.no_grad():
                cache[name] = inputs, specs[name].module(*inputs)
        return cache[name]

    return get


@pytest.mark.parametrize("name,precision", CASES)
def test_export_and_validate(specs, exported, reference, name, precision):
    spec = specs[name]
    path, facts = exported(name, precision)
    assert path.is_dir() and (path / "Manifest.json").is_file()
    assert facts["minimum_deployment_target"] == "iOS17" and facts["spec_version"] == 8
    assert facts["mil_opset"] == "CoreML7" and facts["size_bytes"] > 0
    assert facts["ops"] == sum(facts["op_counts"].values()) > 0
    assert (facts["fp16_ops"] > 0) == (precision == "fp16")
    assert facts["aliases_removed"] >= (name == "text_encoder")  # the CLIP position_ids slice

    record = coreml.validate(spec, path, precision, *reference(name))
    assert record["target"] == "coreml" and record["precision"] == precision
    assert record["inputs"] == [s.name for s in spec.inputs] and record["outputs"] == [s.name for s in spec.outputs]
    if not ON_MAC:
        assert record["checked"] == "structure (Core ML cannot predict on Linux)"


def test_package_carries_the_declared_descriptions(specs, exported):
    import coremltools as ct

    spec = specs["text_encoder"]
    path, _ = exported("text_encoder", "fp32")
    model = ct.models.MLModel(str(path), skip_model_load=True)
    assert model.input_description["input_ids"] == spec.inputs[0].description
    assert model.output_description["last_hidden_state"] == spec.outputs[0].description
    assert model.author == "mobilediff" and model.version and "text_encoder" in model.short_description


def _other_batch(spec):
    return dataclasses.replace(spec, dims={**spec.dims, "batch": spec.dims["batch"] + 1})


def _renamed_output(spec):
    return dataclasses.replace(spec, outputs=(dataclasses.replace(spec.outputs[0], name="noise_pred"),))


def _float_ids(spec):
    return dataclasses.replace(spec, inputs=(dataclasses.replace(spec.inputs[0], dtype="float32"),))


@pytest.mark.parametrize("package,tamper,precision,message", [
    (("unet", "fp32"), _other_batch, "fp32", "has shape"),
    (("unet", "fp32"), _renamed_output, "fp32", "output names"),
    (("text_encoder", "fp32"), _float_ids, "fp32", "input input_ids is int32, declared float32"),
    (("unet", "fp32"), lambda s: s, "fp16", "expected fp16 compute"),
    (("unet", "fp16"), lambda s: s, "fp32", "expected fp32 compute"),
], ids=["shape", "output-name", "dtype", "fp32-as-fp16", "fp16-as-fp32"])
def test_validate_rejects_a_package_that_does_not_match_the_spec(specs, exported, reference, package, tamper,
                                                                 precision, message):
    name, exported_precision = package
    path, _ = exported(name, exported_precision)
    spec = tamper(specs[name])
    with pytest.raises(MobilediffError, match=message) as err:
        coreml.validate(spec, path, precision, *reference(name))
    assert "\n" not in str(err.value)


def test_validate_rejects_a_missing_package(specs, reference, tmp_path):
    with pytest.raises(MobilediffError, match="cannot load"):
        coreml.validate(specs["vae_decoder"], tmp_path / "missing.mlpackage", "fp32", *reference("vae_decoder"))


@pytest.mark.skipif(not ON_MAC, reason="Core ML prediction needs macOS (coremltools only converts on Linux)")
@pytest.mark.parametrize("name,precision", CASES)
def test_prediction_parity_on_macos(specs, exported, reference, name, precision):
    spec = specs[name]
    path, _ = exported(name, precision)
    record = coreml.validate(spec, path, precision, *reference(name))
    assert record["checked"] == "numerically against PyTorch"
    assert record["psnr_db"] >= record["min_psnr_db"]
