"""The optimum side of :mod:`mobilediff.bench.optimum_check`: run as a file by the optimum environment's Python
(``python optimum_worker.py JOB``), where mobilediff is not installed, so nothing here imports it."""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path


def worker(job_path: str) -> None:
    """Run the job at ``job_path`` (a pipeline to sample, or a text encoder to run) and write its results beside it."""
    import importlib.metadata as md

    import numpy as np
    import torch

    job = json.loads(Path(job_path).read_text())
    out = {"versions": {n: md.version(n) for n in ("optimum-onnx", "optimum", "transformers", "diffusers",
                                                  "onnxruntime", "torch", "huggingface-hub")}}
    if job["kind"] == "pipeline":
        from optimum.onnxruntime import ORTDiffusionPipeline

        pipe = ORTDiffusionPipeline.from_pretrained(job["bundle"], export=False)  # never re-export: load or fail
        pipe.set_progress_bar_config(disable=True)
        gen = torch.Generator().manual_seed(job["seed"])
        latents = torch.randn(job["latent_shape"], generator=gen)
        t0 = time.time()
        result = pipe(job["prompt"], height=job["height"], width=job["width"], num_inference_steps=job["steps"],
                      guidance_scale=job["guidance"], latents=latents, generator=gen, output_type="np")
        image = (result.images[0] * 255).round().astype("uint8")  # diffusers' own float -> uint8
        np.save(job["out"], image)
        out.update(seconds=time.time() - t0, pipeline_class=type(pipe).__name__,
                   scheduler_class=type(pipe.scheduler).__name__,
                   graphs=sorted(str(Path(p.path).relative_to(job["bundle"])) for p in pipe.parts))
    else:  # the text encoder of a diffusers pipeline folder, as transformers 4.x loads it
        from transformers import CLIPTextModel

        model, info = CLIPTextModel.from_pretrained(job["folder"], output_loading_info=True)
        with torch.no_grad():
            hidden = model(torch.tensor(job["ids"])).last_hidden_state
        np.save(job["out"], hidden.numpy())
        out["loading_info"] = {k: sorted(map(str, v)) for k, v in info.items() if k != "error_msgs"}
    Path(job["out"]).with_suffix(".json").write_text(json.dumps(out))


if __name__ == "__main__":
    worker(sys.argv[1])
