#if canImport(COnnxRuntime)
import COnnxRuntime
import Foundation

/// Runs a bundle's ONNX Runtime files through ORT's C API — the API ORT's mobile packages wrap: a component's
/// `.ort` file (ORT's mobile format, manifest target "ort") when the bundle has one, else its `.onnx` file. The
/// library is the phone's version everywhere (Package.swift: ORT's iOS xcframework on iOS, the same release's Linux
/// and macOS libraries elsewhere); the session runs on ORT's CPU provider. A loaded graph's inputs and outputs are
/// checked against its component's manifest entry before it is returned (`GraphIO.check`); a file ONNX Runtime
/// cannot open is `graphUnreadable`.
public final class ONNXRuntimeBackend: InferenceBackend {
    public let target = "onnx"
    public let fileTargets: [String]
    /// Intra-op threads per session; 0 lets ONNX Runtime choose.
    public let intraOpThreads: Int
    private let env: OpaquePointer

    /// The version of the ONNX Runtime library loaded at run time (`OrtGetApiBase()->GetVersionString()`).
    public static var version: String {
        guard let base = OrtGetApiBase(), let text = base.pointee.GetVersionString() else { return "unknown" }
        return String(cString: text)
    }

    /// The C API version of the headers this engine was compiled against (ORT_API_VERSION: 29 for ORT 1.29).
    public static let headerAPIVersion = Int(ORT_API_VERSION)

    public var runtimeDescription: String { "onnxruntime \(ONNXRuntimeBackend.version)" }

    /// - Parameters:
    ///   - intraOpThreads: threads per session; 0 lets ONNX Runtime choose.
    ///   - formats: the manifest targets to run, preferred first: ["ort", "onnx"] (the default: a component's `ort`
    ///     file where the bundle has one, else its `onnx` file), ["onnx"] or ["ort"] to run one format only.
    public init(intraOpThreads: Int = 0, formats: [String] = ["ort", "onnx"]) throws {
        guard !formats.isEmpty, formats.allSatisfy({ $0 == "ort" || $0 == "onnx" }) else {
            throw MobileDiffError.invalidArgument("ONNX Runtime runs the targets ort and onnx, got \(formats)")
        }
        self.intraOpThreads = intraOpThreads
        self.fileTargets = formats
        var env: OpaquePointer?
        try ORT.check(ORT.api.CreateEnv(ORT_LOGGING_LEVEL_ERROR, "mobilediff", &env))
        guard let env else { throw MobileDiffError.runtime(backend: "onnxruntime", message: "CreateEnv returned no environment") }
        self.env = env
    }

    deinit { ORT.api.ReleaseEnv(env) }

    public func loadModel(at url: URL, component: String, file: BundleManifest.ComponentFile,
                          spec: BundleManifest.Component) throws -> any InferenceModel {
        try loadModel(at: url, component: component, file: file, spec: spec, lowMemory: false)
    }

    /// `lowMemory`: the session runs without ONNX Runtime's CPU arena (which keeps every block it grew to, e.g. a
    /// 512 px UNet's attention activations, after a run) and without its memory pattern (one pre-planned block for
    /// all of a run's activations), and allocates the weights outside any arena, so releasing the session gives them
    /// all back: the settings of Python's `generate --bundle --low-memory` (`mobilediff.targets.LOW_MEMORY`).
    public func loadModel(at url: URL, component: String, file: BundleManifest.ComponentFile,
                          spec: BundleManifest.Component, lowMemory: Bool) throws -> any InferenceModel {
        try ONNXRuntimeModel(env: env, url: url, component: component, spec: spec, intraOpThreads: intraOpThreads,
                             lowMemory: lowMemory, backend: self)
    }

    /// The session config key that allocates a graph's weights with the device allocator, not the arena.
    static let initializersOutsideArena = "session.use_device_allocator_for_initializers"

