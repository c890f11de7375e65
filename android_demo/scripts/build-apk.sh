#!/usr/bin/env bash
# Build a signed, verified debug APK of the demo app offline, without Gradle (see ../../shared/TOOLCHAINS.md), with
# ONNX Runtime 1.29.0 inside (the official Android build from npm com.github.asus4.onnxruntime, fetched and checked by
# setup-toolchain.sh through mobilediff.runtimes):
#   aapt (resources, R.java, assets/runtimes.json) -> kotlinc app/ + core/ against android.jar, the ai.onnxruntime
#   classes and the phone's org.pytorch.executorch API -> dx (min SDK 26): the app, Kotlin's stdlib and the
#   ai.onnxruntime classes rewritten to Java 8 (tools/jvm8; the very bytes the JVM tests run) -> lib/<abi>/ from
#   the AAR, stored -> align-apk.py (libraries at 16 KB) -> apksigner sign (debug key generated once, kept in the
#   toolchain folder) -> apksigner verify -> check-apk.py (JNI exports, NEEDED, alignment; fails on any gap).
# ExecuTorch is not packaged: its libexecutorch.so needs fbjni (native and Java) that no reachable package provides
# in a form that loads (README.md, "ExecuTorch on a phone"); assets/runtimes.json lists what the APK holds, and the
# app offers only that. The Gradle project builds with both runtimes from Maven.
#   MOBILEDIFF_APK_ABIS="arm64-v8a x86_64"   the ABIs to package (default; the AAR also has armeabi-v7a and x86)
#   MOBILEDIFF_APK_BUNDLE=DIR                 a bundle under assets/bundle/ (default: none; see below)
# Output: android_demo/build/apk/mobilediff-demo.apk (+ check-apk.json, the check's report)
set -euo pipefail
. "$(dirname "$0")/env.sh"
start=$SECONDS
"$ANDROID_DEMO/scripts/setup-toolchain.sh"
OUT="$BUILD/apk"
APP="$ANDROID_DEMO/app/src/main"
log() { echo "[build-apk] $*" >&2; }
read -r -a ABIS <<< "${MOBILEDIFF_APK_ABIS-arm64-v8a x86_64}"
((${#ABIS[@]})) || { echo "error: MOBILEDIFF_APK_ABIS is empty: name at least one ABI (e.g. arm64-v8a)" >&2; exit 2; }
for abi in "${ABIS[@]}"; do
  [[ -f "$ORT_AAR/jni/$abi/libonnxruntime.so" ]] || {
    echo "error: MOBILEDIFF_APK_ABIS: ONNX Runtime's AAR has no ABI '$abi' (it has: $(ls "$ORT_AAR/jni" | tr '\n' ' '))" >&2; exit 2; }
done
ORT_VERSION="$(cat "$TOOLCHAIN/ort/runtime-version")"
ORT_PACKAGE="$(cat "$TOOLCHAIN/ort/package")"
rm -rf "$OUT"; mkdir -p "$OUT/gen" "$OUT/classes" "$OUT/dexin" "$OUT/assets"

# the runtimes this APK packages (the app offers only these; Runtimes.kt reads it)
"$VENV/bin/python" - "$OUT/assets/runtimes.json" "$ORT_VERSION" "$ORT_PACKAGE" "${ABIS[@]}" <<'PY'
import json, sys
out, version, package, abis = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
json.dump({"runtimes": [{"name": "onnxruntime", "version": version, "abis": abis,
                         "package": f"npm {package} (onnxruntime.aar)"}],
           "not_packaged": [{"name": "executorch", "why": "libexecutorch.so needs fbjni (libfbjni.so and its Java "
                             "classes), which no package reachable to this build provides in a form that loads"}]},
          open(out, "w"), indent=1)
PY

log "aapt: resources + R.java + assets/runtimes.json"
aapt package -f -m -J "$OUT/gen" -M "$APP/AndroidManifest.xml" -S "$APP/res" -A "$OUT/assets" -I "$ANDROID_JAR" -F "$OUT/app.unsigned.apk"
javac --release 8 -nowarn -cp "$ANDROID_JAR" -d "$OUT/classes" $(find "$OUT/gen" -name '*.java') 2>&1 | { grep -v '^warning' || true; }

log "kotlinc app/ + core/ against android.jar, ai.onnxruntime and the phone's org.pytorch.executorch API"
# -jvm-default=no-compatibility: interface methods with bodies become plain default methods (Android 7+), without
# the DefaultImpls bridges whose invokespecial of a default method dx turns into an invoke-direct ART refuses
"$KOTLINC" -jvm-target 1.8 -jvm-default=no-compatibility -no-reflect -no-jdk -nowarn \
  -cp "$ANDROID_JAR:$OUT/classes:$ORT_JAR:$ET_ANDROID_JAR" -d "$OUT/classes" \
  "$APP/kotlin" "$ANDROID_DEMO/core/src/main/kotlin" 2>&1 | { grep -v 'unable to find kotlin-stdlib' || true; }

log "dx: classes + kotlin-stdlib + ai.onnxruntime (Java 8 form) -> classes.dex"
# dx reads Java 8 class files only: drop the stdlib's multi-release (Java 9+) entries. ExecuTorch's classes stay out:
# its native library is not packaged, and the JVM's host stand-in must never reach a phone.
# Android has no LambdaMetafactory: the invokedynamic lambdas kotlinc writes (ours and the stdlib's) become generated
# classes (tools/jvm8 desugar), else the first click listener fails on a phone.
(cd "$OUT/classes" && jar cf "$OUT/app.jar" .)
java -cp "$TOOLS_CP" com.mobilediff.tools.Main desugar "$OUT/app.jar" "$OUT/app8.jar"
java -cp "$TOOLS_CP" com.mobilediff.tools.Main desugar "$KOTLIN_LIB/kotlin-stdlib.jar" "$OUT/stdlib8.jar"
(cd "$OUT/dexin" && unzip -q -o "$OUT/stdlib8.jar" -x 'META-INF/*')
(cd "$OUT/dexin" && unzip -q -o "$ORT_JAR" -x 'META-INF/*')
java -jar "$DX_JAR" --dex --min-sdk-version=26 --output="$OUT/classes.dex" "$OUT/app8.jar" "$OUT/dexin"
(cd "$OUT" && aapt add -f app.unsigned.apk classes.dex >/dev/null)

log "lib/<abi>/: ONNX Runtime $ORT_VERSION for ${ABIS[*]} (stored)"
"$VENV/bin/python" - "$OUT/app.unsigned.apk" "$ORT_AAR/jni" "${ABIS[@]}" <<'PY'
import pathlib, sys, zipfile
apk, jni, abis = sys.argv[1], pathlib.Path(sys.argv[2]), sys.argv[3:]
with zipfile.ZipFile(apk, "a") as z:
    for abi in abis:
        for lib in sorted((jni / abi).glob("*.so")):
            z.write(lib, f"lib/{abi}/{lib.name}", compress_type=zipfile.ZIP_STORED)
PY

# ---- packaged bundle: MOBILEDIFF_APK_BUNDLE=DIR puts a bundle under assets/bundle/ (default: none) ----------------
# The app copies it into its own storage on the first run of each installed APK and checks every file's sha256.
# None by default: no bundle exists before an export (or `python -m mobilediff.fixtures`) has run, and the smallest
# real one (the 4-step LCM student, ONNX alone: ~26 MB) would be most of the APK. Only what the manifest names for
# the targets of the runtimes in the APK's assets/runtimes.json goes in (all Android targets when it has none),
# stored uncompressed (weights do not compress, and a stored asset's size is known to the app's progress bar).
if [[ -n "${MOBILEDIFF_APK_BUNDLE:-}" ]]; then
  log "assets/bundle/ <- $MOBILEDIFF_APK_BUNDLE"
  "$VENV/bin/python" - "$MOBILEDIFF_APK_BUNDLE" "$OUT/app.unsigned.apk" <<'PY'
import json, pathlib, sys, zipfile
src, apk = pathlib.Path(sys.argv[1]), sys.argv[2]
if not (src / "manifest.json").is_file():
    sys.exit(f"error: MOBILEDIFF_APK_BUNDLE={src} holds no manifest.json")
m = json.loads((src / "manifest.json").read_text())
reads = {"onnxruntime": ("onnx", "ort"), "executorch": ("executorch",)}  # runtime -> the bundle targets it reads
with zipfile.ZipFile(apk) as z:
    packaged = json.loads(z.read("assets/runtimes.json"))["runtimes"] if "assets/runtimes.json" in z.namelist() else None
targets = {t for r in packaged for t in reads.get(r["name"], ())} if packaged is not None else {t for ts in reads.values() for t in ts}
names = ["manifest.json", *m["tokenizer"]["files"]]
for c in m["components"].values():
    for f in c["files"]:
        if f["target"] in targets:
            names += [f["path"], *(e["path"] for e in f.get("external_data") or [])]
with zipfile.ZipFile(apk, "a") as z:
    for n in dict.fromkeys(names):
        if n.startswith("/") or ".." in n.split("/"):
            sys.exit(f"error: MOBILEDIFF_APK_BUNDLE: the manifest names {n}, a path outside the bundle")
        if not (src / n).is_file():
            sys.exit(f"error: MOBILEDIFF_APK_BUNDLE: {n} is named by the manifest but missing in {src}")
        z.write(src / n, f"assets/bundle/{n}", compress_type=zipfile.ZIP_STORED)
print(f"[build-apk] assets/bundle/ ({', '.join(sorted(targets))}): {len(dict.fromkeys(names))} files, "
      f"{sum((src / n).stat().st_size for n in dict.fromkeys(names)) / 1e6:.1f} MB", file=sys.stderr)
PY
fi
# ---- end of the packaged bundle step --------------------------------------------------------------------------

log "align (libraries at 16 KB) + apksigner"
KEYSTORE="$TOOLCHAIN/debug.jks"
if [[ ! -f "$KEYSTORE" ]]; then
  keytool -genkeypair -keystore "$KEYSTORE" -storepass android -keypass android -alias androiddebugkey \
    -keyalg RSA -keysize 2048 -validity 10000 -dname "CN=mobilediff debug" >/dev/null 2>&1
fi
python3 "$ANDROID_DEMO/scripts/align-apk.py" "$OUT/app.unsigned.apk" "$OUT/app.aligned.apk"
apksigner sign --ks "$KEYSTORE" --ks-pass pass:android --key-pass pass:android --min-sdk-version 26 \
  --out "$OUT/mobilediff-demo.apk" "$OUT/app.aligned.apk"
apksigner verify --min-sdk-version 26 --verbose "$OUT/mobilediff-demo.apk" | head -4
rm -f "$OUT/app.unsigned.apk" "$OUT/app.aligned.apk" "$OUT/mobilediff-demo.apk.idsig"
python3 "$ANDROID_DEMO/scripts/check-apk.py" "$OUT/mobilediff-demo.apk" --json "$OUT/check-apk.json"
log "wrote $OUT/mobilediff-demo.apk ($(stat -c %s "$OUT/mobilediff-demo.apk") bytes) in $((SECONDS - start)) s"
