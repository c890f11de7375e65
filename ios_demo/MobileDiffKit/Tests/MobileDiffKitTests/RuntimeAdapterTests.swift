import Foundation
import XCTest
@testable import MobileDiffKit

/// Run-time LoRA adapters (the manifest's `adapters`, docs/bundle.md): the packing rule on closed-form numbers; the
/// vectors packed for every adapter reference of the fixtures against the ones Python fed (`lora_vectors`, <= 1e-6);
/// those references end to end through ONNX Runtime from the `.ort` and the `.onnx` files (>= 40 dB), switching
/// without a reload; the refusals of a mix, a manifest record and an adapter file, each one line; the command line's
/// `--lora`. Regenerate the references with `python -m mobilediff.fixtures DIR` (the `default` fixture holds the
/// adapters `swap-red-blue`, UNet only, rank 4, and `fixture-random`, UNet + text encoder, rank 2; slots rank 6).
final class RuntimeAdapterTests: XCTestCase {
    static let vectorTolerance: Float = 1e-6

    // MARK: the packing rule

    /// Two layers, R = 3: "a" (in 2, out 1) at 0 / 6, "b" (in 1, out 2) at 9 / 12; 18 values.
    private static let slots = BundleManifest.Slots(rank: 3, size: 18, layers: [
        .init(module: "a", inFeatures: 2, outFeatures: 1, downOffset: 0, upOffset: 6),
        .init(module: "b", inFeatures: 1, outFeatures: 2, downOffset: 9, upOffset: 12),
    ])
    /// Rank 2 on both layers of the UNet.
    private static let first = AdapterWeights(name: "first", layers: ["unet": [
        "a": .init(rank: 2, down: [1, 2, 3, 4], up: [5, 6]),
        "b": .init(rank: 2, down: [7, 8], up: [9, 10, 11, 12]),
    ]])
    /// Rank 1 on layer "b" of the UNet, rank 1 on the text encoder.
    private static let second = AdapterWeights(name: "second", layers: [
        "unet": ["b": .init(rank: 1, down: [13], up: [14, 15])],
        "text_encoder": ["a": .init(rank: 1, down: [1, 1], up: [2])],
    ])

    func testPackingRuleOnClosedFormNumbers() throws {
        // first fills slots 0-1, second slot 2 at half scale; "a" keeps zeros in slot 2
        XCTAssertEqual(try RuntimeAdapters.pack(Self.slots, component: "unet", mix: [(Self.first, 1), (Self.second, 0.5)]),
                       [1, 2, 3, 4, 0, 0, /* up a */ 5, 6, 0, /* down b */ 7, 8, 13, /* up b */ 9, 10, 7, 11, 12, 7.5])
        // the other order: second in slot 0 (times 2), first in slots 1-2
        XCTAssertEqual(try RuntimeAdapters.pack(Self.slots, component: "unet", mix: [(Self.second, 2), (Self.first, 1)]),
                       [0, 0, 1, 2, 3, 4, /* up a */ 0, 5, 6, /* down b */ 13, 7, 8, /* up b */ 28, 9, 10, 30, 11, 12])
        // an adapter that does not adapt a component fills none of its slots: second starts at 0 there
        XCTAssertEqual(Self.first.rank(in: "text_encoder"), 0)
        XCTAssertEqual(try RuntimeAdapters.pack(Self.slots, component: "text_encoder", mix: [(Self.first, 1), (Self.second, 3)]),
                       [1, 1, 0, 0, 0, 0, 6, 0, 0] + [Float](repeating: 0, count: 9))
        XCTAssertEqual(try RuntimeAdapters.pack(Self.slots, component: "unet", mix: []), [Float](repeating: 0, count: 18))
        // more rank than the slots: refused, naming the need and the component's slots
        let two = BundleManifest.Slots(rank: 2, size: 12, layers: [
            .init(module: "a", inFeatures: 2, outFeatures: 1, downOffset: 0, upOffset: 4),
            .init(module: "b", inFeatures: 1, outFeatures: 2, downOffset: 6, upOffset: 8),
        ])
        XCTAssertThrowsError(try RuntimeAdapters.pack(two, component: "unet", mix: [(Self.first, 1), (Self.second, 1)])) {
            XCTAssertEqual("\($0)", "these adapters together need 3 rank slots; the bundle's unet has 2 (export with a larger --lora-rank to mix them)")
        }
    }

