#!/usr/bin/env bash
# Install and build everything android_demo needs, offline-cached under $TOOLCHAIN (android_demo/.toolchain,
# git-ignored). Idempotent: each step leaves a stamp and is skipped on the next run. Works from nothing on
# Debian 12 as root (reaches only Debian's archive, the npm registry and the project's venv with its wheels).
# See ../shared/TOOLCHAINS.md for how each route was measured.
#
#   kotlinc 2.4 .............. npm kotlin-compiler
#   JUnit 4, org.json, aapt, apksigner, zipalign ... Debian bookworm (apt)
#   ONNX Runtime Java API .... Java + JNI sources of trixie's onnxruntime source package, built here over the
#                              libonnxruntime.so of the venv's onnxruntime wheel
#   ExecuTorch host library .. android_demo/hostshim (org.pytorch.executorch API subset) + a JNI library
#                              built here against the venv's executorch wheel (headers + libexecutorch*.so)
#   android.jar (API 23), dx . Debian bullseye (libandroid-23-java, dalvik-exchange); bullseye is past its
#                              support window, so this route can break when the mirror moves it.
set -euo pipefail
. "$(dirname "$0")/env.sh"
mkdir -p "$TOOLCHAIN"
log() { echo "[setup-toolchain] $*" >&2; }
stamp() { [[ -f "$TOOLCHAIN/.stamp-$1" && "$(cat "$TOOLCHAIN/.stamp-$1")" == "$2" ]]; }
mark() { echo "$2" > "$TOOLCHAIN/.stamp-$1"; }

# --- 1. Debian bookworm packages ---------------------------------------------------------------------------
APT_PKGS=(xz-utils unzip zip junit4 libandroid-json-java aapt apksigner zipalign)
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

# --- 4. the venv's runtime wheels -----------------------------------------------------------------------------
[[ -x "$VENV/bin/python" ]] || { echo "error: no Python venv at $VENV (install mobilediff first: see README.md)" >&2; exit 1; }
SITE="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
JAVA_HOME="${JAVA_HOME:-$(dirname "$(dirname "$(readlink -f "$(command -v javac)")")")}"
JNI_INC=(-I"$JAVA_HOME/include" -I"$JAVA_HOME/include/linux")

# --- 5. ONNX Runtime's Java API (trixie's source package) over the wheel's native library -------------------
ORT_LIB="$(ls "$SITE"/onnxruntime/capi/libonnxruntime.so.1.* | head -1)"
ORT_KEY="$(basename "$ORT_LIB")"
if ! stamp ort "$ORT_KEY" || [[ ! -f "$ORT_JAR" ]]; then
  alt_update
  O="$TOOLCHAIN/ort"; rm -rf "$O/classes" "$O/h" "$ORT_NATIVE"; mkdir -p "$O/src" "$O/classes" "$O/h" "$ORT_NATIVE"
  log "onnxruntime source package (trixie) -> Java API + JNI over $ORT_KEY"
  # only the .orig tarball is needed; the mirror has at times lacked the .dsc / .debian.tar.xz, so their
  # failure is tolerated and the tarball checked instead
  (cd "$O/src" && apt-get "${ALT_OPTS[@]}" source --download-only -qq onnxruntime/trixie >/dev/null 2>&1 || true)
  ls "$O"/src/onnxruntime_*.orig.tar.* >/dev/null 2>&1 \
    || { echo "error: could not download trixie's onnxruntime source tarball" >&2; exit 1; }
  tar -xf "$(ls "$O"/src/onnxruntime_*.orig.tar.* | head -1)" -C "$O/src" \
      --wildcards '*/java/src/main/*' '*/include/onnxruntime/*' '*/orttraining/orttraining/training_api/include/*'
  SRCROOT="$(ls -d "$O"/src/onnxruntime-*/ | head -1)"
  javac --release 8 -nowarn -Xlint:none -d "$O/classes" -h "$O/h" \
      $(find "$SRCROOT/java/src/main/java" "$SRCROOT/java/src/main/jvm" -name '*.java') 2>&1 | grep -v '^Note:' || true
  jar cf "$ORT_JAR" -C "$O/classes" .
  # the header cmake would generate: the version string the JNI code reports, and glibc's reallocarray
  printf '#pragma once\n#define HAS_REALLOCARRAY\n#define ORT_VERSION "%s"\n' \
      "$(basename "$SRCROOT" | sed 's/onnxruntime-//')" > "$O/h/onnxruntime_config.h"
  cp "$ORT_LIB" "$ORT_NATIVE/libonnxruntime.so"
  gcc -O2 -shared -fPIC -o "$ORT_NATIVE/libonnxruntime4j_jni.so" "${JNI_INC[@]}" -I"$O/h" \
      -I"$SRCROOT/include" -I"$SRCROOT/include/onnxruntime/core/session" \
      -I"$SRCROOT/orttraining/orttraining/training_api/include" \
      -I"$SRCROOT/java/src/main/native" "$SRCROOT"/java/src/main/native/*.c \
      -L"$ORT_NATIVE" -lonnxruntime -Wl,-rpath,'$ORIGIN' -w
  mark ort "$ORT_KEY"
fi

# --- 6. ExecuTorch host library: the org.pytorch.executorch subset over the wheel's libexecutorch ------------
# (include dirs and definitions as the wheel's share/cmake/executorch-config.cmake gives a consumer)
ET_LIB="$SITE/executorch/lib"
ET_SRC="$ANDROID_DEMO/hostshim"
ET_KEY="$("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("executorch"))')-$(cat "$ET_SRC"/java/org/pytorch/executorch/*.java "$ET_SRC"/jni/*.cpp | sha256sum | cut -c1-16)"
if ! stamp executorch "$ET_KEY" || [[ ! -f "$ET_JAR" ]]; then
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
  mark executorch "$ET_KEY"
fi
log "toolchain ready in $TOOLCHAIN"
