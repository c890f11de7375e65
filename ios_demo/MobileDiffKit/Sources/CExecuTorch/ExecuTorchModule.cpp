// The C interface of CExecuTorch.h over ExecuTorch's C++ Module API (executorch/extension/module/module.h and
// extension/tensor/tensor.h of the react-native-executorch package whose ExecutorchLib.framework the app embeds).
// Only functions that framework exports, or that its headers define inline, are called; scripts/check-executorch.sh
// compiles this file and checks every ExecuTorch symbol it needs against the framework's export table.
#include "CExecuTorch.h"

#include <executorch/extension/module/module.h>
#include <executorch/extension/tensor/tensor.h>

#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

namespace {

using executorch::aten::ScalarType;
using executorch::extension::TensorPtr;
using executorch::extension::make_tensor_ptr;
using executorch::extension::module::Module;
using executorch::runtime::Error;
using executorch::runtime::EValue;
using executorch::runtime::MethodMeta;

const char *const kMethod = "forward";

void report(char *error, size_t error_size, const std::string &message) {
    if (error == nullptr || error_size == 0) return;
    std::snprintf(error, error_size, "%s", message.c_str());
}

std::string describe(Error status) {
    return std::string(executorch::runtime::to_string(status)) + " (ExecuTorch error " +
           std::to_string(static_cast<unsigned>(status)) + ")";
}

}  // namespace

struct MDKETModule {
    std::unique_ptr<Module> module;
    // the declared dtype of each input, to widen int32 ids where the method takes int64
    std::vector<ScalarType> input_types;
    size_t output_count = 0;
    // the last run's outputs (their memory belongs to the method) and their sizes as int32
    std::vector<EValue> outputs;
    std::vector<std::vector<int32_t>> output_sizes;
};

extern "C" MDKETModule *mdk_et_open(const char *path, char *error, size_t error_size) {
    auto handle = std::make_unique<MDKETModule>();
    handle->module = std::make_unique<Module>(std::string(path), Module::LoadMode::Mmap);
    const Error loaded = handle->module->load();
    if (loaded != Error::Ok) {
        report(error, error_size, std::string("cannot load the program: ") + describe(loaded));
        return nullptr;
    }
    const Error method = handle->module->load_method(kMethod);
    if (method != Error::Ok) {
        report(error, error_size, std::string("cannot load its forward method: ") + describe(method));
        return nullptr;
    }
    auto meta = handle->module->method_meta(kMethod);
    if (!meta.ok()) {
        report(error, error_size, std::string("cannot read forward's metadata: ") + describe(meta.error()));
        return nullptr;
    }
    for (size_t i = 0; i < meta->num_inputs(); ++i) {
        auto info = meta->input_tensor_meta(i);
        handle->input_types.push_back(info.ok() ? info->scalar_type() : ScalarType::Undefined);
    }
    handle->output_count = meta->num_outputs();
    return handle.release();
}

extern "C" void mdk_et_close(MDKETModule *module) { delete module; }

extern "C" size_t mdk_et_input_count(const MDKETModule *module) { return module->input_types.size(); }

extern "C" size_t mdk_et_output_count(const MDKETModule *module) { return module->output_count; }

extern "C" int32_t mdk_et_meta(const MDKETModule *module, int32_t output, size_t index, int32_t *dtype,
                               int32_t *sizes, size_t max_rank, char *error, size_t error_size) {
    auto meta = module->module->method_meta(kMethod);
    if (!meta.ok()) {
        report(error, error_size, std::string("cannot read forward's metadata: ") + describe(meta.error()));
        return -1;
    }
    auto info = output != 0 ? meta->output_tensor_meta(index) : meta->input_tensor_meta(index);
    if (!info.ok()) {
        report(error, error_size, std::string(output != 0 ? "output " : "input ") + std::to_string(index) +
                                      " is not a tensor: " + describe(info.error()));
        return -1;
    }
    *dtype = static_cast<int32_t>(info->scalar_type());
    const auto declared = info->sizes();
    for (size_t d = 0; d < declared.size() && d < max_rank; ++d) sizes[d] = declared[d];
    return static_cast<int32_t>(declared.size());
}

