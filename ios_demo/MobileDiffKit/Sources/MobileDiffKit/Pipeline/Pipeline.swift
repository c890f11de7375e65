import Foundation

/// Text → image from a bundle alone, with any backend: tokenizer → text encoder → sampler loop over the
/// manifest's table (guided denoiser calls) → decoder → image; and, for bundles exported with `--image-modes`,
/// image → image and inpainting (`Configuration.image`: the VAE encoder first, then the run `ImageToImage` describes;
/// an inpainting UNet's bundle, `image.denoiser` "inpainting", runs inpainting alone, its UNet fed the mask and the
/// masked image's latent at every call).
/// A masked bundle (format 2, `BundleManifest.masksText`) also feeds the caption's padding mask to the text encoder
/// and, as float rows in the text's batch order, to the denoiser at every step.
/// The Python reference is mobilediff/engine.py `BundleRunner.generate`; the same seed gives the same image.
public final class Pipeline: ResourceManaging {
    public let bundle: MobileDiffBundle
    public let tokenizer: BPETokenizer
    public let textEncoder: TextEncoder
    public let denoiser: Denoiser
    public let decoder: VAEDecoder
    /// The VAE encoder of a bundle exported with image modes (`manifest.image`), else nil. Loaded at the first
    /// image-to-image or inpainting run (not by `loadResources()`), and like the others released by
    /// `unloadResources()`, after its part with `reduceMemory`, and after each use in the low-memory mode.
    public let imageEncoder: VAEEncoder?
    /// The bundle's run-time LoRA adapters (the manifest's `adapters`) and the mix switched on (`setAdapters`): every
    /// slotted component is fed its `lora_weights` vector, all zeros (the base model) until a mix is set.
    public let adapters: RuntimeAdapters
    /// Unload each model as soon as its part of a generation is done (lower peak memory, slower repeats).
    public var reduceMemory: Bool
    /// The low-memory mode (`mobilediff generate --bundle --low-memory`'s): each model is loaded when its turn comes
    /// in a generation (text encoder → the prompts' features → unloaded; denoiser → every step → unloaded; decoder →
    /// the image → unloaded), whatever `reduceMemory` says, with the backend's low-memory settings
    /// (`InferenceBackend.loadModel(at:component:file:spec:lowMemory:)`): the process holds one model at a time and
    /// the runtime keeps no arena between calls. The same image as the resident mode; every image loads the three
    /// models again (without a second sha256 check).
    public let lowMemory: Bool
    /// Start the reported peak (`Result.peakMemoryBytes`) as each generation starts (the default: the app shows
    /// each generation's own peak); off, it counts from the process's start where the platform keeps such a peak
    /// (Linux: VmHWM), so it covers every load and generation before (`Result.peakMemoryScope`).
    public var peakPerGeneration = true

    public var manifest: BundleManifest { bundle.manifest }
    /// The three component models (text encoder, denoiser, decoder), for load state and timings.
    public var models: [ManagedModel] { [textEncoder.model, denoiser.model, decoder.model] }

    /// Opens a bundle for `backend`; models are loaded on first use (or by `loadResources()`). `lowMemory`: the
    /// low-memory mode (see `lowMemory`).
    public init(bundle url: URL, backend: any InferenceBackend, precision: String? = nil, reduceMemory: Bool = false,
                lowMemory: Bool = false) throws {
        let opened = try MobileDiffBundle(url: url)
        bundle = opened
        tokenizer = try BPETokenizer(folder: opened.tokenizerURL(), info: opened.manifest.tokenizer)
        let model = { (component: String) in
            try ManagedModel(component: component, bundle: opened, backend: backend, precision: precision, lowMemory: lowMemory)
        }
        textEncoder = TextEncoder(model: try model("text_encoder"))
        denoiser = Denoiser(model: try model("unet"))
        decoder = VAEDecoder(model: try model("vae_decoder"))
        imageEncoder = opened.manifest.image == nil ? nil : VAEEncoder(model: try model(BundleManifest.imageEncoderName))
        adapters = RuntimeAdapters(bundle: opened)
        self.reduceMemory = reduceMemory
        self.lowMemory = lowMemory
    }

