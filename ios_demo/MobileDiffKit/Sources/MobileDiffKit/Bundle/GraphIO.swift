/// One input or output as a loaded graph declares it, before the first call: `name` (nil where the format keeps
/// none), `shape` with nil for a dynamic dimension, and `dtype` as numpy names element types ("float32", "int32").
public struct GraphTensor: Sendable, Equatable {
    public var name: String?
    public var shape: [Int?]
    public var dtype: String

    public init(name: String?, shape: [Int?], dtype: String) {
        self.name = name
        self.shape = shape
        self.dtype = dtype
    }
}

/// The check of a graph's own inputs and outputs against its component's manifest entry, made when a backend loads
/// it (the Swift twin of `mobilediff.bundle.check_graph_io`): a graph of another component, its sha256 valid, would
/// otherwise fail inside the runtime.
public enum GraphIO {
    /// Checked in this order, the first mismatch thrown as `graphMismatch` naming `path`, the component and the
    /// difference: the number and names of inputs, then of outputs (names only where the graph keeps them), then
    /// for each tensor its dtype, its rank and every fixed dimension against the manifest's `static_shape` (a
    /// dynamic dimension of the graph takes any size; without a `static_shape` only the dtype is checked).
    public static func check(component: String, path: String, spec: BundleManifest.Component,
                             inputs: [GraphTensor], outputs: [GraphTensor]) throws {
        let what = "the manifest's \(component)"
        func fail(_ reason: String) -> MobileDiffError { .graphMismatch(path: path, component: component, reason: reason) }
        let sides = [("input", "takes", spec.inputs, inputs), ("output", "gives", spec.outputs, outputs)]
        for (kind, verb, declared, got) in sides {
            let named = got.allSatisfy { $0.name != nil }
            let wanted = declared.map(\.name).joined(separator: ", ")
            if got.count != declared.count || (named && got.map { $0.name ?? "" } != declared.map(\.name)) {
                if named {
                    let found = got.map { $0.name ?? "" }.joined(separator: ", ")
                    throw fail("declares \(kind)s (\(found)) but \(what) \(verb) (\(wanted)): a graph of another component?")
                }
                throw fail("has \(got.count) \(kind)\(got.count == 1 ? "" : "s") but \(what) \(verb) \(declared.count) (\(wanted)): a graph of another component?")
            }
            for (i, (g, d)) in zip(got, declared).enumerated() {
                let label = named ? "\(kind) \(d.name)" : "\(kind) \(i) (\(d.name) in the manifest)"
                if g.dtype != d.dtype { throw fail("\(label) is \(g.dtype) but \(what) declares \(d.dtype)") }
                guard let fixed = d.staticShape else { continue }
                if g.shape.count != fixed.count {
                    throw fail("\(label) has rank \(g.shape.count) but \(what) declares rank \(fixed.count) (\(shown(d)))")
                }
                if zip(g.shape, fixed).contains(where: { n, s in n != nil && n != s }) {
                    let graph = g.shape.map { $0.map(String.init) ?? "?" }.joined(separator: ", ")
                    throw fail("\(label) has shape (\(graph)) but \(what) declares (\(shown(d)))")
                }
            }
        }
    }

    /// A manifest tensor's shape as Python's check shows it: each named dimension with its exported size ("batch=2, 4").
    static func shown(_ d: BundleManifest.TensorSpec) -> String {
        guard let fixed = d.staticShape else { return "" }
        return fixed.enumerated().map { i, size in
            guard let name = d.shape?[safe: i], name != String(size) else { return String(size) }
            return "\(name)=\(size)"
        }.joined(separator: ", ")
    }
}

private extension Array {
    subscript(safe index: Int) -> Element? { indices.contains(index) ? self[index] : nil }
}