    func testChoiceParsing() throws {
        XCTAssertEqual(try AdapterChoice.parse("swap-red-blue"), AdapterChoice("swap-red-blue", scale: 1))
        XCTAssertEqual(try AdapterChoice.parse("swap-red-blue:0.6"), AdapterChoice("swap-red-blue", scale: 0.6))
        XCTAssertEqual(try AdapterChoice.parse("a:b:-1.5"), AdapterChoice("a:b", scale: -1.5))  // the last ':'
        XCTAssertThrowsError(try AdapterChoice.parse("swap-red-blue:lots")) {
            XCTAssertEqual("\($0)", "--lora swap-red-blue:lots: the scale after ':' must be a number, got \"lots\"")
        }
        XCTAssertTrue(try AdapterChoice.parse("x:nan").scale.isNaN)  // a number: set(_:) refuses it as non-finite
    }

    // MARK: the fixtures

    /// Fixtures with adapter references, with them; skips when there is none.
    private func adapterFixtures() throws -> [(String, [(reference: Fixtures.AdapterReference, image: [Float], vectors: [String: [Float]])])] {
        let found = try Fixtures.names().compactMap { name -> (String, [(reference: Fixtures.AdapterReference, image: [Float], vectors: [String: [Float]])])? in
            let rows = try Fixtures.adapterReferences(name)
            return rows.isEmpty ? nil : (name, rows)
        }
        if found.isEmpty { throw XCTSkip("no fixture has run-time adapter references (the default fixture, FIXTURE_VERSION >= 7)") }
        return found
    }

    func testManifestRecordOfTheFixture() throws {
        let manifest = try BundleManifest.load(bundle: try Fixtures.bundle("default"))
        let record = try XCTUnwrap(manifest.adapters, "the default fixture holds run-time adapters")
        XCTAssertEqual(record.input, "lora_weights")
        XCTAssertEqual(record.names, ["swap-red-blue", "fixture-random"])
        XCTAssertEqual(record.components, ["text_encoder", "unet"])
        XCTAssertEqual(record.files.map(\.rank), [4, 2])
        XCTAssertEqual(record.files.map(\.defaultScale), [1, 1])
        for (component, slots) in record.slots {
            XCTAssertEqual(slots.rank, 6, component)
            let last = try manifest.component(component).inputs.last
            XCTAssertEqual(last?.name, "lora_weights", component)
            XCTAssertEqual(last?.staticShape, [slots.size], component)
        }
    }

    /// (a) The vectors this engine packs for each adapter reference equal the ones Python fed (<= 1e-6), for every
    /// slotted component; the base model's are zeros.
    func testPackedVectorsEqualPythons() throws {
        for (name, rows) in try adapterFixtures() {
            let adapters = RuntimeAdapters(bundle: try MobileDiffBundle(url: try Fixtures.bundle(name)))
            XCTAssertTrue(adapters.vectors.values.allSatisfy { $0.allSatisfy { $0 == 0 } }, "\(name): zeros before a mix")
            for (reference, _, expected) in rows {
                try adapters.set(reference.mix)
                let vectors = adapters.vectors
                XCTAssertEqual(Set(vectors.keys), Set(expected.keys), "\(name) \(reference.label): components")
                for (component, values) in expected.sorted(by: { $0.key < $1.key }) {
                    let got = try XCTUnwrap(vectors[component])
                    XCTAssertEqual(got.count, values.count, "\(name) \(reference.label) \(component)")
                    guard got.count == values.count else { continue }
                    let error = Compare.maxAbsError(got, values)
                    print(String(format: "lora_vectors %@ %@ %@: %d values, max abs diff %.2e", name, reference.label, component, got.count, error))
                    XCTAssertLessThanOrEqual(error, Double(Self.vectorTolerance), "\(name) \(reference.label) \(component)")
                }
            }
            try adapters.set([])
            XCTAssertTrue(adapters.vectors.values.allSatisfy { $0.allSatisfy { $0 == 0 } }, "\(name): zeros again")
        }
    }

