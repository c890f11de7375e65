// JNI side of the host shim of org.pytorch.executorch.Module: loads a .pte with ExecuTorch's C++ Module
// (extension/module) from the executorch wheel and runs a method on copies of the Java arrays.
// Errors become java.lang.RuntimeException with ExecuTorch's error code, never a crash.
#include <jni.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <executorch/extension/module/module.h>
#include <executorch/extension/tensor/tensor.h>

#include "org_pytorch_executorch_Module.h"

using executorch::aten::ScalarType;
using executorch::aten::SizesType;
using executorch::extension::TensorPtr;
using executorch::extension::make_tensor_ptr;
using executorch::extension::module::Module;
using executorch::runtime::Error;
using executorch::runtime::EValue;

namespace {

void throw_runtime(JNIEnv* env, const std::string& message) {
  env->ThrowNew(env->FindClass("java/lang/RuntimeException"), message.c_str());
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
