#if MOBILEDIFF_EXECUTORCH
import CExecuTorch
import Foundation

/// Runs `.pte` component files (manifest target "executorch") with ExecuTorch through the CExecuTorch shim over its
/// C++ Module API: on iOS the API of ExecutorchLib.xcframework (npm react-native-executorch; XNNPACK, Core ML and MPS
/// delegates compiled in; iOS builds on a Mac with Vendor/ laid out, never run in this repository's CI), on Linux the
/// executorch wheel's host runtime (optimized kernels and the XNNPACK backend; the runtime Python's
/// `generate --bundle` runs the same files on), which the tests and the command line run (see ../../../README.md).
///
/// A program's "forward" method keeps no tensor names: a loaded program's inputs and outputs are checked against
/// the manifest by position, dtype, rank and fixed sizes (`GraphIO.check`).
public final class ExecuTorchBackend: InferenceBackend {
    public let target = "executorch"
    #if os(Linux)
    public var runtimeDescription: String { "executorch (the executorch wheel's host runtime)" }
    #else
    public var runtimeDescription: String { "executorch (react-native-executorch ExecutorchLib)" }
    #endif

    public init() {}

    public func loadModel(at url: URL, component: String, file: BundleManifest.ComponentFile,
                          spec: BundleManifest.Component) throws -> any InferenceModel {
        try ExecuTorchModel(url: url, component: component, spec: spec)
    }
}

final class ExecuTorchModel: InferenceModel {
    private let module: OpaquePointer
    private let inputSpecs: [BundleManifest.TensorSpec]
    private let outputNames: [String]

    init(url: URL, component: String, spec: BundleManifest.Component) throws {
        var message = [CChar](repeating: 0, count: 1024)
        guard let module = url.path.withCString({ mdk_et_open($0, &message, message.count) }) else {
            throw MobileDiffError.graphUnreadable(path: url.path, backend: "ExecuTorch", message: ExecuTorchModel.text(message))
        }
        do {
            let inputs = try (0..<mdk_et_input_count(module)).map { try ExecuTorchModel.meta(module, output: false, index: $0) }
            let outputs = try (0..<mdk_et_output_count(module)).map { try ExecuTorchModel.meta(module, output: true, index: $0) }
            try GraphIO.check(component: component, path: url.path, spec: spec, inputs: inputs, outputs: outputs)
        } catch {
            mdk_et_close(module)
            throw error
        }
        self.module = module
        self.inputSpecs = spec.inputs
        self.outputNames = spec.outputs.map(\.name)
    }

    deinit { mdk_et_close(module) }

    func predict(_ inputs: [String: Tensor]) throws -> [String: Tensor] {
        let ordered = try inputSpecs.map { spec -> Tensor in
            guard let tensor = inputs[spec.name] else { throw MobileDiffError.invalidArgument("executorch: missing input \(spec.name)") }
            return tensor
        }
        var message = [CChar](repeating: 0, count: 1024)
        // every input's elements and sizes stay pinned while the shim copies them
        let status = ExecuTorchModel.withTensors(ordered) { tensors in
            tensors.withUnsafeBufferPointer { mdk_et_run(module, $0.baseAddress, $0.count, &message, message.count) }
        }
        guard status == 0 else { throw MobileDiffError.runtime(backend: "executorch", message: ExecuTorchModel.text(message)) }
        var result: [String: Tensor] = [:]
        for (index, name) in outputNames.enumerated() {
            var out = MDKETTensor()
            guard mdk_et_output(module, index, &out, &message, message.count) == 0 else {
                throw MobileDiffError.runtime(backend: "executorch", message: ExecuTorchModel.text(message))
            }
            guard let data = out.data, let sizes = out.sizes else {
                throw MobileDiffError.runtime(backend: "executorch", message: "output \(name) holds no data")
            }
            let shape = (0..<out.rank).map { Int(sizes[$0]) }
            let count = shape.reduce(1, *)
            switch out.dtype {
            case Int32(MDK_ET_FLOAT32):
                let values = data.bindMemory(to: Float.self, capacity: count)
                result[name] = Tensor(shape: shape, floats: Array(UnsafeBufferPointer(start: values, count: count)))
            case Int32(MDK_ET_INT32):
                let values = data.bindMemory(to: Int32.self, capacity: count)
                result[name] = Tensor(shape: shape, ints: Array(UnsafeBufferPointer(start: values, count: count)))
            default:
                throw MobileDiffError.runtime(backend: "executorch", message: "output \(name) has ExecuTorch element type \(out.dtype); the engine reads float32 and int32")
            }
        }
        return result
    }

