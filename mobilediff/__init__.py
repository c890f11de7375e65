"""mobilediff: distil, quantize, export and benchmark small latent diffusion models for phones.

Modules, one per stage: data (the shapes domain), evaluator (its quality metrics), models (component
configurations), loading (safe pipeline loading), sampling (diffusers samplers, seeded generation),
sampler_table (the sampler as data for bundles), training / checkpoint (train-base on accelerate),
quality (fixed-prompt evaluation), benchmarking (machine and version records). Nothing is imported here:
importing mobilediff has no side effects and stays cheap.
"""

__version__ = "0.1.0"
