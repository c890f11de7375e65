"""The XNNPACK convolution benchmark (mobilediff.bench.xnnpack_convs, what benchmarks/xnnpack_convs.py runs): the
convolutions it finds in a UNet, a measured row for a convolution that is split and one that is not, and a whole
run's files (on two of the tiny SD-1.5's convolutions, with a budget that splits one of them), and a whole UNet
profiled with its convolutions whole and split."""
import json

import pytest

from mobilediff.bench import xnnpack_convs as xc

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::UserWarning", "ignore::DeprecationWarning")


def test_conv_configs_count_every_convolution_of_the_unet():
    import torch

    from mobilediff.bench.real_architectures import build_spec

    configs = xc.conv_configs("sd15", "tiny", 64, 0)
    unet = build_spec("sd15", "tiny", 64, None, 0).module.unet
    convs = [m for m in unet.modules() if type(m) is torch.nn.Conv2d]
    assert sum(c["count"] for c in configs) == len(convs)  # each runs once a step
    assert len({json.dumps(c, sort_keys=True) for c in configs}) == len(configs)
    first = next(c for c in configs if c["in_channels"] == 4)  # conv_in, on the latents of the CFG batch
    assert first["input_shape"] == [2, 4, 8, 8] and first["kernel"] == [3, 3] and first["out_channels"] == 32


def test_a_run_measures_whole_and_split_and_writes_its_files(tmp_path, monkeypatch):
    from mobilediff.targets import xnnpack_forms

    found = xc.conv_configs("sd15", "tiny", 64, 0)
    pick = lambda ci, co, k: min((c for c in found if (c["in_channels"], c["out_channels"], c["kernel"]) == (ci, co, k)),
                                 key=lambda c: c["input_shape"][2])
    configs = [pick(256, 128, [3, 3]), pick(32, 32, [1, 1])]
    monkeypatch.setattr(xc, "conv_configs", lambda *a: configs)
    monkeypatch.setattr(xnnpack_forms, "CONV_WEIGHT_BUDGET_BYTES", 300 * 1024)  # 256 -> 128 3x3: 1.125 MiB, 4 parts
    res = xc.main(["--scale", "tiny", "--resolution", "64", "--runs", "2", "--warmup", "0", "--no-unet", "--out",
                       str(tmp_path)])
    data = json.loads((tmp_path / "xnnpack_convs.json").read_text())
    assert data == json.loads(json.dumps(res))
    assert data["schema"]["name"] == "mobilediff.xnnpack_convs" and data["settings"]["budget_mib"] == 300 / 1024
    wide, small = sorted(data["rows"], key=lambda r: -r["weight_mib"])
    assert wide["parts"] == 4 and small["parts"] == 1
    assert small["split_ms"] == small["whole_ms"]  # not split: measured once
    for r in (wide, small):
        assert r["eager_ms"] > 0 and r["whole_ms"] > 0 and r["split_ms"] > 0 and r["gflop"] > 0
        assert r["whole_gflops_per_s"] == pytest.approx(r["gflop"] / r["whole_ms"] * 1e3)
    t = data["totals"]
    assert t["convolutions"] == sum(r["count"] for r in data["rows"]) and t["split_convolutions"] == wide["count"]
    assert t["whole_ms"] == pytest.approx(sum(r["whole_ms"] * r["count"] for r in data["rows"]))
    assert data["unet"] is None
    md = (tmp_path / "xnnpack_convs.md").read_text()
    assert "| 256 | 128 | 3x3 |" in md and "as exported" in md and "## The whole UNet step" not in md
    assert (tmp_path / "xnnpack_convs.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.extended  # about 170 s on 2 cores: the tests above cover a measured split and a whole run's files
def test_the_whole_unet_is_profiled_with_its_convolutions_whole_and_split(tmp_path, monkeypatch):
    from mobilediff.targets import xnnpack_forms

    monkeypatch.setattr(xnnpack_forms, "CONV_WEIGHT_BUDGET_BYTES", 300 * 1024)
    unet = {name: xc.unet_profile("bk-sdm-tiny", "tiny", 64, 0, 1, 1, tmp_path, name == "split")
            for name in ("whole", "split")}
    assert xnnpack_forms.CONV_WEIGHT_BUDGET_BYTES == 300 * 1024  # put back after the whole one
    assert unet["whole"]["facts"]["split_convolutions"] == 0 and unet["split"]["facts"]["split_convolutions"] >= 1
    for p in unet.values():
        assert p["total_ms"] > 0 and p["ops"] and p["facts"]["delegated_subgraphs"] <= 3
        assert not any(op.startswith("native_call_convolution") for op in p["ops"])  # every convolution in XNNPACK
    assert list(tmp_path.iterdir()) == []  # the program file is removed
    rows = [{"in_channels": 8, "out_channels": 8, "kernel": [3, 3], "stride": [1, 1], "input_shape": [2, 8, 4, 4],
             "count": 1, "weight_mib": 0.01, "parts": 1, "gflop": 0.01, "eager_ms": 1.0, "whole_ms": 1.0,
             "split_ms": 1.0, "eager_gflops_per_s": 10.0, "whole_gflops_per_s": 10.0, "split_gflops_per_s": 10.0}]
    res = {"command": "c", "machine": {"cpu": "x", "cores": 2, "load_average": [0.1]}, "rows": rows,
           "totals": xc.totals(rows), "unet": unet,
           "settings": {"arch": "bk-sdm-tiny", "scale": "tiny", "resolution": 64, "runs": 1, "warmup": 1, "threads": 2,
                        "budget_mib": 0.29, "unet_runs": 1}}
    md = xc.write_markdown(res)
    assert "## The whole UNet step" in md and "| whole |" in md and "| as exported |" in md
    xc.plot(res)(tmp_path / "p.png")
    assert (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"
