/// The VAE decoder: (1, C, h, w) latents (already unscaled) → (1, 3, H, W) image, roughly in [-1, 1].
public final class VAEDecoder: ResourceManaging {
    public let model: ManagedModel

    public init(model: ManagedModel) {
        self.model = model
    }

    /// `extra`: inputs after the latents (a slotted component's `lora_weights`; none in bundles written so far).
    public func decode(_ latents: Tensor, extra: [String: Tensor] = [:]) throws -> Tensor {
        let outputs = try model.predict(extra.merging([model.spec.inputs[0].name: latents]) { _, latents in latents })
        return outputs[model.spec.outputs[0].name]!
    }

    public func loadResources() throws { try model.loadResources() }
    public func unloadResources() { model.unloadResources() }
}
