import json

import pytest

from conftest import error_lines, run_cli, run_cli_here

COMMANDS = ["generate", "evaluate", "train-base", "train-evaluator", "distill", "distill-decoder", "export", "pack", "goldens",
            "recommend"]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_flag_has_help(command):
    import click

    from mobilediff.cli import cli

    cmd = cli.commands[command]
    options = [p for p in cmd.params if isinstance(p, click.Option)]
    assert options and all(p.help and p.help.strip() for p in options), [p.name for p in options if not p.help]
    code, out, _ = run_cli(command, "--help")
    assert code == 0 and all(p.opts[0] in out for p in options)


def test_unknown_command_is_one_line():
    code, _, stderr = run_cli("frobnicate")
    assert code == 2 and len(error_lines(stderr)) == 1


def test_evaluate_a_pipeline_directly(tmp_path, capsys):
    out = tmp_path / "r.json"
    code, stdout, stderr = run_cli_here(capsys, "evaluate", "--model", "default", "--n", 4, "--steps", 2, "--out", out)
    assert code == 0, stderr
    r = json.loads(out.read_text())
    assert r["n"] == 4 and 0.0 <= r["prompt_accuracy"] <= 1.0 and r["fd"] >= 0.0
    assert set(r["attribute_accuracy"]) == {"background", "count", "position", "shape", "color", "size"}


def test_evaluate_samples_a_student_with_its_own_plan(capsys):
    """Like generate, evaluate of a distilled student uses the plan it was made for unless a flag overrides it
    (a 1-step student scored with 50-step DDIM + CFG would be a meaningless number)."""
    import json as _json

    from mobilediff.card import distillation_record
    from mobilediff.loading import resolve_model

    plan = distillation_record(resolve_model("default:progressive-1"))["sampling"]
    code, stdout, stderr = run_cli_here(capsys, "evaluate", "--model", "default:progressive-1", "--n", 2)
    assert code == 0, stderr
    r = _json.loads(stdout[stdout.index("{"):])
    assert (r["sampler"], r["steps"], r["guidance"]) == (plan["sampler"], plan["steps"], plan["guidance"])
    code, stdout, stderr = run_cli_here(capsys, "evaluate", "--model", "default:progressive-1", "--n", 2,
                                        "--steps", 2)
    r = _json.loads(stdout[stdout.index("{"):])
    assert code == 0 and r["steps"] == 2 and r["sampler"] == plan["sampler"]


def test_evaluate_needs_exactly_one_source(capsys):
    code, _, stderr = run_cli_here(capsys, "evaluate")
    assert code == 2 and error_lines(stderr) == ["error: give exactly one of --model or --images"]


@pytest.mark.parametrize("args,message", [
    (("generate", "--prompt", "x", "--guidance", "nan"), "Invalid value for '--guidance': nan is not a finite number"),
    (("generate", "--bundle", "B", "--prompt", "x", "--guidance", "inf"), "Invalid value for '--guidance': inf is not a finite number"),
    (("distill", "--method", "lcm", "--steps", "4", "--out", "OUT", "--lr", "nan"), "Invalid value for '--lr': nan is not a finite number"),
    (("train-base", "--out", "OUT", "--object-weight", "-inf"), "Invalid value for '--object-weight'"),
])
def test_non_finite_numbers_are_refused_before_any_work(args, message, tmp_path, capsys):
    args = [str(tmp_path / a) if a in ("B", "OUT") else a for a in args]
    extra = ("--out", tmp_path / "x.png") if args[0] == "generate" else ()
    code, _, stderr = run_cli_here(capsys, *args, *extra)
    lines = error_lines(stderr)
    assert code == 2 and len(lines) == 1 and lines[0].startswith(f"error: {message}"), stderr
    assert not list(tmp_path.iterdir())


def test_output_under_a_file_is_one_line(tmp_path, capsys):
    (tmp_path / "f").write_text("user data")
    code, _, stderr = run_cli_here(capsys, "generate", "--prompt", "x", "--steps", 1, "--out", tmp_path / "f" / "x.png")
    lines = error_lines(stderr)
    assert code == 2 and lines == [f"error: cannot write {tmp_path / 'f' / 'x.png'}: {tmp_path / 'f'} is a file, not a folder"], stderr
    assert (tmp_path / "f").read_text() == "user data"


@pytest.mark.parametrize("sizes,expect", [
    (["--unet-channels", "8,16", "--unet-layers", "2"], ((8, 16), 2, 8)),
    (["--unet-layers", "3"], ((16, 32), 3, 8)),
    (["--unet-channels", "32,64,64"], "error: --unet-channels needs 2 widths (one per level), got 3"),
])
def test_train_base_tiny_applies_the_unet_sizes_to_its_unet(sizes, expect, monkeypatch, tmp_path, capsys):
    """--tiny with --unet-channels / --unet-layers trains the tiny UNet at those sizes (they were silently dropped)."""
    import mobilediff.train.base as base
    from mobilediff.tiny import TINY_DATA

    seen = []
    monkeypatch.setattr(base, "train_base", lambda cfg, **kw: seen.append(cfg))
    code, _, stderr = run_cli_here(capsys, "train-base", "--tiny", *sizes, "--out", tmp_path / "run")
    if isinstance(expect, str):
        assert code == 2 and error_lines(stderr) == [expect] and not seen
    else:
        (cfg,) = seen
        unet = cfg.model.unet
        assert code == 0 and cfg.data == TINY_DATA
        assert (unet.block_out_channels, unet.layers_per_block, unet.norm_num_groups) == expect
    assert not (tmp_path / "run").exists()
