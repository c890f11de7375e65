import Foundation

/// Something that holds large resources (a loaded model) it can drop and reload: apps unload components
/// between uses to bound memory (apple/ml-stable-diffusion's `reduceMemory`).
public protocol ResourceManaging: AnyObject {
    /// Loads the resources now (no-op if loaded).
    func loadResources() throws
    /// Releases them; the next use loads them again.
    func unloadResources()
    /// Loads once and releases, so that a later load is fast (e.g. Core ML's compile cache is filled).
    func prewarmResources() throws
}

extension ResourceManaging {
    public func prewarmResources() throws {
        try loadResources()
        unloadResources()
    }
}

/// One component file behind a backend, loaded on first use and droppable. The file (and any external data) is
/// checked against its sha256 at the first load; reloads after `unloadResources()` reuse that check.
public final class ManagedModel: ResourceManaging {
    public let component: String
    public let spec: BundleManifest.Component
    public let file: BundleManifest.ComponentFile
    private let bundle: MobileDiffBundle
    private let backend: any InferenceBackend
    private var loaded: (any InferenceModel)?
    private var verified: URL?
    /// Seconds the last load took (sha256 check + runtime load), for the app's timing display.
    public private(set) var lastLoadSeconds: Double = 0

    public init(component: String, bundle: MobileDiffBundle, backend: any InferenceBackend, precision: String? = nil) throws {
        self.component = component
        self.bundle = bundle
        self.backend = backend
        self.spec = try bundle.manifest.component(component)
        self.file = try bundle.file(component: component, target: backend.target, precision: precision)
    }

    public var isLoaded: Bool { loaded != nil }

    public func loadResources() throws {
        guard loaded == nil else { return }
        let start = DispatchTime.now()
        let url = try verified ?? bundle.verifiedURL(of: file)
        verified = url
        loaded = try backend.loadModel(at: url, component: component, file: file, spec: spec)
        lastLoadSeconds = Double(DispatchTime.now().uptimeNanoseconds - start.uptimeNanoseconds) / 1e9
    }

    public func unloadResources() {
        loaded = nil
    }

    public func predict(_ inputs: [String: Tensor]) throws -> [String: Tensor] {
        try loadResources()
        return try loaded!.predict(inputs)
    }
}