    /// (b) Every adapter reference end to end through ONNX Runtime (the bundle's `.ort` files, then its `.onnx`
    /// files) vs Python's image, >= 40 dB; switching the mix reloads no model, and the base model's image after
    /// the adapters is the one before them, bit for bit (the zeros path is the base image: Python's seed 0).
    func testAdapterReferencesEndToEnd() throws {
        #if canImport(COnnxRuntime)
        for (name, rows) in try adapterFixtures() {
            let onnxRows = rows.filter { $0.reference.runtime == "onnx" }
            for other in rows where other.reference.runtime != "onnx" {
                print("end_to_end_lora \(name) \(other.reference.label): skipped (the iOS engine runs \(other.reference.runtime) on an iPhone only)")
            }
            for formats in [["ort", "onnx"], ["onnx"]] {
                let pipeline = try Pipeline(bundle: try Fixtures.bundle(name), backend: try ONNXRuntimeBackend(formats: formats))
                let (baseReference, baseExpected) = try Fixtures.reference(name, seed: 0)
                let baseConfiguration = Pipeline.Configuration(prompt: baseReference.prompt, seed: 0, sampler: baseReference.sampler,
                                                               steps: baseReference.steps, guidanceScale: baseReference.guidance)
                let base = try pipeline.generate(baseConfiguration).rawImage
                XCTAssertGreaterThanOrEqual(Compare.psnr(base, baseExpected, peak: 2), EndToEndTests.floorDB, "\(name): base image")
                for (reference, expected, _) in onnxRows {
                    try pipeline.setAdapters(reference.mix)
                    let configuration = Pipeline.Configuration(prompt: reference.prompt, seed: reference.seed, sampler: reference.sampler,
                                                               steps: reference.steps, guidanceScale: reference.guidance)
                    let result = try pipeline.generate(configuration)
                    let psnr = Compare.psnr(result.rawImage, expected, peak: 2)
                    print(String(format: "end_to_end_lora %@ %@ %@-%d guidance %g: %.1f dB (max abs %.2e) vs python; %.1f dB from the base image; %@ on onnxruntime %@",
                                 name, reference.label, reference.sampler, reference.steps, reference.guidance, psnr,
                                 Compare.maxAbsError(result.rawImage, expected), Compare.psnr(result.rawImage, base, peak: 2),
                                 pipeline.denoiser.model.file.path, ONNXRuntimeBackend.version))
                    // a mix adapting the text encoder changes the unconditional prompt's features too (the engine encodes both
                    // prompts with the adapters, as `generate --bundle --lora` does): a reference made by a runner that kept
                    // the base model's unconditional features across set_adapters differs from both
                    let textEncoderAdapted = try reference.mix.contains { try pipeline.adapters.weights($0.name).rank(in: "text_encoder") > 0 }
                    XCTAssertGreaterThanOrEqual(psnr, EndToEndTests.floorDB, "\(name) \(reference.label) from \(pipeline.denoiser.model.file.path)"
                        + (textEncoderAdapted ? " (the mix adapts the text encoder: was Python's reference made with the unconditional prompt encoded by the adapted text encoder? BundleRunner.set_adapters must drop its cached _uncond)" : ""))
                }
                try pipeline.setAdapters([])
                XCTAssertEqual(try pipeline.generate(baseConfiguration).rawImage, base, "\(name): the base image again, bit for bit")
                XCTAssertEqual(pipeline.models.map(\.loads), [1, 1, 1], "\(name): switching adapters reloads nothing")
            }
        }
        #else
        throw XCTSkip("no ONNX Runtime in this build")
        #endif
    }

    // MARK: refusals

    /// (c) A mix the bundle cannot take: one line each, the previous mix kept.
    func testMixRefusals() throws {
        let adapters = RuntimeAdapters(bundle: try MobileDiffBundle(url: try Fixtures.bundle("default")))
        try adapters.set([AdapterChoice("swap-red-blue", scale: 0.5)])
        let before = adapters.vectors
        func refused(_ mix: [AdapterChoice], _ expected: String, line: UInt = #line) {
            XCTAssertThrowsError(try adapters.set(mix), line: line) { error in
                guard case MobileDiffError.invalidAdapterMix = error else { return XCTFail("\(error)", line: line) }
                XCTAssertEqual("\(error)", expected, line: line)
            }
            XCTAssertEqual(adapters.mix, [AdapterChoice("swap-red-blue", scale: 0.5)], "the previous mix stays", line: line)
        }
        refused([AdapterChoice("nope")],
                "adapter \"nope\": the bundle holds no run-time adapter of that name (it holds: swap-red-blue, fixture-random)")
        refused([AdapterChoice("swap-red-blue", scale: .nan)], "adapter swap-red-blue: the scale must be a finite number, got nan")
        refused([AdapterChoice("fixture-random", scale: -.infinity)], "adapter fixture-random: the scale must be a finite number, got -inf")
        refused([AdapterChoice("swap-red-blue"), AdapterChoice("fixture-random"), AdapterChoice("swap-red-blue", scale: 2)],
                "adapter swap-red-blue is given twice")
        XCTAssertEqual(adapters.vectors, before)
    }

