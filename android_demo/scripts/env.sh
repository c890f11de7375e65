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
ORT_JAR="$TOOLCHAIN/ort/onnxruntime-java.jar"
ORT_NATIVE="$TOOLCHAIN/ort/native"               # libonnxruntime4j_jni.so + libonnxruntime.so
ET_JAR="$TOOLCHAIN/executorch/executorch-host.jar"
ET_NATIVE="$TOOLCHAIN/executorch/native"         # libexecutorch_jni.so (links the wheel's libexecutorch*.so)
ANDROID_JAR="$TOOLCHAIN/android/android-23.jar"
DX_JAR="$TOOLCHAIN/android/dx.jar"
VENV="${MOBILEDIFF_VENV:-$REPO_ROOT/.venv}"
# the engine's JVM classpath (without the engine's own classes)
RUNTIME_CP="$KOTLIN_LIB/kotlin-stdlib.jar:$JSON_JAR:$ORT_JAR:$ET_JAR"
JAVA_NATIVE_OPTS="-Donnxruntime.native.path=$ORT_NATIVE -Djava.library.path=$ET_NATIVE"
