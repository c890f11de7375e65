extension Pipeline {
    /// What to generate. `defaults(for:)` gives the bundle's own plan (`BundleManifest.plan`: its
    /// `default_sampling`, or for bundles exported before that field existed LCM-4 for a guidance-embedding model,
    /// else DDIM-50, at the guidance's default scale).
    public struct Configuration: Sendable {
        public var prompt: String
        public var seed: UInt64
        /// A sampler name the bundle has tables for ("ddim", "dpmpp", "euler", "lcm").
        public var sampler: String
        public var steps: Int
        public var guidanceScale: Double
        /// Image-to-image or inpainting: the image the run starts from; nil for text-to-image.
        public var image: ImageCondition?

        public init(prompt: String, seed: UInt64, sampler: String, steps: Int, guidanceScale: Double,
                    image: ImageCondition? = nil) {
            self.prompt = prompt
            self.seed = seed
            self.sampler = sampler
            self.steps = steps
            self.guidanceScale = guidanceScale
            self.image = image
        }

        /// "txt2img", "img2img" or "inpaint".
        public var mode: String { image?.mode ?? "txt2img" }

        public static func defaults(for manifest: BundleManifest, prompt: String = "", seed: UInt64 = 0) -> Configuration {
            let plan = manifest.plan
            return Configuration(prompt: prompt, seed: seed, sampler: plan.sampler, steps: plan.steps, guidanceScale: plan.guidance)
        }

        /// Checks the arguments before any work starts (the prompt with `Prompts.check`; the mode with
        /// `BundleManifest.requireMode`).
        public func validate(against manifest: BundleManifest) throws {
            guard steps >= 1 else { throw MobileDiffError.invalidArgument("steps must be >= 1, got \(steps)") }
            guard guidanceScale.isFinite, guidanceScale >= 0 else {
                throw MobileDiffError.invalidArgument("guidance must be a finite number >= 0, got \(guidanceScale)")
            }
            try Prompts.check(prompt)
            let table = try manifest.samplerTable(sampler, steps: steps)
            // an inpainting UNet's bundle refuses text-to-image and image-to-image here, before any work
            try manifest.requireMode(mode)
            guard let image else { return }
            let g = manifest.geometry
            guard image.pixels.count == 3 * g.height * g.width else {
                throw MobileDiffError.shapeMismatch(name: "init image", expected: [1, 3, g.height, g.width], actual: [image.pixels.count])
            }
            if let mask = image.mask, mask.count != g.latentHeight * g.latentWidth {
                throw MobileDiffError.shapeMismatch(name: "mask", expected: [1, 1, g.latentHeight, g.latentWidth], actual: [mask.count])
            }
            _ = try ImageToImage.startTable(table, strength: image.strength)
        }
    }

    /// What image-to-image and inpainting start from (`ImageInput` reads and checks it).
    public struct ImageCondition: Sendable {
        /// (1, 3, height, width) RGB in [-1, 1] at the bundle's size (`ImageInput.pixels`).
        public var pixels: [Float]
        /// (1, 1, latent height, latent width) of 0 (keep) and 1 (repaint) (`ImageInput.latentMask`); nil for
        /// image-to-image.
        public var mask: [Float]?
        /// How much of the sampling runs over the image, in (0, 1]: `min(floor(steps · strength), steps)` of the
        /// table's steps, from step `steps - that` (1: from noise, with the image's content only in inpainting's kept
        /// region).
        public var strength: Double

        public init(pixels: [Float], mask: [Float]? = nil, strength: Double) {
            self.pixels = pixels
            self.mask = mask
            self.strength = strength
        }

        /// "img2img" or "inpaint".
        public var mode: String { mask == nil ? "img2img" : "inpaint" }
        /// The default strength of a mode: 0.75 for image-to-image, 1 for inpainting (Python's `generate`).
        public static func defaultStrength(inpainting: Bool) -> Double { inpainting ? 1 : 0.75 }
    }

    /// One generated image, how long each part took and the memory it took.
    public struct Result: Sendable {
        public var image: RGBAImage
        /// The decoder's output clamped to [-1, 1], (H, W, 3) row-major.
        public var rawImage: [Float]
        public var timer: SampleTimer
        public var configuration: Configuration
        /// The process's peak memory during the generation, in bytes (`MemoryFootprint.Tracker`), how it was
        /// measured ("VmHWM" on Linux, "phys_footprint samples" on Apple platforms) and what it covers: "generation"
        /// (this generation, its loads included) or "process" (since the process started: every load and
        /// generation; `Pipeline.peakPerGeneration` off, on Linux).
        public var peakMemoryBytes: UInt64 = 0
        public var peakMemoryMethod: String = ""
        public var peakMemoryScope: String = ""
        /// Milliseconds per model loaded during this generation (before its part; not in `timer`): lazy first loads,
        /// and every load in low-memory mode or after an unload.
        public var loadMilliseconds: [String: Double] = [:]
    }

    /// Where a generation is, reported after each unit of work (`Pipeline.generate`'s `progress`).
    public struct Progress: Sendable, Equatable {
        public enum Stage: String, Sendable {
            /// The prompt's text features are ready (step 0).
            case textEncoded = "text_encoded"
            /// Sampler step `step` of `steps` is done.
            case denoised
            /// The image is decoded (step == steps).
            case decoded
        }

        public var stage: Stage
        /// Sampler steps done.
        public var step: Int
        public var steps: Int
        /// Seconds since the generation started.
        public var elapsedSeconds: Double
        /// The process's memory footprint at this point (`MemoryFootprint.current()`).
        public var memoryBytes: UInt64?

        /// The work done in [0, 1], counting the text encoder and the decoder as one step each.
        public var fraction: Double {
            let units = Double(steps + 2)
            switch stage {
            case .textEncoded: return 1 / units
            case .denoised: return Double(step + 1) / units
            case .decoded: return 1
            }
        }
    }
}
