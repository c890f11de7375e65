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
}

extension InferenceBackend {
    public var fileTargets: [String] { [target] }
    public var runtimeDescription: String { target }
}

/// A loaded component: named inputs in, named outputs out.
public protocol InferenceModel: AnyObject {
    func predict(_ inputs: [String: Tensor]) throws -> [String: Tensor]
}
