"""Names of the embedded models: the default model and its students, and the UNet-size family generated from the
folders on disk (a size that is not there is not registered)."""
from __future__ import annotations

from pathlib import Path

from mobilediff.loading import (DEFAULT_MODEL_DIR, DEFAULT_STUDENTS, NAMED_MODELS, family_names, find_family,
                                resolve_model)


def pipeline_folder(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "model_index.json").write_text("{}")
    return path


def test_the_default_names_stay():
    assert resolve_model("default") == DEFAULT_MODEL_DIR and resolve_model(None) == DEFAULT_MODEL_DIR
    assert NAMED_MODELS["default:lcm"] == DEFAULT_STUDENTS / "lcm"
    assert NAMED_MODELS["default:progressive-4"] == DEFAULT_STUDENTS / "progressive" / "steps-4"
    assert resolve_model("some/folder") == Path("some/folder")


def test_the_family_is_what_is_on_disk(tmp_path):
    root = tmp_path / "family"
    assert find_family(root) == []  # no family folder yet
    for size in ("m", "xs", "s"):
        pipeline_folder(root / f"unet-{size}")
    for kind in ("progressive-1", "progressive-4", "lcm"):
        pipeline_folder(root / "unet-xs" / "students" / kind)
    pipeline_folder(root / "unet-s" / "students" / "lcm")
    (root / "unet-l").mkdir()  # a size still training: no pipeline yet
    (root / "unet-s" / "students" / "progressive-1").mkdir()  # an empty student folder
    pipeline_folder(root / "unet-Bad_Name")  # cannot be spelled as a name
    family = find_family(root)
    assert [m.size for m in family] == ["xs", "s", "m"]  # smallest first
    names = family_names(family)
    assert names == {
        "default:unet-xs": root / "unet-xs", "default:unet-s": root / "unet-s", "default:unet-m": root / "unet-m",
        "default:unet-xs:lcm": root / "unet-xs" / "students" / "lcm",
        "default:unet-xs:progressive-1": root / "unet-xs" / "students" / "progressive-1",
        "default:unet-xs:progressive-4": root / "unet-xs" / "students" / "progressive-4",
        "default:unet-s:lcm": root / "unet-s" / "students" / "lcm"}
    assert family[0].student_name("lcm") == "default:unet-xs:lcm"


def test_registered_family_names_resolve():
    for m in find_family():
        assert resolve_model(m.name) == m.path and (m.path / "model_index.json").is_file()
        for kind, path in m.students.items():
            assert resolve_model(m.student_name(kind)) == path
