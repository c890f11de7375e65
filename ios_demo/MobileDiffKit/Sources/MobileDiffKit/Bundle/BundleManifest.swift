import Foundation

/// `manifest.json` of a mobilediff bundle, as written by `mobilediff export` (mobilediff/bundle.py).
///
/// Only the fields an app needs are read; fields are only ever added to the format, so unknown ones are ignored.
/// `load(bundle:)` reads a manifest whole or not at all: a missing, mistyped or out-of-range field is one
/// `invalidManifest` naming it as the manifest spells it (`samplers[0].init_noise_sigma`). The rules are
/// docs/bundle.md's, pinned down by the conformance cases in tests/contract/ (ContractTests).
public struct BundleManifest: Sendable {
    public static let format = "mobilediff.bundle"
    /// The newest format version this engine reads. Format 2 (transformer bundles) adds `tokenizer.kind` and masked
    /// text inputs: this engine reads it, and runs its CLIP BPE bundles only (`TokenizerInfo.requireClipBPE`), with the
    /// caption's padding mask where the text encoder takes one (`masksText`).
    public static let supportedFormatVersion = 2
    /// The components every bundle has.
    public static let componentNames = ["text_encoder", "unet", "vae_decoder"]
    /// The component of image-to-image and inpainting bundles (`export --image-modes`): RGB image -> the VAE's posterior.
    public static let imageEncoderName = "vae_encoder"
    /// The image modes a bundle can list (`image.modes`).
    public static let imageModes = ["img2img", "inpaint"]
    public static let encoderPosteriors = ["gaussian", "deterministic"]
    /// What an image-modes bundle's UNet is (`image.denoiser`): "standard" (it denoises the latent alone) or
    /// "inpainting" (an inpainting UNet that also takes `mask` and `masked_image_latents`: inpainting only).
    public static let imageDenoisers = ["standard", "inpainting"]
    /// The inputs an inpainting UNet takes after `encoder_hidden_states` (its mask and a guidance embedding), in order.
    public static let inpaintingInputs = ["mask", "masked_image_latents"]
    /// The text encoder input that makes a bundle masked (format 2): the caption's padding mask, int32 (batch, L).
    public static let textMaskInput = "attention_mask"
    /// The denoiser input a masked bundle's text encoder implies, right after `encoder_hidden_states`: the same mask
    /// as float32 (batch, L), one row per guidance branch.
    public static let denoiserTextMaskInput = "encoder_attention_mask"
    public static let roles = ["teacher", "student"]
    public static let guidanceTypes = ["classifier_free", "embedding"]

    public var format: String
    public var formatVersion: Int
    public var geometry: Geometry
    public var tokenizer: TokenizerInfo
    public var components: [String: Component]
    public var samplers: [SamplerTable]
    public var guidance: Guidance
    public var predictionType: String?
    /// The manifest's `model`: what the model is; absent in bundles exported before it was added (see `role`).
    public var model: ModelInfo?
    /// The manifest's `default_sampling`; absent in bundles exported before it was added (see `plan`).
    public var defaultSampling: DefaultSampling?
    /// The manifest's `image`: image-to-image and inpainting (`export --image-modes`); nil for a text-to-image bundle.
    /// When present, the bundle holds a `vae_encoder` component and every sampler table its `addNoise` rows.
    public var image: ImageModes?
    /// The manifest's `adapters`: run-time LoRA adapters (`export --runtime-lora`, `BundleManifest+Adapters.swift`);
    /// nil for a bundle without them.
    public var adapters: Adapters?

    /// Whether the bundle is masked: its text encoder declares an `attention_mask` input (format 2 transformer
    /// bundles), so the text encoder takes the caption's padding mask beside its ids and the denoiser takes it, as
    /// float, after `encoder_hidden_states` at every step (mobilediff/engine.py `bundle_tokenizer`, `BundleRunner._unet`).
    public var masksText: Bool {
        components["text_encoder"]?.inputs.contains { $0.name == BundleManifest.textMaskInput } ?? false
    }

    /// The components a pipeline opens: the three of every bundle, and the VAE encoder of an image-modes bundle.
    public var pipelineComponents: [String] {
        BundleManifest.componentNames + (image == nil ? [] : [BundleManifest.imageEncoderName])
    }

    /// Whether the bundle runs `mode`: "txt2img" unless its denoiser is an inpainting UNet, "img2img" and "inpaint"
    /// when its `image.modes` list them.
    public func supports(_ mode: String) -> Bool {
        if mode == "txt2img" { return !(image?.inpaintingDenoiser ?? false) }
        return image?.modes.contains(mode) ?? false
    }