extern "C" int32_t mdk_et_run(MDKETModule *module, const MDKETTensor *inputs, size_t count, char *error,
                              size_t error_size) {
    module->outputs.clear();
    module->output_sizes.clear();
    if (count != module->input_types.size()) {
        report(error, error_size, "forward takes " + std::to_string(module->input_types.size()) + " inputs, got " +
                                      std::to_string(count));
        return -1;
    }
    // each input is copied into a tensor that lives until the run returns
    std::vector<TensorPtr> tensors;
    std::vector<EValue> values;
    for (size_t i = 0; i < count; ++i) {
        const MDKETTensor &in = inputs[i];
        std::vector<executorch::aten::SizesType> sizes(in.sizes, in.sizes + in.rank);
        size_t elements = 1;
        for (size_t d = 0; d < in.rank; ++d) elements *= static_cast<size_t>(in.sizes[d]);
        const ScalarType declared = module->input_types[i];
        if (in.dtype == MDK_ET_FLOAT32) {
            const auto *begin = static_cast<const uint8_t *>(in.data);
            tensors.push_back(make_tensor_ptr(std::move(sizes), std::vector<uint8_t>(begin, begin + elements * 4),
                                              ScalarType::Float));
        } else if (in.dtype == MDK_ET_INT32 && declared == ScalarType::Long) {
            std::vector<uint8_t> widened(elements * sizeof(int64_t));
            const auto *ids = static_cast<const int32_t *>(in.data);
            for (size_t k = 0; k < elements; ++k) {
                const int64_t id = ids[k];
                std::memcpy(widened.data() + k * sizeof(int64_t), &id, sizeof(int64_t));
            }
            tensors.push_back(make_tensor_ptr(std::move(sizes), std::move(widened), ScalarType::Long));
        } else if (in.dtype == MDK_ET_INT32) {
            const auto *begin = static_cast<const uint8_t *>(in.data);
            tensors.push_back(make_tensor_ptr(std::move(sizes), std::vector<uint8_t>(begin, begin + elements * 4),
                                              ScalarType::Int));
        } else {
            report(error, error_size, "input " + std::to_string(i) + " has element type code " +
                                          std::to_string(in.dtype) + "; the shim passes float32 and int32");
            return -1;
        }
        values.emplace_back(*tensors.back());
    }
    auto result = module->module->execute(kMethod, values);
    if (!result.ok()) {
        report(error, error_size, std::string("forward failed: ") + describe(result.error()));
        return -1;
    }
    module->outputs = std::move(*result);
    for (const EValue &value : module->outputs) {
        std::vector<int32_t> sizes;
        if (value.isTensor()) {
            const auto declared = value.toTensor().sizes();
            sizes.assign(declared.begin(), declared.end());
        }
        module->output_sizes.push_back(std::move(sizes));
    }
    return 0;
}

extern "C" int32_t mdk_et_output(const MDKETModule *module, size_t index, MDKETTensor *tensor, char *error,
                                 size_t error_size) {
    if (index >= module->outputs.size()) {
        report(error, error_size, "no output " + std::to_string(index) + " (the last run gave " +
                                      std::to_string(module->outputs.size()) + ")");
        return -1;
    }
    const EValue &value = module->outputs[index];
    if (!value.isTensor()) {
        report(error, error_size, "output " + std::to_string(index) + " is not a tensor");
        return -1;
    }
    const auto &out = value.toTensor();
    tensor->data = out.const_data_ptr();
    tensor->dtype = static_cast<int32_t>(out.scalar_type());
    tensor->sizes = module->output_sizes[index].data();
    tensor->rank = module->output_sizes[index].size();
    return 0;
}
