"""Packages of the npm registry pinned by name, version and sha512: downloaded once, checked, unpacked.

The registry is reachable where weights and data hosts are not, and some packages carry what the project needs as
an input (the emoji images, the phones' runtime libraries). Nothing unpinned is ever fetched: a tarball whose sha512
is not the pinned one is refused, and a package is unpacked into its final folder only once it is whole.
"""
from __future__ import annotations

import base64
import fcntl
import hashlib
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from mobilediff.errors import MobilediffError

REGISTRY = "https://registry.npmjs.org"


@dataclass(frozen=True)
class NpmPackage:
    name: str
    version: str
    sha512: str  # base64, as the registry's dist.integrity gives it after "sha512-"
    license: str = ""

    @property
    def spec(self) -> str:
        return f"{self.name}@{self.version}"

    @property
    def tarball_name(self) -> str:
        return f"{self.name.split('/')[-1]}-{self.version}.tgz"

    @property
    def url(self) -> str:
        registry = os.environ.get("MOBILEDIFF_NPM_REGISTRY", REGISTRY).rstrip("/")
        return f"{registry}/{self.name}/-/{self.tarball_name}"


def sha512_b64(path: Path) -> str:
    h = hashlib.sha512()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return base64.b64encode(h.digest()).decode()


def check_integrity(package: NpmPackage, tarball: Path) -> None:
    digest = sha512_b64(tarball)
    if digest != package.sha512:
        raise MobilediffError(f"{tarball}: sha512 {digest} is not the pinned {package.spec}'s {package.sha512}")


def download(package: NpmPackage, folder: Path, say=None) -> Path:
    """Download ``package``'s tarball into ``folder`` and check its sha512; returns the tarball's path."""
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / package.tarball_name
    if target.is_file():
        check_integrity(package, target)
        return target
    if say:
        say(f"downloading {package.spec} ({package.url})")
    partial = Path(tempfile.mkstemp(dir=folder, suffix=".partial")[1])
    try:
        try:
            with urllib.request.urlopen(package.url, timeout=60) as response, open(partial, "wb") as out:
                shutil.copyfileobj(response, out, 1 << 20)
        except (urllib.error.URLError, OSError) as e:
            raise MobilediffError(f"could not download {package.spec} from {package.url}: {e}") from None
        check_integrity(package, partial)
        partial.replace(target)
    finally:
        partial.unlink(missing_ok=True)
    return target


def unpack(package: NpmPackage, tarball: Path, dest: Path) -> Path:
    """Unpack ``tarball`` (already checked) into ``dest`` atomically; returns the package root (``dest/package``)."""
    check_integrity(package, tarball)
    dest.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}."))
    try:
        with tarfile.open(tarball, "r:gz") as tar:
            tar.extractall(work, filter="data")
        roots = [p for p in work.iterdir() if p.is_dir()]
        if len(roots) != 1:
            raise MobilediffError(f"{tarball}: expected one top-level folder in the package, found {len(roots)}")
        if dest.exists():
            shutil.rmtree(dest)
        work.replace(dest)
    except (tarfile.TarError, OSError) as e:
        raise MobilediffError(f"could not unpack {tarball}: {e}") from None
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)
    return dest / roots[0].name


def fetch(package: NpmPackage, cache: Path, say=None) -> Path:
    """The unpacked package root of ``package`` in ``cache`` (downloaded, checked and unpacked on first use; several
    processes may ask at once: one fetches, the others wait for it)."""
    cache.mkdir(parents=True, exist_ok=True)
    folder = cache / f"{package.name.replace('/', '+')}-{package.version}"
    stamp = folder / ".sha512"
    with open(cache / f".{folder.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if stamp.is_file() and stamp.read_text().strip() == package.sha512:
            roots = [p for p in folder.iterdir() if p.is_dir()]
            if len(roots) == 1:
                return roots[0]
        tarball = download(package, cache / "tarballs", say)
        root = unpack(package, tarball, folder)
        stamp.write_text(package.sha512 + "\n")
        return root
