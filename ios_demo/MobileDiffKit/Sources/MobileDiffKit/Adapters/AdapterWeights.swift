import Foundation

/// One run-time adapter as its file holds it (`adapters/<name>.safetensors`): per component and module the low-rank
/// pair `down` (r x in) and `up` (out x r, alpha / r already in it), float32. Read by `read(_:name:slots:)`, which
/// parses the safetensors layout itself and refuses, in one line, anything the bundle's slots cannot hold.
public struct AdapterWeights: Sendable {
    public struct Layer: Sendable, Equatable {
        /// Rows of `down`, columns of `up`.
        public var rank: Int
        /// (rank, in) row-major.
        public var down: [Float]
        /// (out, rank) row-major.
        public var up: [Float]

        public init(rank: Int, down: [Float], up: [Float]) {
            self.rank = rank
            self.down = down
            self.up = up
        }
    }

    public let name: String
    /// component -> module -> layer.
    public let layers: [String: [String: Layer]]

    public init(name: String, layers: [String: [String: Layer]]) {
        self.name = name
        self.layers = layers
    }

    /// The rank slots the adapter fills in `component`: its largest `down` rows there (0 where it adapts nothing
    /// of it), as mobilediff/runtime_lora.py `pack` counts them.
    public func rank(in component: String) -> Int {
        layers[component]?.values.map(\.rank).max() ?? 0
    }

    /// The largest rank over every layer (the manifest's `rank` of the file).
    public var rank: Int { layers.keys.map(rank(in:)).max() ?? 0 }

    /// Reads an adapter file (its sha256 already checked): an 8-byte little-endian header length, a JSON header
    /// `{name: {dtype, shape, data_offsets: [begin, end]}}` (offsets from the end of the header; `__metadata__`
    /// skipped), the data. Every tensor must be `F32`, lie inside the data with exactly its shape's bytes, be named
    /// `<component>.<module>.down|up` for a layer of `slots`, and fit it: down (r x in), up (out x r), the same r,
    /// 1 <= r <= the slots' rank, both present. Throws `invalidAdapter` naming the file and the first problem.
    public static func read(_ url: URL, name: String, slots: [String: BundleManifest.Slots]) throws -> AdapterWeights {
        func refuse(_ reason: String) -> MobileDiffError { .invalidAdapter(path: url.path, reason: reason) }
        let data: Data
        do { data = try Data(contentsOf: url) } catch { throw MobileDiffError.fileMissing(path: url.path) }
        guard data.count >= 8 else { throw refuse("not safetensors: \(data.count) bytes, shorter than the 8-byte header length") }
        let headerLength = data.prefix(8).enumerated().reduce(UInt64(0)) { $0 | (UInt64($1.element) << (8 * UInt64($1.offset))) }
        guard headerLength <= UInt64(data.count - 8) else {
            throw refuse("not safetensors: a header of \(headerLength) bytes in a file of \(data.count)")
        }
        let dataStart = 8 + Int(headerLength)
        let dataLength = data.count - dataStart
        guard let header = try? JSONSerialization.jsonObject(with: data.subdata(in: 8..<dataStart)) as? [String: Any] else {
            throw refuse("not safetensors: its header is not a JSON object")
        }
        // module -> side -> (shape, values), per component
        var found: [String: [String: [String: (shape: [Int], values: [Float])]]] = [:]
        for key in header.keys.sorted() where key != "__metadata__" {
            guard let info = header[key] as? [String: Any], let dtype = info["dtype"] as? String,
                  let shape = info["shape"] as? [Int], let offsets = info["data_offsets"] as? [Int], offsets.count == 2 else {
                throw refuse("tensor \(key.debugDescription) has no dtype, shape and data_offsets [begin, end]")
            }
            guard dtype == "F32" else {
                throw refuse("tensor \(key.debugDescription) is \(dtype); run-time adapters are float32 (F32)")
            }
            let count = shape.reduce(1, *)
            guard shape.allSatisfy({ $0 >= 0 }), offsets[0] >= 0, offsets[0] <= offsets[1], offsets[1] <= dataLength,
                  offsets[1] - offsets[0] == 4 * count else {
                throw refuse("tensor \(key.debugDescription): data_offsets \(offsets) do not hold its shape \(shape) of float32 within the \(dataLength) data bytes")
            }
            // <component>.<module>.<down|up>: the component before the first dot, the side after the last
            let parts = key.split(separator: ".", omittingEmptySubsequences: false)
            let component = parts.count >= 3 ? String(parts[0]) : ""
            let side = parts.count >= 3 ? String(parts[parts.count - 1]) : ""
            let module = parts.count >= 3 ? parts[1..<(parts.count - 1)].joined(separator: ".") : ""
            guard let slot = slots[component], ["down", "up"].contains(side),
                  slot.layers.contains(where: { $0.module == module }) else {
                let held = slots.keys.sorted().map { "\($0) (\(slots[$0]!.layers.count) layers)" }.joined(separator: ", ")
                throw refuse("unknown tensor \(key.debugDescription): not <component>.<module>.down|up of a slotted layer (slots: \(held))")
            }
            var values = [Float](repeating: 0, count: count)
            let begin = dataStart + offsets[0]
            _ = values.withUnsafeMutableBytes { data.copyBytes(to: $0, from: begin..<(begin + 4 * count)) }
            if UInt32(littleEndian: 1) != 1 { values = values.map { Float(bitPattern: UInt32(littleEndian: $0.bitPattern)) } }
            found[component, default: [:]][module, default: [:]][side] = (shape, values)
        }
        var layers: [String: [String: Layer]] = [:]
        for (component, modules) in found {
            let slot = slots[component]!
            for (module, pair) in modules {
                let layer = slot.layers.first { $0.module == module }!
                let what = "\(component).\(module)"
                guard let down = pair["down"], let up = pair["up"] else {
                    throw refuse("\(what) lacks its \(pair["down"] == nil ? "down" : "up") matrix")
                }
                let rank = down.shape.first ?? 0
                guard down.shape == [rank, layer.inFeatures], up.shape == [layer.outFeatures, rank], rank >= 1 else {
                    throw refuse("\(what): down \(down.shape) and up \(up.shape) do not fit the layer (down [r, \(layer.inFeatures)], up [\(layer.outFeatures), r], r >= 1)")
                }
                guard rank <= slot.rank else {
                    throw refuse("\(what) has rank \(rank), more than the \(slot.rank) slots of \(component)")
                }
                layers[component, default: [:]][module] = Layer(rank: rank, down: down.values, up: up.values)
            }
        }
        guard !layers.isEmpty else { throw refuse("holds no adapted layer") }
        return AdapterWeights(name: name, layers: layers)
    }
}
