import Foundation
import XCTest
@testable import MobileDiffKit

/// Every graph's inputs and outputs are checked against the manifest when it is loaded, before the first call
/// (mobilediff.bundle.check_graph_io): a graph of another component, a renamed input, a wrong size is one
/// `graphMismatch` naming the file, the component and the first difference. On the tiny bundle (no fixtures needed).
final class GraphIOTests: XCTestCase {
    private func spec(_ inputs: [BundleManifest.TensorSpec]) -> BundleManifest.Component {
        BundleManifest.Component(inputs: inputs, outputs: [.init(name: "out_sample", dtype: "float32", staticShape: [2, 4, 8, 8], shape: ["batch", "4", "8", "8"])],
                                 dims: ["batch": 2], files: [])
    }

    private let sample = BundleManifest.TensorSpec(name: "sample", dtype: "float32", staticShape: [2, 4, 8, 8], shape: ["batch", "4", "8", "8"])
    private let timestep = BundleManifest.TensorSpec(name: "timestep", dtype: "float32", staticShape: [2], shape: ["batch"])
    private let out = [GraphTensor(name: "out_sample", shape: [nil, 4, 8, 8], dtype: "float32")]

    private func message(_ inputs: [GraphTensor]) -> String {
        do {
            try GraphIO.check(component: "unet", path: "unet/model.onnx", spec: spec([sample, timestep]), inputs: inputs, outputs: out)
        } catch let error as MobileDiffError {
            guard case .graphMismatch(_, "unet", _) = error else { return "unexpected \(error)" }
            return error.description
        } catch {
            return "unexpected \(error)"
        }
        return "no error"
    }

    func testCheckGivesPythonsMessages() throws {
        try GraphIO.check(component: "unet", path: "unet/model.onnx", spec: spec([sample, timestep]),
                          inputs: [GraphTensor(name: "sample", shape: [nil, 4, 8, 8], dtype: "float32"), GraphTensor(name: "timestep", shape: [nil], dtype: "float32")],
                          outputs: out)
        XCTAssertEqual(message([GraphTensor(name: "latent_sample", shape: [nil, 4, 8, 8], dtype: "float32")]),
                       "unet/model.onnx: declares inputs (latent_sample) but the manifest's unet takes (sample, timestep): a graph of another component?")
        XCTAssertEqual(message([GraphTensor(name: nil, shape: [2, 4, 8, 8], dtype: "float32")]),
                       "unet/model.onnx: has 1 input but the manifest's unet takes 2 (sample, timestep): a graph of another component?")
        XCTAssertEqual(message([GraphTensor(name: "sample", shape: [nil, 4, 8, 8], dtype: "int32"), GraphTensor(name: "timestep", shape: [nil], dtype: "float32")]),
                       "unet/model.onnx: input sample is int32 but the manifest's unet declares float32")
        XCTAssertEqual(message([GraphTensor(name: "sample", shape: [nil, 4, 8, 8], dtype: "float32"), GraphTensor(name: "timestep", shape: [nil, 1], dtype: "float32")]),
                       "unet/model.onnx: input timestep has rank 2 but the manifest's unet declares rank 1 (batch=2)")
        XCTAssertEqual(message([GraphTensor(name: nil, shape: [2, 4, 16, 16], dtype: "float32"), GraphTensor(name: nil, shape: [2], dtype: "float32")]),
                       "unet/model.onnx: input 0 (sample in the manifest) has shape (2, 4, 16, 16) but the manifest's unet declares (batch=2, 4, 8, 8)")
    }

    #if canImport(COnnxRuntime)
    /// Loads every component of the bundle at `url`; the error it throws, or nil.
    private func loadError(_ url: URL) throws -> MobileDiffError? {
        defer { try? FileManager.default.removeItem(at: url) }
        do {
            try Pipeline(bundle: url, backend: try ONNXRuntimeBackend()).loadResources()
        } catch let error as MobileDiffError {
            XCTAssertFalse(error.description.contains("\n"), "one line: \(error)")
            return error
        }
        return nil
    }

