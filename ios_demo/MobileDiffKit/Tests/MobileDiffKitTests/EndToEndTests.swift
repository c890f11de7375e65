import XCTest
@testable import MobileDiffKit

/// The whole engine through ONNX Runtime's C API (the phone's release, the bundle's `.ort` files where it lists
/// them) on real bundles, against Python's `mobilediff generate --bundle` image for the same prompt, seed and default
/// plan: PSNR >= 40 dB (images in [-1, 1], peak 2).
final class EndToEndTests: XCTestCase {
    static let floorDB = 40.0

    private func check(_ name: String, seeds: [Int] = [0, 1]) throws {
        #if canImport(COnnxRuntime)
        let pipeline = try Pipeline(bundle: try Fixtures.bundle(name), backend: try ONNXRuntimeBackend())
        let plan = Pipeline.Configuration.defaults(for: pipeline.manifest)
        for seed in seeds {
            let (reference, expected) = try Fixtures.reference(name, seed: seed)
            let configuration = Pipeline.Configuration(prompt: reference.prompt, seed: reference.seed, sampler: reference.sampler,
                                                       steps: reference.steps, guidanceScale: reference.guidance)
            XCTAssertEqual([configuration.sampler, "\(configuration.steps)", "\(configuration.guidanceScale)"],
                           [plan.sampler, "\(plan.steps)", "\(plan.guidanceScale)"], "\(name): the reference uses the manifest's default plan")
            let result = try pipeline.generate(configuration)
            let psnr = Compare.psnr(result.rawImage, expected, peak: 2)
            print(String(format: "end_to_end %@ %@-%d guidance %g seed %d: %.1f dB (max abs %.2e), engine %.0f ms, python %.0f ms, %@ on %@",
                         name, configuration.sampler, configuration.steps, configuration.guidanceScale, seed, psnr,
                         Compare.maxAbsError(result.rawImage, expected), result.timer.totalMilliseconds, reference.ms ?? .nan,
                         pipeline.denoiser.model.file.path, "onnxruntime \(ONNXRuntimeBackend.version)"))
            XCTAssertGreaterThanOrEqual(psnr, EndToEndTests.floorDB, "\(name) seed \(seed)")
        }
        #else
        throw XCTSkip("no ONNX Runtime in this build")
        #endif
    }

    func testDefaultModelDDIM50WithCFG() throws {
        try check("default")
        let manifest = try BundleManifest.load(bundle: try Fixtures.bundle("default"))
        let plan = Pipeline.Configuration.defaults(for: manifest)
        XCTAssertEqual(plan.sampler, "ddim")
        XCTAssertEqual(plan.steps, 50)
        XCTAssertGreaterThan(plan.guidanceScale, 1, "the default plan uses classifier-free guidance")
    }

    func testProgressive4StepStudent() throws {
        try check("progressive-4")
        XCTAssertEqual(Pipeline.Configuration.defaults(for: try BundleManifest.load(bundle: try Fixtures.bundle("progressive-4"))).steps, 4)
    }

    func testLCMStudent() throws {
        try check("lcm", seeds: [0])
    }

    /// A non-square bundle (48 x 80 pixels, 12 x 20 latents): height and width are never assumed equal.
    func testNonSquareBundle() throws {
        try check("lcm-48x80", seeds: [0])
        let manifest = try BundleManifest.load(bundle: try Fixtures.bundle("lcm-48x80"))
        XCTAssertEqual([manifest.geometry.height, manifest.geometry.width], [48, 80])
        XCTAssertEqual(manifest.geometry.latentShape, [1, 4, 12, 20])
    }

    /// The low-memory mode on the default model (DDIM-50 with classifier-free guidance): each model loaded when its
    /// turn comes and unloaded after its part, with ONNX Runtime's low-memory settings, and the resident image, bit
    /// for bit, image after image.
    func testLowMemoryLoadsOneModelAtATimeAndGivesTheResidentImage() throws {
        #if canImport(COnnxRuntime)
        let url = try Fixtures.bundle("default")
        let resident = try Pipeline(bundle: url, backend: try ONNXRuntimeBackend())
        let configuration = Pipeline.Configuration.defaults(for: resident.manifest, prompt: "a red circle at the top left", seed: 3)
        let expected = try resident.generate(configuration).rawImage
        let pipeline = try Pipeline(bundle: url, backend: try ONNXRuntimeBackend(), lowMemory: true)
        XCTAssertTrue(pipeline.models.allSatisfy { $0.lowMemory })
        for round in 1...2 {
            // the models loaded after each unit of work: the denoiser alone while it runs, none after the decoder
            var loaded: [Pipeline.Progress.Stage: Set<[String]>] = [:]
            let result = try pipeline.generate(configuration, progress: { progress in
                loaded[progress.stage, default: []].insert(pipeline.models.filter(\.isLoaded).map(\.component))
            })
            XCTAssertEqual(result.rawImage, expected, "round \(round): the resident image")
            XCTAssertEqual(loaded, [.textEncoded: [[]], .denoised: [["unet"]], .decoded: [[]]])
            XCTAssertEqual(pipeline.models.map(\.loads), [round, round, round])
            XCTAssertEqual(Set(result.loadMilliseconds.keys), ["text_encoder", "unet", "vae_decoder"])
        }
        #else
        throw XCTSkip("no ONNX Runtime in this build")
        #endif
    }

    func testReduceMemoryUnloadsEveryModel() throws {
        #if canImport(COnnxRuntime)
        let pipeline = try Pipeline(bundle: try Fixtures.bundle("progressive-4"), backend: try ONNXRuntimeBackend(), reduceMemory: true)
        _ = try pipeline.generate(.defaults(for: pipeline.manifest, prompt: "a red circle", seed: 3))
        XCTAssertFalse(pipeline.textEncoder.model.isLoaded)
        XCTAssertFalse(pipeline.denoiser.model.isLoaded)
        XCTAssertFalse(pipeline.decoder.model.isLoaded)
        #else
        throw XCTSkip("no ONNX Runtime in this build")
        #endif
    }
}
