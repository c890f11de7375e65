#!/usr/bin/env python3
"""Static proof that an APK's runtimes would link on a phone (nothing here can run Android code).

    check-apk.py APP.apk [--json REPORT.json]

Checks, for every ABI folder lib/<abi>/ of the APK:
- every ``native`` method of the dexed runtime classes (ai.onnxruntime; org.pytorch.executorch and com.facebook.jni
  when dexed) has its JNI export (``Java_<class>_<method>``, or the long name with the argument descriptor) in one
  of that ABI's packaged libraries;
- every library's NEEDED entries are Android NDK system libraries (the NDK's stable list) or libraries packaged
  in the same folder;
- the dex calls no method of its own by an invoke kind ART's verifier refuses: ``invoke-virtual`` of a private
  method (Java 11+ compilers call private methods so; ``tools/jvm8`` rewrites them to ``invokespecial``), or
  ``invoke-direct`` of a virtual one (dx's translation of Kotlin's ``DefaultImpls`` bridges, which build-apk.sh
  avoids with ``-jvm-default=no-compatibility``), and no ``invoke-custom`` (an ``invokedynamic`` that dx kept: its
  bootstrap, LambdaMetafactory or StringConcatFactory, does not exist on Android);
- every library is stored uncompressed at a 16 KB-aligned offset (so the platform maps it from the APK:
  android:extractNativeLibs="false") and its ELF LOAD segments are 16 KB-aligned (phones with 16 KB pages);
- assets/runtimes.json names exactly the runtimes whose libraries every ABI holds, and the dex holds no class of
  a runtime that is not packaged (a JVM stand-in dexed by mistake would be found first at run time).
Prints the counts per ABI; any gap is a line on stderr and exit 1; a missing tool or unreadable APK exits 2.
Uses the standard library, ``dexdump`` and ``readelf``.
"""
from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

PAGE = 16384
# The NDK's stable system libraries (platform libraries an app may link against), by their sonames.
NDK_SYSTEM_LIBS = {
    "libc.so", "libm.so", "libdl.so", "liblog.so", "libandroid.so", "libjnigraphics.so", "libz.so", "libstdc++.so",
    "libEGL.so", "libGLESv1_CM.so", "libGLESv2.so", "libGLESv3.so", "libvulkan.so", "libOpenSLES.so",
    "libOpenMAXAL.so", "libmediandk.so", "libcamera2ndk.so", "libneuralnetworks.so", "libnativewindow.so",
    "libsync.so", "libaaudio.so", "libamidi.so", "libbinder_ndk.so", "libicu.so",
}
# runtime name in assets/runtimes.json -> (the JNI library every ABI must hold, the Java packages of its classes)
RUNTIMES = {
    "onnxruntime": ("libonnxruntime4j_jni.so", ("ai/onnxruntime/",)),
    "executorch": ("libexecutorch.so", ("org/pytorch/executorch/", "com/facebook/jni/")),
}


def run(cmd: list[str]) -> str:
    try:
        return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    except FileNotFoundError:
        raise SystemExit(f"error: {cmd[0]} not found (android_demo/scripts/setup-toolchain.sh installs it)") from None
    except subprocess.CalledProcessError as e:
        raise SystemExit(f"error: {' '.join(cmd[:2])} failed: {e.stderr.strip()[:300]}") from None


def mangle(s: str) -> str:
    """The JNI specification's escaping of a class, method or argument-descriptor string."""
    out = []
    for ch in s:
        if ch == "/":
            out.append("_")
        elif ch == "_":
            out.append("_1")
        elif ch == ";":
            out.append("_2")
        elif ch == "[":
            out.append("_3")
        elif ch.isascii() and ch.isalnum():
            out.append(ch)
        else:
            out.append(f"_0{ord(ch):04x}")
    return "".join(out)


def jni_names(cls: str, name: str, desc: str) -> tuple[str, str]:
    short = f"Java_{mangle(cls)}_{mangle(name)}"
    return short, f"{short}__{mangle(desc[1:desc.index(')')])}"


