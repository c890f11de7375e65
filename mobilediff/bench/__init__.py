"""The benchmark library under benchmarks/: latency statistics, host and device harnesses, the bars as one table, the
result envelope, and each benchmark's measurement and command line (``main``; a script under benchmarks/ only runs
it, see :data:`SCRIPTS`).

    stats               latency statistics (summarize, timer, peak memory in a fresh process, Pareto frontier)
    envelope            machine and versions, the all-or-nothing writing of JSON + Markdown + PNG, the error exit
    bars                every quality and speed bar as one table, and the one function that checks a value
    bundles             a bundle's role, precision, targets and sampling plans, from its manifest alone
    host                host runtimes: component and end-to-end latency, cold loads, memory, quality
    android / apple     phone runners over adb; Core ML on a Mac
    device_run          the device benchmark (run_device): command line, settings, measurement, derived numbers,
                        targets
    device_report       its Markdown, plots and target lines
    device_quality      its quality of any model on --prompts: the metric set (teacher fidelity, FD, CLIP score)
    sweep               quality sweeps on the fixed prompts (baseline_quality, distillation)
    quantization        the quantization benchmark
    real_architectures  real UNet architectures with random weights: export and latency in isolated processes
    memory              peak memory of whole pipelines and their components per runtime, precision and setting
    configurations      the store of measured configurations rebuilt from the result files
    deploy_scaling      the scaling study's verdicts with the budget in FLOPs, eager and runtime latency
                        (scaling_deploy)
    adapters            what the embedded LoRA adapters change, per scale
    lcm_lora            the LCM-LoRA adapter: few-step prompt accuracy with and without it, on a fine-tune too
    runtime_adapters    run-time adapters against adapters merged at export: parity, sizes, switch and step time
    image_modes         image-to-image and inpainting edits on the shapes domain, per model, mode and strength
    sampler_tables      every sampler table against diffusers' own loop (discrete, flow matching, sCM)
    backbones           a UNet against a diffusion transformer of equal FLOPs and training compute
    baseline_quality, distillation, student_quality, decoder, scaling, op_profile, xnnpack_convs, export_parity,
    app_parity, app_memory, optimum_check, ort_format
                        the other benchmarks (optimum_worker: optimum_check's side, run in optimum's environment)

Nothing heavy is imported here.
"""

# benchmarks/<script>.py -> the module of this package whose main(argv, doc, results) the script runs
SCRIPTS = {"adapters": "adapters", "app_memory": "app_memory", "app_parity": "app_parity", "backbones": "backbones",
           "baseline_quality": "baseline_quality",
           "configurations": "configurations", "decoder": "decoder",
           "distillation": "distillation", "export_parity": "export_parity", "image_modes": "image_modes", "lcm_lora": "lcm_lora", "memory": "memory", "op_profile": "op_profile",
           "optimum_check": "optimum_check", "ort_format": "ort_format", "quantization": "quantization", "real_architectures": "real_architectures",
           "run_device": "device_run", "runtime_adapters": "runtime_adapters", "sampler_tables": "sampler_tables",
           "scaling": "scaling", "scaling_deploy": "deploy_scaling",
           "student_quality": "student_quality", "transformer_matrix": "transformer_matrix",
           "xnnpack_convs": "xnnpack_convs"}


def script_main(name: str):
    """The ``main(argv, doc="", results=None)`` that ``benchmarks/<name>.py`` runs."""
    import importlib

    return importlib.import_module(f"{__name__}.{SCRIPTS[name]}").main
