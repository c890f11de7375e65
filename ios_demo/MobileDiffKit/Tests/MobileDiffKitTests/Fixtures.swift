import Foundation
import XCTest
@testable import MobileDiffKit

/// The fixtures the Python side writes for the app tests (`python -m mobilediff.fixtures DIR`, run by
/// ios_demo/scripts/test.sh): DIR/<name>/bundle, DIR/<name>/goldens, DIR/<name>/reference/<runtime>_seed<S>.* (one
/// set per runtime the fixture's bundle is exported for: DIR/index.json's `runtimes`) for name in default,
/// progressive-4, lcm, lcm-48x80, emoji-lcm, inpainting-unet (an inpainting UNet's bundle: image references only, no
/// goldens, no text-to-image references) and dit (a format-2 transformer bundle whose text encoder and denoiser take
/// the caption's padding mask: no goldens). Tests that need them skip when MOBILEDIFF_FIXTURES is unset (test.sh
/// always sets it, and fails on any skip).
enum Fixtures {
    static var root: URL? {
        ProcessInfo.processInfo.environment["MOBILEDIFF_FIXTURES"].map { URL(fileURLWithPath: $0) }
    }

    static func requireRoot() throws -> URL {
        guard let root else { throw XCTSkip("MOBILEDIFF_FIXTURES is not set (ios_demo/scripts/test.sh sets it)") }
        return root
    }

    /// Names of the fixtures present (folders holding bundle/manifest.json), sorted.
    static func names() throws -> [String] {
        let root = try requireRoot()
        let entries = try FileManager.default.contentsOfDirectory(atPath: root.path)
        return entries.filter { FileManager.default.fileExists(atPath: root.appendingPathComponent("\($0)/bundle/manifest.json").path) }.sorted()
    }

    static func bundle(_ name: String) throws -> URL {
        let url = try requireRoot().appendingPathComponent(name).appendingPathComponent("bundle")
        guard FileManager.default.fileExists(atPath: url.appendingPathComponent("manifest.json").path) else {
            throw XCTSkip("fixture \(name) has no bundle at \(url.path)")
        }
        return url
    }

    /// Whether fixture `name` has goldens: not where DIR/index.json records `"goldens": null` (a model that cannot
    /// sample text-to-image, an inpainting UNet's), nor where the folder holds none.
    static func hasGoldens(_ name: String) throws -> Bool {
        let root = try requireRoot()
        if let data = try? Data(contentsOf: root.appendingPathComponent("index.json")),
           let index = try JSONSerialization.jsonObject(with: data) as? [String: Any],
           let entry = (index["models"] as? [String: Any])?[name] as? [String: Any],
           entry.keys.contains("goldens"), entry["goldens"] is NSNull {
            return false
        }
        return FileManager.default.fileExists(atPath: root.appendingPathComponent("\(name)/goldens/goldens.json").path)
    }

    /// The runtimes fixture `name`'s bundle is exported for and Python made references on (DIR/index.json's
    /// `runtimes`; ["onnx"] where the index does not list them).
    static func runtimes(_ name: String) throws -> [String] {
        let root = try requireRoot()
        guard let data = try? Data(contentsOf: root.appendingPathComponent("index.json")),
              let index = try JSONSerialization.jsonObject(with: data) as? [String: Any],
              let entry = (index["models"] as? [String: Any])?[name] as? [String: Any],
              let runtimes = entry["runtimes"] as? [String], !runtimes.isEmpty else { return ["onnx"] }
        return runtimes
    }

    /// The fixtures whose bundles run text-to-image (all but an inpainting UNet's, which runs inpainting alone).
    static func textToImageNames() throws -> [String] {
        try names().filter { try BundleManifest.load(bundle: try bundle($0)).supports("txt2img") }
    }

    static func goldens(_ name: String) throws -> Goldens {
        try Goldens(directory: try requireRoot().appendingPathComponent(name).appendingPathComponent("goldens"))
    }

    /// What Python's `mobilediff generate --bundle` made for one seed: reference/<runtime>_seed<S>.json
    /// (prompt, sampler, steps, guidance, ms) and the raw image (.safetensors, "image": (H, W, 3) in [-1, 1]).
    struct Reference: Decodable {
        var runtime: String
        var seed: UInt64
        var prompt: String
        var sampler: String
        var steps: Int
        var guidance: Double
        var ms: Double?
        var raw: String
    }

    static func reference(_ name: String, runtime: String = "onnx", seed: Int) throws -> (Reference, [Float]) {
        let folder = try requireRoot().appendingPathComponent(name)
        let json = folder.appendingPathComponent("reference/\(runtime)_seed\(seed).json")
        guard let data = try? Data(contentsOf: json) else { throw XCTSkip("fixture \(name) has no \(json.path)") }
        let reference = try JSONDecoder().decode(Reference.self, from: data)
        let file = try SafetensorsFile(url: folder.appendingPathComponent(reference.raw))
        let key = file.entries["image"] != nil ? "image" : file.entries.keys.sorted()[0]
        let tensor = try file.tensor(key)
        let shape = tensor.shape
        if shape.last == 3 { return (reference, tensor.floats) }  // (…, H, W, 3)
        return (reference, ImageConversion.hwcClamped(chw: tensor.floats, height: shape[shape.count - 2], width: shape[shape.count - 1]))
    }

