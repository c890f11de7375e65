#!/usr/bin/env bash
# Build a signed, verified debug APK of the demo app offline, without Gradle (see ../../shared/TOOLCHAINS.md):
#   aapt (resources, R.java) -> kotlinc app/ + core/ against android.jar -> dx (min SDK 26) -> aapt add ->
#   zipalign -> apksigner sign (debug key generated once, kept in the toolchain folder) -> apksigner verify.
# The APK carries the engine and the Java side of both runtimes (ONNX Runtime's Java API, the ExecuTorch
# API subset) but not their arm64 native libraries, which are not reachable here: it installs and shows its UI,
# and Generate reports the missing runtime. Build a device-ready APK with the Gradle project (published AARs).
# Output: android_demo/build/apk/mobilediff-demo.apk
set -euo pipefail
. "$(dirname "$0")/env.sh"
"$ANDROID_DEMO/scripts/setup-toolchain.sh"
OUT="$BUILD/apk"
rm -rf "$OUT"; mkdir -p "$OUT/gen" "$OUT/classes" "$OUT/dexin"
APP="$ANDROID_DEMO/app/src/main"
log() { echo "[build-apk] $*" >&2; }

log "aapt: resources + R.java"
aapt package -f -m -J "$OUT/gen" -M "$APP/AndroidManifest.xml" -S "$APP/res" -I "$ANDROID_JAR" -F "$OUT/app.unsigned.apk"
javac --release 8 -nowarn -cp "$ANDROID_JAR" -d "$OUT/classes" $(find "$OUT/gen" -name '*.java') 2>&1 | { grep -v '^warning' || true; }

log "kotlinc app/ + core/ against android.jar"
"$KOTLINC" -jvm-target 1.8 -no-reflect -no-jdk -nowarn \
  -cp "$ANDROID_JAR:$OUT/classes:$ORT_JAR:$ET_JAR" -d "$OUT/classes" \
  "$APP/kotlin" "$ANDROID_DEMO/core/src/main/kotlin" 2>&1 | { grep -v 'unable to find kotlin-stdlib' || true; }

log "dx: classes + kotlin-stdlib + runtime Java APIs -> classes.dex"
# dx reads Java 8 class files only: drop the stdlib's multi-release (Java 9+) entries
(cd "$OUT/dexin" && unzip -q -o "$KOTLIN_LIB/kotlin-stdlib.jar" -x 'META-INF/*')
for jar in "$ORT_JAR" "$ET_JAR"; do (cd "$OUT/dexin" && unzip -q -o "$jar" -x 'META-INF/*'); done
java -jar "$DX_JAR" --dex --min-sdk-version=26 --output="$OUT/classes.dex" "$OUT/classes" "$OUT/dexin"
(cd "$OUT" && aapt add -f app.unsigned.apk classes.dex >/dev/null)

log "zipalign + apksigner"
KEYSTORE="$TOOLCHAIN/debug.jks"
if [[ ! -f "$KEYSTORE" ]]; then
  keytool -genkeypair -keystore "$KEYSTORE" -storepass android -keypass android -alias androiddebugkey \
    -keyalg RSA -keysize 2048 -validity 10000 -dname "CN=mobilediff debug" >/dev/null 2>&1
fi
zipalign -f 4 "$OUT/app.unsigned.apk" "$OUT/app.aligned.apk"
apksigner sign --ks "$KEYSTORE" --ks-pass pass:android --key-pass pass:android --out "$OUT/mobilediff-demo.apk" "$OUT/app.aligned.apk"
apksigner verify --min-sdk-version 26 --verbose "$OUT/mobilediff-demo.apk" | head -4
rm -f "$OUT/app.unsigned.apk" "$OUT/app.aligned.apk"
log "wrote $OUT/mobilediff-demo.apk ($(stat -c %s "$OUT/mobilediff-demo.apk") bytes)"