    /// Calls `body` with shim tensors over copies of `tensors` that live for that call.
    private static func withTensors<R>(_ tensors: [Tensor], _ body: ([MDKETTensor]) throws -> R) rethrows -> R {
        var buffers: [UnsafeMutableRawPointer] = []
        var sizeBuffers: [UnsafeMutablePointer<Int32>] = []
        defer {
            buffers.forEach { $0.deallocate() }
            sizeBuffers.forEach { $0.deallocate() }
        }
        var shim: [MDKETTensor] = []
        for tensor in tensors {
            let sizes = UnsafeMutablePointer<Int32>.allocate(capacity: max(tensor.shape.count, 1))
            for (axis, size) in tensor.shape.enumerated() { sizes[axis] = Int32(size) }
            sizeBuffers.append(sizes)
            let bytes: Int, dtype: Int32
            switch tensor.storage {
            case .float32(let values): (bytes, dtype) = (values.count * 4, Int32(MDK_ET_FLOAT32))
            case .int32(let values): (bytes, dtype) = (values.count * 4, Int32(MDK_ET_INT32))
            }
            let buffer = UnsafeMutableRawPointer.allocate(byteCount: max(bytes, 1), alignment: 64)
            buffers.append(buffer)
            switch tensor.storage {
            case .float32(let values): values.withUnsafeBytes { if let base = $0.baseAddress { buffer.copyMemory(from: base, byteCount: bytes) } }
            case .int32(let values): values.withUnsafeBytes { if let base = $0.baseAddress { buffer.copyMemory(from: base, byteCount: bytes) } }
            }
            shim.append(MDKETTensor(data: UnsafeRawPointer(buffer), dtype: dtype, sizes: UnsafePointer(sizes), rank: tensor.shape.count))
        }
        return try body(shim)
    }

    /// Input or output `index` as the program declares it (no name: .pte methods keep none).
    private static func meta(_ module: OpaquePointer, output: Bool, index: Int) throws -> GraphTensor {
        var message = [CChar](repeating: 0, count: 1024)
        var dtype: Int32 = 0
        var sizes = [Int32](repeating: 0, count: 16)
        let rank = mdk_et_meta(module, output ? 1 : 0, index, &dtype, &sizes, sizes.count, &message, message.count)
        guard rank >= 0 else { return GraphTensor(name: nil, shape: [], dtype: "not a tensor") }
        return GraphTensor(name: nil, shape: sizes.prefix(Int(rank)).map { Int($0) }, dtype: dtypeName(dtype))
    }

    /// The shim's NUL-terminated message.
    static func text(_ buffer: [CChar]) -> String {
        String(decoding: buffer.prefix(while: { $0 != 0 }).map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// ExecuTorch's ScalarType codes as numpy names them.
    static func dtypeName(_ code: Int32) -> String {
        switch code {
        case 0: return "uint8"
        case 1: return "int8"
        case 2: return "int16"
        case 3: return "int32"
        case 4: return "int64"
        case 5: return "float16"
        case 6: return "float32"
        case 7: return "float64"
        case 11: return "bool"
        case 15: return "bfloat16"
        default: return "scalar type \(code)"
        }
    }
}
#endif
