/// The UNet: (sample, timestep, text features[, the text's padding mask: a masked bundle][, guidance embedding]
/// [, mask, masked image latents: an inpainting UNet])
/// → model output, one batch row per guidance branch. Graphs exported with a static batch larger than the rows used
/// are padded with copies of the last row and the extra output rows dropped, as the Python runner does.
public final class Denoiser: ResourceManaging {
    public let model: ManagedModel

    public init(model: ManagedModel) {
        self.model = model
    }

    /// - Parameters:
    ///   - sample: (B, C, h, w) model input (already scaled by the table's input scale).
    ///   - timestep: the step's timestep, repeated for every row.
    ///   - text: (B, L, D) text features.
    ///   - textMask: (B, L) float32 padding mask of the text rows, row for row (`encoder_attention_mask` of a masked
    ///     bundle, `BundleManifest.masksText`), or nil.
    ///   - condition: (B, E) guidance embedding (LCM students), or nil.
    ///   - image: an inpainting UNet's `mask` (B, 1, h, w) and `masked_image_latents` (B, C, h, w), batched like the
    ///     sample (its next inputs, in order); empty for a standard UNet.
    ///   - extra: the inputs after those, by name, not batched (a slotted UNet's `lora_weights`, last in its inputs:
    ///     `RuntimeAdapters.inputs()`).
    /// - Returns: (B, C, h, w) model output.
    public func predict(sample: Tensor, timestep: Double, text: Tensor, textMask: Tensor? = nil, condition: Tensor?,
                        image: [Tensor] = [], extra: [String: Tensor] = [:]) throws -> Tensor {
        let rows = sample.shape[0]
        var arguments = [sample, Tensor(shape: [rows], floats: [Float](repeating: Float(timestep), count: rows)), text]
        if let textMask { arguments.append(textMask) }
        if let condition { arguments.append(condition) }
        arguments += image
        let inputs = model.spec.inputs
        guard arguments.count + extra.count == inputs.count,
              inputs.dropFirst(arguments.count).allSatisfy({ extra[$0.name] != nil }) else {
            let given = inputs.prefix(arguments.count).map(\.name) + extra.keys.sorted()
            throw MobileDiffError.invalidArgument("the denoiser takes \(inputs.count) inputs (\(inputs.map(\.name).joined(separator: ", "))), the engine has \(given.count) (\(given.joined(separator: ", ")))")
        }
        if let batch = model.spec.staticBatch, batch != rows {
            guard batch > rows else {
                throw MobileDiffError.invalidArgument("denoiser batch \(rows) exceeds the exported static batch \(batch)")
            }
            arguments = arguments.map { Denoiser.padRows($0, to: batch) }
        }
        var feed = extra
        for (spec, tensor) in zip(inputs, arguments) { feed[spec.name] = tensor }
        var output = try model.predict(feed)[model.spec.outputs[0].name]!
        if output.shape[0] != rows {
            let rowSize = output.count / output.shape[0]
            output = Tensor(shape: [rows] + output.shape.dropFirst(), floats: Array(output.floats.prefix(rows * rowSize)))
        }
        return output
    }

    static func padRows(_ tensor: Tensor, to rows: Int) -> Tensor {
        let have = tensor.shape[0]
        let rowSize = tensor.count / have
        let values = tensor.floats
        let last = values[(have - 1) * rowSize..<(have * rowSize)]
        var padded = values
        for _ in have..<rows { padded.append(contentsOf: last) }
        return Tensor(shape: [rows] + tensor.shape.dropFirst(), floats: padded)
    }

    public func loadResources() throws { try model.loadResources() }
    public func unloadResources() { model.unloadResources() }
}
