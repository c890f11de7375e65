// swift-tools-version:6.0
// MobileDiffKit: the on-device engine for mobilediff bundles (manifest, tokenizer, torch-compatible noise,
// the sampler loop over the manifest's table, image conversion, one backend per runtime).
//
// The runtimes are the phone's, laid out in Vendor/ by ../scripts/fetch-runtimes.sh (npm packages pinned by name,
// version and sha512 in mobilediff/runtimes.py; nothing in Vendor/ is committed):
// - ONNX Runtime (COnnxRuntime): every platform compiles against the headers of onnxruntime.xcframework, the
//   framework an iPhone build links. Linux (tests, command line) links the same version's libonnxruntime.so,
//   macOS (`swift build` on a Mac) its libonnxruntime.dylib; on iOS the app links the static xcframework
//   (../App/project.yml).
// - ExecuTorch (CExecuTorch): a C shim over ExecuTorch's C++ Module API. On iOS it is compiled against the headers
//   of ExecutorchLib.xcframework, which the app embeds. That framework has no Linux or macOS slice: on Linux (tests,
//   command line) the shim is compiled against the executorch wheel's headers and links the wheel's host runtime
//   (Vendor/executorch/linux-x64, laid out by fetch-runtimes.sh from the project's Python: libexecutorch with its
//   optimized kernels, XNNPACK backend and thread pool, the runtime Python's `generate --bundle` runs `.pte` files on).
//   Absent on macOS.
// - sha256 comes from CryptoKit on Apple platforms and from the system's libcrypto on Linux (CLibCrypto).
// Without Vendor/ the package still builds, without the ONNX Runtime and ExecuTorch backends.
import Foundation
import PackageDescription

let vendor = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Vendor").path
func vendored(_ path: String) -> Bool { FileManager.default.fileExists(atPath: "\(vendor)/\(path)") }
let hasONNXRuntime = vendored("onnxruntime.xcframework/ios-arm64/onnxruntime.framework/Headers/onnxruntime_c_api.h")
let executorchHeaders = vendored("executorch/include/executorch/extension/module/module.h")
let hostExecuTorch = "\(vendor)/executorch/linux-x64"
let hasHostExecuTorch = vendored("executorch/linux-x64/include/executorch/extension/module/module.h")
    && vendored("executorch/linux-x64/lib/libexecutorch.so")
// The ExecuTorch shim is part of the package where Xcode evaluates it (a Mac), for its iOS builds. On Linux,
// MOBILEDIFF_CHECK_EXECUTORCH=1 compiles it and the Swift backend over it without linking
// (../scripts/check-executorch.sh: `swift build --target MobileDiffKit`), to check both against the real headers.
let checkExecuTorch = ProcessInfo.processInfo.environment["MOBILEDIFF_CHECK_EXECUTORCH"] == "1" && executorchHeaders
#if os(macOS)
let hasExecuTorch = executorchHeaders && vendored("ExecutorchLib.xcframework/Info.plist")
let runsHostExecuTorch = false
#else
let runsHostExecuTorch = hasHostExecuTorch && !checkExecuTorch
let hasExecuTorch = checkExecuTorch || runsHostExecuTorch
#endif
let executorchPlatforms: [Platform] = checkExecuTorch || runsHostExecuTorch ? [.iOS, .linux] : [.iOS]

var runtimeTargets: [Target] = []
var engineDependencies: [Target.Dependency] = [.target(name: "CLibCrypto", condition: .when(platforms: [.linux]))]
var engineSwiftSettings: [SwiftSetting] = []
var engineLinkerSettings: [LinkerSetting] = []

if hasONNXRuntime {
    // ONNX Runtime's C API: a module map over the xcframework's onnxruntime_c_api.h (see Sources/COnnxRuntime/shim.h)
    runtimeTargets.append(.systemLibrary(name: "COnnxRuntime", path: "Sources/COnnxRuntime"))
    engineDependencies.append("COnnxRuntime")
    for (platform, folder) in [(Platform.linux, "linux-x64"), (.macOS, "macos-arm64")] {
        let lib = "\(vendor)/onnxruntime/\(folder)"
        engineLinkerSettings.append(.linkedLibrary("onnxruntime", .when(platforms: [platform])))
        engineLinkerSettings.append(.unsafeFlags(["-L\(lib)", "-Xlinker", "-rpath", "-Xlinker", lib], .when(platforms: [platform])))
    }
}
if hasExecuTorch {
    // the host runtime's headers as the wheel's executorch-config.cmake gives them to a consumer (its c10 headers and
    // the definitions it was built with)
    let headers = runsHostExecuTorch
        ? ["-I\(hostExecuTorch)/include", "-I\(hostExecuTorch)/include/executorch/runtime/core/portable_type/c10",
           "-DC10_USING_CUSTOM_GENERATED_MACROS", "-DET_EVENT_TRACER_ENABLED", "-DET_USE_THREADPOOL"]
        : ["-I\(vendor)/executorch/include"]
    runtimeTargets.append(.target(
        name: "CExecuTorch",
        path: "Sources/CExecuTorch",
        cxxSettings: [.unsafeFlags(headers)]
    ))
    engineDependencies.append(.target(name: "CExecuTorch", condition: .when(platforms: executorchPlatforms)))
    engineSwiftSettings.append(.define("MOBILEDIFF_EXECUTORCH", .when(platforms: executorchPlatforms)))
    if runsHostExecuTorch {
        // every library linked whether or not a symbol of it is referenced: the kernels and the XNNPACK backend
        // register themselves with the runtime when loaded
        let lib = "\(hostExecuTorch)/lib"
        engineLinkerSettings.append(.unsafeFlags([
            "-L\(lib)", "-Xlinker", "--no-as-needed", "-lexecutorch", "-lexecutorch_kernels_optimized",
            "-lexecutorch_backend_xnnpack", "-lexecutorch_threadpool", "-Xlinker", "-rpath", "-Xlinker", lib,
        ], .when(platforms: [.linux])))
    }
}

let package = Package(
    name: "MobileDiffKit",
    platforms: [.iOS(.v17), .macOS(.v14)],
    products: [
        .library(name: "MobileDiffKit", targets: ["MobileDiffKit"]),
        .executable(name: "mobilediff-engine", targets: ["mobilediff-engine"]),
    ],
    targets: runtimeTargets + [
        // libcrypto's EVP digest API (Debian: libssl-dev), for sha256 where CryptoKit is absent.
        .systemLibrary(name: "CLibCrypto", path: "Sources/CLibCrypto"),
        .target(
            name: "MobileDiffKit",
            dependencies: engineDependencies,
            swiftSettings: engineSwiftSettings,
            linkerSettings: engineLinkerSettings
        ),
        .executableTarget(name: "mobilediff-engine", dependencies: ["MobileDiffKit"]),
        .testTarget(name: "MobileDiffKitTests", dependencies: ["MobileDiffKit"]),
    ],
    swiftLanguageModes: [.v6],
    cxxLanguageStandard: .cxx17
)
