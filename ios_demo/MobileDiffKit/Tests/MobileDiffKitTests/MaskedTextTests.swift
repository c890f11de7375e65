import Foundation
import XCTest
@testable import MobileDiffKit

/// Masked bundles (format 2 with a CLIP BPE tokenizer, `BundleManifest.masksText`): the text encoder declares
/// `attention_mask`, so it takes the caption's padding mask beside the ids, and the denoiser takes the same mask as
/// float after `encoder_hidden_states`, one row per guidance branch in the text's order [uncond, cond]. The Python
/// reference is mobilediff/engine.py (`BundleTokenizer.ids_and_mask`, `bundle_tokenizer`, `BundleRunner._unet`).
/// On `TinyBundle` (its `masked` graphs: the text encoder's features are the mask, the denoiser's output moves with
/// the ones of the mask each row gets); the real fixture ("dit") runs in EndToEndTests and RuntimeTests.
final class MaskedTextTests: XCTestCase {
    static let bos: Int32 = 49406, eos: Int32 = 49407

    /// The repository's CLIP tokenizer at the tiny bundle's length (8), with `padId`.
    private func tokenizer(padId: Int32) throws -> BPETokenizer {
        let url = try TinyBundle.write()
        defer { try? FileManager.default.removeItem(at: url) }
        let opened = try MobileDiffBundle(url: url)
        var info = opened.manifest.tokenizer
        info.padId = padId
        return try BPETokenizer(folder: opened.tokenizerURL(), info: info)
    }

    // MARK: - the mask rule

    func testMaskCoversBOSTheIdsAndEOSWhenThePaddingIsEOS() throws {
        let tokenizer = try tokenizer(padId: Self.eos)
        XCTAssertEqual(tokenizer.tokenize("a red circle").count, 3)
        let (ids, mask) = tokenizer.encodeWithMask("a red circle")
        XCTAssertEqual(ids.count, TinyBundle.maxLength)
        XCTAssertEqual(ids.first, Self.bos)
        XCTAssertEqual(Array(ids.dropFirst(4)), [Int32](repeating: Self.eos, count: 4), "EOS, then EOS as padding")
        XCTAssertEqual(mask, [1, 1, 1, 1, 1, 0, 0, 0])
        XCTAssertEqual(tokenizer.encodeWithMask("").mask, [1, 1, 0, 0, 0, 0, 0, 0], "the empty prompt: BOS and EOS")
        // the padding is everything after the first EOS, also one spelled in the prompt
        XCTAssertEqual(tokenizer.encodeWithMask("a <|endoftext|> red").mask, [1, 1, 1, 0, 0, 0, 0, 0])
        let long = tokenizer.encodeWithMask(String(repeating: "red circle ", count: 10))
        XCTAssertEqual(long.ids.last, Self.eos, "truncated, keeping EOS")
        XCTAssertEqual(long.mask, [Int32](repeating: 1, count: 8), "a truncated caption has no padding")
    }

    func testMaskCoversBOSTheIdsAndEOSWhenThePaddingIsItsOwnId() throws {
        let tokenizer = try tokenizer(padId: 0)
        let (ids, mask) = tokenizer.encodeWithMask("a red circle")
        XCTAssertEqual(ids[4], Self.eos)
        XCTAssertEqual(Array(ids.dropFirst(5)), [0, 0, 0])
        XCTAssertEqual(mask, [1, 1, 1, 1, 1, 0, 0, 0])
        XCTAssertEqual(tokenizer.encodeWithMask("").mask, [1, 1, 0, 0, 0, 0, 0, 0])
        // an EOS spelled in the prompt is one of its ids: the padding starts after the caption's own EOS
        let spelled = tokenizer.encodeWithMask("a <|endoftext|> red")
        XCTAssertEqual(spelled.ids.filter { $0 == Self.eos }.count, 2)
        XCTAssertEqual(spelled.mask, [1, 1, 1, 1, 1, 0, 0, 0])
        XCTAssertEqual(tokenizer.encodeWithMask(String(repeating: "red circle ", count: 10)).mask, [Int32](repeating: 1, count: 8))
        // the ids are the format-1 ids whatever the mask
        XCTAssertEqual(tokenizer.encodeWithMask("a red circle").ids, tokenizer.encode("a red circle"))
    }

    // MARK: - masked-ness from the manifest

