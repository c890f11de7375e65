"""The benchmark library under benchmarks/: latency statistics, host and device harnesses, the bars as one table, the
result envelope, and each benchmark's measurement.

    stats               latency statistics (summarize, timer, peak memory in a fresh process, Pareto frontier)
    envelope            machine and versions, the all-or-nothing writing of JSON + Markdown + PNG, the error exit
    bars                every quality and speed bar as one table, and the one function that checks a value
    bundles             a bundle's role, precision, targets and sampling plans, from its manifest alone
    host                host runtimes: component and end-to-end latency, cold loads, memory, quality
    android / apple     phone runners over adb; Core ML on a Mac
    device_run          the device benchmark (run_device): settings, measurement, derived numbers, targets
    device_report       its Markdown, plots and target lines
    sweep               quality sweeps on the fixed prompts (baseline_quality, distillation)
    quantization        the quantization benchmark
    real_architectures  real UNet architectures with random weights: export and latency in isolated processes

Nothing heavy is imported here.
"""
