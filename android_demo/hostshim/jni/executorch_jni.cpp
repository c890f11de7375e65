// JNI side of the host shim of org.pytorch.executorch.Module: loads a .pte with ExecuTorch's C++ Module
// (extension/module) from the executorch wheel and runs a method on copies of the Java arrays.
// Errors become java.lang.RuntimeException with ExecuTorch's error code, never a crash.
//
// ExecuTorch's log lines never reach stderr (the executorch-android AAR sends them to logcat): the error lines a
// failing call logs become part of its exception's message, the rest is dropped. MOBILEDIFF_EXECUTORCH_LOG=1
// prints every line on stderr instead, as ExecuTorch's default platform layer does.
#include <jni.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include <executorch/extension/module/module.h>
#include <executorch/extension/tensor/tensor.h>
#include <executorch/runtime/platform/platform.h>

#include "org_pytorch_executorch_Module.h"

using executorch::aten::ScalarType;
using executorch::aten::SizesType;
using executorch::extension::TensorPtr;
using executorch::extension::make_tensor_ptr;
using executorch::extension::module::Module;
using executorch::runtime::Error;
using executorch::runtime::EValue;

namespace {

// The error lines ExecuTorch logged on this thread during the current native call.
thread_local std::string logged_errors;

void emit_log_message(et_timestamp_t, et_pal_log_level_t level, const char* filename, const char*, size_t line,
                      const char* message, size_t length) {
  static const bool to_stderr = std::getenv("MOBILEDIFF_EXECUTORCH_LOG") != nullptr;
  std::string text(message, length);
  while (!text.empty() && (text.back() == '\n' || text.back() == '.' || text.back() == ' ')) text.pop_back();
  if (to_stderr) {
    std::fprintf(stderr, "%c executorch:%s:%zu] %s\n", static_cast<char>(level), filename, line, text.c_str());
  } else if (level == kError || level == kFatal) {
    logged_errors += (logged_errors.empty() ? "" : "; ") + text;
  }
}

// Start collecting the error lines of one native call.
void begin_call() {
  static const bool registered =
      executorch::runtime::register_pal(executorch::runtime::PalImpl::create(emit_log_message, __FILE__));
  (void)registered;
  logged_errors.clear();
}

// Throws RuntimeException(message), with the error lines ExecuTorch logged during the call appended.
void throw_runtime(JNIEnv* env, const std::string& message) {
  std::string full = logged_errors.empty() ? message : message + ": " + logged_errors;
  logged_errors.clear();
  env->ThrowNew(env->FindClass("java/lang/RuntimeException"), full.c_str());
}

std::string to_string(JNIEnv* env, jstring s) {
  const char* chars = env->GetStringUTFChars(s, nullptr);
  std::string out(chars);
  env->ReleaseStringUTFChars(s, chars);
  return out;
}

// A TensorPtr that owns a copy of one Java array (float[], int[] or long[]) with the given shape.
TensorPtr to_tensor(JNIEnv* env, jobject data, jlongArray jshape, jint dtype) {
  jsize rank = env->GetArrayLength(jshape);
  std::vector<jlong> shape64(rank);
  env->GetLongArrayRegion(jshape, 0, rank, shape64.data());
  std::vector<SizesType> sizes(shape64.begin(), shape64.end());
  jsize n = env->GetArrayLength(static_cast<jarray>(data));
  switch (static_cast<ScalarType>(dtype)) {
    case ScalarType::Float: {
      std::vector<float> v(n);
      env->GetFloatArrayRegion(static_cast<jfloatArray>(data), 0, n, v.data());
      return make_tensor_ptr(std::move(sizes), std::move(v));
    }
    case ScalarType::Int: {
      std::vector<int32_t> v(n);
      env->GetIntArrayRegion(static_cast<jintArray>(data), 0, n, reinterpret_cast<jint*>(v.data()));
      return make_tensor_ptr(std::move(sizes), std::move(v));
    }
    case ScalarType::Long: {
      std::vector<int64_t> v(n);
      env->GetLongArrayRegion(static_cast<jlongArray>(data), 0, n, reinterpret_cast<jlong*>(v.data()));
      return make_tensor_ptr(std::move(sizes), std::move(v));
    }
    default:
      return nullptr;
  }
}

// A Java array holding a copy of an output tensor's elements, or nullptr for an unsupported type.
jobject to_java_array(JNIEnv* env, const executorch::aten::Tensor& t) {
  jsize n = static_cast<jsize>(t.numel());
  switch (t.scalar_type()) {
    case ScalarType::Float: {
      jfloatArray a = env->NewFloatArray(n);
      env->SetFloatArrayRegion(a, 0, n, t.const_data_ptr<float>());
      return a;
    }
    case ScalarType::Int: {
      jintArray a = env->NewIntArray(n);
      env->SetIntArrayRegion(a, 0, n, reinterpret_cast<const jint*>(t.const_data_ptr<int32_t>()));
      return a;
    }
    case ScalarType::Long: {
      jlongArray a = env->NewLongArray(n);
      env->SetLongArrayRegion(a, 0, n, reinterpret_cast<const jlong*>(t.const_data_ptr<int64_t>()));
      return a;
    }
    default:
      return nullptr;
  }
}

}  // namespace

