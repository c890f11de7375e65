#!/usr/bin/env bash
# Does the JVM's JNI library for ONNX Runtime's Java API implement what the engine calls? The classes are 1.29.0's
# (the AAR's, $ORT_JAR); the JNI library is built by setup-toolchain.sh from 1.21's JNI C sources plus
# hostshim/ort, so a 1.29.0 native may be missing, or exist under the same name for another descriptor.
#
#   check-ort-jni.sh --natives     table every native of the 1.29.0 classes against the library (setup-toolchain.sh):
#                                  $TOOLCHAIN/ort/jni-natives.tsv = class, method, descriptor, provided by
#                                  (1.21 | hostshim | missing | descriptor-differs); prints the counts and the gaps
#   check-ort-jni.sh ENGINE.jar    fail unless every native the engine's classes can reach (Main reach: class
#                                  hierarchy analysis, plus the methods the AAR's own JNI library calls back) is provided
set -euo pipefail
. "$(dirname "$0")/env.sh"
O="$TOOLCHAIN/ort"
TABLE="$O/jni-natives.tsv"
tools() { java -cp "$TOOLS_CP" com.mobilediff.tools.Main "$@"; }
W="$(mktemp -d)"; trap 'rm -rf "$W"' EXIT

if [[ "${1:-}" == "--natives" ]]; then
  tools natives "$ORT_JAR" ai/onnxruntime | awk '{print $1" "$2" "$3}' | sort > "$W/n129"
  tools natives "$(ls "$O"/onnxruntime-java-*.jar | head -1)" ai/onnxruntime | awk '{print $1" "$2" "$3}' | sort > "$W/n121"
  sed -n 's#^/\* jni: \(.*\)$#\1#p; s#^ \* jni: \(.*\)$#\1#p' "$ANDROID_DEMO"/hostshim/ort/*.c | sort > "$W/shim"
  nm -D --defined-only "$ORT_NATIVE/libonnxruntime4j_jni.so" | awk '{print $3}' | grep '^Java_' | sort > "$W/exports"
  tools natives "$ORT_JAR" ai/onnxruntime | sort > "$W/n129jni"
  : > "$TABLE.partial"
  while read -r cls name desc short long; do
    key="$cls $name $desc"
    exported=0; grep -qxF -e "$short" -e "$long" "$W/exports" && exported=1
    if grep -qxF "$key" "$W/shim" && ((exported)); then by=hostshim
    elif grep -qxF "$key" "$W/n121" && ((exported)); then by=1.21
    elif grep -q "^$cls $name " "$W/n121"; then by=descriptor-differs
    else by=missing; fi
    printf '%s\t%s\t%s\t%s\n' "$cls" "$name" "$desc" "$by" >> "$TABLE.partial"
  done < "$W/n129jni"
  mv "$TABLE.partial" "$TABLE"
  echo "[check-ort-jni] $(wc -l < "$TABLE") natives in ONNX Runtime 1.29.0's classes: $(cut -f4 "$TABLE" | sort | uniq -c | awk '{printf "%s%s %s", sep, $1, $2; sep=", "}')" >&2
  awk -F'\t' '$4 != "1.21" && $4 != "hostshim" {print "[check-ort-jni]   not provided on the JVM: " $1 "." $2 " " $3 " (" $4 ")"}' "$TABLE" >&2
  exit 0
fi

ENGINE_JAR="${1:?usage: check-ort-jni.sh --natives | ENGINE.jar}"
[[ -f "$TABLE" ]] || { echo "error: no $TABLE: run android_demo/scripts/setup-toolchain.sh" >&2; exit 2; }
# the Java methods the phone's JNI library calls back: the strings of the AAR's libonnxruntime4j_jni.so
strings -n 2 "$ORT_AAR/jni/x86_64/libonnxruntime4j_jni.so" | sort -u > "$W/strings"
tools reach "$ENGINE_JAR" "$ORT_JAR" ai/onnxruntime "$W/strings" 2>"$W/reach.log" | awk '{print $1"\t"$2"\t"$3}' | sort > "$W/reach"
gaps="$(awk -F'\t' 'NR == FNR {by[$1"\t"$2"\t"$3] = $4; next} by[$0] != "1.21" && by[$0] != "hostshim" {print $1"."$2" "$3" ("(by[$0] == "" ? "unknown" : by[$0])")"}' "$TABLE" "$W/reach")"
echo "[check-ort-jni] $(sed 's/^\[reach\] //' "$W/reach.log"); all provided by the JVM's JNI library: $([[ -z "$gaps" ]] && echo yes || echo no)" >&2
if [[ -n "$gaps" ]]; then
  echo "error: the engine can reach ONNX Runtime 1.29.0 natives that the JVM's JNI library does not provide: $(echo "$gaps" | tr '\n' ';')" >&2
  exit 1
fi
