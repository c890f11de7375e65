// ONNX Runtime's C API, as installed by Debian's libonnxruntime-dev (/usr/include/onnxruntime).
#pragma once
#include <onnxruntime/onnxruntime_c_api.h>
