"""The quality and speed bars every benchmark checks, as one table, and the one function that checks a value.

A bar is data: what is measured, the comparison and the number. A benchmark computes the measured value and asks
:func:`check`; its result row records the bar's id, number and comparison next to the value, so a report never
restates a number from memory. Adding a bar is one row here plus the line that measures its value.

===============================  ====  =====  ===============================================================
id                               op    bar    measured value (checked by)
===============================  ====  =====  ===============================================================
e2e_int8_4step_speedup           >=    25     float DDIM-50 teacher / int8 4-step student, end to end, same
                                              runtime (run_device)
e2e_4step_speedup                >=    50     float DDIM-50 teacher / the fastest 4-step student within the quality
                                              bars (any precision, decoder or size), end to end, same runtime
                                              (run_device)
e2e_fewstep_speedup              >=    150    float DDIM-50 teacher / the fastest 1- or 2-step student within the
                                              same quality bars, end to end, same runtime (run_device)
denoiser_step_speedup            >=    2      PyTorch eager / the fastest bundle runtime, one UNet step (run_device)
student_4step_accuracy_ratio     >=    0.95   4-step student's prompt accuracy / the 50-step teacher's
                                              (distillation; run_device's int8 row)
student_4step_fd_ratio           <=    1.5    4-step student's FD / the 50-step teacher's (same; any extractor:
                                              the shapes evaluator's features, or ``evaluate --fd-features``)
student_4step_clip_ratio         >=    0.95   4-step student's CLIP score / the 50-step teacher's, same prompts and
                                              seeds (``evaluate --clip``; models outside the shapes domain)
student_1step_accuracy_ratio     >=    0.85   1-step student's prompt accuracy / the 50-step teacher's (distillation)
int8_accuracy_drop_points        <=    2      float - int8 prompt accuracy, in points, same runtime (quantization)
int8_fd_ratio                    <=    1.10   int8 FD / float FD (quantization)
int8_denoiser_shrink             >=    3.5    float denoiser file / int8 denoiser file (quantization)
int8_denoiser_speedup            >     1      float / int8 denoiser step median (quantization)
int8_e2e_speedup                 >     1      float / int8 end-to-end median (quantization)
export_fp32_component_psnr_db    >=    60     PSNR of an fp32 component against PyTorch (export_parity)
export_e2e_image_psnr_db         >=    40     PSNR of a bundle's image against the PyTorch pipeline (export_parity)
app_image_psnr_db                >=    40     PSNR of a demo app engine's image against ``generate --bundle``
tiny_decoder_gflop               <=    0.15   GFLOP of one decode by the tiny decoder (decoder)
tiny_decoder_accuracy_drop_...   <=    2      VAE-decoded - tiny-decoded prompt accuracy, in points, per student
                                              row, same latents (decoder)
===============================  ====  =====  ===============================================================
"""
from __future__ import annotations

import operator
from dataclasses import dataclass

from mobilediff.errors import MobilediffError

_OPS = {">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt}


@dataclass(frozen=True)
class Bar:
    id: str  # stable key, written into result rows
    label: str  # the measured value in words, as report tables show it
    op: str  # how the measured value must compare with ``value``: ">=", "<=", ">" or "<"
    value: float  # the bar itself


BARS: dict[str, Bar] = {b.id: b for b in (
    Bar("e2e_int8_4step_speedup", "end-to-end speedup of the int8 4-step student over the float DDIM-50 teacher",
        ">=", 25.0),
    Bar("e2e_4step_speedup", "end-to-end speedup of the fastest 4-step student within the quality bars over the "
        "float DDIM-50 teacher", ">=", 50.0),
    Bar("e2e_fewstep_speedup", "end-to-end speedup of the fastest 1- or 2-step student within the quality bars over "
        "the float DDIM-50 teacher", ">=", 150.0),
    Bar("denoiser_step_speedup", "denoiser step speedup of the fastest bundle runtime over PyTorch eager", ">=", 2.0),
    Bar("student_4step_accuracy_ratio", "4-step prompt accuracy / teacher", ">=", 0.95),
    Bar("student_4step_fd_ratio", "4-step FD / teacher", "<=", 1.5),
    Bar("student_4step_clip_ratio", "4-step CLIP score / teacher", ">=", 0.95),
    Bar("student_1step_accuracy_ratio", "1-step prompt accuracy / teacher", ">=", 0.85),
    Bar("int8_accuracy_drop_points", "prompt accuracy drop (points)", "<=", 2.0),
    Bar("int8_fd_ratio", "FD ratio to float", "<=", 1.10),
    Bar("int8_denoiser_shrink", "denoiser file shrink", ">=", 3.5),
    Bar("int8_denoiser_speedup", "denoiser speedup over float", ">", 1.0),
    Bar("int8_e2e_speedup", "end-to-end speedup over float", ">", 1.0),
    Bar("export_fp32_component_psnr_db", "fp32 component PSNR against PyTorch (dB)", ">=", 60.0),
    Bar("export_e2e_image_psnr_db", "end-to-end image PSNR against PyTorch (dB)", ">=", 40.0),
    Bar("app_image_psnr_db", "app engine image PSNR against generate --bundle (dB)", ">=", 40.0),
    Bar("tiny_decoder_gflop", "tiny decoder GFLOP per image", "<=", 0.15),
    Bar("tiny_decoder_accuracy_drop_points", "prompt accuracy drop with the tiny decoder (points)", "<=", 2.0),
)}


def bar(bar_id: str) -> Bar:
    """The bar called ``bar_id``; MobilediffError naming the known ones otherwise."""
    try:
        return BARS[bar_id]
    except KeyError:
        raise MobilediffError(f"unknown bar {bar_id!r}; known: {', '.join(BARS)}") from None


def check(bar_id: str, value: float | None) -> bool | None:
    """Whether ``value`` meets the bar ``bar_id`` (None when nothing was measured)."""
    b = bar(bar_id)
    return None if value is None else bool(_OPS[b.op](value, b.value))


def check_ratio(bar_id: str, measured: float | None, reference: float | None) -> bool | None:
    """Whether ``measured / reference`` meets the ratio bar ``bar_id``, compared as ``measured OP bar * reference``
    so that a zero reference still has a verdict (a student scoring 0 against a teacher scoring 0 keeps the bar)."""
    b = bar(bar_id)
    if measured is None or reference is None:
        return None
    return bool(_OPS[b.op](measured, b.value * reference))


def check_all(values: dict[str, float | None]) -> bool | None:
    """Whether every ``{bar id: value}`` meets its bar: False if one misses, None if none missed but one was not
    measured, else True."""
    results = [check(k, v) for k, v in values.items()]
    if False in results:
        return False
    return None if None in results else True