    func testMaskedIsReadFromTheTextEncodersInputs() throws {
        let plain = try TinyBundle.write()
        let formatTwo = try TinyBundle.write { manifest, _ in
            manifest["format_version"] = 2
            var tokenizer = manifest["tokenizer"] as! [String: Any]
            tokenizer["kind"] = "clip-bpe"
            manifest["tokenizer"] = tokenizer
        }
        let masked = try TinyBundle.write(masked: true)
        defer { [plain, formatTwo, masked].forEach { try? FileManager.default.removeItem(at: $0) } }
        XCTAssertFalse(try BundleManifest.load(bundle: plain).masksText, "format 1")
        XCTAssertFalse(try BundleManifest.load(bundle: formatTwo).masksText, "format 2 whose text encoder takes the ids alone")
        let manifest = try BundleManifest.load(bundle: masked)
        XCTAssertEqual(manifest.formatVersion, 2)
        XCTAssertTrue(manifest.masksText)
        XCTAssertEqual(manifest.components["text_encoder"]?.inputs.map(\.name), ["input_ids", "attention_mask"])
        // the input's name decides, not the format version or the number of inputs
        let renamed = try TinyBundle.write(masked: true) { manifest, _ in
            var inputs = TinyBundle.get(manifest, "text_encoder", "inputs") as! [[String: Any]]
            inputs[1]["name"] = "caption_mask"
            TinyBundle.set(&manifest, "text_encoder", "inputs", inputs)
        }
        defer { try? FileManager.default.removeItem(at: renamed) }
        XCTAssertFalse(try BundleManifest.load(bundle: renamed).masksText)
    }

    func testAMaskedTextEncoderNeedsADenoiserThatTakesTheMaskAfterTheText() throws {
        let edits: [(inout [[String: Any]]) -> Void] = [{ _ = $0.removeLast() }, { $0.swapAt(2, 3) }]
        for edit in edits {
            let url = try TinyBundle.write(masked: true) { manifest, _ in
                var inputs = TinyBundle.get(manifest, "unet", "inputs") as! [[String: Any]]
                edit(&inputs)
                TinyBundle.set(&manifest, "unet", "inputs", inputs)
            }
            defer { try? FileManager.default.removeItem(at: url) }
            XCTAssertThrowsError(try BundleManifest.load(bundle: url)) { error in
                guard case .invalidManifest(_, let reason)? = error as? MobileDiffError else { return XCTFail("\(error)") }
                XCTAssertTrue(reason.contains("components.unet.inputs"), reason)
                XCTAssertTrue(reason.contains("encoder_attention_mask as input 4"), reason)
                XCTAssertFalse("\(error)".contains("\n"))
            }
        }
    }

    // MARK: - the rows the denoiser gets

    func testTextBatchStacksTheMasksInTheTextsRowOrder() {
        let uncond = Pipeline.TextRow(features: Tensor(shape: [1, 3, 1], floats: [1, 2, 3]), mask: [1, 1, 0])
        let cond = Pipeline.TextRow(features: Tensor(shape: [1, 3, 1], floats: [4, 5, 6]), mask: [1, 1, 1])
        let (text, mask) = Pipeline.textBatch([uncond, cond])
        XCTAssertEqual(text, Tensor(shape: [2, 3, 1], floats: [1, 2, 3, 4, 5, 6]))
        XCTAssertEqual(mask, Tensor(shape: [2, 3], floats: [1, 1, 0, 1, 1, 1]), "rows [uncond, cond], as float")
        XCTAssertEqual(Pipeline.textBatch([cond]).mask, Tensor(shape: [1, 3], floats: [1, 1, 1]))
        let unmasked = Pipeline.textBatch([Pipeline.TextRow(features: uncond.features, mask: nil),
                                           Pipeline.TextRow(features: cond.features, mask: nil)])
        XCTAssertNil(unmasked.mask)
        XCTAssertEqual(unmasked.text, text)
    }

    #if canImport(COnnxRuntime)
    /// The image of the tiny bundle's `ddim:1` plan on `noise`: latent_1 = the guided denoiser output, decoded × 1.
    private func expectedImage(noise: [Float], rowOnes: [Float], guidance: Float) -> [Float] {
        let outputs = rowOnes.map { ones in noise.map { $0 * 0.5 + TinyBundle.maskWeight * ones } }
        let guided = outputs.count == 1 ? outputs[0] : GuidanceMode.combine(outputs[0] + outputs[1], scale: Double(guidance))
        return ImageConversion.hwcClamped(chw: guided, height: 4, width: 4)
    }

    func testAMaskedBundleFeedsTheMaskToTheTextEncoderAndTheDenoiser() throws {
        let url = try TinyBundle.write(masked: true)
        defer { try? FileManager.default.removeItem(at: url) }
        let backend = RecordingBackend(try ONNXRuntimeBackend())
        let pipeline = try Pipeline(bundle: url, backend: backend)
        let prompt = "a red circle"
        let (ids, mask) = pipeline.tokenizer.encodeWithMask(prompt)
        let result = try pipeline.generate(.defaults(for: pipeline.manifest, prompt: prompt, seed: 7))
        let text = backend.calls("text_encoder")
        XCTAssertEqual(text.count, 1, "guidance 1: the prompt alone")
        XCTAssertEqual(text.first?["input_ids"], Tensor(shape: [1, 8], ints: ids))
        XCTAssertEqual(text.first?["attention_mask"], Tensor(shape: [1, 8], ints: mask), "int32, as declared")
        XCTAssertEqual(mask, [1, 1, 1, 1, 1, 0, 0, 0])
        let unet = backend.calls("unet")
        XCTAssertEqual(unet.count, 1)
        XCTAssertEqual(unet.first?["encoder_attention_mask"], Tensor(shape: [1, 8], floats: mask.map(Float.init)))
        XCTAssertEqual(unet.first?["encoder_hidden_states"]?.floats, mask.map(Float.init), "the graph's features are the mask it was fed")
        // the denoiser graph saw the five ones of the mask
        var random = TorchRandomSource(seed: 7)
        let noise = random.normalArray(count: 48)
        XCTAssertLessThanOrEqual(Compare.maxAbsError(result.rawImage, expectedImage(noise: noise, rowOnes: [5], guidance: 1)), 1e-6)
    }

