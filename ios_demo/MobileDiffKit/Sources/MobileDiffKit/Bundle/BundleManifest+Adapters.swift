import Foundation

extension BundleManifest {
    /// The manifest's `adapters` (`export --runtime-lora`; docs/bundle.md, "run-time LoRA adapters"): the rank slots
    /// of every component an adapter adapts and the adapter files. Each slotted component takes one more input, last
    /// in its `inputs`: `input` (`lora_weights`), a flat float32 vector of `Slots.size` values; all zeros is the base
    /// model. `RuntimeAdapters` reads the files and packs the vector of a mix.
    public struct Adapters: Sendable {
        /// The name of the extra input ("lora_weights").
        public var input: String
        /// Component ("unet", "text_encoder") -> its rank slots.
        public var slots: [String: Slots]
        /// The adapters the bundle holds, in the manifest's order.
        public var files: [AdapterFile]

        /// The adapters' names, in the manifest's order.
        public var names: [String] { files.map(\.name) }
        /// The slotted components, sorted.
        public var components: [String] { slots.keys.sorted() }

        public func file(named name: String) -> AdapterFile? { files.first { $0.name == name } }
    }

    /// The rank slots of one component: `rank` (R) slots for every adapted linear layer, in the order of `layers`.
    /// The vector holds per layer `down` (R x in, row-major) at `downOffset`, then `up` (out x R, row-major) at
    /// `upOffset`; the layer computes `base(x) + (x @ down^T) @ up^T`.
    public struct Slots: Sendable, Equatable {
        public var rank: Int
        /// Values in the vector: the sum over the layers of R x (in + out).
        public var size: Int
        public var layers: [SlotLayer]

        public init(rank: Int, size: Int, layers: [SlotLayer]) {
            self.rank = rank
            self.size = size
            self.layers = layers
        }
    }

    public struct SlotLayer: Sendable, Equatable {
        /// The layer's module path in its component ("down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q").
        public var module: String
        public var inFeatures: Int
        public var outFeatures: Int
        public var downOffset: Int
        public var upOffset: Int

        public init(module: String, inFeatures: Int, outFeatures: Int, downOffset: Int, upOffset: Int) {
            self.module = module
            self.inFeatures = inFeatures
            self.outFeatures = outFeatures
            self.downOffset = downOffset
            self.upOffset = upOffset
        }
    }

    /// One adapter file: safetensors, float32, per adapted layer `<component>.<module>.down` (r x in) and `.up`
    /// (out x r, already holding the adapter's alpha / r).
    public struct AdapterFile: Sendable, Equatable {
        public var name: String
        /// Relative to the bundle ("adapters/<name>.safetensors").
        public var path: String
        public var sha256: String
        public var sizeBytes: Int?
        /// The largest `down` rows of the file's layers.
        public var rank: Int
        /// The scale its parity was checked at; the app's slider starts there.
        public var defaultScale: Double
        /// The components it adapts.
        public var components: [String]
    }
}

extension BundleManifest.Adapters {
    /// Reads the record and checks it as the Python reader does (mobilediff/bundle.py `_check_adapters`): every
    /// slotted component exists and takes `input` last, of the slots' size; the offsets tile the vector in the
    /// layers' order; every file's rank fits every component's slots. Each refusal names its field.
    init(_ o: ManifestObject, components: [String: BundleManifest.Component]) throws {
        input = try o.optional("input") { key in
            try o.checked(key, o.string) { $0 == "lora_weights" ? nil : "must be lora_weights, got \($0.debugDescription)" }
        } ?? "lora_weights"
        let slotsObject = try o.object("slots")
        guard !slotsObject.fields.isEmpty else { throw o.error(slotsObject.path, "is empty (at least one slotted component)") }
        var slots: [String: BundleManifest.Slots] = [:]
        for name in slotsObject.fields.keys.sorted() {
            let s = try slotsObject.object(name)
            guard let component = components[name] else {
                throw o.error(s.path, "names component \(name.debugDescription), which the bundle does not have")
            }
            let rank = try s.atLeast(1, "rank", s.int)
            var offset = 0
            let layers = try s.objects("layers").map { l -> BundleManifest.SlotLayer in
                let layer = BundleManifest.SlotLayer(
                    module: try l.string("module"), inFeatures: try l.atLeast(1, "in_features", l.int),
                    outFeatures: try l.atLeast(1, "out_features", l.int), downOffset: try l.int("down_offset"),
                    upOffset: try l.int("up_offset"))
                guard layer.downOffset == offset, layer.upOffset == offset + rank * layer.inFeatures else {
                    throw o.error(l.path, "the offsets of \(layer.module) do not follow the layout (down_offset \(offset), up_offset \(offset + rank * layer.inFeatures) expected, got \(layer.downOffset), \(layer.upOffset))")
                }
                offset += rank * (layer.inFeatures + layer.outFeatures)
                return layer
            }
            // absent: the layers' sum
            _ = try s.optional("size") { key in
                try s.checked(key, s.int) { $0 == offset ? nil : "must be \(offset) (rank x (in + out) summed over the layers), got \($0)" }
            }
            guard let last = component.inputs.last, last.name == input, last.staticShape == nil || last.staticShape! == [offset] else {
                throw o.error(s.path, "the component's last input must be \(input) of \(offset) values (it has \(component.inputs.map(\.name).joined(separator: ", ")))")
            }
            slots[name] = BundleManifest.Slots(rank: rank, size: offset, layers: layers)
        }
        self.slots = slots
        var seen = Set<String>()
        files = try o.objects("files").map { f -> BundleManifest.AdapterFile in
            let file = BundleManifest.AdapterFile(
                name: try f.checked("name", f.string) { $0.isEmpty ? "is empty" : seen.contains($0) ? "\($0.debugDescription) is given twice" : nil },
                path: try f.string("path"), sha256: try f.string("sha256"), sizeBytes: try f.optionalInt("size_bytes"),
                rank: try f.atLeast(1, "rank", f.int), defaultScale: try f.optionalDouble("default_scale") ?? 1,
                components: try f.optional("components", f.strings) ?? [])
            seen.insert(file.name)
            if let (component, s) = slots.sorted(by: { $0.key < $1.key }).first(where: { $0.value.rank < file.rank }) {
                throw o.error(f.field("rank"), "\(file.name) has rank \(file.rank), more than the \(s.rank) slots of \(component)")
            }
            return file
        }
    }
}
