import Foundation

/// One row of `check-goldens` output (the contract's app-parity row, without the app name).
public struct GoldenRow: Sendable {
    public var check: String  // tokenizer | noise | sampler
    public var backend: String
    public var model: String
    public var seed: UInt64?
    public var psnrDB: Double
    public var maxAbsError: Double
    public var passed: Bool
    public var detail: String
    /// The golden plan a sampler row replays (nil for other checks).
    public var plan: String? = nil

    public var dictionary: [String: Any] {
        ["check": check, "backend": backend, "model": model, "seed": seed.map { $0 as Any } ?? NSNull(),
         "psnr_db": psnrDB.isInfinite ? NSNull() : psnrDB as Any,  // null = identical, as app_parity.json
         "max_abs_error": maxAbsError, "passed": passed, "detail": detail,
         "plan": plan.map { $0 as Any } ?? NSNull()]
    }
}

/// The checks of the Swift engine against the Python side's goldens. Thresholds: token ids exact; noise within
/// 1e-6 of torch; the sampler replay (recorded component outputs fed back through the engine's own loop)
/// at >= 60 dB on every step's latent, the decoder input and output, and the image.
public struct GoldenChecks {
    public static let noiseTolerance = 1e-6
    public static let samplerFloorDB = 60.0

    public let bundle: URL
    public let goldens: Goldens
    public let model: String
    public let backend: String

    public init(bundle: URL, goldens: Goldens, model: String, backend: String = "onnx") {
        self.bundle = bundle
        self.goldens = goldens
        self.model = model
        self.backend = backend
    }

    public func all() throws -> [GoldenRow] {
        var rows = [try tokenizer()]
        rows += try noise()
        rows += try goldens.document.plans.map { try sampler(plan: $0).row }
        return rows
    }

    /// Token ids of every golden prompt, exactly.
    public func tokenizer() throws -> GoldenRow {
        let opened = try MobileDiffBundle(url: bundle)
        let tokenizer = try BPETokenizer(folder: opened.tokenizerURL(), info: opened.manifest.tokenizer)
        var mismatches: [String] = []
        var worst = 0.0
        for test in goldens.document.tokenizer {
            let ids = tokenizer.encode(test.prompt)
            if ids != test.ids {
                mismatches.append(test.prompt)
                worst = max(worst, ids.count == test.ids.count ? Compare.maxAbsError(ids.map(Float.init), test.ids.map(Float.init)) : .infinity)
            }
        }
        return GoldenRow(check: "tokenizer", backend: backend, model: model, seed: nil,
                         psnrDB: mismatches.isEmpty ? .infinity : 0, maxAbsError: worst, passed: mismatches.isEmpty,
                         detail: mismatches.isEmpty ? "\(goldens.document.tokenizer.count) prompts, ids equal"
                                                    : "ids differ for: \(mismatches.joined(separator: " | "))")
    }

    /// The initial noise of every golden seed against torch's.
    public func noise() throws -> [GoldenRow] {
        try goldens.document.noise.map { test in
            let reference = try goldens.tensors.tensor(test.tensor).floats
            var random = TorchRandomSource(seed: test.seed)
            let noise = random.normalArray(count: test.shape.reduce(1, *))
            let error = Compare.maxAbsError(noise, reference)
            return GoldenRow(check: "noise", backend: backend, model: model, seed: test.seed,
                             psnrDB: Compare.psnr(noise, reference), maxAbsError: error,
                             passed: error <= GoldenChecks.noiseTolerance, detail: "shape \(test.shape)")
        }
    }

    public struct SamplerReplay {
        /// PSNR of the engine's latent after each step against the recorded one.
        public var stepPSNR: [Double]
        /// Largest absolute error over the per-step latents.
        public var stepMaxAbsError: Double
        /// Lowest PSNR of any input the engine fed a component against the recorded input.
        public var inputPSNR: Double
        public var decodedPSNR: Double
        public var imagePSNR: Double
        public var imageMaxAbsError: Double
        public var row: GoldenRow
    }

