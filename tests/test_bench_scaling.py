"""The scaling study: the claim verdicts on small synthetic tables built to give each verdict, the latency
composition, and its command (mobilediff.bench.scaling.main, what benchmarks/scaling.py runs) end to end on two tiny
random pipelines and two students of them."""
from __future__ import annotations

import dataclasses
import json
import math

import pytest

from mobilediff.bench.claims import (BudgetRule, budget_grid, budget_table, claim_a, claim_b, claim_c, claim_d,
                                     relative_spread, verdicts)
from mobilediff.bench.envelope import json_safe
from mobilediff.bench.scaling import compose_latency, main as scaling_main
from conftest import error_lines
from mobilediff.errors import MobilediffError

PARAMS = {"small": 1_000, "big": 10_000}


def row(model: str, latency: float, acc: float, fd: float = 10.0, method: str = "teacher", sampler: str = "ddim",
        steps: int = 1, guidance: float = 1.0) -> dict:
    return {"model": model, "unet_params": PARAMS[model], "method": method, "sampler": sampler, "steps": steps,
            "guidance": guidance, "latency_ms": latency, "prompt_accuracy": acc, "fd": fd}


# Latencies: small 10-100 ms, big 30-300 ms; the budget grid runs from 30 (big's fastest) to 300 ms.
def small_wins_low_budgets(**kw) -> list[dict]:
    """The paper's picture: the small model is better until ~150 ms, the big one after."""
    return [row("small", 10, 0.50, **kw), row("small", 30, 0.80, **kw), row("small", 100, 0.85, **kw),
            row("big", 30, 0.40, **kw), row("big", 150, 0.90, **kw), row("big", 300, 0.95, **kw)]


def big_always_wins(**kw) -> list[dict]:
    return [row("small", 10, 0.30, **kw), row("small", 100, 0.50, **kw),
            row("big", 30, 0.60, **kw), row("big", 300, 0.95, **kw)]


def small_wins_only_high_budgets(**kw) -> list[dict]:
    """The big model is better at low budgets; the small one only at the top (its slow rows are better)."""
    return [row("small", 10, 0.10, **kw), row("small", 250, 0.99, **kw),
            row("big", 30, 0.60, **kw), row("big", 300, 0.70, **kw)]


def test_budget_grid_and_table():
    rows = small_wins_low_budgets()
    grid = budget_grid(rows, 5)
    assert grid[0] == 30 and grid[-1] == 300 and grid == sorted(grid)
    assert math.isclose(grid[1] / grid[0], grid[2] / grid[1])  # log-spaced
    table = budget_table(rows, BudgetRule(budgets=5))
    assert table[0]["winner"] == "small" and table[0]["best"]["small"]["prompt_accuracy"] == 0.80
    assert table[-1]["winner"] == "big" and not table[-1]["smaller_wins"]


def test_a_tie_within_the_margin_goes_to_the_larger_model():
    rows = [row("small", 10, 0.802), row("big", 30, 0.800)]
    assert not budget_table(rows, BudgetRule(budgets=3, margin=0.005))[0]["smaller_wins"]
    assert budget_table(rows, BudgetRule(budgets=3, margin=0.001))[0]["smaller_wins"]


@pytest.mark.parametrize("table,verdict", [(small_wins_low_budgets, "holds"), (big_always_wins, "does not hold"),
                                           (small_wins_only_high_budgets, "mixed")])
def test_claim_a(table, verdict):
    v = claim_a(table())
    assert v["claim"] == "a" and v["verdict"] == verdict, v
    assert v["evidence"] and v["rule"] and v["statement"]
    if verdict == "holds":
        assert 30 <= v["statistic"]["last_win_ms"] < 150 <= v["statistic"]["b_star_ms"]


def test_claim_a_needs_two_sizes_and_ignores_students():
    assert claim_a([row("small", 10, 0.5), row("small", 20, 0.6)])["verdict"] == "not measured"
    students = [dict(r, method="lcm") for r in small_wins_low_budgets()]
    assert claim_a(big_always_wins() + students)["verdict"] == "does not hold"