    /// A mix that needs more rank slots than a component has: the fixture's bundle with the UNet's slots cut to
    /// rank 5 takes swap-red-blue (4) or fixture-random (2), not both.
    func testMixNeedingMoreRankThanTheSlots() throws {
        let narrow = try narrowedCopy(rank: 5)
        let adapters = RuntimeAdapters(bundle: try MobileDiffBundle(url: narrow))
        try adapters.set([AdapterChoice("swap-red-blue")])
        try adapters.set([AdapterChoice("fixture-random")])
        XCTAssertThrowsError(try adapters.set([AdapterChoice("swap-red-blue"), AdapterChoice("fixture-random", scale: 0.5)])) {
            XCTAssertEqual("\($0)", "these adapters together need 6 rank slots; the bundle's unet has 5 (export with a larger --lora-rank to mix them)")
        }
        XCTAssertEqual(adapters.mix, [AdapterChoice("fixture-random")])
    }

    func testBundleWithoutAdapters() throws {
        let url = try TinyBundle.write()
        defer { try? FileManager.default.removeItem(at: url) }
        let adapters = RuntimeAdapters(bundle: try MobileDiffBundle(url: url))
        XCTAssertEqual(adapters.names, [])
        XCTAssertEqual(adapters.inputs().count, 0, "nothing extra is fed")
        try adapters.set([])
        XCTAssertThrowsError(try adapters.set([AdapterChoice("swap-red-blue")])) {
            XCTAssertEqual($0 as? MobileDiffError, .invalidAdapterMix("this bundle holds no run-time adapters (export it with --runtime-lora; --lora on a model merges an adapter instead)"))
        }
    }

    /// The manifest's record, refused whole at load naming its field.
    func testManifestRecordRefusals() throws {
        func refused(_ expected: String, line: UInt = #line, _ edit: (inout [String: Any]) -> Void) throws {
            let url = try manifestCopy("default", withAdapters: false) { edit(&$0) }
            defer { try? FileManager.default.removeItem(at: url) }
            XCTAssertThrowsError(try BundleManifest.load(bundle: url), line: line) { error in
                guard case MobileDiffError.invalidManifest(_, let reason) = error else { return XCTFail("\(error)", line: line) }
                XCTAssertTrue(reason.contains(expected), "'\(expected)' not in: \(reason)", line: line)
                XCTAssertFalse("\(error)".contains("\n"), "one line", line: line)
            }
        }
        func editAdapters(_ manifest: inout [String: Any], _ edit: (inout [String: Any]) -> Void) {
            var record = manifest["adapters"] as! [String: Any]
            edit(&record)
            manifest["adapters"] = record
        }
        func editSlot(_ manifest: inout [String: Any], _ component: String, _ edit: (inout [String: Any]) -> Void) {
            editAdapters(&manifest) { record in
                var slots = record["slots"] as! [String: Any]
                var slot = slots[component] as! [String: Any]
                edit(&slot)
                slots[component] = slot
                record["slots"] = slots
            }
        }
        try refused("field 'adapters.slots.no_such_component': names component \"no_such_component\", which the bundle does not have") { manifest in
            editAdapters(&manifest) { record in
                var slots = record["slots"] as! [String: Any]
                slots["no_such_component"] = slots["unet"]
                record["slots"] = slots
            }
        }
        try refused("field 'adapters.slots.unet.layers[1]': the offsets of") { manifest in
            editSlot(&manifest, "unet") { slot in
                var layers = slot["layers"] as! [[String: Any]]
                layers[1]["up_offset"] = (layers[1]["up_offset"] as! Int) + 1
                slot["layers"] = layers
            }
        }
        try refused("field 'adapters.slots.text_encoder.size': must be") { manifest in
            editSlot(&manifest, "text_encoder") { $0["size"] = ($0["size"] as! Int) + 1 }
        }
        try refused("field 'adapters.slots.text_encoder': the component's last input must be lora_weights of 4608 values") { manifest in
            Self.setLastInputShape(&manifest, "text_encoder", [4607])
        }
        try refused("field 'adapters.files[0].rank': swap-red-blue has rank 7, more than the 6 slots of text_encoder") { manifest in
            editAdapters(&manifest) { record in
                var files = record["files"] as! [[String: Any]]
                files[0]["rank"] = 7
                record["files"] = files
            }
        }
        try refused("field 'adapters.files[1].name': \"swap-red-blue\" is given twice") { manifest in
            editAdapters(&manifest) { record in
                var files = record["files"] as! [[String: Any]]
                files[1]["name"] = "swap-red-blue"
                record["files"] = files
            }
        }
    }