    public func loadResources() throws {
        try textEncoder.loadResources()
        try denoiser.loadResources()
        try decoder.loadResources()
    }

    /// Switches the run-time adapters to `mix` ([(name, scale)] of the bundle's adapters, in order; [] = the base
    /// model) for the generations that start after it: the `lora_weights` vectors are repacked, no model is loaded or
    /// reloaded. Adapter files are checked against their sha256 and read at their first use. Refused whole, the
    /// previous mix kept (`RuntimeAdapters.set`): a bundle without adapters, an adapter it does not hold, a
    /// non-finite scale, a name given twice, more rank than the slots hold (`invalidAdapterMix`), a bad file.
    public func setAdapters(_ mix: [AdapterChoice]) throws {
        try adapters.set(mix)
    }

    /// Releases every model; safe from any thread, also while a generation runs (the app's memory-pressure
    /// handler): a model in a call is released when the call returns, and whatever the generation needs next is
    /// loaded again when it is needed, so the image is the same.
    public func unloadResources() {
        textEncoder.unloadResources()
        denoiser.unloadResources()
        decoder.unloadResources()
        imageEncoder?.unloadResources()
    }

    /// Generates one image. A NaN or infinity at run time is `nonFinite` naming where it came from (a component's
    /// graph, or the manifest whose numbers took the engine's float32 arithmetic out of range), never an image.
    /// Models are loaded when first needed (lazily: each before its part, timed apart from it, `Result.loadMilliseconds`)
    /// and, with `reduceMemory` or `lowMemory`, released after their part.
    /// - Parameters:
    ///   - progress: called on the calling thread after the text encoder, after every sampler step and after the
    ///     decoder (`Progress`).
    ///   - isCancelled: polled before every model call; once it returns true the generation stops with
    ///     `MobileDiffError.cancelled` (no image; loaded models stay loaded unless `reduceMemory`).
    ///   - onStep: called after each sampler step with the step index and the latent (1, C, h, w).
    public func generate(_ configuration: Configuration, progress: (Progress) -> Void = { _ in },
                         isCancelled: () -> Bool = { false },
                         onStep: (Int, [Float]) -> Void = { _, _ in }) throws -> Result {
        try configuration.validate(against: manifest)
        let table = try manifest.samplerTable(configuration.sampler, steps: configuration.steps)
        // the steps this run makes: the table's, or from an image the strength's share of them
        let runSteps = try configuration.image.map { try ImageToImage.startTable(table, strength: $0.strength).table.steps } ?? table.steps
        let guidance = try GuidanceMode.make(manifest.guidance, scale: configuration.guidanceScale)
        let geometry = manifest.geometry
        var timer = SampleTimer()
        var loads = SampleTimer()
        var memory = MemoryFootprint.Tracker(resetPeak: peakPerGeneration)
        let unloadAfterUse = reduceMemory || lowMemory
        // `model` loaded now if it is not (its time goes to `loads`, not to its part's)
        func ensureLoaded(_ model: ManagedModel) throws {
            if !model.isLoaded { try loads.time(model.component) { try model.loadResources() } }
        }
        let started = DispatchTime.now().uptimeNanoseconds
        func report(_ stage: Progress.Stage, step: Int) {
            memory.sample()
            let elapsed = Double(DispatchTime.now().uptimeNanoseconds - started) / 1e9
            progress(Progress(stage: stage, step: step, steps: runSteps, elapsedSeconds: elapsed,
                              memoryBytes: MemoryFootprint.current()))
        }
        func checkCancelled() throws {
            if isCancelled() { throw MobileDiffError.cancelled }
        }
        try checkCancelled()
        // the run-time adapters' vectors as this generation starts (a switch during it applies to the next one)
        let extra = adapters.inputs()
        func inputs(_ model: ManagedModel) -> [String: Tensor] { extra[model.component] ?? [:] }
        var random = TorchRandomSource(seed: configuration.seed)
        let latentCount = geometry.latentShape.reduce(1, *)
        // the draws, in the reference's order: eps (a gaussian posterior's sample; for an inpainting UNet only when it
        // starts from the image, strength < 1), the noise, for inpainting with a gaussian posterior eps2 (diffusers
        // encodes the masked image with the generator: a 4-channel UNet leaves it unused, an inpainting UNet's masked
        // image latent is made with it), fresh noise
        let gaussian = manifest.image?.encoderPosterior == "gaussian"
        let inpaintingUNet = manifest.image?.inpaintingDenoiser ?? false
        let encoderExtra = imageEncoder.map { inputs($0.model) } ?? [:]
        var imageLatent: [Float]?
        if let image = configuration.image, !inpaintingUNet || image.strength < 1 {
            let eps = gaussian ? random.normalArray(count: latentCount) : nil
            imageLatent = try encodeImage(image.pixels, eps: eps, extra: encoderExtra, timer: &timer, loads: &loads,
                                          unloadAfterUse: unloadAfterUse && !inpaintingUNet, checkCancelled: checkCancelled)
        }
        let noise = random.normalArray(count: latentCount)
        let eps2 = configuration.image?.mask != nil && gaussian ? random.normalArray(count: latentCount) : nil
        // an inpainting UNet's image inputs, the same for every call: the latent mask (1, 1, h, w) and the latent of
        // the masked image, pixels · (1 - pixel mask) (the latent mask repeated f x f), encoded with eps2
        var unetImage: [Tensor] = []
        if inpaintingUNet, let image = configuration.image, let mask = image.mask {
            let maskedLatent = try encodeImage(try Self.maskedPixels(image.pixels, mask: mask, geometry: geometry), eps: eps2,
                                               extra: encoderExtra, timer: &timer, loads: &loads, unloadAfterUse: unloadAfterUse,
                                               checkCancelled: checkCancelled)
            unetImage = [Tensor(shape: [1, 1, geometry.latentHeight, geometry.latentWidth], floats: mask),
                         Tensor(shape: geometry.latentShape, floats: maskedLatent)]
        }

        // 1. text features (and a masked bundle's padding masks): rows [uncond, cond] for classifier-free guidance,
        // else [cond]
        try ensureLoaded(textEncoder.model)
        let masked = manifest.masksText
        func encodePrompt(_ prompt: String) throws -> TextRow {
            let (ids, mask) = masked ? tokenizer.encodeWithMask(prompt) : (tokenizer.encode(prompt), nil)
            let features = try timer.time("text_encoder") { try textEncoder.encode(ids, mask: mask, extra: inputs(textEncoder.model)) }
            try requireFinite(features.floats, "its output", from: textEncoder.model)
            return TextRow(features: features, mask: mask)
        }
        var rows = [try encodePrompt(configuration.prompt)]
        if case .classifierFree = guidance {
            if let batch = denoiser.model.spec.staticBatch, batch < 2 {
                throw MobileDiffError.invalidArgument("this bundle's denoiser was exported without a classifier-free-guidance batch: generate with guidance 1")
            }
            rows.insert(try encodePrompt(manifest.guidance.unconditionalPrompt ?? ""), at: 0)
        }
        let (text, textMask) = Pipeline.textBatch(rows)
        if unloadAfterUse { textEncoder.unloadResources() }
        report(.textEncoded, step: 0)

        // 2. the sampler loop
        let condition: Tensor?
        if case .embedding(let scale, let dim) = guidance {
            condition = Tensor(shape: [1, dim], floats: GuidanceMode.embeddingVector(scale: scale, dim: dim, record: manifest.guidance))
        } else {
            condition = nil
        }
        let latentShape = geometry.latentShape
        try checkCancelled()
        try ensureLoaded(denoiser.model)
        // both classifier-free-guidance rows see the same mask and masked image
        let doubledImage = unetImage.map { Tensor(shape: [2] + $0.shape.dropFirst(), floats: $0.floats + $0.floats) }
        func denoise(_ modelInput: [Float], _ timestep: Double, _: Int) throws -> [Float] {
            try checkCancelled()
            let out = try timer.time("unet") {
                switch guidance {
                case .classifierFree:
                    let doubled = Tensor(shape: [2] + latentShape.dropFirst(), floats: modelInput + modelInput)
                    return try denoiser.predict(sample: doubled, timestep: timestep, text: text, textMask: textMask, condition: nil,
                                                image: doubledImage, extra: inputs(denoiser.model)).floats
                case .none, .embedding:
                    let sample = Tensor(shape: latentShape, floats: modelInput)
                    return try denoiser.predict(sample: sample, timestep: timestep, text: text, textMask: textMask,
                                                condition: condition, image: unetImage, extra: inputs(denoiser.model)).floats
                }
            }
            try requireFinite(out, "its output at timestep \(timestep)", from: denoiser.model)
            if case .classifierFree(let scale) = guidance { return GuidanceMode.combine(out, scale: scale) }
            return out
        }
        func freshNoise() -> [Float] { random.normalArray(count: latentCount) }
        func afterStep(_ step: Int, _ latent: [Float]) {
            onStep(step, latent)
            report(.denoised, step: step + 1)
        }
        let latents: [Float]
        if let image = configuration.image {
            // an inpainting UNet sees the mask and the kept image itself: no blend after the steps
            latents = try ImageToImage.run(table: table, imageLatent: imageLatent, noise: noise, strength: image.strength,
                                           mask: image.mask, blend: !inpaintingUNet, denoise: denoise, freshNoise: freshNoise,
                                           onStep: afterStep)
        } else {
            latents = try SamplerLoop.run(table: table, noise: noise, denoise: denoise, freshNoise: freshNoise, onStep: afterStep)
        }
        // every denoiser output was finite: only the table's arithmetic can have left float32's range
        try requireFinite(latents, "the final latent (sampler \(table.name):\(table.steps))", from: nil)
        if unloadAfterUse { denoiser.unloadResources() }

        // 3. decode: latents / scaling_factor + shift_factor
        let scaling = Float(geometry.scalingFactor), shift = Float(geometry.shiftFactor ?? 0)
        let decoderInput = Tensor(shape: latentShape, floats: latents.map { $0 / scaling + shift })
        try requireFinite(decoderInput.floats, "the decoder's input (final latent / geometry.scaling_factor + geometry.shift_factor)", from: nil)
        try checkCancelled()
        try ensureLoaded(decoder.model)
        let decoded = try timer.time("vae_decoder") { try decoder.decode(decoderInput, extra: inputs(decoder.model)) }
        try requireFinite(decoded.floats, "the decoded image", from: decoder.model)
        if unloadAfterUse { decoder.unloadResources() }
        report(.decoded, step: runSteps)

        let raw = ImageConversion.hwcClamped(chw: decoded.floats, height: decoded.shape[2], width: decoded.shape[3])
        let image = ImageConversion.rgba(hwc: raw, height: decoded.shape[2], width: decoded.shape[3])
        return Result(image: image, rawImage: raw, timer: timer, configuration: configuration,
                      peakMemoryBytes: memory.peak, peakMemoryMethod: memory.method, peakMemoryScope: memory.scope,
                      loadMilliseconds: loads.milliseconds)
    }

