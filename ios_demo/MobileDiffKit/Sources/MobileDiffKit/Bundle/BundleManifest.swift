import Foundation

/// `manifest.json` of a mobilediff bundle, as written by `mobilediff export` (mobilediff/bundle.py).
///
/// Only the fields an app needs are decoded; fields are only ever added to the format, so unknown ones are
/// ignored. Keys are the manifest's snake_case names (decoded with `.convertFromSnakeCase`).
public struct BundleManifest: Decodable, Sendable {
    public static let format = "mobilediff.bundle"
    /// The newest format version this engine reads.
    public static let supportedFormatVersion = 1

    public var format: String
    public var formatVersion: Int
    public var geometry: Geometry
    public var tokenizer: TokenizerInfo
    public var components: [String: Component]
    public var samplers: [SamplerTable]
    public var guidance: Guidance
    public var predictionType: String?
    /// What the model is (teacher or distilled student); absent in bundles exported before it was added.
    public var model: ModelInfo?
    /// The plan an app uses when the user sets nothing; absent in older bundles (then: ddim, 50 steps, the
    /// guidance's default scale — see `Pipeline.Configuration.defaults(for:)`).
    public var defaultSampling: DefaultSampling?

    public struct Geometry: Decodable, Sendable {
        public var height: Int
        public var width: Int
        public var latentChannels: Int
        public var latentHeight: Int
        public var latentWidth: Int
        /// Decoder input = latents / scalingFactor + shiftFactor.
        public var scalingFactor: Double
        public var shiftFactor: Double?

        public var latentShape: [Int] { [1, latentChannels, latentHeight, latentWidth] }
    }

    public struct TokenizerInfo: Decodable, Sendable {
        public var files: [String]
        public var maxLength: Int
        public var bosId: Int32
        public var eosId: Int32
        public var padId: Int32
    }

    /// One tensor a component takes or returns. `shape` mixes named dims ("batch") and sizes;
    /// `staticShape` has the sizes of the exported graph.
    public struct TensorSpec: Decodable, Sendable {
        public var name: String
        public var dtype: String
        public var staticShape: [Int]?
    }

    public struct ComponentFile: Decodable, Sendable {
        public var target: String
        public var precision: String
        public var path: String
        public var sha256: String
        public var sizeBytes: Int?
        public var externalData: [ExternalData]?

        public struct ExternalData: Decodable, Sendable {
            public var path: String
            public var sha256: String
        }
    }

    public struct Component: Decodable, Sendable {
        public var inputs: [TensorSpec]
        public var outputs: [TensorSpec]
        /// Static dims of the exported graph (e.g. `batch`); only integer-valued entries are kept.
        public var dims: [String: Int]
        public var files: [ComponentFile]

        enum CodingKeys: String, CodingKey { case inputs, outputs, dims, files }

        public init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            inputs = try c.decode([TensorSpec].self, forKey: .inputs)
            outputs = try c.decode([TensorSpec].self, forKey: .outputs)
            files = try c.decode([ComponentFile].self, forKey: .files)
            let raw = try c.decodeIfPresent([String: LenientInt].self, forKey: .dims) ?? [:]
            dims = raw.compactMapValues(\.value)
        }

        /// The graph's static batch, if it was exported with one.
        public var staticBatch: Int? { dims["batch"] }
    }

    /// The sampler as data (mobilediff/sampler_table.py): for step i,
    /// `latent_{i+1} = Σ_k latentCoef[i][k]·latent_{i-k} + Σ_k outputCoef[i][k]·output_{i-k} + noiseCoef[i]·fresh noise`
    /// where `output_i = denoiser(inputScale[i]·latent_i, timesteps[i])`, and `latent_0 = initNoiseSigma·noise`.
    public struct SamplerTable: Decodable, Sendable {
        public var name: String
        public var steps: Int
        public var initNoiseSigma: Double
        public var timesteps: [Double]
        public var inputScale: [Double]
        public var latentCoef: [[Double]]
        public var outputCoef: [[Double]]
        public var noiseCoef: [Double]
    }

    public struct Guidance: Decodable, Sendable {
        /// "classifier_free" (UNet batch rows [uncond, cond]) or "embedding" (LCM: an extra UNet input).
        public var type: String
        public var defaultScale: Double
        public var unconditionalPrompt: String?
        /// The embedding input's name (type "embedding").
        public var input: String?
        public var embeddingDim: Int?
        public var defaultEmbedding: [Double]?
    }

    public struct ModelInfo: Decodable, Sendable {
        public var role: String?
        public var method: String?
        public var name: String?
    }

    public struct DefaultSampling: Decodable, Sendable {
        public var sampler: String
        public var steps: Int
        public var guidance: Double?
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

/// An integer that decodes to nil (instead of failing) when the JSON value is something else.
struct LenientInt: Decodable {
    var value: Int?
    init(from decoder: any Decoder) throws {
        value = try? decoder.singleValueContainer().decode(Int.self)
    }
}

extension BundleManifest {
    /// Reads `<bundle>/manifest.json`: checks the format name and refuses a newer format version before
    /// decoding anything else (a newer manifest may not decode with this engine's types).
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
        let decoder = JSONDecoder()
        decoder.keyDecodingStrategy = .convertFromSnakeCase

        struct Header: Decodable { var format: String?; var formatVersion: Int? }
        let header: Header
        do { header = try decoder.decode(Header.self, from: data) } catch {
            throw MobileDiffError.invalidManifest(path: url.path, reason: "not JSON (\(error))")
        }
        guard header.format == BundleManifest.format else {
            throw MobileDiffError.invalidManifest(path: url.path, reason: "format is \(header.format ?? "missing"), expected \(BundleManifest.format)")
        }
        guard let version = header.formatVersion, version >= 1 else {
            throw MobileDiffError.invalidManifest(path: url.path, reason: "format_version is missing or below 1")
        }
        guard version <= supportedFormatVersion else {
            throw MobileDiffError.unsupportedManifestVersion(found: version, supported: supportedFormatVersion)
        }
        do { return try decoder.decode(BundleManifest.self, from: data) } catch {
            throw MobileDiffError.invalidManifest(path: url.path, reason: "\(error)")
        }
    }
}