    func testClassifierFreeGuidanceFeedsTheMasksInRowOrderUncondCond() throws {
        let url = try TinyBundle.write(masked: true) { manifest, _ in
            TinyBundle.set(&manifest, "unet", "dims", ["batch": 2])
            manifest["guidance"] = ["type": "classifier_free", "default_scale": 2.0, "unconditional_prompt": ""]
            manifest["default_sampling"] = ["sampler": "ddim", "steps": 1, "guidance": 2.0]
        }
        defer { try? FileManager.default.removeItem(at: url) }
        let backend = RecordingBackend(try ONNXRuntimeBackend())
        let pipeline = try Pipeline(bundle: url, backend: backend)
        let prompt = "a red circle"
        let cond = pipeline.tokenizer.encodeWithMask(prompt).mask.map(Float.init)
        let uncond = pipeline.tokenizer.encodeWithMask("").mask.map(Float.init)
        XCTAssertEqual(uncond, [1, 1, 0, 0, 0, 0, 0, 0], "the unconditional prompt's own mask: BOS and EOS")
        let result = try pipeline.generate(.defaults(for: pipeline.manifest, prompt: prompt, seed: 3))
        let text = backend.calls("text_encoder")
        XCTAssertEqual(text.map { $0["attention_mask"]?.floats ?? [] }, [cond, uncond], "each prompt encoded with its own mask")
        let unet = try XCTUnwrap(backend.calls("unet").first)
        XCTAssertEqual(unet["encoder_attention_mask"], Tensor(shape: [2, 8], floats: uncond + cond), "rows [uncond, cond]")
        XCTAssertEqual(unet["encoder_hidden_states"]?.floats, uncond + cond, "the text rows in the same order")
        XCTAssertEqual(unet["sample"]?.shape, [2, 3, 4, 4])
        // out = uncond + 2 (cond - uncond): with the rows swapped the image would move by 2 × 0.05 × (2 - 5) the other way
        var random = TorchRandomSource(seed: 3)
        let noise = random.normalArray(count: 48)
        XCTAssertLessThanOrEqual(Compare.maxAbsError(result.rawImage, expectedImage(noise: noise, rowOnes: [2, 5], guidance: 2)), 1e-6)
        XCTAssertGreaterThan(Compare.maxAbsError(result.rawImage, expectedImage(noise: noise, rowOnes: [5, 2], guidance: 2)), 0.2)
    }

    func testAnUnmaskedBundleFeedsNoMask() throws {
        let url = try TinyBundle.write()
        defer { try? FileManager.default.removeItem(at: url) }
        let backend = RecordingBackend(try ONNXRuntimeBackend())
        let pipeline = try Pipeline(bundle: url, backend: backend)
        _ = try pipeline.generate(.defaults(for: pipeline.manifest, prompt: "a red circle", seed: 1))
        XCTAssertEqual(backend.calls("text_encoder").map { $0.keys.sorted() }, [["input_ids"]])
        XCTAssertEqual(backend.calls("unet").map { $0.keys.sorted() }, [["encoder_hidden_states", "sample", "timestep"]])
    }
    #endif
}

/// A backend that runs another and records every call's inputs, by component.
final class RecordingBackend: InferenceBackend {
    let inner: any InferenceBackend
    private let lock = NSLock()
    private var recorded: [(component: String, inputs: [String: Tensor])] = []

    init(_ inner: any InferenceBackend) {
        self.inner = inner
    }

    var target: String { inner.target }
    var fileTargets: [String] { inner.fileTargets }

    func loadModel(at url: URL, component: String, file: BundleManifest.ComponentFile,
                   spec: BundleManifest.Component) throws -> any InferenceModel {
        Recording(model: try inner.loadModel(at: url, component: component, file: file, spec: spec), component: component, backend: self)
    }

    /// The inputs of every call to `component`, in call order.
    func calls(_ component: String) -> [[String: Tensor]] {
        lock.withLock { recorded.filter { $0.component == component }.map(\.inputs) }
    }

    final class Recording: InferenceModel {
        let model: any InferenceModel
        let component: String
        let backend: RecordingBackend

        init(model: any InferenceModel, component: String, backend: RecordingBackend) {
            self.model = model
            self.component = component
            self.backend = backend
        }

        func predict(_ inputs: [String: Tensor]) throws -> [String: Tensor] {
            backend.lock.withLock { backend.recorded.append((component, inputs)) }
            return try model.predict(inputs)
        }
    }
}
