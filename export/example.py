"""Straight-line example: export the embedded default model to ONNX, then generate from the bundle.

    python export/example.py

Artifacts land in export/artifacts/ (git-ignored). The CLI equivalent:
    mobilediff export --target onnx --out export/artifacts/default --force
    mobilediff generate --bundle export/artifacts/default --runtime onnx --prompt "..." --out image.png
"""
from pathlib import Path

from PIL import Image

from mobilediff.data import to_uint8
from mobilediff.exporter import export_bundle
from mobilediff.loading import load_pipeline
from mobilediff.engine import BundleRunner

out = Path(__file__).parent / "artifacts" / "default"
pipe = load_pipeline("default")
bundle = export_bundle(pipe, "onnx", out, force=True, progress=print)  # every component is checked against PyTorch
runner = BundleRunner(bundle, "onnx")  # reads only the bundle: manifest, tokenizer, sampler table, graphs
image = runner.generate("a large red circle in the center on a white background", seed=0, steps=8, sampler="ddim",
                        guidance=2.0)
Image.fromarray(to_uint8(image)[0]).resize((256, 256), Image.NEAREST).save(out / "sample.png")
print(f"bundle: {bundle}; image: {out / 'sample.png'}")
