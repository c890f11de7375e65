// ONNX Runtime's C API from the headers of the iOS framework the app links (Vendor/onnxruntime.xcframework, laid
// out by ios_demo/scripts/fetch-runtimes.sh): Linux and macOS builds compile against the very declarations an
// iPhone build uses. Which library provides the functions is the package's linker settings' business (Package.swift).
#pragma once
#include "../../Vendor/onnxruntime.xcframework/ios-arm64/onnxruntime.framework/Headers/onnxruntime_c_api.h"