    /// Refuses, in one line (`invalidArgument`), a run in `mode` ("txt2img", "img2img" or "inpaint") the bundle
    /// cannot make: an inpainting UNet's bundle runs inpainting alone; image modes need a bundle exported with them.
    public func requireMode(_ mode: String) throws {
        guard !supports(mode) else { return }
        if image?.inpaintingDenoiser == true {
            throw MobileDiffError.invalidArgument(BundleManifest.inpaintingOnly)
        }
        let what = mode == "inpaint" ? "inpainting" : "image-to-image"
        throw MobileDiffError.invalidArgument(image == nil
            ? "this bundle was exported without image modes: export it again with --image-modes for \(what)"
            : "this bundle runs \(image!.modes.joined(separator: ", ")), not \(mode)")
    }

    /// The refusal of a text-to-image or image-to-image run on an inpainting UNet's bundle.
    public static let inpaintingOnly = "this bundle's denoiser is an inpainting UNet: it runs inpainting only (an init image and a mask)"

    /// What the model is: the manifest's `model`, or for bundles exported before it existed an LCM student when the
    /// denoiser takes a guidance embedding, else a teacher.
    public var role: ModelInfo {
        if let model { return model }
        return guidance.type == "embedding" ? ModelInfo(role: "student", method: "lcm") : ModelInfo(role: "teacher")
    }

    /// The plan an app uses when the user sets nothing: the manifest's `default_sampling`, or for bundles exported
    /// before it existed LCM with 4 steps for a guidance-embedding denoiser, else DDIM with 50 steps, at the
    /// guidance's default scale. Its table may be missing: `samplerTable` says so.
    public var plan: DefaultSampling {
        if let defaultSampling { return defaultSampling }
        return guidance.type == "embedding"
            ? DefaultSampling(sampler: "lcm", steps: 4, guidance: guidance.defaultScale)
            : DefaultSampling(sampler: "ddim", steps: 50, guidance: guidance.defaultScale)
    }

    public struct Geometry: Sendable {
        public var height: Int
        public var width: Int
        public var latentChannels: Int
        public var latentHeight: Int
        public var latentWidth: Int
        /// Decoder input = latents / scalingFactor + shiftFactor.
        public var scalingFactor: Double
        public var shiftFactor: Double?
        /// Image pixels per latent pixel along each axis; nil in manifests that lack it (see `pixelsPerLatent`).
        public var vaeScaleFactor: Int? = nil

        public var latentShape: [Int] { [1, latentChannels, latentHeight, latentWidth] }
        /// The VAE's factor: `vae_scale_factor`, else height / latent height. An inpainting mask is sampled at
        /// every `pixelsPerLatent`-th pixel.
        public var pixelsPerLatent: Int { vaeScaleFactor ?? max(height / max(latentHeight, 1), 1) }
    }

    /// The CLIP BPE tokenizer (`tokenizer`): a `tokenizer.kind` other than "clip-bpe" is refused when the manifest is read.
    public struct TokenizerInfo: Sendable {
        public var files: [String]
        public var maxLength: Int
        public var bosId: Int32
        public var eosId: Int32
        public var padId: Int32
        /// `file_sha256`: path -> sha256 of tokenizer files; each listed file is checked before it is read.
        public var fileSha256: [String: String] = [:]
    }

    /// One tensor a component takes or returns. `shape` mixes named dims ("batch") and sizes (as text: it is only
    /// shown in messages); `staticShape` has the sizes of the exported graph.
    public struct TensorSpec: Sendable {
        public var name: String
        public var dtype: String
        public var staticShape: [Int]?
        public var shape: [String]? = nil
    }

    public struct ComponentFile: Sendable {
        public var target: String
        public var precision: String
        public var path: String
        public var sha256: String
        public var sizeBytes: Int?
        public var externalData: [ExternalData]?

        public struct ExternalData: Sendable {
            public var path: String
            public var sha256: String
        }
    }

    public struct Component: Sendable {
        public var inputs: [TensorSpec]
        public var outputs: [TensorSpec]
        /// Static dims of the exported graph (e.g. `batch`); only integer-valued entries are kept.
        public var dims: [String: Int]
        public var files: [ComponentFile]

        /// The graph's static batch, if it was exported with one.
        public var staticBatch: Int? { dims["batch"] }
    }

