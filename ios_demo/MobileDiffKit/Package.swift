// swift-tools-version:6.0
// MobileDiffKit: the on-device engine for mobilediff bundles (manifest, tokenizer, torch-compatible noise,
// the sampler loop over the manifest's table, image conversion, one backend per runtime).
//
// Linux (trixie's Swift 6, see ../scripts/setup-toolchain.sh): the ONNX Runtime backend links the system's
// libonnxruntime through the COnnxRuntime module map, sha256 comes from the system's libcrypto (CLibCrypto).
// Apple platforms: sha256 comes from CryptoKit and the Core ML backend is compiled in; the ONNX Runtime backend
// is compiled in wherever a module named COnnxRuntime (ORT's C API headers) is visible — see ../README.md.
import PackageDescription

let package = Package(
    name: "MobileDiffKit",
    platforms: [.iOS(.v17), .macOS(.v14)],
    products: [
        .library(name: "MobileDiffKit", targets: ["MobileDiffKit"]),
        .executable(name: "mobilediff-engine", targets: ["mobilediff-engine"]),
    ],
    targets: [
        // ONNX Runtime's C API (onnxruntime_c_api.h) from the system (Debian: libonnxruntime-dev).
        .systemLibrary(name: "COnnxRuntime", path: "Sources/COnnxRuntime"),
        // libcrypto's EVP digest API (Debian: libssl-dev), for sha256 where CryptoKit is absent.
        .systemLibrary(name: "CLibCrypto", path: "Sources/CLibCrypto"),
        .target(
            name: "MobileDiffKit",
            dependencies: [
                .target(name: "COnnxRuntime", condition: .when(platforms: [.linux])),
                .target(name: "CLibCrypto", condition: .when(platforms: [.linux])),
            ]
        ),
        .executableTarget(name: "mobilediff-engine", dependencies: ["MobileDiffKit"]),
        .testTarget(name: "MobileDiffKitTests", dependencies: ["MobileDiffKit"]),
    ],
    swiftLanguageModes: [.v6]
)