    /// Replays one plan: the engine runs its own tokenizer, noise, guidance, sampler loop and image conversion;
    /// only the components' outputs come from the recording (and the inputs it would feed them are compared
    /// with the recorded ones).
    public func sampler(plan: Goldens.Plan) throws -> SamplerReplay {
        let textCalls = goldens.document.plans.flatMap(\.calls).filter { $0.component == "text_encoder" }
        let replay = ReplayBackend(target: goldens.document.runtime ?? backend, calls: plan.calls.filter { $0.component != "text_encoder" },
                                   textEncoderCalls: textCalls, tensors: goldens.tensors)
        let pipeline = try Pipeline(bundle: bundle, backend: replay)
        var steps: [[Float]] = []
        let configuration = Pipeline.Configuration(prompt: plan.prompt, seed: plan.seed, sampler: plan.sampler,
                                                   steps: plan.steps, guidanceScale: plan.guidance)
        let result = try pipeline.generate(configuration, onStep: { _, latent in steps.append(latent) })
        guard replay.cursor == replay.calls.count else {
            throw MobileDiffError.goldens("plan \(plan.name): the engine made \(replay.cursor) denoiser/decoder calls, the recording has \(replay.calls.count)")
        }
        guard steps.count == plan.latents.count else {
            throw MobileDiffError.goldens("plan \(plan.name): \(steps.count) steps, the recording has \(plan.latents.count)")
        }
        var stepPSNR: [Double] = []
        var stepError = 0.0
        for (latent, key) in zip(steps, plan.latents) {
            let reference = try goldens.tensors.tensor(key).floats
            stepPSNR.append(Compare.psnr(latent, reference))
            stepError = max(stepError, Compare.maxAbsError(latent, reference))
        }
        // the recorded decoder output vs what the engine made of it, and the final image bytes
        let decodedReference = try goldens.tensors.tensor(plan.decoded)
        let shape = decodedReference.shape
        let decodedHWC = ImageConversion.hwcClamped(chw: decodedReference.floats, height: shape[shape.count - 2], width: shape[shape.count - 1])
        let decodedPSNR = Compare.psnr(result.rawImage, decodedHWC, peak: 2)
        let imageReference = try goldens.tensors.bytes(plan.image).map(Float.init)
        let image = result.image.rgb.map(Float.init)
        let imagePSNR = Compare.psnr(image, imageReference, peak: 255)
        let imageError = Compare.maxAbsError(image, imageReference)
        let worst = ([replay.worstInputPSNR, decodedPSNR, imagePSNR] + stepPSNR).min() ?? .infinity
        let passed = worst >= GoldenChecks.samplerFloorDB
        let detail = String(format: "%@ %@-%d guidance %g: %d steps, latent PSNR min %.1f dB, component inputs min %.1f dB, image %.1f dB (max %.0f levels)",
                            plan.name, plan.sampler, plan.steps, plan.guidance, steps.count, stepPSNR.min() ?? .infinity,
                            replay.worstInputPSNR, imagePSNR, imageError)
        return SamplerReplay(stepPSNR: stepPSNR, stepMaxAbsError: stepError, inputPSNR: replay.worstInputPSNR,
                             decodedPSNR: decodedPSNR, imagePSNR: imagePSNR, imageMaxAbsError: imageError,
                             row: GoldenRow(check: "sampler", backend: backend, model: model, seed: plan.seed, psnrDB: worst,
                                            maxAbsError: stepError, passed: passed, detail: detail, plan: plan.name))
    }
}

/// A backend whose models return a recording's outputs, call by call, and measure how close the inputs the
/// engine passes are to the recorded inputs. Lets the engine's loop be tested without running any model.
///
/// Denoiser and decoder calls must come in the recorded order. Text encoder calls are looked up by their token
/// ids among all recorded text encoder calls: the Python runner encodes the unconditional prompt once and
/// reuses it, so a recording of a second plan may lack that call.
public final class ReplayBackend: InferenceBackend {
    public let target: String
    let calls: [Goldens.Call]
    let textEncoderCalls: [Goldens.Call]
    let tensors: SafetensorsFile
    public private(set) var cursor = 0
    /// Lowest PSNR of any input tensor the engine passed, against the recorded one.
    public private(set) var worstInputPSNR = Double.infinity

    public init(target: String, calls: [Goldens.Call], textEncoderCalls: [Goldens.Call], tensors: SafetensorsFile) {
        self.target = target
        self.calls = calls
        self.textEncoderCalls = textEncoderCalls
        self.tensors = tensors
    }

    public func loadModel(at url: URL, component: String, file: BundleManifest.ComponentFile,
                          spec: BundleManifest.Component) throws -> any InferenceModel {
        ReplayModel(component: component, backend: self)
    }

    func next(component: String, inputs: [String: Tensor]) throws -> [String: Tensor] {
        if component == "text_encoder" {
            for call in textEncoderCalls {
                let recorded = try call.inputs.mapValues { try tensors.tensor($0) }
                if recorded.allSatisfy({ inputs[$0.key]?.floats == $0.value.floats }) {
                    return try call.outputs.mapValues { try tensors.tensor($0) }
                }
            }
            throw MobileDiffError.goldens("the recording has no text encoder call with the engine's token ids")
        }
        guard cursor < calls.count else {
            throw MobileDiffError.goldens("the engine made more component calls than the recording's \(calls.count)")
        }
        let call = calls[cursor]
        guard call.component == component else {
            throw MobileDiffError.goldens("call \(cursor): the engine called \(component), the recording has \(call.component)")
        }
        cursor += 1
        for (name, key) in call.inputs {
            guard let given = inputs[name] else { throw MobileDiffError.goldens("call \(cursor - 1) (\(component)): no input \(name)") }
            let recorded = try tensors.tensor(key)
            guard given.shape == recorded.shape else {
                throw MobileDiffError.shapeMismatch(name: "\(component).\(name)", expected: recorded.shape, actual: given.shape)
            }
            worstInputPSNR = min(worstInputPSNR, Compare.psnr(given.floats, recorded.floats))
        }
        var outputs: [String: Tensor] = [:]
        for (name, key) in call.outputs { outputs[name] = try tensors.tensor(key) }
        return outputs
    }
}

final class ReplayModel: InferenceModel {
    let component: String
    let backend: ReplayBackend

    init(component: String, backend: ReplayBackend) {
        self.component = component
        self.backend = backend
    }

    func predict(_ inputs: [String: Tensor]) throws -> [String: Tensor] {
        try backend.next(component: component, inputs: inputs)
    }
}
