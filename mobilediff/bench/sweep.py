"""Quality sweeps on the fixed prompts and noise seeds: one row per (model, sampler, steps, guidance), the best row
per budget, and grids of sample images. The baseline and distillation reports are sweeps."""
from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Point:
    """One row of a sweep: a pipeline sampled one way."""

    pipe: object  # a loaded diffusers pipeline
    sampler: str
    steps: int
    guidance: float
    fields: dict = field(default_factory=dict)  # written first in the row, e.g. {"method": "lcm"}

    @property
    def unet_rows(self) -> int:
        """UNet rows per step: 2 for a classifier-free-guidance batch (guidance > 1 without an embedding), else 1."""
        unet = getattr(self.pipe, "unet", None)  # a transformer pipeline has no guidance embedding
        return 2 if self.guidance > 1 and not (unet is not None and unet.config.time_cond_proj_dim) else 1


class RowCache:
    """Scored rows kept on disk, so that a sweep of hours that is interrupted (or extended by a new model) resumes
    where it stopped: one JSON file per row in ``folder``, named by the sha256 of everything the row depends on -- the
    point (its fields, sampler, steps, guidance), ``n``, the sampled pipeline's weights (``weights``: id(pipe) ->
    sha256 of its safetensors files) and ``context`` (the evaluator's weights, mobilediff's version, the seeds). A
    changed model, setting or version is a miss, never a stale hit. Rows are written atomically as they are scored."""

    def __init__(self, folder: Path, context: dict, weights: dict[int, str]):
        from mobilediff.io import check_output

        self.folder = Path(folder)
        check_output(self.folder / "row.json")
        self.context, self.weights = context, weights
        self.hits = 0

    def path(self, p: Point, n: int) -> Path:
        key = {"context": self.context, "weights": self.weights[id(p.pipe)], "fields": p.fields,
               "sampler": p.sampler, "steps": p.steps, "guidance": float(p.guidance), "n": n}
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()
        return self.folder / f"{digest[:32]}.json"

    def get(self, p: Point, n: int) -> dict | None:
        try:
            row = json.loads(self.path(p, n).read_text())
        except (OSError, ValueError):  # not scored yet, or a torn file from a crash: score it again
            return None
        self.hits += 1
        return row

    def put(self, p: Point, n: int, row: dict) -> None:
        from mobilediff.io import atomic_write_json

        atomic_write_json(self.path(p, n), row)


def sweep(points: list[Point], evaluator, n: int, real_features, desc: str,
          cache: RowCache | None = None) -> list[dict]:
    """Score every point on ``n`` prompts of the fixed evaluation set (mobilediff.quality.evaluate_pipeline), with a
    progress bar in UNet calls per batch. Row: the point's fields, sampler, steps, nfe (UNet evaluations per image),
    guidance, prompt_accuracy, fd, n, attribute_accuracy. With a ``cache``, rows scored before are read back and
    each new row is stored as soon as it is scored."""
    from tqdm.auto import tqdm

    from mobilediff.quality import evaluate_pipeline, progress_batches

    rows = []
    work = {id(p): progress_batches(n) * p.steps * p.unet_rows for p in points}
    with tqdm(total=sum(work.values()), desc=desc, file=sys.stderr) as bar:
        for p in points:
            cached = cache.get(p, n) if cache is not None else None
            if cached is not None:
                rows.append(cached)
                bar.update(work[id(p)])
                continue
            rep = evaluate_pipeline(p.pipe, evaluator, p.sampler, p.steps, p.guidance, n=n, real_features=real_features,
                                    progress=lambda k, f=p.unet_rows: bar.update(k * f))
            row = {**p.fields, "sampler": p.sampler, "steps": p.steps, "nfe": p.steps * p.unet_rows,
                   "guidance": p.guidance, "prompt_accuracy": rep.prompt_accuracy, "fd": rep.fd, "n": rep.n,
                   "attribute_accuracy": rep.attribute_accuracy}
            if cache is not None:
                cache.put(p, n, row)
            rows.append(row)
            label = " ".join(str(v) for v in p.fields.values())
            bar.set_postfix(last=f"{label} {p.sampler}-{p.steps} g{p.guidance}: acc {rep.prompt_accuracy:.3f} "
                                 f"fd {rep.fd:.3f}")
    return rows


def best_rows(rows: list[dict], key: tuple[str, ...]) -> dict[tuple, dict]:
    """For each value of ``key`` (e.g. ("sampler", "steps")): the row with the highest prompt accuracy, lower FD
    breaking ties."""
    best: dict[tuple, dict] = {}
    for r in rows:
        k = tuple(r[x] for x in key)
        if k not in best or (r["prompt_accuracy"], -r["fd"]) > (best[k]["prompt_accuracy"], -best[k]["fd"]):
            best[k] = r
    return best


def image_grid(columns: list[list], row_labels: list[str], column_titles: list[str] | None, title: str | None,
               cell: float = 1.3):
    """A figure of images: ``columns[j][i]`` (H, W, 3) uint8 at row i, column j; prompts as row labels."""
    from mobilediff.bench.envelope import pyplot

    plt = pyplot()
    n_rows, n_cols = len(row_labels), len(columns)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(n_cols * cell + 4.5, n_rows * cell), squeeze=False)
    for j, images in enumerate(columns):
        if column_titles:
            axes[0, j].set_title(column_titles[j], fontsize=7)
        for i in range(n_rows):
            axes[i, j].imshow(images[i], interpolation="nearest")
            axes[i, j].set_xticks([]), axes[i, j].set_yticks([])
    for i, label in enumerate(row_labels):
        axes[i, 0].set_ylabel(label, rotation=0, ha="right", va="center", fontsize=8, wrap=True)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig
