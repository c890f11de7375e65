import Foundation

/// One adapter of a mix: a name the bundle holds and its scale (1: as trained).
public struct AdapterChoice: Sendable, Equatable, CustomStringConvertible {
    public var name: String
    public var scale: Double

    public init(_ name: String, scale: Double = 1) {
        self.name = name
        self.scale = scale
    }

    public var description: String { "\(name):\(String(format: "%g", scale))" }

    /// `NAME[:SCALE]` as the command line takes it (`--lora`; Python's `parse_selection`): the scale after the last
    /// ':', 1 without one. Throws `invalidAdapterMix` for a scale that is not a number.
    public static func parse(_ text: String) throws -> AdapterChoice {
        guard let colon = text.lastIndex(of: ":") else { return AdapterChoice(text) }
        let tail = String(text[text.index(after: colon)...])
        guard let scale = Double(tail.trimmingCharacters(in: .whitespaces)) else {
            throw MobileDiffError.invalidAdapterMix("--lora \(text): the scale after ':' must be a number, got \(tail.debugDescription)")
        }
        return AdapterChoice(String(text[..<colon]), scale: scale)
    }
}

/// The run-time adapters of a bundle (the manifest's `adapters`) and the mix switched on: the `lora_weights` vector
/// of every slotted component, all zeros (the base model) until `set(_:)` is given a mix. Switching repacks the
/// vectors only: no model is loaded or reloaded. Adapter files are checked against their sha256 and read once
/// (cached). Thread-safe: the app may switch while a generation runs; a generation takes the vectors it started with
/// (`inputs()`), the next one the new mix. The Python reference is mobilediff/engine.py `BundleRunner.set_adapters`
/// with mobilediff/runtime_lora.py `pack`.
public final class RuntimeAdapters: @unchecked Sendable {
    public let bundle: MobileDiffBundle
    public var record: BundleManifest.Adapters? { bundle.manifest.adapters }
    /// The adapters the bundle holds, in the manifest's order (none for a bundle without adapters).
    public var names: [String] { record?.names ?? [] }

    // guarded by `lock`
    private let lock = NSLock()
    private var cache: [String: AdapterWeights] = [:]
    private var _mix: [AdapterChoice] = []
    private var _vectors: [String: [Float]]

    public init(bundle: MobileDiffBundle) {
        self.bundle = bundle
        _vectors = (bundle.manifest.adapters?.slots ?? [:]).mapValues { [Float](repeating: 0, count: $0.size) }
    }

    /// The mix switched on ([]: the base model).
    public var mix: [AdapterChoice] { lock.withLock { _mix } }

    /// Component -> its `lora_weights` vector for the current mix (every slotted component; zeros for the base model).
    public var vectors: [String: [Float]] { lock.withLock { _vectors } }

    /// Component -> the extra input a slotted component is fed (`input` -> a (size) float32 tensor).
    public func inputs() -> [String: [String: Tensor]] {
        guard let record else { return [:] }
        return vectors.mapValues { [record.input: Tensor(shape: [$0.count], floats: $0)] }
    }

    /// Switches to `mix` (in order: each adapter fills the next rank slots of every component it adapts; [] = the
    /// base model). Checked whole before anything changes; on a refusal the previous mix stays. Throws
    /// `invalidAdapterMix` for a mix on a bundle without adapters, a non-finite scale, an adapter the bundle does not
    /// hold, a name given twice, or more rank than a component's slots; for a file, `fileMissing`,
    /// `checksumMismatch` or `invalidAdapter`.
    public func set(_ mix: [AdapterChoice]) throws {
        guard let record else {
            if mix.isEmpty { return }
            throw MobileDiffError.invalidAdapterMix("this bundle holds no run-time adapters (export it with --runtime-lora; --lora on a model merges an adapter instead)")
        }
        var seen = Set<String>()
        for choice in mix {
            guard choice.scale.isFinite else {
                throw MobileDiffError.invalidAdapterMix("adapter \(choice.name): the scale must be a finite number, got \(choice.scale)")
            }
            guard record.file(named: choice.name) != nil else {
                throw MobileDiffError.invalidAdapterMix("adapter \(choice.name.debugDescription): the bundle holds no run-time adapter of that name (it holds: \(record.names.joined(separator: ", ")))")
            }
            guard seen.insert(choice.name).inserted else {
                throw MobileDiffError.invalidAdapterMix("adapter \(choice.name) is given twice")
            }
        }
        let weights = try mix.map { try self.weights($0.name) }
        var vectors: [String: [Float]] = [:]
        for (component, slots) in record.slots {
            vectors[component] = try RuntimeAdapters.pack(slots, component: component,
                                                          mix: zip(weights, mix).map { ($0, $1.scale) })
        }
        lock.withLock {
            _mix = mix
            _vectors = vectors
        }
    }

