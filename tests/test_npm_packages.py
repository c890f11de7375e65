"""Pinned npm packages (mobilediff.sources.npm, mobilediff.runtimes): a local folder stands in for the registry."""
from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest

from mobilediff import runtimes
from mobilediff.errors import MobilediffError
from mobilediff.sources.npm import NpmPackage, fetch, sha512_b64


def _tarball(path: Path, files: dict[str, bytes]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


@pytest.fixture
def registry(tmp_path, monkeypatch):
    root = tmp_path / "registry"
    monkeypatch.setenv("MOBILEDIFF_NPM_REGISTRY", root.as_uri())
    return root


def test_fetch_checks_unpacks_once_and_reuses(registry, tmp_path):
    tgz = _tarball(registry / "pkg" / "-" / "pkg-1.0.0.tgz", {"package/lib/a.so": b"x" * 10, "package/README": b"r"})
    package = NpmPackage("pkg", "1.0.0", sha512_b64(tgz))
    root = fetch(package, tmp_path / "cache")
    assert root.name == "package" and (root / "lib" / "a.so").read_bytes() == b"x" * 10
    tgz.unlink()  # the second call uses the cache, not the registry
    assert fetch(package, tmp_path / "cache") == root


def test_fetch_refuses_a_tarball_that_is_not_the_pinned_one(registry, tmp_path):
    _tarball(registry / "pkg" / "-" / "pkg-1.0.0.tgz", {"package/a": b"changed"})
    package = NpmPackage("pkg", "1.0.0", "A" * 86 + "==")
    with pytest.raises(MobilediffError, match="is not the pinned pkg@1.0.0"):
        fetch(package, tmp_path / "cache")
    cache = tmp_path / "cache"
    assert not (cache / "pkg-1.0.0").exists()
    assert not list((cache / "tarballs").glob("*"))  # neither the tarball nor a partial download is kept


def test_fetch_refuses_paths_outside_the_package(registry, tmp_path):
    tgz = _tarball(registry / "pkg" / "-" / "pkg-1.0.0.tgz", {"package/a": b"a", "../../escape": b"e"})
    with pytest.raises(MobilediffError, match="could not unpack"):
        fetch(NpmPackage("pkg", "1.0.0", sha512_b64(tgz)), tmp_path / "cache")
    assert not (tmp_path / "escape").exists() and not (tmp_path / "cache" / "pkg-1.0.0").exists()


def test_missing_package_is_one_error(registry, tmp_path):
    with pytest.raises(MobilediffError, match="could not download pkg@2.0.0"):
        fetch(NpmPackage("pkg", "2.0.0", "x"), tmp_path / "cache")


def test_runtimes_cli_lists_pins_and_refuses_unknown_names(capsys):
    assert runtimes.main(["list"]) == 0
    pins = {p["name"]: p for p in json.loads(capsys.readouterr().out)}
    assert pins["onnxruntime-mobile"]["runtime_version"] == "1.29.0"
    assert all(p["integrity"].startswith("sha512-") and p["version"] for p in pins.values())
    assert runtimes.main(["fetch", "tensorflow-lite"]) == 1
    assert capsys.readouterr().err.startswith("error: unknown runtime package 'tensorflow-lite'")
