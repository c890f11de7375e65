"""The runtime libraries a phone runs bundles with, as registry packages pinned by name, version and sha512.

No Maven, Google or GitHub download is reachable where this project builds, but the npm registry carries the
official mobile builds inside packages made for other frameworks. The apps' setup scripts fetch them through this
module (one shared, checked cache) and never commit them:

    python -m mobilediff.runtimes list                 # the pins, as JSON
    python -m mobilediff.runtimes fetch onnxruntime-mobile   # prints the unpacked package's root folder

The cache is ``$MOBILEDIFF_RUNTIMES_CACHE`` (default ``~/.cache/mobilediff/runtimes``).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from mobilediff.errors import MobilediffError
from mobilediff.sources.npm import NpmPackage, fetch


@dataclass(frozen=True)
class RuntimePackage:
    package: NpmPackage
    runtime: str
    runtime_version: str
    holds: str


RUNTIME_PACKAGES = {
    "onnxruntime-mobile": RuntimePackage(
        NpmPackage("com.github.asus4.onnxruntime", "0.4.9",
                   "BkzxduSZ9IkeDP6Q8lz2TFU2ie7hSSvS7ZIfzMooExoq0CNzJnuuGaUJ7IsojBgqO4ouD1jXah8OYyJbCN29Fg==", "MIT"),
        "onnxruntime", "1.29.0",
        "Plugins/Android/onnxruntime.aar (jni/<abi>/libonnxruntime.so + libonnxruntime4j_jni.so, the ai.onnxruntime "
        "Java API), Plugins/iOS~/onnxruntime.xcframework (static, C API), Plugins/Linux/x64/libonnxruntime.so"),
    "executorch-mobile": RuntimePackage(
        NpmPackage("react-native-executorch", "0.9.3",
                   "eanpDe8sFFxbKfCh0lqrSVyU4/deiF1pZWtZOjZSV+w+qfuNsdrkQkoscxvhMwJOnvXNkBt4BXAr8pAlGOXStA==", "MIT"),
        "executorch", "",
        "third-party/android/libs/executorch/<abi>/libexecutorch.so (JNI, XNNPACK + Vulkan; needs libfbjni.so), "
        "android/libs/classes.jar (org.pytorch.executorch), third-party/ios/ExecutorchLib.xcframework"),
}


def cache_dir() -> Path:
    return Path(os.environ.get("MOBILEDIFF_RUNTIMES_CACHE") or Path.home() / ".cache" / "mobilediff" / "runtimes")


def fetch_runtime(name: str, cache: Path | None = None, say=None) -> Path:
    if name not in RUNTIME_PACKAGES:
        raise MobilediffError(f"unknown runtime package {name!r}; known: {', '.join(sorted(RUNTIME_PACKAGES))}")
    return fetch(RUNTIME_PACKAGES[name].package, cache or cache_dir(), say)


def pins() -> list[dict]:
    return [{"name": name, "npm": p.package.name, "version": p.package.version,
             "integrity": f"sha512-{p.package.sha512}", "license": p.package.license, "runtime": p.runtime,
             "runtime_version": p.runtime_version or None, "holds": p.holds}
            for name, p in RUNTIME_PACKAGES.items()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mobilediff.runtimes", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="print the pinned runtime packages as JSON")
    f = sub.add_parser("fetch", help="download (once), check and unpack a pinned package; print its root folder")
    f.add_argument("name", help=", ".join(RUNTIME_PACKAGES))
    f.add_argument("--cache", type=Path, default=None, help="cache folder (default: $MOBILEDIFF_RUNTIMES_CACHE or "
                                                            "~/.cache/mobilediff/runtimes)")
    args = parser.parse_args(argv)
    if args.command == "list":
        print(json.dumps(pins(), indent=1))
        return 0
    try:
        root = fetch_runtime(args.name, args.cache, say=lambda m: print(f"[runtimes] {m}", file=sys.stderr))
    except MobilediffError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(root)
    return 0


if __name__ == "__main__":
    sys.exit(main())