    func testTinyBundleLoadsAndGenerates() throws {
        let url = try TinyBundle.write()
        defer { try? FileManager.default.removeItem(at: url) }
        let pipeline = try Pipeline(bundle: url, backend: try ONNXRuntimeBackend())
        let result = try pipeline.generate(Pipeline.Configuration.defaults(for: pipeline.manifest, prompt: "a red circle", seed: 0))
        var random = TorchRandomSource(seed: 0)
        let noise = random.normalArray(count: 48)
        // image = decoder(unet(noise)) = noise / 2, (H, W, 3) from (3, H, W)
        XCTAssertEqual(result.rawImage, ImageConversion.hwcClamped(chw: noise.map { $0 * 0.5 }, height: 4, width: 4))
    }

    /// The path and reason of the `graphMismatch` naming `component` that loading the bundle at `url` gives; nil,
    /// after failing the test, for any other outcome.
    private func mismatch(_ url: URL, _ component: String,
                          file: StaticString = #filePath, line: UInt = #line) throws -> (path: String, reason: String)? {
        guard case .graphMismatch(let path, component, let reason)? = try loadError(url) else {
            XCTFail("expected graphMismatch", file: file, line: line)
            return nil
        }
        return (path, reason)
    }

    /// `fields` set in the first entry of `component`'s `list` ("inputs", "files") in the manifest `m`.
    private static func setFirst(_ m: inout [String: Any], _ component: String, _ list: String, _ fields: [String: Any]) {
        var entries = TinyBundle.get(m, component, list) as! [[String: Any]]
        entries[0].merge(fields) { $1 }
        TinyBundle.set(&m, component, list, entries)
    }

    func testGraphOfAnotherComponentIsRefused() throws {
        // the unet entry names the decoder's graph, with its true sha256: only the graph check can tell
        let url = try TinyBundle.write { m, _ in TinyBundle.set(&m, "unet", "files", TinyBundle.get(m, "vae_decoder", "files")) }
        guard let error = try mismatch(url, "unet") else { return }
        XCTAssertTrue(error.path.hasSuffix("/vae_decoder/model.onnx"), error.path)
        XCTAssertEqual(error.reason, "declares inputs (latent_sample) but the manifest's unet takes (sample, timestep, encoder_hidden_states): a graph of another component?")
    }

    func testRenamedInputIsRefused() throws {
        let url = try TinyBundle.write { m, _ in Self.setFirst(&m, "vae_decoder", "inputs", ["name": "latents"]) }
        guard let error = try mismatch(url, "vae_decoder") else { return }
        XCTAssertTrue(error.path.hasSuffix("/vae_decoder/model.onnx"), error.path)
        XCTAssertTrue(error.reason.hasPrefix("declares inputs (latent_sample) but the manifest's vae_decoder takes (latents)"), error.reason)
    }

    func testWrongLatentSizeIsRefused() throws {
        let url = try TinyBundle.write { m, _ in
            Self.setFirst(&m, "unet", "inputs", ["shape": ["batch", 3, 8, 8] as [Any], "static_shape": [1, 3, 8, 8]])
        }
        guard let error = try mismatch(url, "unet") else { return }
        XCTAssertTrue(error.path.hasSuffix("/unet/model.onnx"), error.path)
        XCTAssertEqual(error.reason, "input sample has shape (?, 3, 4, 4) but the manifest's unet declares (batch=1, 3, 8, 8)")
    }

    func testWrongDtypeIsRefused() throws {
        let url = try TinyBundle.write { m, _ in Self.setFirst(&m, "text_encoder", "inputs", ["dtype": "float32"]) }
        guard let error = try mismatch(url, "text_encoder") else { return }
        XCTAssertEqual(error.reason, "input input_ids is int32 but the manifest's text_encoder declares float32")
    }

    func testUnreadableGraphIsOneLine() throws {
        let url = try TinyBundle.write { m, dir in
            let graph = dir.appendingPathComponent("unet/model.onnx")
            try Data(repeating: 1, count: 64).write(to: graph)
            Self.setFirst(&m, "unet", "files", ["sha256": try FileChecks.sha256(of: graph)])
        }
        guard case .graphUnreadable(let path, "ONNX Runtime", _)? = try loadError(url) else { return XCTFail("expected graphUnreadable") }
        XCTAssertTrue(path.hasSuffix("/unet/model.onnx"), path)
    }
    #else
    func testTinyBundleLoadsAndGenerates() throws { throw XCTSkip("no ONNX Runtime in this build") }
    #endif
}