    /// Writes `onnx`'s graph in ORT's mobile format to `ort` (a path ending in ".ort"), after ONNX Runtime's basic
    /// graph optimizations: the session option `python -m onnxruntime.tools.convert_onnx_models_to_ort` uses. The
    /// tests make `.ort` files of the graphs they write with it.
    func saveORTFormat(of onnx: URL, to ort: URL) throws {
        var options: OpaquePointer?
        try ORT.check(ORT.api.CreateSessionOptions(&options))
        defer { ORT.api.ReleaseSessionOptions(options) }
        try ORT.check(ORT.api.SetSessionGraphOptimizationLevel(options, ORT_ENABLE_BASIC))
        try ORT.check(ORT.api.AddSessionConfigEntry(options, "session.save_model_format", "ORT"))
        try ORT.check(ort.path.withCString { ORT.api.SetOptimizedModelFilePath(options, $0) })
        var session: OpaquePointer?
        try ORT.check(onnx.path.withCString { ORT.api.CreateSession(env, $0, options, &session) })
        ORT.api.ReleaseSession(session)
    }
}

/// Access to ORT's function table and its status convention (a non-null OrtStatus is an error).
enum ORT {
    static let api: OrtApi = {
        guard let base = OrtGetApiBase(), let api = base.pointee.GetApi(UInt32(ORT_API_VERSION)) else {
            fatalError("ONNX Runtime does not provide C API version \(ORT_API_VERSION)")
        }
        return api.pointee
    }()

    static func check(_ status: OpaquePointer?) throws {
        guard let status else { return }
        let message = api.GetErrorMessage(status).map { String(cString: $0) } ?? "unknown error"
        api.ReleaseStatus(status)
        throw MobileDiffError.runtime(backend: "onnxruntime", message: message)
    }
}

final class ONNXRuntimeModel: InferenceModel {
    private let session: OpaquePointer
    private let memoryInfo: OpaquePointer
    private let inputSpecs: [BundleManifest.TensorSpec]
    private let outputNames: [String]
    private let backend: ONNXRuntimeBackend  // keeps the environment alive as long as the session

    init(env: OpaquePointer, url: URL, component: String, spec: BundleManifest.Component, intraOpThreads: Int,
         lowMemory: Bool, backend: ONNXRuntimeBackend) throws {
        var options: OpaquePointer?
        try ORT.check(ORT.api.CreateSessionOptions(&options))
        defer { ORT.api.ReleaseSessionOptions(options) }
        if intraOpThreads > 0 { try ORT.check(ORT.api.SetIntraOpNumThreads(options, Int32(intraOpThreads))) }
        try ORT.check(ORT.api.SetSessionGraphOptimizationLevel(options, ORT_ENABLE_ALL))
        if lowMemory {
            try ORT.check(ORT.api.DisableCpuMemArena(options))
            try ORT.check(ORT.api.DisableMemPattern(options))
            try ORT.check(ORT.api.AddSessionConfigEntry(options, ONNXRuntimeBackend.initializersOutsideArena, "1"))
        }
        var session: OpaquePointer?
        do {
            try ORT.check(url.path.withCString { ORT.api.CreateSession(env, $0, options, &session) })
        } catch MobileDiffError.runtime(_, let message) {
            throw MobileDiffError.graphUnreadable(path: url.path, backend: "ONNX Runtime", message: message)
        }
        var memoryInfo: OpaquePointer?
        do {
            let (inputs, outputs) = try ONNXRuntimeModel.graphIO(session!)
            try GraphIO.check(component: component, path: url.path, spec: spec, inputs: inputs, outputs: outputs)
            try ORT.check(ORT.api.CreateCpuMemoryInfo(OrtArenaAllocator, OrtMemTypeDefault, &memoryInfo))
        } catch {
            ORT.api.ReleaseSession(session)
            throw error
        }
        self.session = session!
        self.memoryInfo = memoryInfo!
        self.inputSpecs = spec.inputs
        self.outputNames = spec.outputs.map(\.name)
        self.backend = backend
    }

    deinit {
        ORT.api.ReleaseSession(session)
        ORT.api.ReleaseMemoryInfo(memoryInfo)
    }

