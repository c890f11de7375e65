import XCTest
@testable import MobileDiffKit

/// The whole engine on real bundles, on every runtime a fixture's bundle is exported for (DIR/index.json's
/// `runtimes`), against Python's `mobilediff generate --bundle` image on that runtime for the same prompt, seed and
/// default plan: PSNR >= 40 dB (images in [-1, 1], peak 2). ONNX Runtime through its C API (the phone's release, the
/// bundle's `.ort` files where it lists them); ExecuTorch through the CExecuTorch shim (on Linux the executorch
/// wheel's host runtime, the one Python's references were made on).
final class EndToEndTests: XCTestCase {
    static let floorDB = 40.0

    private func check(_ name: String, seeds: [Int] = [0, 1]) throws {
        let bundle = try Fixtures.bundle(name)
        var notRun: [String] = []
        for runtime in try Fixtures.runtimes(name) {
            guard let kind = BackendKind(rawValue: runtime), BackendKind.compiledIn.contains(kind) else {
                notRun.append(runtime)
                continue
            }
            try check(name, bundle: bundle, backend: try kind.makeBackend(), runtime: runtime, seeds: seeds)
        }
        if !notRun.isEmpty {
            throw XCTSkip("\(name): the references on \(notRun.joined(separator: ", ")) were not checked: this build does not hold that runtime (compiled in: \(BackendKind.compiledIn.map(\.rawValue).joined(separator: ", ")))")
        }
    }

    private func check(_ name: String, bundle: URL, backend: any InferenceBackend, runtime: String, seeds: [Int]) throws {
        let pipeline = try Pipeline(bundle: bundle, backend: backend)
        XCTAssertTrue(pipeline.models.allSatisfy { backend.fileTargets.contains($0.file.target) }, "\(name) on \(runtime)")
        let plan = Pipeline.Configuration.defaults(for: pipeline.manifest)
        for seed in seeds {
            let (reference, expected) = try Fixtures.reference(name, runtime: runtime, seed: seed)
            XCTAssertEqual(reference.runtime, runtime)
            let configuration = Pipeline.Configuration(prompt: reference.prompt, seed: reference.seed, sampler: reference.sampler,
                                                       steps: reference.steps, guidanceScale: reference.guidance)
            XCTAssertEqual([configuration.sampler, "\(configuration.steps)", "\(configuration.guidanceScale)"],
                           [plan.sampler, "\(plan.steps)", "\(plan.guidanceScale)"], "\(name): the reference uses the manifest's default plan")
            let result = try pipeline.generate(configuration)
            let psnr = Compare.psnr(result.rawImage, expected, peak: 2)
            print(String(format: "end_to_end %@ %@ %@-%d guidance %g seed %d: %.1f dB (max abs %.2e), engine %.0f ms, python %.0f ms, %@ on %@",
                         name, runtime, configuration.sampler, configuration.steps, configuration.guidanceScale, seed, psnr,
                         Compare.maxAbsError(result.rawImage, expected), result.timer.totalMilliseconds, reference.ms ?? .nan,
                         pipeline.denoiser.model.file.path, backend.runtimeDescription))
            XCTAssertGreaterThanOrEqual(psnr, EndToEndTests.floorDB, "\(name) on \(runtime) seed \(seed)")
        }
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

    /// A format-2 bundle with a CLIP BPE tokenizer whose text encoder and denoiser take the caption's padding mask (a
    /// tiny PixArt transformer, DDIM-20 with classifier-free guidance 4.5): the masks of the prompt and of "" fed to
    /// the text encoder, and as rows [uncond, cond] to the denoiser at every step.
    func testMaskedTransformerBundle() throws {
        let manifest = try BundleManifest.load(bundle: try Fixtures.bundle("dit"))
        XCTAssertEqual(manifest.formatVersion, 2)
        XCTAssertTrue(manifest.masksText)
        XCTAssertEqual(manifest.components["unet"]?.inputs.map(\.name),
                       ["sample", "timestep", "encoder_hidden_states", "encoder_attention_mask"])
        XCTAssertEqual(manifest.guidance.type, "classifier_free")
        XCTAssertGreaterThan(manifest.plan.guidance, 1, "the default plan uses classifier-free guidance")
        try check("dit")
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
