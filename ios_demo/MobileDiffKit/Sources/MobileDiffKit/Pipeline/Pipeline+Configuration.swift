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
