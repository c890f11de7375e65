#if canImport(CoreML)
import CoreML
import Foundation

/// Runs `.mlpackage` component files with Core ML (Apple platforms only; not compiled on Linux).
///
/// Each package is compiled once to `.mlmodelc` and cached under `cacheDirectory`, keyed by the package's
/// sha256 from the manifest, so later launches skip the compile (the slow part of a first load).
public final class CoreMLBackend: InferenceBackend {
    public let target = "coreml"
    public let computeUnits: MLComputeUnits
    public let cacheDirectory: URL

    /// - Parameters:
    ///   - computeUnits: `.cpuOnly`, `.cpuAndGPU`, `.cpuAndNeuralEngine` or `.all`.
    ///   - cacheDirectory: where compiled models are kept (default: Caches/MobileDiffKit).
    public init(computeUnits: MLComputeUnits = .cpuAndNeuralEngine, cacheDirectory: URL? = nil) {
        self.computeUnits = computeUnits
        self.cacheDirectory = cacheDirectory
            ?? FileManager.default.urls(for: .cachesDirectory, in: .userDomainMask)[0].appendingPathComponent("MobileDiffKit")
    }

    public func loadModel(at url: URL, component: String, file: BundleManifest.ComponentFile,
                          spec: BundleManifest.Component) throws -> any InferenceModel {
        let compiled = try compiledModel(for: url, sha256: file.sha256)
        let configuration = MLModelConfiguration()
        configuration.computeUnits = computeUnits
        do {
            return CoreMLModel(model: try MLModel(contentsOf: compiled, configuration: configuration), spec: spec)
        } catch {
            throw MobileDiffError.runtime(backend: "coreml", message: "cannot load \(compiled.path): \(error)")
        }
    }

    /// The cached `.mlmodelc` for a package, compiling it on first use.
    func compiledModel(for package: URL, sha256: String) throws -> URL {
        let cached = cacheDirectory.appendingPathComponent("\(sha256).mlmodelc")
        if FileManager.default.fileExists(atPath: cached.path) { return cached }
        do {
            try FileManager.default.createDirectory(at: cacheDirectory, withIntermediateDirectories: true)
            let temporary = try MLModel.compileModel(at: package)
            // move into place atomically; a concurrent compile of the same package may have won
            try? FileManager.default.removeItem(at: cached)
            try FileManager.default.moveItem(at: temporary, to: cached)
        } catch {
            if FileManager.default.fileExists(atPath: cached.path) { return cached }
            throw MobileDiffError.runtime(backend: "coreml", message: "cannot compile \(package.path): \(error)")
        }
        return cached
    }
}

final class CoreMLModel: InferenceModel {
    private let model: MLModel
    private let spec: BundleManifest.Component

    init(model: MLModel, spec: BundleManifest.Component) {
        self.model = model
        self.spec = spec
    }

    func predict(_ inputs: [String: Tensor]) throws -> [String: Tensor] {
        do {
            var features: [String: MLFeatureValue] = [:]
            for (name, tensor) in inputs {
                features[name] = MLFeatureValue(multiArray: try CoreMLModel.multiArray(tensor))
            }
            let result = try model.prediction(from: try MLDictionaryFeatureProvider(dictionary: features))
            var outputs: [String: Tensor] = [:]
            for output in spec.outputs {
                guard let array = result.featureValue(for: output.name)?.multiArrayValue else {
                    throw MobileDiffError.runtime(backend: "coreml", message: "no output named \(output.name)")
                }
                outputs[output.name] = CoreMLModel.tensor(array)
            }
            return outputs
        } catch let error as MobileDiffError {
            throw error
        } catch {
            throw MobileDiffError.runtime(backend: "coreml", message: "\(error)")
        }
    }

    static func multiArray(_ tensor: Tensor) throws -> MLMultiArray {
        let shape = tensor.shape.map { NSNumber(value: $0) }
        switch tensor.storage {
        case .float32(let values):
            let array = try MLMultiArray(shape: shape, dataType: .float32)
            array.withUnsafeMutableBytes { raw, _ in
                values.withUnsafeBytes { raw.copyMemory(from: $0) }
            }
            return array
        case .int32(let values):
            let array = try MLMultiArray(shape: shape, dataType: .int32)
            array.withUnsafeMutableBytes { raw, _ in
                values.withUnsafeBytes { raw.copyMemory(from: $0) }
            }
            return array
        }
    }

    /// A row-major float tensor from any MLMultiArray (float16/32/64, possibly strided).
    static func tensor(_ array: MLMultiArray) -> Tensor {
        let shape = array.shape.map(\.intValue)
        var values = [Float](repeating: 0, count: array.count)
        var index = [Int](repeating: 0, count: shape.count)
        for flat in 0..<array.count {
            var rest = flat
            for axis in stride(from: shape.count - 1, through: 0, by: -1) {
                index[axis] = rest % shape[axis]
                rest /= shape[axis]
            }
            values[flat] = array[index.map { NSNumber(value: $0) }].floatValue
        }
        return Tensor(shape: shape, floats: values)
    }
}
#endif
