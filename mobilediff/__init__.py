"""mobilediff: distil, quantize, export and benchmark small latent diffusion models for phones.

Modules, one per stage: data (the shapes domain), evaluator (its quality metrics), models (component
configurations), loading (safe pipeline loading), sampling (diffusers samplers, seeded generation),
sampler_table (the sampler as data for bundles), training / checkpoint (train-base on accelerate),
quality (fixed-prompt evaluation), components / targets / parity / exporter / bundle / fused (export),
engine (generate from a bundle), bench/ (the benchmark library), sources (data as an input), metrics
(quality for any model). Nothing is imported and nothing is configured here: importing mobilediff has no side
effects (the CLI and benchmarks quiet library chatter through mobilediff.quiet).
"""
__version__ = "0.1.0"
