"""mobilediff: distil, quantize, export and benchmark small latent diffusion models for phones.

Modules, one per stage: data (the shapes domain), evaluator (its quality metrics), models (component
configurations), loading (safe pipeline loading), sampling (diffusers samplers, seeded generation),
sampler_table (the sampler as data for bundles), training / checkpoint (train-base on accelerate),
quality (fixed-prompt evaluation), components / targets / parity / exporter / bundle / fused (export),
runtimes (generate from a bundle), bench/ (the benchmark library). Nothing heavy is imported
here: importing mobilediff stays cheap.
"""
import logging as _logging

__version__ = "0.1.0"

# torchao (an export dependency) warns at import that its CUDA-only extensions cannot load on a CPU build, and
# diffusers repeats it (and torch notes a deprecation of its enum registration); none of it matters here, and the lines would bury mobilediff's own one-line messages
for _name in ("torchao", "diffusers.quantizers.torchao.torchao_quantizer", "torch.utils._pytree"):
    _logging.getLogger(_name).setLevel(_logging.ERROR)
