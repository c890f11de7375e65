// A C interface over ExecuTorch's C++ `executorch::extension::Module` (extension/module/module.h), for Swift.
//
// ExecuTorchLib.xcframework (npm react-native-executorch, see ios_demo/scripts/fetch-runtimes.sh) exports the C++
// Module API but ships no Swift module; this shim is compiled against the headers of that same package and
// linked into the app together with the framework. Every function reports failure with one line of text in
// `error` (at most `error_size` bytes, NUL-terminated) instead of exceptions or ExecuTorch's Error codes.
#pragma once
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/// A program (.pte) with its "forward" method loaded.
typedef struct MDKETModule MDKETModule;

/// The element types the engine exchanges, as ExecuTorch's ScalarType codes.
#define MDK_ET_INT32 3
#define MDK_ET_INT64 4
#define MDK_ET_FLOAT32 6

/// A dense row-major tensor: `rank` sizes, elements of `dtype` at `data`.
typedef struct {
    const void *data;
    int32_t dtype;
    const int32_t *sizes;
    size_t rank;
} MDKETTensor;

/// Opens `path` (memory-mapped) and loads its "forward" method; NULL on failure.
MDKETModule *mdk_et_open(const char *path, char *error, size_t error_size);

/// Releases the module and every output it holds.
void mdk_et_close(MDKETModule *module);

/// The number of inputs / outputs "forward" declares.
size_t mdk_et_input_count(const MDKETModule *module);
size_t mdk_et_output_count(const MDKETModule *module);

/// The declared dtype and sizes of input (`output` = 0) or output (`output` = 1) `index`: writes the dtype and up to
/// `max_rank` sizes; returns the rank, or -1 when that value is not a tensor or cannot be read.
int32_t mdk_et_meta(const MDKETModule *module, int32_t output, size_t index, int32_t *dtype, int32_t *sizes,
                    size_t max_rank, char *error, size_t error_size);

/// Runs "forward" on `count` inputs (float32 or int32; int32 elements are widened where the method declares
/// int64). Returns 0, or -1 on failure. The outputs stay readable with `mdk_et_output` until the next run or close.
int32_t mdk_et_run(MDKETModule *module, const MDKETTensor *inputs, size_t count, char *error, size_t error_size);

/// Output `index` of the last run: its dtype, sizes and elements (owned by the module). Returns 0, or -1.
int32_t mdk_et_output(const MDKETModule *module, size_t index, MDKETTensor *tensor, char *error, size_t error_size);

#ifdef __cplusplus
}
#endif
