"""The bundle contract's conformance cases (tests/contract/): what Python's one manifest reader and the bundle
tokenizer must give. The Kotlin and Swift engines run the same cases (ContractTest.kt, ContractTests.swift)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from mobilediff.bundle import read_manifest
from mobilediff.errors import MobilediffError

CONTRACT = Path(__file__).parent / "contract"
REPO = Path(__file__).parent.parent
CASES = json.loads((CONTRACT / "cases.json").read_text(encoding="utf-8"))["cases"]
TOKENIZER = json.loads((CONTRACT / "tokenizer.json").read_text(encoding="utf-8"))
MODES = ("txt2img", "img2img", "inpaint")  # the order `expect.modes` lists them in


def merge_patch(target, patch):
    """RFC 7386: objects merge key by key, null removes, anything else replaces."""
    if not isinstance(patch, dict):
        return patch
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


def case_text(case: dict) -> str:
    text = (CONTRACT / case["base"]).read_text(encoding="utf-8")
    for old, new in case.get("text_replace", []):
        assert old in text, f"{case['name']}: {old!r} does not occur in {case['base']}"
        text = text.replace(old, new)
    if "patch" in case:
        text = json.dumps(merge_patch(json.loads(text), case["patch"]), indent=2)
    return text


def test_the_cases_are_well_formed():
    names = [c["name"] for c in CASES]
    assert len(names) == len(set(names)) and len(names) >= 30
    plan = {"role", "method", "plan", "plan_table"}
    for c in CASES:
        keys = set(c["expect"])
        assert keys == {"error_mentions"} or plan <= keys <= plan | {"modes", "adapters"}, c["name"]
    # both outcomes, every base and both ways of building a case are exercised
    assert {bool("error_mentions" in c["expect"]) for c in CASES} == {True, False}
    assert {c["base"] for c in CASES} == {"teacher.json", "lcm_student.json", "image_adapters.json"}
    assert any("text_replace" in c for c in CASES) and any("patch" in c for c in CASES)


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_manifest_case(case, tmp_path):
    (tmp_path / "manifest.json").write_text(case_text(case), encoding="utf-8")
    expect = case["expect"]
    if "error_mentions" in expect:
        with pytest.raises(MobilediffError) as e:
            read_manifest(tmp_path)
        message = str(e.value)
        assert "\n" not in message
        for part in expect["error_mentions"]:
            assert part in message, f"{case['name']}: {part!r} not in {message!r}"
        return
    m = read_manifest(tmp_path)
    assert (m.role.role, m.role.method) == (expect["role"], expect["method"])
    plan = m.plan
    assert {"sampler": plan.sampler, "steps": plan.steps, "guidance": plan.guidance} == expect["plan"]
    has_table = any(t.name == plan.sampler and t.steps == plan.steps for t in m.samplers)
    assert has_table == expect["plan_table"]
    if has_table:
        assert m.sampler_table(plan.sampler, plan.steps).steps == plan.steps
    else:
        with pytest.raises(MobilediffError, match=f"no {plan.sampler} table for {plan.steps} steps"):
            m.sampler_table(plan.sampler, plan.steps)
    if "modes" in expect:
        assert [mode for mode in MODES if m.supports(mode)] == expect["modes"]
    if "adapters" in expect:
        assert [f["name"] for f in (m.adapters or {}).get("files", [])] == expect["adapters"]


@pytest.mark.parametrize("spec", TOKENIZER["specs"], ids=lambda s: f"max{s['max_length']}-pad{s['pad_id']}")
def test_bundle_tokenizer_gives_the_reference_ids(spec, tmp_path):
    """The bundle's tokenizer reads vocab.json + merges.txt only: a tokenizer.json beside them that says otherwise
    changes nothing."""
    import shutil

    import torch

    from mobilediff.bundle import Tokenizer
    from mobilediff.engine import BundleTokenizer

    folder = tmp_path / "tokenizer"
    shutil.copytree(REPO / TOKENIZER["tokenizer"], folder)
    (folder / "tokenizer.json").write_text(json.dumps({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": []}}))
    spec_record = Tokenizer(files=("tokenizer/vocab.json", "tokenizer/merges.txt"), max_length=spec["max_length"],
                            bos_id=spec["bos_id"], eos_id=spec["eos_id"], pad_id=spec["pad_id"])
    tok = BundleTokenizer(tmp_path, spec_record)
    for case in spec["cases"]:
        got = tok.ids(case["prompt"])
        assert got.dtype == torch.int32 and got.shape == (1, spec["max_length"])
        assert got[0].tolist() == case["ids"], case["prompt"]
