/// The text encoder: token ids (1, maxLength) int32[, the caption's padding mask (1, maxLength) int32: a masked
/// bundle's `attention_mask`] → per-token features (1, maxLength, width).
public final class TextEncoder: ResourceManaging {
    public let model: ManagedModel

    public init(model: ManagedModel) {
        self.model = model
    }

    /// Features of one prompt's padded token ids. `mask`: the caption's padding mask, fed as the input named
    /// `attention_mask` (`BundleManifest.masksText`; nil for a text encoder that takes the ids alone). `extra`: the
    /// inputs after those (a slotted text encoder's `lora_weights`, `RuntimeAdapters.inputs()`).
    public func encode(_ ids: [Int32], mask: [Int32]? = nil, extra: [String: Tensor] = [:]) throws -> Tensor {
        let inputs = model.spec.inputs
        var feed = extra
        feed[inputs[0].name] = TextEncoder.tensor(ids, dtype: inputs[0].dtype)
        let maskSpec = inputs.first { $0.name == BundleManifest.textMaskInput }
        switch (mask, maskSpec) {
        case (let mask?, let spec?):
            guard mask.count == ids.count else {
                throw MobileDiffError.shapeMismatch(name: "text encoder \(spec.name)", expected: [1, ids.count], actual: [1, mask.count])
            }
            feed[spec.name] = TextEncoder.tensor(mask, dtype: spec.dtype)
        case (nil, let spec?):
            throw MobileDiffError.invalidArgument("the text encoder takes \(spec.name) (the caption's padding mask); the engine gave none")
        case (.some, nil):
            throw MobileDiffError.invalidArgument("the text encoder takes no \(BundleManifest.textMaskInput) (\(inputs.map(\.name).joined(separator: ", "))); the engine gave a padding mask")
        case (nil, nil):
            break
        }
        let outputs = try model.predict(feed)
        return outputs[model.spec.outputs[0].name]!
    }

    /// One row of integers as the input declares it: int32 (int64 inputs are widened by the backend) or float.
    static func tensor(_ values: [Int32], dtype: String) -> Tensor {
        dtype.hasPrefix("int64") || dtype.hasPrefix("int32")
            ? Tensor(shape: [1, values.count], ints: values)
            : Tensor(shape: [1, values.count], floats: values.map(Float.init))
    }

    public func loadResources() throws { try model.loadResources() }
    public func unloadResources() { model.unloadResources() }
}
