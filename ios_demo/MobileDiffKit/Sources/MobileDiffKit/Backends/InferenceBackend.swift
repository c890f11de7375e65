import Foundation

/// One runtime that runs a bundle's component files: ONNX Runtime (`ONNXRuntimeBackend`), Core ML
/// (`CoreMLBackend`, Apple platforms), ExecuTorch (`ExecuTorchBackend`, iOS), or a test double. The engine never
/// branches on the runtime: the pipeline only sees `InferenceModel`s.
public protocol InferenceBackend: AnyObject {
    /// The manifest's `target` whose files this backend runs ("onnx", "coreml", "executorch", ...).
    var target: String { get }
    /// Every manifest target this backend can run, the preferred first (ONNX Runtime: "ort", then "onnx"); a
    /// component's file is chosen by `MobileDiffBundle.file(component:for:precision:)`. Default: `[target]`.
    var fileTargets: [String] { get }
    /// The runtime and its version as records show it ("onnxruntime 1.29.0").
    var runtimeDescription: String { get }
    /// Loads one component's file (already verified against its sha256).
    func loadModel(at url: URL, component: String, file: BundleManifest.ComponentFile,
                   spec: BundleManifest.Component) throws -> any InferenceModel
    /// Loads one component's file, with the runtime's low-memory settings when `lowMemory` (`Pipeline`'s
    /// low-memory mode; ONNX Runtime: no CPU arena, no memory pattern, weights outside any arena). The settings
    /// change what the runtime holds, never the outputs. Default: `loadModel(at:component:file:spec:)`, for a
    /// runtime that has no such settings.
    func loadModel(at url: URL, component: String, file: BundleManifest.ComponentFile,
                   spec: BundleManifest.Component, lowMemory: Bool) throws -> any InferenceModel
}

extension InferenceBackend {
    public var fileTargets: [String] { [target] }
    public var runtimeDescription: String { target }

    public func loadModel(at url: URL, component: String, file: BundleManifest.ComponentFile,
                          spec: BundleManifest.Component, lowMemory: Bool) throws -> any InferenceModel {
        try loadModel(at: url, component: component, file: file, spec: spec)
    }
}

/// A loaded component: named inputs in, named outputs out.
public protocol InferenceModel: AnyObject {
    func predict(_ inputs: [String: Tensor]) throws -> [String: Tensor]
}