@pytest.mark.parametrize("ddim,dpmpp,verdict", [
    (small_wins_low_budgets, small_wins_low_budgets, "holds"),
    (big_always_wins, big_always_wins, "does not hold"),
    (small_wins_low_budgets, big_always_wins, "mixed"),
])
def test_claim_b_applies_rule_a_per_sampler(ddim, dpmpp, verdict):
    v = claim_b(ddim(sampler="ddim") + dpmpp(sampler="dpmpp"))
    assert v["verdict"] == verdict, v
    assert set(v["statistic"]["per_sampler"]) == {"ddim", "dpmpp"}


@pytest.mark.parametrize("table,verdict", [(small_wins_low_budgets, "holds"), (big_always_wins, "does not hold"),
                                           (small_wins_only_high_budgets, "mixed")])
def test_claim_c_uses_the_student_rows_only(table, verdict):
    teachers = big_always_wins() if verdict != "does not hold" else small_wins_low_budgets()
    v = claim_c(teachers + table(method="progressive"))
    assert v["verdict"] == verdict, v
    assert claim_c(teachers)["verdict"] == "not measured"


def guidance_rows(model: str, fds: list[float], accs: list[float], sampler: str = "ddim", steps: int = 4) -> list[dict]:
    return [row(model, 50, a, fd=f, sampler=sampler, steps=steps, guidance=g)
            for g, f, a in zip((1.0, 2.0, 3.5, 6.0), fds, accs)]


def test_claim_d():
    moves_fd = guidance_rows("small", [40, 25, 20, 30], [0.90, 0.91, 0.92, 0.91])  # FD spread ~0.69, accuracy ~0.02
    moves_acc = guidance_rows("big", [20, 20.5, 21, 20], [0.40, 0.70, 0.90, 0.80])  # FD ~0.05, accuracy ~0.72
    assert claim_d(moves_fd + guidance_rows("big", [30, 20, 22, 28], [0.9, 0.9, 0.91, 0.9]))["verdict"] == "holds"
    assert claim_d(moves_acc + guidance_rows("small", [20, 21, 20, 20], [0.5, 0.9, 0.9, 0.8]))["verdict"] == "does not hold"
    v = claim_d(moves_fd + moves_acc)
    assert v["verdict"] == "mixed" and "1 of 2" in v["evidence"], v
    assert v["statistic"]["per_model_sampler"]["small / ddim"]["fd_moves_more"]
    assert claim_d([row("small", 10, 0.5)])["verdict"] == "not measured"  # one guidance scale


def test_relative_spread():
    assert relative_spread([2.0, 2.0]) == 0.0
    assert math.isclose(relative_spread([1.0, 3.0]), 1.0)
    assert relative_spread([-1.0, 1.0]) == math.inf


def test_verdicts_are_one_row_per_claim():
    out = verdicts(small_wins_low_budgets())
    # teacher rows of one sampler at one guidance scale, built for (a): (b) holds on its one sampler; no students
    # for (c), no guidance sweep for (d)
    assert [(v["claim"], v["verdict"]) for v in out] == [("a", "holds"), ("b", "holds"), ("c", "not measured"),
                                                         ("d", "not measured")]
    json.dumps(out)  # plain data


def test_compose_latency():
    assert compose_latency(1.0, 10.0, 20.0, steps=4) == 61.0
    assert compose_latency(1.0, 10.0, 20.0, steps=4, text_encoder_calls=2) == 62.0


