import Foundation

/// One runtime that runs a bundle's component files: ONNX Runtime (`ONNXRuntimeBackend`), Core ML
/// (`CoreMLBackend`, Apple platforms), or a test double. The engine never branches on the runtime: the
/// pipeline only sees `InferenceModel`s.
public protocol InferenceBackend: AnyObject {
    /// The manifest's `target` whose files this backend runs ("onnx", "coreml", ...).
    var target: String { get }
    /// Loads one component's file (already verified against its sha256).
    func loadModel(at url: URL, component: String, file: BundleManifest.ComponentFile,
                   spec: BundleManifest.Component) throws -> any InferenceModel
}

/// A loaded component: named inputs in, named outputs out.
public protocol InferenceModel: AnyObject {
    func predict(_ inputs: [String: Tensor]) throws -> [String: Tensor]
}