    /// An adapter file is checked against its sha256, then parsed strictly: each refusal one line naming the file.
    func testAdapterFileRefusals() throws {
        // a flipped bit: the sha256 refuses it before anything is parsed
        let flipped = try manifestCopy("default", withAdapters: true) { _ in }
        let file = flipped.appendingPathComponent("adapters/swap-red-blue.safetensors")
        var bytes = try Data(contentsOf: file)
        bytes[bytes.count - 1] ^= 1
        try bytes.write(to: file)
        XCTAssertThrowsError(try RuntimeAdapters(bundle: try MobileDiffBundle(url: flipped)).set([AdapterChoice("swap-red-blue")])) {
            guard case MobileDiffError.checksumMismatch(let path, _, _) = $0 else { return XCTFail("\($0)") }
            XCTAssertEqual(path, file.path)
        }

        // the real file reads: 80 UNet layers of rank 4
        let slots = try XCTUnwrap(try BundleManifest.load(bundle: try Fixtures.bundle("default")).adapters).slots
        let real = try AdapterWeights.read(try Fixtures.bundle("default").appendingPathComponent("adapters/swap-red-blue.safetensors"),
                                           name: "swap-red-blue", slots: slots)
        XCTAssertEqual(real.rank, 4)
        XCTAssertEqual(real.layers.keys.sorted(), ["unet"])
        XCTAssertEqual(real.layers["unet"]?.count, slots["unet"]?.layers.count)

        let layer = try XCTUnwrap(slots["unet"]?.layers.first)
        let down = "unet.\(layer.module).down", up = "unet.\(layer.module).up"
        let inBytes = 4 * layer.inFeatures, outBytes = 4 * layer.outFeatures
        let good: [(String, String, [Int], [Int])] = [(down, "F32", [1, layer.inFeatures], [0, inBytes]),
                                                      (up, "F32", [layer.outFeatures, 1], [inBytes, inBytes + outBytes])]
        let data = Data(count: inBytes + outBytes)
        func refused(_ tensors: [(String, String, [Int], [Int])], data: Data = data, raw: Data? = nil, _ expected: String, line: UInt = #line) throws {
            let url = try adapterFileCopy(raw ?? Self.safetensors(tensors, data: data), rank: 1)
            XCTAssertThrowsError(try RuntimeAdapters(bundle: try MobileDiffBundle(url: url)).set([AdapterChoice("swap-red-blue")]), line: line) { error in
                guard case MobileDiffError.invalidAdapter(let path, let reason) = error else { return XCTFail("\(error)", line: line) }
                XCTAssertEqual(path, url.appendingPathComponent("adapters/swap-red-blue.safetensors").path, line: line)
                XCTAssertTrue(reason.contains(expected), "'\(expected)' not in: \(reason)", line: line)
                XCTAssertFalse("\(error)".contains("\n"), "one line", line: line)
            }
        }
        // the well-formed rank-1 file is taken (the manifest's rank set to 1 with it)
        let fine = try adapterFileCopy(Self.safetensors(good, data: data), rank: 1)
        try RuntimeAdapters(bundle: try MobileDiffBundle(url: fine)).set([AdapterChoice("swap-red-blue")])

        try refused([(down, "F16", [1, layer.inFeatures], [0, inBytes / 2]), good[1]], "is F16; run-time adapters are float32 (F32)")
        try refused([(down, "F32", [1, layer.inFeatures], [0, inBytes - 4]), good[1]], "data_offsets [0, \(inBytes - 4)] do not hold its shape [1, \(layer.inFeatures)]")
        try refused([good[0], (up, "F32", [layer.outFeatures, 1], [inBytes + 4, inBytes + outBytes + 4])], "within the \(inBytes + outBytes) data bytes")
        try refused(good + [("unet.no.such.layer.down", "F32", [0, 0], [0, 0])], "unknown tensor \"unet.no.such.layer.down\"")
        try refused(good + [("vae_decoder.\(layer.module).down", "F32", [0, 0], [0, 0])], "unknown tensor \"vae_decoder.")
        try refused([good[0]], "unet.\(layer.module) lacks its up matrix")
        try refused([(down, "F32", [1, layer.inFeatures], [0, inBytes]), (up, "F32", [1, layer.outFeatures], [inBytes, inBytes + outBytes])],
                    "do not fit the layer")
        try refused([], raw: Data([255, 0, 0, 0, 0, 0, 0, 0, 123]), "not safetensors: a header of 255 bytes in a file of 9")
        try refused([], raw: Data([2, 0, 0, 0, 0, 0, 0, 0]) + Data("[]".utf8), "its header is not a JSON object")
        // a file whose largest rank is not the manifest's
        let other = try adapterFileCopy(Self.safetensors(good, data: data), rank: 2)
        XCTAssertThrowsError(try RuntimeAdapters(bundle: try MobileDiffBundle(url: other)).set([AdapterChoice("swap-red-blue")])) {
            XCTAssertTrue("\($0)".hasSuffix("its largest down has 1 rows; the manifest says rank 2"), "\($0)")
        }
    }

