/// The CLIP text encoder: token ids (1, maxLength) int32 → per-token features (1, maxLength, width).
public final class TextEncoder: ResourceManaging {
    public let model: ManagedModel

    public init(model: ManagedModel) {
        self.model = model
    }

    /// Features of one prompt's padded token ids. `extra`: the inputs after the ids (a slotted text encoder's
    /// `lora_weights`, `RuntimeAdapters.inputs()`).
    public func encode(_ ids: [Int32], extra: [String: Tensor] = [:]) throws -> Tensor {
        let input = model.spec.inputs[0]
        let dtype = input.dtype
        let tensor = dtype.hasPrefix("int64") || dtype.hasPrefix("int32")
            ? Tensor(shape: [1, ids.count], ints: ids)
            : Tensor(shape: [1, ids.count], floats: ids.map(Float.init))
        let outputs = try model.predict(extra.merging([input.name: tensor]) { _, ids in ids })
        return outputs[model.spec.outputs[0].name]!
    }

    public func loadResources() throws { try model.loadResources() }
    public func unloadResources() { model.unloadResources() }
}