def dex_facts(dex: Path) -> dict:
    """From ``dexdump -d``: every class, the native methods as (class, method, descriptor), and the calls that ART's
    verifier refuses: ``invoke-virtual``/``invoke-super`` of a direct method (private, static or constructor) and
    ``invoke-direct`` of a virtual one, among the methods the dex defines."""
    classes, natives, direct, virtual, calls, dynamic = set(), [], set(), set(), [], []
    cls = section = name = desc = None
    for line in run(["dexdump", "-d", str(dex)]).splitlines():
        line = line.strip()
        if m := re.match(r"Class descriptor\s*:\s*'L(.+);'", line):
            cls = m.group(1)
            classes.add(cls)
        elif m := re.match(r"(Static fields|Instance fields|Direct methods|Virtual methods)\s+-", line):
            section = m.group(1)
        elif m := re.match(r"name\s*:\s*'(.+)'", line):
            name = m.group(1)
        elif m := re.match(r"type\s*:\s*'(.+)'", line):
            desc = m.group(1)
        elif (m := re.match(r"access\s*:\s*0x([0-9a-f]+)", line)) and section in ("Direct methods", "Virtual methods"):
            key = (cls, name, desc)
            (direct if section == "Direct methods" else virtual).add(key)
            if int(m.group(1), 16) & 0x0100:  # ACC_NATIVE
                natives.append(key)
        elif m := re.search(r"\|[0-9a-f]+: (invoke-(?:virtual|super|direct))(?:/range)? \{[^}]*\}, L([^;]+);\.([^:]+):(\(\S*)", line):
            calls.append((m.group(1), (m.group(2), m.group(3), m.group(4)), cls))
        elif re.search(r"\|[0-9a-f]+: invoke-custom", line):
            dynamic.append(f"{line.split('|', 1)[-1].split(': ', 1)[-1][:160]} in {cls.replace('/', '.')}")
    refused = []
    for kind, target, caller in calls:
        if (kind in ("invoke-virtual", "invoke-super") and target in direct) or (kind == "invoke-direct" and target in virtual):
            refused.append(f"{kind} of {target[0].replace('/', '.')}.{target[1]}{target[2]} in {caller.replace('/', '.')}")
    return {"classes": classes, "natives": natives, "refused_calls": refused, "calls": len(calls), "dynamic": dynamic}


def elf_facts(path: Path) -> dict:
    """NEEDED entries, defined dynamic symbols and LOAD alignments of an ELF library (via readelf)."""
    needed = re.findall(r"\(NEEDED\)\s+Shared library: \[(.+?)\]", run(["readelf", "-dW", str(path)]))
    loads = [int(m, 16) for m in re.findall(r"^\s*LOAD\s+.*\s(0x[0-9a-f]+)\s*$", run(["readelf", "-lW", str(path)]), re.M)]
    exports = set()
    for line in run(["readelf", "-W", "--dyn-syms", str(path)]).splitlines():
        parts = line.split()
        if len(parts) >= 8 and parts[0].endswith(":") and parts[6] != "UND":
            exports.add(parts[7].split("@")[0])
    return {"needed": needed, "load_align": loads, "exports": exports}