    /// The sampler as data (mobilediff/sampler_table.py): for step i,
    /// `latent_{i+1} = Σ_k latentCoef[i][k]·latent_{i-k} + Σ_k outputCoef[i][k]·output_{i-k} + noiseCoef[i]·fresh noise`
    /// where `output_i = denoiser(inputScale[i]·latent_i, timesteps[i])`, and `latent_0 = initNoiseSigma·noise`.
    public struct SamplerTable: Sendable {
        public var name: String
        public var steps: Int
        public var initNoiseSigma: Double
        public var timesteps: [Double]
        public var inputScale: [Double]
        public var latentCoef: [[Double]]
        public var outputCoef: [[Double]]
        public var noiseCoef: [Double]
        /// Image-to-image bundles: `addNoise[j] = [a_j, b_j]`, how the scheduler noises a clean latent to step j
        /// (`a_j * z0 + b_j * noise`), one row per step; nil in text-to-image bundles.
        public var addNoise: [[Double]]? = nil
        /// Image-to-image bundles: the table of a run that begins at step j, for the starts where it is not this
        /// table's rows from j (a multistep solver's first step is of lower order); `ImageToImage.startTable`.
        public var starts: [Int: SamplerTable]? = nil
    }

    /// Image-to-image and inpainting (the manifest's `image`): the modes the bundle runs and its encoder's posterior
    /// (`gaussian`: a latent is `mean + std * eps`, eps drawn from the seed's generator; `deterministic`: the mean).
    public struct ImageModes: Sendable, Equatable {
        /// Of `BundleManifest.imageModes`, at least one.
        public var modes: [String]
        /// One of `BundleManifest.encoderPosteriors`.
        public var encoderPosterior: String
        /// One of `BundleManifest.imageDenoisers` ("standard" where the manifest does not say).
        public var denoiser: String

        public init(modes: [String], encoderPosterior: String, denoiser: String = "standard") {
            self.modes = modes
            self.encoderPosterior = encoderPosterior
            self.denoiser = denoiser
        }

        /// An inpainting UNet (docs/bundle.md, "An inpainting UNet"): its `unet` takes `mask` (B, 1, h, w) and
        /// `masked_image_latents` (B, C, h, w) after `encoder_hidden_states`; the bundle runs inpainting alone, with
        /// no blend after the steps.
        public var inpaintingDenoiser: Bool { denoiser == "inpainting" }
    }

    public struct Guidance: Sendable {
        /// "classifier_free" (UNet batch rows [uncond, cond]) or "embedding" (LCM: an extra UNet input).
        public var type: String
        public var defaultScale: Double
        public var unconditionalPrompt: String?
        /// The embedding input's name (type "embedding").
        public var input: String?
        public var embeddingDim: Int?
        public var defaultEmbedding: [Double]?
    }

    /// What the model is: `role` one of `roles` (teacher, student); for a student, the `method` that made it
    /// (progressive, lcm, slim, or one from a newer mobilediff: informational); `name`, what it was exported from.
    public struct ModelInfo: Sendable, Equatable {
        public var role: String
        public var method: String?
        public var name: String?

        public init(role: String, method: String? = nil, name: String? = nil) {
            self.role = role
            self.method = method
            self.name = name
        }
    }

    /// A sampling plan: a sampler table name, steps (>= 1) and guidance scale (>= 0).
    public struct DefaultSampling: Sendable, Equatable {
        public var sampler: String
        public var steps: Int
        public var guidance: Double

        public init(sampler: String, steps: Int, guidance: Double) {
            self.sampler = sampler
            self.steps = steps
            self.guidance = guidance
        }
    }

    /// The sampler table for `sampler` with `steps` steps.
    public func samplerTable(_ sampler: String, steps: Int) throws -> SamplerTable {
        if let table = samplers.first(where: { $0.name == sampler && $0.steps == steps }) { return table }
        throw MobileDiffError.samplerUnavailable(sampler: sampler, steps: steps,
                                                 available: samplers.map { "\($0.name):\($0.steps)" })
    }

    /// The component `name`, or `componentUnavailable`.
    public func component(_ name: String) throws -> Component {
        guard let component = components[name] else {
            throw MobileDiffError.componentUnavailable(component: name, target: "any", available: components.keys.sorted())
        }
        return component
    }
}