    func predict(_ inputs: [String: Tensor]) throws -> [String: Tensor] {
        // ORT reads the input buffers during Run only: copy each into a buffer we own for that time.
        var buffers: [UnsafeMutableRawPointer] = []
        var values: [OpaquePointer?] = []
        defer {
            for value in values { ORT.api.ReleaseValue(value) }
            for buffer in buffers { buffer.deallocate() }
        }
        for spec in inputSpecs {
            guard let tensor = inputs[spec.name] else {
                throw MobileDiffError.invalidArgument("onnxruntime: missing input \(spec.name)")
            }
            let (buffer, bytes, type) = ONNXRuntimeModel.copy(tensor)
            buffers.append(buffer)
            let shape = tensor.shape.map(Int64.init)
            var value: OpaquePointer?
            try ORT.check(shape.withUnsafeBufferPointer {
                ORT.api.CreateTensorWithDataAsOrtValue(memoryInfo, buffer, bytes, $0.baseAddress, $0.count, type, &value)
            })
            values.append(value)
        }
        var outputs = [OpaquePointer?](repeating: nil, count: outputNames.count)
        defer { for value in outputs { ORT.api.ReleaseValue(value) } }
        let inputNames: [UnsafePointer<CChar>?] = inputSpecs.map { UnsafePointer(strdup($0.name)) }
        let outputNamesC: [UnsafePointer<CChar>?] = outputNames.map { UnsafePointer(strdup($0)) }
        defer { (inputNames + outputNamesC).forEach { free(UnsafeMutablePointer(mutating: $0)) } }
        let inputValues: [OpaquePointer?] = values
        let status: OpaquePointer? = ORT.api.Run(session, nil, inputNames, inputValues, inputValues.count,
                                                 outputNamesC, outputNamesC.count, &outputs)
        try ORT.check(status)
        var result: [String: Tensor] = [:]
        for (name, value) in zip(outputNames, outputs) {
            result[name] = try ONNXRuntimeModel.read(value!, name: name)
        }
        return result
    }

    /// The inputs and outputs `session` declares, in graph order; a symbolic or unknown dimension is nil.
    static func graphIO(_ session: OpaquePointer) throws -> (inputs: [GraphTensor], outputs: [GraphTensor]) {
        var allocator: UnsafeMutablePointer<OrtAllocator>?
        try ORT.check(ORT.api.GetAllocatorWithDefaultOptions(&allocator))
        func tensors(count: (inout Int) -> OpaquePointer?,
                     name: (Int, inout UnsafeMutablePointer<CChar>?) -> OpaquePointer?,
                     type: (Int, inout OpaquePointer?) -> OpaquePointer?) throws -> [GraphTensor] {
            var n = 0
            try ORT.check(count(&n))
            return try (0..<n).map { i in
                var cName: UnsafeMutablePointer<CChar>?
                try ORT.check(name(i, &cName))
                let tensorName = cName.map { String(cString: $0) } ?? ""
                _ = ORT.api.AllocatorFree(allocator, cName)
                var typeInfo: OpaquePointer?
                try ORT.check(type(i, &typeInfo))
                defer { ORT.api.ReleaseTypeInfo(typeInfo) }
                var kind = ONNX_TYPE_UNKNOWN
                try ORT.check(ORT.api.GetOnnxTypeFromTypeInfo(typeInfo, &kind))
                guard kind == ONNX_TYPE_TENSOR else { return GraphTensor(name: tensorName, shape: [], dtype: "not a tensor") }
                var info: OpaquePointer?
                try ORT.check(ORT.api.CastTypeInfoToTensorInfo(typeInfo, &info))
                var element = ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED
                try ORT.check(ORT.api.GetTensorElementType(info, &element))
                var rank = 0
                try ORT.check(ORT.api.GetDimensionsCount(info, &rank))
                var dims = [Int64](repeating: 0, count: rank)
                try ORT.check(ORT.api.GetDimensions(info, &dims, rank))
                return GraphTensor(name: tensorName, shape: dims.map { $0 >= 0 ? Int($0) : nil }, dtype: dtypeName(element))
            }
        }
        let inputs = try tensors(count: { ORT.api.SessionGetInputCount(session, &$0) },
                                 name: { ORT.api.SessionGetInputName(session, $0, allocator, &$1) },
                                 type: { ORT.api.SessionGetInputTypeInfo(session, $0, &$1) })
        let outputs = try tensors(count: { ORT.api.SessionGetOutputCount(session, &$0) },
                                  name: { ORT.api.SessionGetOutputName(session, $0, allocator, &$1) },
                                  type: { ORT.api.SessionGetOutputTypeInfo(session, $0, &$1) })
        return (inputs, outputs)
    }