def check(apk: Path) -> tuple[dict, list[str]]:
    gaps: list[str] = []
    report: dict = {"apk": apk.name, "size_bytes": apk.stat().st_size, "abis": {}}
    with zipfile.ZipFile(apk) as z, tempfile.TemporaryDirectory() as tmp:
        raw = apk.read_bytes()
        infos = {i.filename: i for i in z.infolist()}
        dexes = sorted(n for n in infos if re.fullmatch(r"classes\d*\.dex", n))
        if not dexes:
            return report, ["no classes.dex"]
        classes, natives = set(), []
        for d in dexes:
            z.extract(d, tmp)
            facts = dex_facts(Path(tmp) / d)
            classes |= facts["classes"]
            natives += facts["natives"]
            gaps += [f"{d}: {r} (ART's verifier refuses it)" for r in facts["refused_calls"]]
            gaps += [f"{d}: {r} (a Java 8+ call site: Android has no LambdaMetafactory or StringConcatFactory to "
                     f"bootstrap it)" for r in facts["dynamic"]]
            print(f"[check-apk] {d}: {len(facts['classes'])} classes, {len(facts['natives'])} native methods; "
                  f"{facts['calls']} invoke-virtual/super/direct calls, {len(facts['refused_calls'])} of a kind ART "
                  f"refuses (virtual of a private method, direct of a virtual one); {len(facts['dynamic'])} "
                  f"invoke-custom", file=sys.stderr)
        declared = json.loads(z.read("assets/runtimes.json")) if "assets/runtimes.json" in infos else None
        if declared is None:
            gaps.append("assets/runtimes.json missing (the app reads it to offer only the packaged runtimes)")
        packaged_names = {r["name"] for r in (declared or {}).get("runtimes", [])}
        abis = sorted({n.split("/")[1] for n in infos if re.fullmatch(r"lib/[^/]+/[^/]+\.so", n)})
        if not abis:
            gaps.append("no native libraries under lib/<abi>/")
        for abi in abis:
            libs = sorted(n for n in infos if n.startswith(f"lib/{abi}/") and n.endswith(".so"))
            names = {Path(n).name for n in libs}
            facts, exports = {}, set()
            for n in libs:
                info = infos[n]
                lfh_name, lfh_extra = int.from_bytes(raw[info.header_offset + 26:info.header_offset + 28], "little"), \
                    int.from_bytes(raw[info.header_offset + 28:info.header_offset + 30], "little")
                data_offset = info.header_offset + 30 + lfh_name + lfh_extra
                if info.compress_type != zipfile.ZIP_STORED:
                    gaps.append(f"{n}: compressed (must be stored for extractNativeLibs=false)")
                if data_offset % PAGE:
                    gaps.append(f"{n}: data at offset {data_offset}, not {PAGE}-aligned")
                z.extract(n, tmp)
                f = elf_facts(Path(tmp) / n)
                if not f["load_align"] or min(f["load_align"]) < PAGE:
                    gaps.append(f"{n}: ELF LOAD segments aligned to {min(f['load_align'] or [0])} bytes, not {PAGE}")
                for need in f["needed"]:
                    if need not in NDK_SYSTEM_LIBS and need not in names:
                        gaps.append(f"{n}: NEEDED {need} is neither an NDK system library nor packaged in lib/{abi}/")
                exports |= f["exports"]
                facts[Path(n).name] = {"size_bytes": info.file_size, "offset": data_offset, "needed": f["needed"],
                                       "load_align": min(f["load_align"] or [0])}
            jni_exports = {e for e in exports if e.startswith("Java_")}
            found = 0
            for cls, name, desc in natives:
                if any(jni in exports for jni in jni_names(cls, name, desc)):
                    found += 1
                else:
                    gaps.append(f"lib/{abi}: no JNI export for native {cls.replace('/', '.')}.{name}{desc}")
            report["abis"][abi] = {"libraries": facts, "native_methods": len(natives), "natives_with_export": found,
                                   "jni_exports": len(jni_exports)}
            print(f"[check-apk] {abi}: {len(libs)} libraries ({', '.join(sorted(names))}); native methods "
                  f"{found}/{len(natives)} with their JNI export (libraries export {len(jni_exports)} Java_ symbols); "
                  f"all NEEDED resolved: {not any(g.startswith(f'lib/{abi}/') and 'NEEDED' in g for g in gaps)}; "
                  f"16 KB-aligned: {not any(g.startswith(f'lib/{abi}/') and 'align' in g for g in gaps)}", file=sys.stderr)
        # the runtimes the app offers are those packaged, and no other runtime's classes are dexed
        for runtime, (jni_lib, packages) in RUNTIMES.items():
            in_every_abi = bool(abis) and all(f"lib/{abi}/{jni_lib}" in infos for abi in abis)
            dexed = sorted({c for c in classes if c.startswith(packages)})
            if (runtime in packaged_names) != in_every_abi:
                gaps.append(f"assets/runtimes.json {'lists' if runtime in packaged_names else 'omits'} {runtime}, but "
                            f"{jni_lib} is {'in' if in_every_abi else 'not in'} every ABI")
            if dexed and not in_every_abi:
                gaps.append(f"{len(dexed)} {runtime} classes are dexed (e.g. {dexed[0]}) without its native library")
            report.setdefault("runtimes", {})[runtime] = {"listed": runtime in packaged_names,
                                                          "jni_library_in_every_abi": in_every_abi,
                                                          "dexed_classes": len(dexed)}
        report["native_methods"] = len(natives)
        report["runtimes_json"] = declared
    return report, gaps


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("apk", type=Path)
    p.add_argument("--json", type=Path, help="also write the report as JSON")
    a = p.parse_args(argv)
    if not a.apk.is_file():
        print(f"error: no APK at {a.apk}", file=sys.stderr)
        return 2
    try:
        report, gaps = check(a.apk)
    except zipfile.BadZipFile as e:
        print(f"error: {a.apk} is not a readable APK ({e})", file=sys.stderr)
        return 2
    report["gaps"] = gaps
    if a.json:
        a.json.write_text(json.dumps(report, indent=1, default=sorted) + "\n")
    for g in gaps:
        print(f"[check-apk] gap: {g}", file=sys.stderr)
    if gaps:
        print(f"error: {a.apk.name}: {len(gaps)} gaps (above): it would not link or load on a phone", file=sys.stderr)
        return 1
    print(f"[check-apk] {a.apk.name}: every native method of the dexed runtime classes has its JNI export in every "
          f"ABI; every NEEDED library resolves; every library stored and 16 KB-aligned", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