extension BundleManifest {
    /// Reads `<bundle>/manifest.json`: checks the format name and refuses another format version before reading
    /// anything else (a newer manifest may not read with this engine's types), then reads every field it uses.
    public static func load(bundle: URL) throws -> BundleManifest {
        let url = bundle.appendingPathComponent("manifest.json")
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: bundle.path, isDirectory: &isDirectory), isDirectory.boolValue,
              FileManager.default.fileExists(atPath: url.path) else {
            throw MobileDiffError.bundleNotFound(path: bundle.path)
        }
        let data: Data
        do { data = try Data(contentsOf: url) } catch {
            throw MobileDiffError.invalidManifest(path: url.path, reason: "\(error)")
        }
        return try BundleManifest(ManifestValue.parse(data, file: url.path))
    }

    init(_ root: ManifestObject) throws {
        let format = root.fields["format"] ?? .null
        guard case .string(BundleManifest.format) = format else {
            throw MobileDiffError.invalidManifest(path: root.file, reason: "format is \(format.described), expected \(BundleManifest.format)")
        }
        let version = root.fields["format_version"] ?? .null
        guard case .integer(let formatVersion) = version, (1...BundleManifest.supportedFormatVersion).contains(formatVersion) else {
            if case .integer(let newer) = version, newer > BundleManifest.supportedFormatVersion {
                throw MobileDiffError.unsupportedManifestVersion(found: newer, supported: BundleManifest.supportedFormatVersion)
            }
            let found = root.has("format_version") ? "format version \(version.described)" : "no format version (format_version)"
            throw MobileDiffError.invalidManifest(
                path: root.file, reason: "has \(found); this engine reads versions 1...\(BundleManifest.supportedFormatVersion)")
        }
        self.format = BundleManifest.format
        self.formatVersion = formatVersion
        // a tokenizer this engine cannot run (format 2's unigram) is refused as such, before any field it lacks
        if case .object(let fields)? = root.fields["tokenizer"] {
            try TokenizerInfo.requireClipBPE(ManifestObject(fields: fields, path: root.field("tokenizer"), file: root.file))
        }
        geometry = try Geometry(root.object("geometry"))
        tokenizer = try TokenizerInfo(root.object("tokenizer"))
        let components = try root.object("components")
        var byName: [String: Component] = [:]
        for name in BundleManifest.componentNames { byName[name] = try Component(components.object(name)) }
        if let encoder = try components.optionalObject(BundleManifest.imageEncoderName) {
            byName[BundleManifest.imageEncoderName] = try Component(encoder)
        }
        self.components = byName
        samplers = try root.objects("samplers").map(SamplerTable.init)
        guard !samplers.isEmpty else { throw root.error("samplers", "no sampler tables (a bundle has at least one)") }
        guidance = try Guidance(root.object("guidance"))
        predictionType = try root.optionalString("prediction_type")
        model = try root.optionalObject("model").map(ModelInfo.init)
        defaultSampling = try root.optionalObject("default_sampling").map(DefaultSampling.init)
        image = try root.optionalObject("image").map(ImageModes.init)
        adapters = try root.optionalObject("adapters").map { try Adapters($0, components: byName) }
        if masksText, let unet = byName["unet"] {
            // the mask goes to the denoiser by position, as the reference passes it: right after the text features
            let names = unet.inputs.map(\.name)
            guard names.count > 3, names[3] == BundleManifest.denoiserTextMaskInput else {
                throw root.error("components.unet.inputs", "takes \(names.joined(separator: ", ")): a text encoder that takes \(BundleManifest.textMaskInput) needs a denoiser that takes \(BundleManifest.denoiserTextMaskInput) as input 4, after encoder_hidden_states")
            }
        }
        if let image {
            // what the image modes run on: the encoder, and every table's noising rows
            guard byName[BundleManifest.imageEncoderName] != nil else {
                throw root.error("components.\(BundleManifest.imageEncoderName)",
                                 "missing (image modes \(image.modes.joined(separator: ", ")) need the VAE encoder)")
            }
            if image.inpaintingDenoiser, let unet = byName["unet"] {
                // an inpainting UNet's two image inputs (after encoder_hidden_states, as diffusers concatenates them)
                let names = unet.inputs.map(\.name)
                if let missing = BundleManifest.inpaintingInputs.first(where: { !names.contains($0) }) {
                    throw root.error("components.unet.inputs", "has no \(missing) (an inpainting denoiser takes \(BundleManifest.inpaintingInputs.joined(separator: " and ")); it has \(names.joined(separator: ", ")))")
                }
                // after encoder_hidden_states (and the text mask, and timestep_cond)
                let at = 3 + (masksText ? 1 : 0) + (guidance.type == "embedding" ? 1 : 0)
                guard Array(names.dropFirst(at).prefix(2)) == BundleManifest.inpaintingInputs else {
                    throw root.error("components.unet.inputs", "takes \(names.joined(separator: ", ")): an inpainting denoiser takes \(BundleManifest.inpaintingInputs.joined(separator: " and ")) as inputs \(at + 1) and \(at + 2)")
                }
            }
            if let i = samplers.firstIndex(where: { $0.addNoise?.count != $0.steps }) {
                let table = samplers[i]
                throw root.error("samplers[\(i)].add_noise", table.addNoise == nil
                    ? "missing (image modes need every sampler table's add_noise rows; \(table.name):\(table.steps) has none)"
                    : "has \(table.addNoise!.count) rows for \(table.steps) steps (\(table.name):\(table.steps))")
            }
        }
    }
}