    /// An image-to-image or inpainting reference of a fixture (a row of DIR/index.json with a `mode`): Python's
    /// `generate --bundle --init-image [--mask] --strength` image from the fixture's init.png (and mask.png).
    struct ImageReference: Decodable {
        var runtime: String
        var seed: UInt64
        var prompt: String
        var sampler: String
        var steps: Int
        var guidance: Double
        var mode: String
        var strength: Double
        var initImage: String
        var mask: String?
        var ms: Double?
        var raw: String

        enum CodingKeys: String, CodingKey {
            case runtime, seed, prompt, sampler, steps, guidance, mode, strength, mask, ms, raw
            case initImage = "init_image"
        }
    }

    /// The image references of fixture `name` (none for a fixture exported without image modes), each with
    /// Python's raw image (H, W, 3) in [-1, 1].
    static func imageReferences(_ name: String) throws -> [(ImageReference, [Float])] {
        let root = try requireRoot()
        let index = try JSONSerialization.jsonObject(with: Data(contentsOf: root.appendingPathComponent("index.json"))) as? [String: Any]
        let entry = (index?["models"] as? [String: Any])?[name] as? [String: Any]
        let rows = (entry?["references"] as? [[String: Any]] ?? []).filter { $0["mode"] != nil }
        return try rows.map { row in
            let reference = try JSONDecoder().decode(ImageReference.self, from: JSONSerialization.data(withJSONObject: row))
            let tensor = try SafetensorsFile(url: root.appendingPathComponent(name).appendingPathComponent(reference.raw)).tensor("image")
            return (reference, tensor.floats)
        }
    }

    /// A reference made with the bundle's run-time adapters switched on (a row of DIR/index.json with `adapters`):
    /// Python's `BundleRunner.set_adapters(mix)` then `generate` at the bundle's default plan, and the packed
    /// `lora_weights` vectors it fed (`lora_vectors`: safetensors, one key per slotted component).
    struct AdapterReference: Decodable {
        var runtime: String
        var seed: UInt64
        var prompt: String
        var sampler: String
        var steps: Int
        var guidance: Double
        var adapters: [Choice]
        var ms: Double?
        var raw: String
        var loraVectors: String

        /// One `[name, scale]` pair.
        struct Choice: Decodable {
            var name: String
            var scale: Double

            init(from decoder: any Decoder) throws {
                var pair = try decoder.unkeyedContainer()
                name = try pair.decode(String.self)
                scale = try pair.decode(Double.self)
            }
        }

        var mix: [AdapterChoice] { adapters.map { AdapterChoice($0.name, scale: $0.scale) } }
        var label: String { "\(runtime) seed \(seed) " + mix.map(\.description).joined(separator: " + ") }

        enum CodingKeys: String, CodingKey {
            case runtime, seed, prompt, sampler, steps, guidance, adapters, ms, raw
            case loraVectors = "lora_vectors"
        }
    }

    /// The adapter references of fixture `name` (none for a fixture exported without run-time adapters), each with
    /// Python's raw image (H, W, 3) in [-1, 1] and its packed vectors per component.
    static func adapterReferences(_ name: String) throws -> [(reference: AdapterReference, image: [Float], vectors: [String: [Float]])] {
        let root = try requireRoot()
        let index = try JSONSerialization.jsonObject(with: Data(contentsOf: root.appendingPathComponent("index.json"))) as? [String: Any]
        let entry = (index?["models"] as? [String: Any])?[name] as? [String: Any]
        let rows = (entry?["references"] as? [[String: Any]] ?? []).filter { $0["adapters"] != nil }
        return try rows.map { row in
            let reference = try JSONDecoder().decode(AdapterReference.self, from: JSONSerialization.data(withJSONObject: row))
            let folder = root.appendingPathComponent(name)
            let image = try SafetensorsFile(url: folder.appendingPathComponent(reference.raw)).tensor("image").floats
            let file = try SafetensorsFile(url: folder.appendingPathComponent(reference.loraVectors))
            let vectors = try Dictionary(uniqueKeysWithValues: file.entries.keys.map { ($0, try file.tensor($0).floats) })
            return (reference, image, vectors)
        }
    }

    /// A writable copy of a fixture's bundle (for the error tests, which damage it).
    static func bundleCopy(_ name: String) throws -> URL {
        let source = try bundle(name)
        let copy = FileManager.default.temporaryDirectory.appendingPathComponent("mobilediff-\(UUID().uuidString)")
        try FileManager.default.copyItem(at: source, to: copy)
        return copy
    }
}