    /// One prompt's text encoding: its features (1, L, D) and, for a masked bundle, its padding mask (L values).
    struct TextRow {
        var features: Tensor
        var mask: [Int32]?
    }

    /// The denoiser's text inputs for `rows` in batch order ([uncond, cond] with classifier-free guidance, else
    /// [cond]): the features stacked (B, L, D) and, when the rows carry masks, the masks stacked in the same order as
    /// float32 (B, L) (the reference's `torch.cat([uncond_mask, mask]).float()`).
    static func textBatch(_ rows: [TextRow]) -> (text: Tensor, mask: Tensor?) {
        let first = rows[0].features
        let text = rows.count == 1 ? first
            : Tensor(shape: [rows.count] + first.shape.dropFirst(), floats: rows.flatMap(\.features.floats))
        let masks = rows.compactMap(\.mask)
        guard masks.count == rows.count, let length = masks.first?.count else { return (text, nil) }
        return (text, Tensor(shape: [rows.count, length], floats: masks.flatMap { $0.map(Float.init) }))
    }

    /// The clean latent z0 of an init image (1, 3, H, W): `(mean + std · eps - shift_factor) · scaling_factor` of the
    /// encoder's posterior (`eps` nil: a deterministic posterior, the mean), in float32 in the reference's order. The
    /// encoder is loaded here if it is not (its time goes to `loads`) and, with `unloadAfterUse`, released after.
    private func encodeImage(_ pixels: [Float], eps: [Float]?, extra: [String: Tensor], timer: inout SampleTimer, loads: inout SampleTimer,
                             unloadAfterUse: Bool, checkCancelled: () throws -> Void) throws -> [Float] {
        guard let imageEncoder else {
            throw MobileDiffError.invalidArgument("this bundle was exported without image modes: export it again with --image-modes")
        }
        let geometry = manifest.geometry
        try checkCancelled()
        if !imageEncoder.model.isLoaded { try loads.time(imageEncoder.model.component) { try imageEncoder.loadResources() } }
        let image = Tensor(shape: [1, 3, geometry.height, geometry.width], floats: pixels)
        let (mean, std) = try timer.time(imageEncoder.model.component) { try imageEncoder.encode(image, extra: extra) }
        try requireFinite(mean.floats, "its latent mean", from: imageEncoder.model)
        try requireFinite(std.floats, "its latent std", from: imageEncoder.model)
        if unloadAfterUse { imageEncoder.unloadResources() }
        let scaling = Float(geometry.scalingFactor), shift = Float(geometry.shiftFactor ?? 0)
        let means = mean.floats, stds = std.floats
        guard means.count == geometry.latentShape.reduce(1, *), stds.count == means.count else {
            throw MobileDiffError.shapeMismatch(name: "\(imageEncoder.model.component) output", expected: geometry.latentShape, actual: mean.shape)
        }
        return (0..<means.count).map { i in
            let z = eps.map { means[i] + stds[i] * $0[i] } ?? means[i]
            return (z - shift) * scaling
        }
    }