# ---------------------------------------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def family(tmp_path_factory):
    """Two tiny teachers of different UNet widths at 64x64 (the evaluator's resolution), a progressive-1 student of
    the larger and an LCM student of the smaller, each with the distillation.json `mobilediff distill` writes."""
    from diffusers import UNet2DConditionModel

    from mobilediff.models import VaeConfig
    from mobilediff.tiny import TINY_MODEL, tiny_pipeline

    root = tmp_path_factory.mktemp("scaling_family")
    out = {}
    vae = VaeConfig(sample_size=64, block_out_channels=(4, 8, 8), layers_per_block=1, latent_channels=4,
                    norm_num_groups=4)  # 64 px <-> 16 x 16 latents, as the default model
    for name, widths in (("small", (8, 16)), ("big", (16, 32))):
        model = dataclasses.replace(TINY_MODEL, vae=vae, unet=dataclasses.replace(TINY_MODEL.unet,
                                                                                  block_out_channels=widths))
        pipe = tiny_pipeline(0, model)
        pipe.save_pretrained(str(root / name), safe_serialization=True)
        out[name] = (root / name, pipe)
    big, pipe = out["big"]
    pipe.save_pretrained(str(root / "big-p1"), safe_serialization=True)
    (root / "big-p1" / "distillation.json").write_text(json.dumps(
        {"method": "progressive", "teacher": str(big), "sampling": {"sampler": "ddim", "steps": 1, "guidance": 1.0}}))
    small, pipe = out["small"]
    pipe.register_modules(unet=UNet2DConditionModel.from_config({**pipe.unet.config, "time_cond_proj_dim": 32}))
    pipe.save_pretrained(str(root / "small-lcm"), safe_serialization=True)
    (root / "small-lcm" / "distillation.json").write_text(json.dumps(
        {"method": "lcm", "teacher": "elsewhere", "sampling": {"sampler": "lcm", "steps": 4, "guidance": 3.5}}))
    return root


ROW_KEYS = {"model", "unet_params", "gflops_per_image", "sampler", "method", "steps", "guidance", "runtime",
            "latency_ms", "prompt_accuracy", "attribute_accuracy", "fd"}


