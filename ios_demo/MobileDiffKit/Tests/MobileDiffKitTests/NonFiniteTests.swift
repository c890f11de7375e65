import Foundation
import XCTest
@testable import MobileDiffKit

/// A NaN or infinity appearing at run time is an error naming where it came from, never an all-black image: a graph's
/// output names that graph, the engine's own arithmetic on the manifest's numbers names the manifest (tiny bundle).
final class NonFiniteTests: XCTestCase {
    #if canImport(COnnxRuntime)
    private func generate(_ url: URL) throws -> (path: String, reason: String) {
        defer { try? FileManager.default.removeItem(at: url) }
        let pipeline = try Pipeline(bundle: url, backend: try ONNXRuntimeBackend())
        do {
            _ = try pipeline.generate(Pipeline.Configuration.defaults(for: pipeline.manifest, prompt: "a red circle", seed: 0))
        } catch MobileDiffError.nonFinite(let path, let reason) {
            return (path, reason)
        }
        XCTFail("expected nonFinite")
        return ("", "")
    }

    func testDenoiserNaNIsNamed() throws {
        let (path, reason) = try generate(try TinyBundle.write(unetScale: .nan))
        XCTAssertTrue(path.hasSuffix("/unet/model.onnx"), path)
        XCTAssertTrue(reason.hasPrefix("unet gave non-finite values: its output at timestep 999.0 holds NaN at index 0 (48 of 48"), reason)
    }

    func testDecoderInfinityIsNamed() throws {
        let (path, reason) = try generate(try TinyBundle.write(decoderScale: .infinity))
        XCTAssertTrue(path.hasSuffix("/vae_decoder/model.onnx"), path)
        XCTAssertTrue(reason.hasPrefix("vae_decoder gave non-finite values: the decoded image holds "), reason)
        XCTAssertTrue(reason.hasSuffix("no image is made of them"), reason)
    }

    func testLatentScalingOverflowNamesTheManifest() throws {
        let (path, reason) = try generate(try TinyBundle.write { m, _ in
            var geometry = m["geometry"] as! [String: Any]
            geometry["scaling_factor"] = 1e-44
            m["geometry"] = geometry
        })
        XCTAssertTrue(path.hasSuffix("/manifest.json"), path)
        XCTAssertTrue(reason.hasPrefix("the decoder's input (final latent / geometry.scaling_factor + geometry.shift_factor) holds "), reason)
    }

    func testSamplerTableOverflowNamesTheManifest() throws {
        // the denoiser's outputs are finite (noise * 1e10); the table's coefficient takes the sum past float32's range
        let (path, reason) = try generate(try TinyBundle.write(unetScale: 1e10) { m, _ in
            var samplers = m["samplers"] as! [[String: Any]]
            samplers[0]["output_coef"] = [[3e38]]
            m["samplers"] = samplers
        })
        XCTAssertTrue(path.hasSuffix("/manifest.json"), path)
        XCTAssertTrue(reason.hasPrefix("the final latent (sampler ddim:1) holds "), reason)
    }
    #else
    func testDenoiserNaNIsNamed() throws { throw XCTSkip("no ONNX Runtime in this build") }
    #endif
}
