#if canImport(CoreML)
import CoreML
#endif

/// The runtimes the engine can be built with, and the choice an app offers: only runtimes this build holds and
/// the bundle has files for (every component, in one precision).
public enum BackendKind: String, CaseIterable, Sendable, Identifiable {
    case coreml
    case onnx
    case executorch

    public var id: String { rawValue }

    public var displayName: String {
        switch self {
        case .coreml: return "Core ML"
        case .onnx: return "ONNX Runtime"
        case .executorch: return "ExecuTorch"
        }
    }

    /// The manifest targets whose files this runtime runs, preferred first (`InferenceBackend.fileTargets`).
    public var fileTargets: [String] {
        switch self {
        case .coreml: return ["coreml"]
        case .onnx: return ["ort", "onnx"]
        case .executorch: return ["executorch"]
        }
    }

    /// The runtimes compiled into this build, in the order an app prefers them: Core ML (Apple platforms), ONNX
    /// Runtime (where the package found its headers), ExecuTorch (iOS builds with ExecutorchLib.xcframework; Linux
    /// builds with the executorch wheel's host runtime laid out).
    public static var compiledIn: [BackendKind] {
        var kinds: [BackendKind] = []
        #if canImport(CoreML)
        kinds.append(.coreml)
        #endif
        #if canImport(COnnxRuntime)
        kinds.append(.onnx)
        #endif
        #if MOBILEDIFF_EXECUTORCH
        kinds.append(.executorch)
        #endif
        return kinds
    }

    /// The runtimes of `compiled` that find a file for every component of `manifest` (`pipelineComponents`: with the
    /// VAE encoder of an image-modes bundle), in `compiled`'s order.
    public static func available(for manifest: BundleManifest, compiled: [BackendKind] = compiledIn) -> [BackendKind] {
        compiled.filter { kind in
            manifest.pipelineComponents.allSatisfy { name in
                manifest.components[name]?.files.contains { kind.fileTargets.contains($0.target) } ?? false
            }
        }
    }

    /// The runtime an app starts with: `preferred` if it can run the bundle, else the first that can; nil if none.
    public static func choose(for manifest: BundleManifest, preferred: BackendKind? = nil,
                              compiled: [BackendKind] = compiledIn) -> BackendKind? {
        let usable = available(for: manifest, compiled: compiled)
        if let preferred, usable.contains(preferred) { return preferred }
        return usable.first
    }

    /// How an app configures the runtime it makes.
    public struct Options {
        /// ONNX Runtime: intra-op threads per session (0: ONNX Runtime chooses).
        public var intraOpThreads = 0
        #if canImport(CoreML)
        /// Core ML: `.cpuOnly`, `.cpuAndGPU`, `.cpuAndNeuralEngine` or `.all`.
        public var computeUnits: MLComputeUnits = .cpuAndNeuralEngine
        #endif
        public init() {}
    }

    /// A backend of this kind; `backendUnavailable` where this build does not hold the runtime.
    public func makeBackend(_ options: Options = Options()) throws -> any InferenceBackend {
        switch self {
        case .coreml:
            #if canImport(CoreML)
            return CoreMLBackend(computeUnits: options.computeUnits)
            #else
            throw MobileDiffError.backendUnavailable("Core ML runs on Apple platforms only")
            #endif
        case .onnx:
            #if canImport(COnnxRuntime)
            return try ONNXRuntimeBackend(intraOpThreads: options.intraOpThreads)
            #else
            throw MobileDiffError.backendUnavailable("this build has no ONNX Runtime (run ios_demo/scripts/fetch-runtimes.sh before building)")
            #endif
        case .executorch:
            #if MOBILEDIFF_EXECUTORCH
            return ExecuTorchBackend()
            #else
            throw MobileDiffError.backendUnavailable("this build has no ExecuTorch (ExecutorchLib.xcframework in iOS builds, the executorch wheel's host runtime in Linux builds, after ios_demo/scripts/fetch-runtimes.sh)")
            #endif
        }
    }

    /// Why the bundle offers no runtime this build holds, as one line for the app.
    public static func unavailableReason(for manifest: BundleManifest, compiled: [BackendKind] = compiledIn) -> String {
        let targets = Set(manifest.components.values.flatMap { $0.files.map(\.target) }).sorted()
        let held = compiled.map(\.displayName).joined(separator: ", ")
        return "this bundle has files for \(targets.joined(separator: ", ")); this build runs \(held.isEmpty ? "no runtime" : held)"
    }
}
