"""Numerical parity of an exported component against PyTorch: max abs error and PSNR."""
from __future__ import annotations

import math

import torch

from mobilediff.errors import MobilediffError

# fp32 graphs must match PyTorch to >= 60 dB; fp16 graphs to >= 30 dB (their rounding alone costs ~50-70 dB)
MIN_PSNR_DB = {"fp32": 60.0, "fp16": 30.0}
MIN_PSNR_DB_QUANTIZED = 15.0


def psnr(got: torch.Tensor, ref: torch.Tensor) -> float:
    """PSNR in dB with the reference's peak-to-peak range as the signal range (inf for an exact match)."""
    got, ref = got.double(), ref.double()
    mse = torch.mean((got - ref) ** 2).item()
    rng = (ref.max() - ref.min()).item() or 1.0
    return math.inf if mse == 0 else 10 * math.log10(rng * rng / mse)


def compare(name: str, outputs: list[str], got, reference, precision: str, target: str,
            quantization: str | None = None) -> dict:
    """Compare output tensors; return the parity record; raise MobilediffError below the threshold (the
    precision's floor, or the quantized floor when ``quantization`` names a recipe)."""
    rows = {}
    for out_name, g, r in zip(outputs, got, reference):
        g = torch.as_tensor(g).float()
        r = r.float()
        if g.shape != r.shape:
            raise MobilediffError(f"{target} {name}: output {out_name} has shape {tuple(g.shape)}, PyTorch {tuple(r.shape)}")
        if not torch.isfinite(g).all():
            raise MobilediffError(f"{target} {name}: output {out_name} is not finite")
        rows[out_name] = {"max_abs_error": (g - r).abs().max().item(), "psnr_db": psnr(g, r)}
    worst = min(v["psnr_db"] for v in rows.values())
    # quantized recipes ("int8-static", "palettize4", ...): a floor that catches a broken recipe
    # (a recipe that is a precision, ONNX's "fp16", keeps that precision's floor)
    need = MIN_PSNR_DB.get(quantization, MIN_PSNR_DB_QUANTIZED) if quantization else MIN_PSNR_DB[precision]
    record = {"target": target, "precision": precision, "quantization": quantization, "outputs": rows, "psnr_db": worst,
              "max_abs_error": max(v["max_abs_error"] for v in rows.values()), "min_psnr_db": need,
              "checked": "numerically against PyTorch"}
    if worst < need:
        raise MobilediffError(f"{target} {name} does not match PyTorch: {worst:.1f} dB < {need:.0f} dB "
                              f"({quantization or precision})")
    return record