    /// ONNX's element type as numpy names it ("float32", "int64", ...).
    static func dtypeName(_ type: ONNXTensorElementDataType) -> String {
        switch type {
        case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT: return "float32"
        case ONNX_TENSOR_ELEMENT_DATA_TYPE_DOUBLE: return "float64"
        case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16: return "float16"
        case ONNX_TENSOR_ELEMENT_DATA_TYPE_BFLOAT16: return "bfloat16"
        case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT8: return "int8"
        case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT16: return "int16"
        case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32: return "int32"
        case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64: return "int64"
        case ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8: return "uint8"
        case ONNX_TENSOR_ELEMENT_DATA_TYPE_BOOL: return "bool"
        case ONNX_TENSOR_ELEMENT_DATA_TYPE_STRING: return "string"
        default: return "element type \(type.rawValue)"
        }
    }

    private static func copy(_ tensor: Tensor) -> (UnsafeMutableRawPointer, Int, ONNXTensorElementDataType) {
        switch tensor.storage {
        case .float32(let values):
            let bytes = values.count * MemoryLayout<Float>.stride
            let buffer = UnsafeMutableRawPointer.allocate(byteCount: max(bytes, 1), alignment: 64)
            values.withUnsafeBytes { buffer.copyMemory(from: $0.baseAddress!, byteCount: bytes) }
            return (buffer, bytes, ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT)
        case .int32(let values):
            let bytes = values.count * MemoryLayout<Int32>.stride
            let buffer = UnsafeMutableRawPointer.allocate(byteCount: max(bytes, 1), alignment: 64)
            values.withUnsafeBytes { buffer.copyMemory(from: $0.baseAddress!, byteCount: bytes) }
            return (buffer, bytes, ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32)
        }
    }

    private static func read(_ value: OpaquePointer, name: String) throws -> Tensor {
        var info: OpaquePointer?
        try ORT.check(ORT.api.GetTensorTypeAndShape(value, &info))
        defer { ORT.api.ReleaseTensorTypeAndShapeInfo(info) }
        var rank = 0
        try ORT.check(ORT.api.GetDimensionsCount(info, &rank))
        var dims = [Int64](repeating: 0, count: rank)
        try ORT.check(ORT.api.GetDimensions(info, &dims, rank))
        var type = ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED
        try ORT.check(ORT.api.GetTensorElementType(info, &type))
        var data: UnsafeMutableRawPointer?
        try ORT.check(ORT.api.GetTensorMutableData(value, &data))
        let shape = dims.map { Int($0) }
        let count = shape.reduce(1, *)
        switch type {
        case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT:
            let pointer = data!.bindMemory(to: Float.self, capacity: count)
            return Tensor(shape: shape, floats: Array(UnsafeBufferPointer(start: pointer, count: count)))
        case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32:
            let pointer = data!.bindMemory(to: Int32.self, capacity: count)
            return Tensor(shape: shape, ints: Array(UnsafeBufferPointer(start: pointer, count: count)))
        default:
            throw MobileDiffError.runtime(backend: "onnxruntime", message: "output \(name) has element type \(type.rawValue); the engine reads float32 and int32")
        }
    }
}
#endif