def test_the_command_end_to_end_on_tiny_pipelines(family, tmp_path, capsys):
    import torch

    from mobilediff.bench.envelope import run_command

    threads = torch.get_num_threads()
    out = tmp_path / "results"
    argv = ["--model", family / "small", "--model", family / "big", "--students", family / "big-p1",
            family / "small-lcm", "--samplers", "ddim", "--n", "4", "--steps", "1", "2", "--guidance", "1", "3.5",
            "--runs", "3", "--warmup", "1", "--e2e-runs", "2", "--cache", tmp_path / "cache", "--out", out]
    code = run_command(scaling_main, [str(a) for a in argv])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert torch.get_num_threads() == threads  # the latency measurements' thread count is restored
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["scaling.json", "scaling_meta.json", "scaling.md", "scaling_quality.png", "scaling_budget.png",
         "scaling_guidance.png", "configurations.jsonl"])
    rows = json.loads((out / "scaling.json").read_text())
    # the run's rows appended to the store beside its results, one per row of scaling.json
    from mobilediff.configurations import read_store

    stored = read_store(out / "configurations.jsonl")
    assert len(stored) == len(rows) and {c.source["file"] for c in stored} == {str((out / "scaling.json").resolve())}
    teacher = [r for r in rows if r["method"] == "teacher"]
    # one sampler keeps the test short (every row's FD is a 128-d matrix square root); claim (b) per sampler is
    # tested on the synthetic tables above
    assert len(teacher) == 2 * 1 * 2 * 2  # models x samplers x steps x guidance
    students = {(r["pipeline"], r["method"], r["sampler"], r["steps"], r["guidance"]) for r in rows
                if r["method"] != "teacher"}
    assert students == {(str(family / "big-p1"), "progressive", "ddim", 1, 1.0),
                        (str(family / "small-lcm"), "lcm", "lcm", 1, 3.5), (str(family / "small-lcm"), "lcm", "lcm", 4, 3.5)}
    for r in rows:
        assert ROW_KEYS <= set(r), ROW_KEYS - set(r)
        assert r["runtime"] == "eager" and r["latency_ms"] > 0 and r["gflops_per_image"] > 0
        assert r["prompt_accuracy"] * 4 == pytest.approx(round(r["prompt_accuracy"] * 4))  # a share of the 4 prompts
        assert set(r["attribute_accuracy"]) >= {"shape", "color"}
        p = r["latency_parts"]
        assert math.isclose(r["latency_ms"], compose_latency(p["text_encoder_ms"], p["unet_step_ms"],
                                                             p["vae_decoder_ms"], r["steps"], p["text_encoder_calls"]))
        assert p["text_encoder_calls"] == (2 if r["cfg"] else 1) and r["unet_rows"] == (2 if r["cfg"] else 1)
        assert r["cfg"] == (r["method"] == "teacher" and r["guidance"] > 1)
    # students' rows belong to their teacher's size (the LCM one by its UNet's widths: its teacher is not given)
    assert {r["model"] for r in rows if r["method"] != "teacher"} == {str(family / "big"), str(family / "small")}
    assert {r["model"] for r in rows if r["method"] == "lcm"} == {str(family / "small")}
    by_model = {r["model"]: r["unet_params"] for r in teacher}
    assert by_model[str(family / "small")] < by_model[str(family / "big")]
    # FLOPs: a CFG step costs twice a plain one
    g = {(r["model"], r["sampler"], r["steps"], r["guidance"]): r["gflops_per_image"] for r in teacher}
    m = str(family / "big")
    assert math.isclose(g[(m, "ddim", 2, 3.5)] - g[(m, "ddim", 1, 3.5)],
                        2 * (g[(m, "ddim", 2, 1.0)] - g[(m, "ddim", 1, 1.0)]), rel_tol=1e-6)
    meta = json.loads((out / "scaling_meta.json").read_text())
    assert meta["schema"] == {"name": "mobilediff.scaling", "version": 1} and meta["n"] == 4
    assert [v["claim"] for v in meta["verdicts"]] == ["a", "b", "c", "d"]
    # the verdicts are the rules applied to the rows as written
    expected = verdicts(rows, BudgetRule(**meta["settings"]["rule"]))
    assert meta["verdicts"] == json.loads(json.dumps(json_safe(expected)))
    assert len(meta["models"]) == 4
    for mod in meta["models"]:
        c = mod["latency_check"]
        assert c["measured_ms"] > 0 and c["composed_ms"] > 0
        assert c["relative_error"] == pytest.approx(c["composed_ms"] / c["measured_ms"] - 1)
    md = (out / "scaling.md").read_text()
    assert "## Verdicts" in md and "## Which size wins at which latency budget" in md and "## Students" in md
    assert "(a)" in captured.out and "wrote" in captured.out
    assert meta["settings"]["rows_from_cache"] == 0 and len(list((tmp_path / "cache").glob("*.json"))) == len(rows)

    # run again with the same cache: every row is read back (same quality), only the latencies are measured anew
    code = run_command(scaling_main, [str(a) for a in argv])
    assert code == 0, capsys.readouterr().err
    again = json.loads((out / "scaling.json").read_text())
    assert json.loads((out / "scaling_meta.json").read_text())["settings"]["rows_from_cache"] == len(rows)
    quality = ("pipeline", "sampler", "steps", "guidance", "prompt_accuracy", "fd", "attribute_accuracy")
    assert [[r[k] for k in quality] for r in again] == [[r[k] for k in quality] for r in rows]

    # --reuse: an earlier result folder's rows for the unchanged pipelines, each pipeline's cheapest row scored again
    # first; a stored row that does not reproduce refuses the run in one line and writes nothing
    # (a weights file the pipeline does not load added to one model's folder since -- as when the hash's definition
    # changes under unchanged weights: the recorded sha256 differs, and a guided row of it is scored again too)
    reuse_argv = [str(a) for a in argv[:argv.index("--cache")]] + ["--no-cache", "--reuse", str(out)]
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(1)}, str(family / "big" / "unused.safetensors"))
    code = run_command(scaling_main, reuse_argv + ["--out", str(tmp_path / "reused")])
    assert code == 0, capsys.readouterr().err
    reused = json.loads((tmp_path / "reused" / "scaling.json").read_text())
    settings = json.loads((tmp_path / "reused" / "scaling_meta.json").read_text())["settings"]
    assert settings["rows_reused"] == len(rows) and settings["reused_from"] == str(out)
    checks = settings["reuse_check"]
    assert len(checks) == 5 and all(c["same"] for c in checks)
    assert [c["guidance"] for c in checks if c["files_changed"]] == [1.0, 3.5]
    assert {c["pipeline"] for c in checks if c["files_changed"]} == {str(family / "big")}
    assert [[r[k] for k in quality] for r in reused] == [[r[k] for k in quality] for r in rows]
    small = str(family / "small")
    tampered = [{**r, "prompt_accuracy": 1.0 - r["prompt_accuracy"]}
                if (r["pipeline"], r["steps"], r["guidance"]) == (small, 1, 1.0) else r for r in rows]
    (out / "scaling.json").write_text(json.dumps(tampered))
    capsys.readouterr()
    code = run_command(scaling_main, reuse_argv + ["--out", str(tmp_path / "refused")])
    err = capsys.readouterr().err
    assert code == 2 and len(error_lines(err)) == 1 and "does not reproduce" in err and small in err
    assert not (tmp_path / "refused").exists()
    (family / "big" / "unused.safetensors").unlink()  # the module's other tests see the folder as it was