    /// An inpainting UNet's masked image: `pixels` (1, 3, H, W) times `1 - pixel mask`, the latent `mask` (h · w, 1 =
    /// repaint) repeated f x f (nearest; f = H / h), over every channel, in float32 as the reference.
    static func maskedPixels(_ pixels: [Float], mask: [Float], geometry: BundleManifest.Geometry) throws -> [Float] {
        let height = geometry.height, width = geometry.width, f = geometry.pixelsPerLatent
        let latentWidth = geometry.latentWidth
        guard geometry.latentHeight * f == height, latentWidth * f == width, mask.count == geometry.latentHeight * latentWidth,
              pixels.count == 3 * height * width else {
            throw MobileDiffError.shapeMismatch(name: "inpainting mask repeated \(f) x \(f) over the image",
                                                expected: [1, 3, height, width], actual: [1, 3, geometry.latentHeight * f, latentWidth * f])
        }
        var masked = pixels
        for c in 0..<3 {
            for y in 0..<height {
                for x in 0..<width {
                    let i = (c * height + y) * width + x
                    masked[i] = pixels[i] * (1 - mask[(y / f) * latentWidth + x / f])
                }
            }
        }
        return masked
    }

    /// One pass over `values`: a NaN or infinity throws `nonFinite` naming `model`'s file when the values are its
    /// output, else the manifest.
    private func requireFinite(_ values: [Float], _ what: String, from model: ManagedModel?) throws {
        guard let at = values.firstIndex(where: { !$0.isFinite }) else { return }
        let bad = values.reduce(0) { $0 + ($1.isFinite ? 0 : 1) }
        let value = values[at].isNaN ? "NaN" : values[at] > 0 ? "Infinity" : "-Infinity"
        let where_ = "\(what) holds \(value) at index \(at) (\(bad) of \(values.count) values not finite)"
        guard let model else {
            throw MobileDiffError.nonFinite(path: bundle.url.appendingPathComponent("manifest.json").path,
                                            reason: "\(where_): the manifest's numbers overflow float32; no image is made of them")
        }
        throw MobileDiffError.nonFinite(path: bundle.url.appendingPathComponent(model.file.path).path,
                                        reason: "\(model.component) gave non-finite values: \(where_); no image is made of them")
    }
}
