/*
 * JNI functions of ONNX Runtime 1.29.0's Java API that the Java API's 1.21 JNI sources (the newest reachable here)
 * lack and that the engine can reach, for the JVM tests only (the phone runs the AAR's own JNI library). Each
 * implements the Java declaration named on its `jni:` line (class, method, descriptor), which
 * scripts/check-ort-jni.sh compares with the 1.29.0 classes.
 */
#include <jni.h>
#include "onnxruntime/core/session/onnxruntime_c_api.h"

/* jni: ai/onnxruntime/OnnxRuntime initialiseCompileAPIBase (J)J
 * The model compilation API of the API handle (OnnxRuntime.ortApiHandle); OnnxRuntime.init stores it. */
JNIEXPORT jlong JNICALL Java_ai_onnxruntime_OnnxRuntime_initialiseCompileAPIBase(JNIEnv* env, jclass cls,
                                                                                 jlong apiHandle) {
  (void)env; (void)cls;
  const OrtApi* api = (const OrtApi*)apiHandle;
  return (jlong)api->GetCompileApi();
}

/* jni: ai/onnxruntime/OrtModelCompilationOptions close (JJ)V
 * Releases compilation options: (compile API handle, options handle), as OrtModelCompilationOptions.close passes. */
JNIEXPORT void JNICALL Java_ai_onnxruntime_OrtModelCompilationOptions_close(JNIEnv* env, jclass cls,
                                                                            jlong compileApiHandle, jlong handle) {
  (void)env; (void)cls;
  const OrtCompileApi* api = (const OrtCompileApi*)compileApiHandle;
  api->ReleaseModelCompilationOptions((OrtModelCompilationOptions*)handle);
}