JNIEXPORT jlong JNICALL Java_org_pytorch_executorch_Module_nativeLoad(JNIEnv* env, jclass, jstring jpath) {
  begin_call();
  std::string path = to_string(env, jpath);
  auto module = std::make_unique<Module>(path, Module::LoadMode::File);
  Error err = module->load_method("forward");
  if (err != Error::Ok) {
    throw_runtime(env, "ExecuTorch could not load " + path + " (error " + std::to_string(static_cast<int>(err)) + ")");
    return 0;
  }
  return reinterpret_cast<jlong>(module.release());
}

JNIEXPORT jobjectArray JNICALL Java_org_pytorch_executorch_Module_nativeExecute(
    JNIEnv* env, jclass, jlong handle, jstring jmethod, jobjectArray jdata, jobjectArray jshapes, jintArray jdtypes) {
  begin_call();
  auto* module = reinterpret_cast<Module*>(handle);
  std::string method = to_string(env, jmethod);
  jsize n = env->GetArrayLength(jdata);
  std::vector<jint> dtypes(n);
  env->GetIntArrayRegion(jdtypes, 0, n, dtypes.data());
  std::vector<TensorPtr> owned;  // keeps the input copies alive during execute
  std::vector<EValue> inputs;
  for (jsize i = 0; i < n; i++) {
    TensorPtr t = to_tensor(env, env->GetObjectArrayElement(jdata, i),
                            static_cast<jlongArray>(env->GetObjectArrayElement(jshapes, i)), dtypes[i]);
    if (!t) {
      throw_runtime(env, "input " + std::to_string(i) + " has an unsupported dtype " + std::to_string(dtypes[i]));
      return nullptr;
    }
    inputs.emplace_back(*t);
    owned.push_back(std::move(t));
  }
  auto result = module->execute(method, inputs);
  if (!result.ok()) {
    throw_runtime(env, "ExecuTorch method '" + method + "' failed (error " +
                           std::to_string(static_cast<int>(result.error())) + ")");
    return nullptr;
  }
  const auto& outputs = result.get();
  jobjectArray out = env->NewObjectArray(2 * static_cast<jsize>(outputs.size()), env->FindClass("java/lang/Object"), nullptr);
  for (size_t i = 0; i < outputs.size(); i++) {
    if (!outputs[i].isTensor()) {
      throw_runtime(env, "output " + std::to_string(i) + " of '" + method + "' is not a tensor");
      return nullptr;
    }
    const auto& t = outputs[i].toTensor();
    jobject values = to_java_array(env, t);
    if (values == nullptr) {
      throw_runtime(env, "output " + std::to_string(i) + " has an unsupported dtype");
      return nullptr;
    }
    std::vector<jlong> shape(t.sizes().begin(), t.sizes().end());
    jlongArray jshape = env->NewLongArray(static_cast<jsize>(shape.size()));
    env->SetLongArrayRegion(jshape, 0, static_cast<jsize>(shape.size()), shape.data());
    env->SetObjectArrayElement(out, 2 * static_cast<jsize>(i), values);
    env->SetObjectArrayElement(out, 2 * static_cast<jsize>(i) + 1, jshape);
  }
  return out;
}

JNIEXPORT void JNICALL Java_org_pytorch_executorch_Module_nativeDestroy(JNIEnv*, jclass, jlong handle) {
  delete reinterpret_cast<Module*>(handle);
}