    /// Adapter `name` read from its file: checked against its sha256 and read at the first use, cached after.
    public func weights(_ name: String) throws -> AdapterWeights {
        if let cached = lock.withLock({ cache[name] }) { return cached }
        guard let record, let file = record.file(named: name) else {
            throw MobileDiffError.invalidAdapterMix("adapter \(name.debugDescription): the bundle holds no run-time adapter of that name (it holds: \(names.joined(separator: ", ")))")
        }
        let url = bundle.url.appendingPathComponent(file.path)
        try FileChecks.verify(url, sha256: file.sha256)
        let weights = try AdapterWeights.read(url, name: name, slots: record.slots)
        guard weights.rank == file.rank else {
            throw MobileDiffError.invalidAdapter(path: url.path, reason: "its largest down has \(weights.rank) rows; the manifest says rank \(file.rank)")
        }
        lock.withLock { cache[name] = weights }
        return weights
    }

    /// The `lora_weights` vector of `slots` for a mix (docs/bundle.md's packing rule; runtime_lora.py `pack`):
    ///
    ///     vector = zeros(size); start = 0
    ///     for each (adapter k, scale s_k) in order, r_k = its largest down rows in this component:
    ///       for each layer L of the slots the adapter has (rank k_L <= r_k):
    ///         down_L = vector[L.down_offset ..< + R·in]  as R x in     down_L[start + i, :] = down_k[i, :]
    ///         up_L   = vector[L.up_offset ..< + out·R]   as out x R    up_L[:, start + i]   = s_k · up_k[:, i]
    ///       start += r_k                                   (Σ r_k <= R, else refused)
    ///
    /// An adapter that does not adapt this component fills no slots of it. Throws `invalidAdapterMix` when the mix
    /// needs more than R slots.
    public static func pack(_ slots: BundleManifest.Slots, component: String,
                            mix: [(AdapterWeights, Double)]) throws -> [Float] {
        let used = mix.reduce(0) { $0 + $1.0.rank(in: component) }
        guard used <= slots.rank else {
            throw MobileDiffError.invalidAdapterMix("these adapters together need \(used) rank slots; the bundle's \(component) has \(slots.rank) (export with a larger --lora-rank to mix them)")
        }
        let R = slots.rank
        var vector = [Float](repeating: 0, count: slots.size)
        var start = 0
        for (adapter, scale) in mix {
            let s = Float(scale)  // torch multiplies a float32 tensor by a Python float in float32
            for layer in slots.layers {
                guard let pair = adapter.layers[component]?[layer.module] else { continue }
                let k = pair.rank, fanIn = layer.inFeatures, fanOut = layer.outFeatures
                for i in 0..<k {
                    let to = layer.downOffset + (start + i) * fanIn
                    vector.replaceSubrange(to..<(to + fanIn), with: pair.down[(i * fanIn)..<((i + 1) * fanIn)])
                }
                for o in 0..<fanOut {
                    for i in 0..<k { vector[layer.upOffset + o * R + start + i] = s * pair.up[o * k + i] }
                }
            }
            start += adapter.rank(in: component)
        }
        return vector
    }
}