def test_row_cache_misses_on_any_change(tmp_path):
    """A cached row is reused only for the same weights, point, n and context; a torn file is scored again."""
    from mobilediff.bench.sweep import Point, RowCache

    class Pipe:
        class unet:
            class config:
                time_cond_proj_dim = None

    a, b = Pipe(), Pipe()
    cache = RowCache(tmp_path / "c", {"evaluator": "e1"}, {id(a): "sha-a", id(b): "sha-b"})
    p = Point(a, "ddim", 4, 2.0, {"model": "m"})
    assert cache.get(p, 8) is None
    cache.put(p, 8, {"prompt_accuracy": 0.5})
    assert cache.get(p, 8) == {"prompt_accuracy": 0.5} and cache.hits == 1
    for other in (Point(b, "ddim", 4, 2.0, {"model": "m"}), Point(a, "dpmpp", 4, 2.0, {"model": "m"}),
                  Point(a, "ddim", 8, 2.0, {"model": "m"}), Point(a, "ddim", 4, 3.5, {"model": "m"}),
                  Point(a, "ddim", 4, 2.0, {"model": "m2"})):
        assert cache.get(other, 8) is None, other
    assert cache.get(p, 16) is None
    assert RowCache(tmp_path / "c", {"evaluator": "e2"}, {id(a): "sha-a"}).get(p, 8) is None
    cache.path(p, 8).write_text('{"prompt_acc')  # a torn write
    assert cache.get(p, 8) is None
    (tmp_path / "file").write_text("x")
    with pytest.raises(MobilediffError, match="is a file"):
        RowCache(tmp_path / "file" / "c", {}, {})


def test_no_family_registered_is_one_line(monkeypatch, tmp_path, capsys):
    import mobilediff.loading as loading
    from mobilediff.bench.envelope import run_command

    monkeypatch.setattr(loading, "FAMILY", [])
    code = run_command(scaling_main, ["--out", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: no model family is registered") and err.count("\n") == 1
    assert not (tmp_path / "r").exists()


@pytest.mark.slow
@pytest.mark.extended
def test_latency_on_onnx_runtime(family, tmp_path, capsys):
    """--runtime onnx: each pipeline exported to a bundle (graphs checked against PyTorch) and timed through
    BundleRunner, which encodes the unconditional prompt once: one text-encoder call per image, CFG or not."""
    from mobilediff.bench.envelope import run_command

    out = tmp_path / "results"
    argv = ["--model", family / "small", "--students", "--samplers", "ddim", "--n", "2", "--steps", "2",
            "--guidance", "1", "3.5", "--runs", "2", "--warmup", "1", "--e2e-runs", "1", "--runtime", "onnx",
            "--work", tmp_path / "work", "--no-cache", "--out", out]
    code = run_command(scaling_main, [str(a) for a in argv])
    assert code == 0, capsys.readouterr().err
    rows = json.loads((out / "scaling.json").read_text())
    assert len(rows) == 2 and all(r["runtime"] == "onnx" for r in rows)
    assert [r["latency_parts"]["text_encoder_calls"] for r in rows] == [1, 1] and rows[1]["cfg"]
    assert (tmp_path / "work" / "00-small" / "manifest.json").is_file()  # the bundle the latencies were timed on
    check = json.loads((out / "scaling_meta.json").read_text())["models"][0]["latency_check"]
    assert check["measured_ms"] > 0 and check["steps"] == 2 and check["guidance"] == 3.5