extension BundleManifest.Geometry {
    init(_ o: ManifestObject) throws {
        height = try o.int("height")
        width = try o.int("width")
        latentChannels = try o.int("latent_channels")
        latentHeight = try o.int("latent_height")
        latentWidth = try o.int("latent_width")
        scalingFactor = try o.double("scaling_factor")
        shiftFactor = try o.optionalDouble("shift_factor")
        vaeScaleFactor = try o.optional("vae_scale_factor") { try o.atLeast(1, $0, o.int) }
    }
}

extension BundleManifest.TokenizerInfo {
    /// The tokenizer of every format-1 bundle (`tokenizer.kind` absent): CLIP BPE of vocab.json + merges.txt.
    public static let clipBPE = "clip-bpe"

    /// Refuses, in one line naming it, a `tokenizer.kind` other than "clip-bpe" (format 2's "unigram", a SentencePiece
    /// tokenizer without bos_id, for transformer bundles that run in mobilediff's Python engine only).
    static func requireClipBPE(_ o: ManifestObject) throws {
        guard let kind = try o.optionalString("kind"), kind != clipBPE else { return }
        throw MobileDiffError.invalidManifest(
            path: o.file, reason: "tokenizer.kind \(kind.debugDescription) is not supported by this app: it runs CLIP BPE bundles "
                + "(format 2 transformer bundles run in mobilediff's Python engine only)")
    }

    init(_ o: ManifestObject) throws {
        files = try o.strings("files")
        maxLength = try o.int("max_length")
        bosId = try o.int32("bos_id")
        eosId = try o.int32("eos_id")
        padId = try o.int32("pad_id")
        if let sums = try o.optionalObject("file_sha256") {
            for key in sums.fields.keys.sorted() { fileSha256[key] = try sums.string(key) }
        }
    }
}

extension BundleManifest.TensorSpec {
    init(_ o: ManifestObject) throws {
        name = try o.string("name")
        dtype = try o.string("dtype")
        staticShape = try o.optional("static_shape", o.ints)
        if case .array(let dims)? = o.fields["shape"] {
            shape = dims.map { dim -> String in
                switch dim {
                case .string(let name): return name
                case .integer(let size): return String(size)
                default: return dim.described
                }
            }
        }
    }
}

extension BundleManifest.ComponentFile {
    init(_ o: ManifestObject) throws {
        target = try o.string("target")
        precision = try o.string("precision")
        path = try o.string("path")
        sha256 = try o.string("sha256")
        sizeBytes = try o.optionalInt("size_bytes")
        externalData = try o.optional("external_data", o.objects)?.map(ExternalData.init)
    }
}

extension BundleManifest.ComponentFile.ExternalData {
    init(_ o: ManifestObject) throws {
        path = try o.string("path")
        sha256 = try o.string("sha256")
    }
}

extension BundleManifest.Component {
    init(_ o: ManifestObject) throws {
        inputs = try o.objects("inputs").map(BundleManifest.TensorSpec.init)
        outputs = try o.objects("outputs").map(BundleManifest.TensorSpec.init)
        files = try o.objects("files").map(BundleManifest.ComponentFile.init)
        var dims: [String: Int] = [:]
        for (name, value) in try o.optionalObject("dims")?.fields ?? [:] {
            if case .integer(let size) = value { dims[name] = size }
        }
        self.dims = dims
    }
}

