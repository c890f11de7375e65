import XCTest
@testable import MobileDiffKit

final class SamplerTests: XCTestCase {
    /// Every plan of every fixture's goldens, replayed through the engine's own pipeline with the recorded
    /// component outputs: every step's latent, the decoder output and the image at >= 60 dB.
    func testReplayReproducesGoldens() throws {
        var plans = 0
        for name in try Fixtures.names() {
            guard try Fixtures.hasGoldens(name) else {
                print("replay \(name): no goldens (its fixture records none), not replayed")
                continue
            }
            let goldens = try Fixtures.goldens(name)
            let checks = GoldenChecks(bundle: try Fixtures.bundle(name), goldens: goldens, model: name)
            for plan in goldens.document.plans {
                let replay = try checks.sampler(plan: plan)
                XCTAssertEqual(replay.stepPSNR.count, plan.steps)
                XCTAssertGreaterThanOrEqual(replay.stepPSNR.min() ?? 0, GoldenChecks.samplerFloorDB, "\(name) \(plan.name) seed \(plan.seed): latents")
                XCTAssertGreaterThanOrEqual(replay.inputPSNR, GoldenChecks.samplerFloorDB, "\(name) \(plan.name): component inputs")
                XCTAssertGreaterThanOrEqual(replay.decodedPSNR, GoldenChecks.samplerFloorDB, "\(name) \(plan.name): decoded image")
                XCTAssertGreaterThanOrEqual(replay.imagePSNR, GoldenChecks.samplerFloorDB, "\(name) \(plan.name): uint8 image")
                print("replay \(name) \(plan.name) \(plan.sampler)-\(plan.steps) seed \(plan.seed): \(replay.row.detail)")
                plans += 1
            }
        }
        XCTAssertGreaterThan(plans, 0)
    }

    /// The loop against a closed-form case: with latent_coef a, output_coef b and a denoiser returning
    /// c·input, each step multiplies the latent by (a + b·c·s); multistep and noise terms add as the table says.
    func testLoopOnClosedFormTable() throws {
        let table = BundleManifest.SamplerTable(
            name: "test", steps: 3, initNoiseSigma: 2, timesteps: [900, 500, 100], inputScale: [0.5, 1, 1],
            latentCoef: [[0.9], [0.8, 0.1], []], outputCoef: [[-0.5], [0.25, -0.25], [1]], noiseCoef: [0, 0, 0.5])
        var seen: [Double] = []
        let result = SamplerLoop.run(table: table, noise: [1], denoise: { input, t, _ in seen.append(t); return input.map { $0 * 2 } },
                                     freshNoise: { [4] })
        XCTAssertEqual(seen, [900, 500, 100])
        // x0 = 2; out0 = 2·(0.5·2) = 2; x1 = 0.9·2 - 0.5·2 = 0.8
        // out1 = 2·0.8 = 1.6; x2 = 0.8·0.8 + 0.1·2 + 0.25·1.6 - 0.25·2 = 0.74
        // out2 = 1.48; x3 = 1.48 + 0.5·4 = 3.48
        XCTAssertEqual(result[0], 3.48, accuracy: 1e-5)
    }

    func testGuidanceEmbeddingMatchesManifest() throws {
        var checked = 0
        for name in try Fixtures.names() {
            let manifest = try BundleManifest.load(bundle: try Fixtures.bundle(name))
            guard manifest.guidance.type == "embedding", let dim = manifest.guidance.embeddingDim,
                  let expected = manifest.guidance.defaultEmbedding else { continue }
            // computed: float32 exp/sin/cos of angles up to (scale - 1)·1000 rad differ from torch's by ulps
            let embedding = GuidanceMode.embeddingVector(scale: manifest.guidance.defaultScale, dim: dim)
            XCTAssertLessThanOrEqual(Compare.maxAbsError(embedding, expected.map(Float.init)), 1e-3, name)
            // what the pipeline feeds at the default scale: the manifest's own values
            XCTAssertEqual(GuidanceMode.embeddingVector(scale: manifest.guidance.defaultScale, dim: dim, record: manifest.guidance),
                           expected.map(Float.init), name)
            XCTAssertLessThanOrEqual(Compare.maxAbsError(GuidanceMode.embeddingVector(scale: 1, dim: dim), [Float](repeating: 0, count: dim / 2)
                                     + [Float](repeating: 1, count: dim - dim / 2)), 1e-7, "scale 1: sin 0, cos 0")
            checked += 1
        }
        if checked == 0 { throw XCTSkip("no fixture with a guidance embedding (LCM)") }
    }

    func testClassifierFreeCombine() {
        XCTAssertEqual(GuidanceMode.combine([1, 2, 3, 6], scale: 2), [5, 10])  // rows [uncond, cond]
    }
}
