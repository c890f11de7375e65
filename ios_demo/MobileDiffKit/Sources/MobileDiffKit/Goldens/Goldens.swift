import Foundation

/// The golden vectors `mobilediff goldens --bundle B --out DIR` writes (DIR/goldens.json + goldens.safetensors):
/// token ids, initial noise per seed, and for each plan every component call's inputs and outputs in call
/// order, the latent after every step, the decoder output and the final image. Shared with the Android engine;
/// regenerate them with that command (or `python -m mobilediff.fixtures DIR`) after the model changes.
public struct Goldens: Sendable {
    public struct TokenizerCase: Decodable, Sendable {
        public var prompt: String
        public var ids: [Int32]
    }

    public struct NoiseCase: Decodable, Sendable {
        public var seed: UInt64
        public var shape: [Int]
        public var tensor: String
    }

    public struct Call: Decodable, Sendable {
        public var component: String
        public var inputs: [String: String]
        public var outputs: [String: String]
    }

    public struct Plan: Decodable, Sendable {
        public var name: String
        public var sampler: String
        public var steps: Int
        public var guidance: Double
        public var prompt: String
        public var seed: UInt64
        public var calls: [Call]
        public var freshNoise: [String]?
        public var latents: [String]
        public var decoded: String
        public var image: String
    }

    public struct Document: Decodable, Sendable {
        public var format: String
        public var formatVersion: Int
        public var bundleManifestSha256: String?
        public var runtime: String?
        public var tokenizer: [TokenizerCase]
        public var noise: [NoiseCase]
        public var plans: [Plan]
    }

    public static let format = "mobilediff.goldens"
    public static let supportedFormatVersion = 1

    public let document: Document
    public let tensors: SafetensorsFile

    public init(directory: URL) throws {
        let json = directory.appendingPathComponent("goldens.json")
        guard let data = try? Data(contentsOf: json) else { throw MobileDiffError.fileMissing(path: json.path) }
        let decoder = JSONDecoder()
        decoder.keyDecodingStrategy = .convertFromSnakeCase
        do { document = try decoder.decode(Document.self, from: data) } catch {
            throw MobileDiffError.goldens("cannot read \(json.path): \(error)")
        }
        guard document.format == Goldens.format, document.formatVersion <= Goldens.supportedFormatVersion else {
            throw MobileDiffError.goldens("\(json.path) is \(document.format) version \(document.formatVersion); this engine reads \(Goldens.format) 1...\(Goldens.supportedFormatVersion)")
        }
        tensors = try SafetensorsFile(url: directory.appendingPathComponent("goldens.safetensors"))
    }
}

/// Comparison measures, as the Python side defines them (mobilediff/parity.py `psnr`).
public enum Compare {
    /// PSNR in dB with the reference's peak-to-peak range as the signal range (+inf for an exact match);
    /// `peak` overrides the range (images: 2 for [-1, 1] floats, 255 for bytes).
    public static func psnr(_ got: [Float], _ reference: [Float], peak: Double? = nil) -> Double {
        precondition(got.count == reference.count, "compared tensors differ in size: \(got.count) vs \(reference.count)")
        var squared = 0.0
        for (g, r) in zip(got, reference) { squared += (Double(g) - Double(r)) * (Double(g) - Double(r)) }
        let mse = squared / Double(max(reference.count, 1))
        var range = peak ?? Double((reference.max() ?? 0) - (reference.min() ?? 0))
        if range == 0 { range = 1 }
        return mse == 0 ? .infinity : 10 * log10(range * range / mse)
    }

    public static func maxAbsError(_ got: [Float], _ reference: [Float]) -> Double {
        zip(got, reference).reduce(0.0) { max($0, abs(Double($1.0) - Double($1.1))) }
    }
}
