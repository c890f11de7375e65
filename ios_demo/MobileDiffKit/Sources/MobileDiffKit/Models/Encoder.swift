/// The VAE encoder of image-to-image and inpainting bundles: (1, 3, H, W) RGB in [-1, 1] → the VAE's posterior,
/// `latent_mean` and `latent_std` (1, C, h, w), unscaled (`std` is 0 for a deterministic encoder).
public final class VAEEncoder: ResourceManaging {
    public let model: ManagedModel

    public init(model: ManagedModel) {
        self.model = model
    }

    /// `extra`: inputs after the image (a slotted component's `lora_weights`; none in bundles written so far).
    public func encode(_ image: Tensor, extra: [String: Tensor] = [:]) throws -> (mean: Tensor, std: Tensor) {
        let declared = model.spec.outputs.map(\.name)
        guard declared.count == 2 else {
            throw MobileDiffError.invalidArgument("the bundle's \(model.component) gives \(declared.count) outputs (\(declared.joined(separator: ", "))); an image encoder gives 2, latent_mean and latent_std")
        }
        let outputs = try model.predict(extra.merging([model.spec.inputs[0].name: image]) { _, image in image })
        return (outputs[model.spec.outputs[0].name]!, outputs[model.spec.outputs[1].name]!)
    }

    public func loadResources() throws { try model.loadResources() }
    public func unloadResources() { model.unloadResources() }
}
