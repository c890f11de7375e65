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
/// checked against its sha256 at the first load; reloads after `unloadResources()` reuse that check. `lowMemory`:
/// every load uses the backend's low-memory settings (`InferenceBackend.loadModel(at:component:file:spec:lowMemory:)`).
///
/// Thread-safe: `unloadResources()` may come from another thread (the app's memory-pressure handler) while a call
/// runs; the model in use is then released as soon as that call returns, and the next call loads it again.
public final class ManagedModel: ResourceManaging, @unchecked Sendable {
    public let component: String
    public let spec: BundleManifest.Component
    public let file: BundleManifest.ComponentFile
    public let lowMemory: Bool
    private let bundle: MobileDiffBundle
    private let backend: any InferenceBackend
    // guarded by `lock`
    private let lock = NSLock()
    private var loaded: (any InferenceModel)?
    private var verified: URL?
    private var callsInFlight = 0
    private var unloadWhenIdle = false
    private var _lastLoadSeconds: Double = 0
    private var _loads = 0

    public init(component: String, bundle: MobileDiffBundle, backend: any InferenceBackend, precision: String? = nil,
                lowMemory: Bool = false) throws {
        self.component = component
        self.lowMemory = lowMemory
        self.bundle = bundle
        self.backend = backend
        self.spec = try bundle.manifest.component(component)
        self.file = try bundle.file(component: component, for: backend, precision: precision)
    }

    public var isLoaded: Bool { lock.withLock { loaded != nil } }
    /// Seconds the last load took (sha256 check + runtime load), for the app's timing display.
    public var lastLoadSeconds: Double { lock.withLock { _lastLoadSeconds } }
    /// How many times the file was loaded (a reload after an unload counts).
    public var loads: Int { lock.withLock { _loads } }

    public func loadResources() throws {
        try lock.withLock { _ = try loadLocked() }
    }

    public func unloadResources() {
        lock.withLock {
            if callsInFlight > 0 { unloadWhenIdle = true } else { loaded = nil }
        }
    }

    public func predict(_ inputs: [String: Tensor]) throws -> [String: Tensor] {
        let model = try lock.withLock {
            let model = try loadLocked()
            callsInFlight += 1
            return model
        }
        defer {
            lock.withLock {
                callsInFlight -= 1
                if callsInFlight == 0 && unloadWhenIdle {
                    loaded = nil
                    unloadWhenIdle = false
                }
            }
        }
        return try model.predict(inputs)
    }

    /// The loaded model, loading it first if needed; the caller holds `lock`.
    private func loadLocked() throws -> any InferenceModel {
        if let loaded { return loaded }
        let start = DispatchTime.now()
        let url = try verified ?? bundle.verifiedURL(of: file)
        verified = url
        let model = try backend.loadModel(at: url, component: component, file: file, spec: spec, lowMemory: lowMemory)
        loaded = model
        _loads += 1
        _lastLoadSeconds = Double(DispatchTime.now().uptimeNanoseconds - start.uptimeNanoseconds) / 1e9
        return model
    }
}