extension BundleManifest.SamplerTable {
    init(_ o: ManifestObject) throws {
        name = try o.string("name")
        steps = try o.int("steps")
        initNoiseSigma = try o.double("init_noise_sigma")
        timesteps = try o.doubles("timesteps")
        inputScale = try o.doubles("input_scale")
        latentCoef = try o.rows("latent_coef")
        outputCoef = try o.rows("output_coef")
        noiseCoef = try o.doubles("noise_coef")
        addNoise = try o.optional("add_noise") { key in
            try o.checked(key, o.rows) { rows in
                rows.firstIndex { $0.count != 2 }.map { "row \($0) has \(rows[$0].count) numbers, expected [image_coef, noise_coef]" }
            }
        }
        if let starts = try o.optionalObject("starts") {
            var byStart: [Int: BundleManifest.SamplerTable] = [:]
            for key in starts.fields.keys.sorted() {
                guard let start = Int(key), (1..<steps).contains(start) else {
                    throw o.error(starts.field(key), "a start is a step in 1...\(steps - 1) of the \(steps)-step table")
                }
                byStart[start] = try BundleManifest.SamplerTable(start: starts.object(key), name: name, steps: steps - start)
            }
            self.starts = byStart
        }
    }

    /// A table of `starts`: the fields of a table but its `name` (the parent's), `steps` the run's (`steps`), and
    /// every per-step list one entry per step.
    init(start o: ManifestObject, name: String, steps: Int) throws {
        self.name = name
        self.steps = try o.checked("steps", o.int) { $0 == steps ? nil : "must be \(steps) (the steps left after the start), got \($0)" }
        initNoiseSigma = try o.double("init_noise_sigma")
        func perStep<T>(_ key: String, _ read: (String) throws -> [T]) throws -> [T] {
            try o.checked(key, read) { $0.count == steps ? nil : "has \($0.count) entries for \(steps) steps" }
        }
        timesteps = try perStep("timesteps", o.doubles)
        inputScale = try perStep("input_scale", o.doubles)
        latentCoef = try perStep("latent_coef", o.rows)
        outputCoef = try perStep("output_coef", o.rows)
        noiseCoef = try perStep("noise_coef", o.doubles)
    }
}

extension BundleManifest.ImageModes {
    init(_ o: ManifestObject) throws {
        modes = try o.checked("modes", o.strings) { modes in
            if modes.isEmpty { return "is empty (known: \(BundleManifest.imageModes.joined(separator: ", ")))" }
            return modes.first { !BundleManifest.imageModes.contains($0) }.map {
                "unknown image mode \($0.debugDescription) (known: \(BundleManifest.imageModes.joined(separator: ", ")))"
            }
        }
        encoderPosterior = try o.oneOf(BundleManifest.encoderPosteriors, "encoder_posterior", "encoder posterior")
        denoiser = try o.has("denoiser") ? o.oneOf(BundleManifest.imageDenoisers, "denoiser", "image denoiser") : "standard"
        if denoiser == "inpainting" && modes != ["inpaint"] {
            throw o.error(o.field("modes"), "an inpainting denoiser runs the inpaint mode alone, not \(modes.joined(separator: ", "))")
        }
    }
}

extension BundleManifest.Guidance {
    init(_ o: ManifestObject) throws {
        type = try o.oneOf(BundleManifest.guidanceTypes, "type", "guidance type")
        defaultScale = try o.atLeast(0, "default_scale", o.double)
        unconditionalPrompt = try o.optionalString("unconditional_prompt")
        input = try o.optionalString("input")
        embeddingDim = try o.optionalInt("embedding_dim")
        if type == "embedding" {
            // an embedding names the UNet input it feeds and its width; classifier-free guidance has neither
            _ = try o.checked("input", o.string) { $0.isEmpty ? "is empty (an embedding names the UNet input it feeds)" : nil }
            _ = try o.atLeast(1, "embedding_dim", o.int)
        }
        defaultEmbedding = try o.optionalDoubles("default_embedding")
    }
}

extension BundleManifest.ModelInfo {
    init(_ o: ManifestObject) throws {
        role = try o.oneOf(BundleManifest.roles, "role", "role")
        method = try o.optionalString("method")
        name = try o.optionalString("name")
    }
}

extension BundleManifest.DefaultSampling {
    init(_ o: ManifestObject) throws {
        sampler = try o.string("sampler")
        steps = try o.atLeast(1, "steps", o.int)
        guidance = try o.atLeast(0, "guidance", o.double)
    }
}