    // MARK: the command line

    #if canImport(COnnxRuntime)
    func testCommandLineLora() throws {
        let bundle = try Fixtures.bundle("default")
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("lora-cli-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: folder) }
        func generate(_ more: [String], seed: UInt64 = 0, prompt: String = "a red circle") throws -> CLITests.Run {
            try CLITests.run(["generate", "--bundle", bundle.path, "--backend", "onnx", "--prompt", prompt, "--seed", "\(seed)",
                              "--warmup", "0", "--out", folder.appendingPathComponent("image.png").path,
                              "--json", folder.appendingPathComponent("result.json").path] + more)
        }
        func badInput(_ run: CLITests.Run, _ expected: String, line: UInt = #line) {
            let lines = run.stderr.split(separator: "\n").map(String.init).filter { !$0.isEmpty && !$0.hasPrefix("Schema error: ") }
            XCTAssertEqual(run.status, 2, run.stderr, line: line)
            XCTAssertEqual(lines, ["error: \(expected)"], line: line)
        }
        badInput(try generate(["--lora", "nope"]),
                 "adapter \"nope\": the bundle holds no run-time adapter of that name (it holds: swap-red-blue, fixture-random)")
        badInput(try generate(["--lora", "swap-red-blue:x"]), "--lora swap-red-blue:x: the scale after ':' must be a number, got \"x\"")
        badInput(try generate(["--lora", "swap-red-blue", "--lora", "swap-red-blue:2"]), "adapter swap-red-blue is given twice")
        badInput(try generate(["--lora", "fixture-random:inf"]), "adapter fixture-random: the scale must be a finite number, got inf")

        // the first adapter reference through the command line, as benchmarks/app_parity runs it
        guard let (reference, expected, _) = try Fixtures.adapterReferences("default").first(where: { $0.reference.runtime == "onnx" }) else {
            throw XCTSkip("the default fixture has no adapter reference")
        }
        let run = try generate(reference.mix.flatMap { ["--lora", $0.description] }, seed: reference.seed, prompt: reference.prompt)
        XCTAssertEqual(run.status, 0, run.stderr)
        let result = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(contentsOf: folder.appendingPathComponent("result.json"))) as? [String: Any])
        let adapters = try XCTUnwrap(result["adapters"] as? [[Any]])
        XCTAssertEqual(adapters.map { $0[0] as? String }, reference.mix.map(\.name))
        XCTAssertEqual(adapters.map { ($0[1] as? NSNumber)?.doubleValue }, reference.mix.map(\.scale))
        let raw = try Data(contentsOf: URL(fileURLWithPath: try XCTUnwrap(result["image_raw"] as? String)))
        var image = [Float](repeating: 0, count: raw.count / 4)
        _ = image.withUnsafeMutableBytes { raw.copyBytes(to: $0) }
        let psnr = Compare.psnr(image, expected, peak: 2)
        print(String(format: "cli_lora default %@: %.1f dB vs python", reference.label, psnr))
        XCTAssertGreaterThanOrEqual(psnr, EndToEndTests.floorDB)
    }
    #endif

    // MARK: helpers

    /// A folder holding fixture `name`'s manifest.json as `edit` leaves it (and its adapters/ folder when
    /// `withAdapters`): enough for `BundleManifest.load` and `RuntimeAdapters`, which read nothing else.
    private func manifestCopy(_ name: String, withAdapters: Bool, _ edit: (inout [String: Any]) throws -> Void) throws -> URL {
        let source = try Fixtures.bundle(name)
        let copy = FileManager.default.temporaryDirectory.appendingPathComponent("adapters-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: copy, withIntermediateDirectories: true)
        addTeardownBlock { try? FileManager.default.removeItem(at: copy) }
        if withAdapters {
            try FileManager.default.copyItem(at: source.appendingPathComponent("adapters"), to: copy.appendingPathComponent("adapters"))
        }
        var manifest = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(contentsOf: source.appendingPathComponent("manifest.json"))) as? [String: Any])
        try edit(&manifest)
        try JSONSerialization.data(withJSONObject: manifest).write(to: copy.appendingPathComponent("manifest.json"))
        return copy
    }

    /// The default fixture's manifest and adapters with the UNet's slots cut to `rank` (offsets, size and the
    /// input's shape made again).
    private func narrowedCopy(rank: Int) throws -> URL {
        try manifestCopy("default", withAdapters: true) { manifest in
            var record = manifest["adapters"] as! [String: Any]
            var slots = record["slots"] as! [String: Any]
            var unet = slots["unet"] as! [String: Any]
            var offset = 0
            unet["layers"] = (unet["layers"] as! [[String: Any]]).map { layer -> [String: Any] in
                var layer = layer
                let fanIn = layer["in_features"] as! Int, fanOut = layer["out_features"] as! Int
                layer["down_offset"] = offset
                layer["up_offset"] = offset + rank * fanIn
                offset += rank * (fanIn + fanOut)
                return layer
            }
            unet["rank"] = rank
            unet["size"] = offset
            slots["unet"] = unet
            record["slots"] = slots
            manifest["adapters"] = record
            Self.setLastInputShape(&manifest, "unet", [offset])
        }
    }

    /// The default fixture's manifest with `bytes` as adapters/swap-red-blue.safetensors, its sha256 and `rank`
    /// recorded for it.
    private func adapterFileCopy(_ bytes: Data, rank: Int) throws -> URL {
        let copy = try manifestCopy("default", withAdapters: true) { _ in }
        let file = copy.appendingPathComponent("adapters/swap-red-blue.safetensors")
        try bytes.write(to: file)
        let sha = try FileChecks.sha256(of: file)
        let manifestURL = copy.appendingPathComponent("manifest.json")
        var manifest = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(contentsOf: manifestURL)) as? [String: Any])
        var record = manifest["adapters"] as! [String: Any]
        var files = record["files"] as! [[String: Any]]
        files[0]["sha256"] = sha
        files[0]["rank"] = rank
        record["files"] = files
        manifest["adapters"] = record
        try JSONSerialization.data(withJSONObject: manifest).write(to: manifestURL)
        return copy
    }

    static func setLastInputShape(_ manifest: inout [String: Any], _ component: String, _ shape: [Int]) {
        var components = manifest["components"] as! [String: Any]
        var entry = components[component] as! [String: Any]
        var inputs = entry["inputs"] as! [[String: Any]]
        inputs[inputs.count - 1]["static_shape"] = shape
        entry["inputs"] = inputs
        components[component] = entry
        manifest["components"] = components
    }

    /// A safetensors file: the header (name -> dtype, shape, data_offsets), its length before it, the data after.
    static func safetensors(_ tensors: [(String, String, [Int], [Int])], data: Data) -> Data {
        var header: [String: Any] = ["__metadata__": ["format": "test"]]
        for (name, dtype, shape, offsets) in tensors { header[name] = ["dtype": dtype, "shape": shape, "data_offsets": offsets] }
        let json = try! JSONSerialization.data(withJSONObject: header, options: [.sortedKeys])
        var length = UInt64(json.count).littleEndian
        return Data(bytes: &length, count: 8) + json + data
    }
}
