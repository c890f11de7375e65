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

        public init(prompt: String, seed: UInt64, sampler: String, steps: Int, guidanceScale: Double) {
            self.prompt = prompt
            self.seed = seed
            self.sampler = sampler
            self.steps = steps
            self.guidanceScale = guidanceScale
        }

        public static func defaults(for manifest: BundleManifest, prompt: String = "", seed: UInt64 = 0) -> Configuration {
            let plan = manifest.plan
            return Configuration(prompt: prompt, seed: seed, sampler: plan.sampler, steps: plan.steps, guidanceScale: plan.guidance)
        }

        /// Checks the arguments before any work starts (the prompt with `Prompts.check`).
        func validate(against manifest: BundleManifest) throws {
            guard steps >= 1 else { throw MobileDiffError.invalidArgument("steps must be >= 1, got \(steps)") }
            guard guidanceScale.isFinite, guidanceScale >= 0 else {
                throw MobileDiffError.invalidArgument("guidance must be a finite number >= 0, got \(guidanceScale)")
            }
            try Prompts.check(prompt)
            _ = try manifest.samplerTable(sampler, steps: steps)
        }
    }

    /// One generated image and how long each part took.
    public struct Result: Sendable {
        public var image: RGBAImage
        /// The decoder's output clamped to [-1, 1], (H, W, 3) row-major.
        public var rawImage: [Float]
        public var timer: SampleTimer
        public var configuration: Configuration
    }
}
