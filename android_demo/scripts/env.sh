# Paths shared by the android_demo scripts (sourced, not run). Everything the toolchain builds or downloads
# lives under $TOOLCHAIN (git-ignored); the build outputs of test.sh / build-apk.sh under $BUILD.
ANDROID_DEMO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
REPO_ROOT="$(cd "$ANDROID_DEMO/.." && pwd)"
TOOLCHAIN="${MOBILEDIFF_ANDROID_TOOLCHAIN:-$ANDROID_DEMO/.toolchain}"
BUILD="$ANDROID_DEMO/build"
KOTLIN_VERSION=2.4.20
KOTLINC="$TOOLCHAIN/npm/node_modules/kotlin-compiler/bin/kotlinc-jvm"
KOTLIN_LIB="$TOOLCHAIN/npm/node_modules/kotlin-compiler/lib"
JUNIT_CP=/usr/share/java/junit4.jar:/usr/share/java/hamcrest-core.jar
JSON_JAR=/usr/share/java/com.android.json.jar      # org.json as Android ships it (libandroid-json-java)
ORT_JAR="$TOOLCHAIN/ort/onnxruntime-android.jar" # the AAR's ai.onnxruntime classes as Java 8 class files (dexed as is)
ORT_AAR="$TOOLCHAIN/ort/aar"                      # the unpacked onnxruntime.aar (jni/<abi>/*.so, headers/)
ORT_NATIVE="$TOOLCHAIN/ort/native"               # JVM: libonnxruntime4j_jni.so (built here) + libonnxruntime.so (Linux x64)
ET_JAR="$TOOLCHAIN/executorch/executorch-host.jar"
ET_NATIVE="$TOOLCHAIN/executorch/native"         # libexecutorch_jni.so (links the wheel's libexecutorch*.so)
ET_ANDROID_JAR="$TOOLCHAIN/executorch-android/classes.jar" # the phone's org.pytorch.executorch (compile only)
ASM_CP=/usr/share/java/asm.jar:/usr/share/java/asm-tree.jar:/usr/share/java/asm-analysis.jar
TOOLS_JAR="$TOOLCHAIN/tools/jvm8-tools.jar"      # android_demo/tools/jvm8: desugar, natives, reach, api
TOOLS_CP="$TOOLS_JAR:$ASM_CP"
# Android APIs above API 23 (the newest android.jar reachable here) that ai.onnxruntime uses, each in API 24-26
# (the app's minSdk is 26): streams, functional interfaces, Optional (24); java.nio.file (26); default-network callback (24)
API_24_26='^(java/util/(stream|function)/|java/util/Optional$|java/util/Arrays\.stream |java/util/(Set|Collection|List)\.stream |java/nio/file/|android/net/ConnectivityManager\.registerDefaultNetworkCallback )'

ANDROID_JAR="$TOOLCHAIN/android/android-23.jar"
DX_JAR="$TOOLCHAIN/android/dx.jar"
VENV="${MOBILEDIFF_VENV:-$REPO_ROOT/.venv}"
# the engine's JVM classpath (without the engine's own classes)
RUNTIME_CP="$KOTLIN_LIB/kotlin-stdlib.jar:$JSON_JAR:$ORT_JAR:$ET_JAR"
JAVA_NATIVE_OPTS="-Donnxruntime.native.path=$ORT_NATIVE -Djava.library.path=$ET_NATIVE"
# the runtime versions for records beside results (files setup-toolchain.sh writes): call after it has run
runtime_version_opts() {
  echo "-Dmobilediff.onnxruntime.expected=$(cat "$TOOLCHAIN/ort/runtime-version")" \
       "-Dmobilediff.executorch.runtime=$(cat "$TOOLCHAIN/executorch/version")" \
       "-Dmobilediff.executorch.phone=$(cat "$TOOLCHAIN/executorch-android/package")"
}
