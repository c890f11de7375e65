import Foundation
import XCTest
@testable import MobileDiffKit

/// Image-to-image and inpainting (docs/bundle.md, "`image` (optional)"): the manifest's `image` record, `vae_encoder`
/// component and per-table `add_noise` / `starts`; the strength rule and the start table (mobilediff/sampler_table.py
/// `strength_steps`, `start_table`, `suffix`); the run from an image on a closed-form table; and on the fixtures'
/// real bundles, through ONNX Runtime, Python's `generate --bundle --init-image [--mask] --strength` images (PSNR
/// >= 40 dB), the low-memory mode with the encoder, and the command line's options; an inpainting UNet's bundle
/// (`image.denoiser` "inpainting": its record, its references, its refusals of the other modes).
final class ImageToImageTests: XCTestCase {
    // MARK: the manifest

    /// tests/contract/teacher.json (tables ddim:4, ddim:50, dpmpp:4) as an image-modes bundle: the `image` record, a
    /// `vae_encoder` component and every table's `add_noise` (`[j / steps, 1 - j / steps]`), dpmpp:4 a start table
    /// for step 2; then `edit`, then read.
    static func imageManifest(_ edit: (inout [String: Any]) -> Void = { _ in }) throws -> BundleManifest {
        var manifest = try teacher()
        manifest["image"] = ["modes": ["img2img", "inpaint"], "encoder_posterior": "gaussian", "a_later_field": 1] as [String: Any]
        var components = manifest["components"] as! [String: Any]
        let sample: [String: Any] = ["name": "sample", "dtype": "float32", "shape": ["batch", 3, 64, 64] as [Any], "static_shape": [1, 3, 64, 64]]
        let mean: [String: Any] = ["name": "latent_mean", "dtype": "float32", "static_shape": [1, 4, 16, 16]]
        let std: [String: Any] = ["name": "latent_std", "dtype": "float32", "static_shape": [1, 4, 16, 16]]
        let encoder: [String: Any] = ["inputs": [sample], "outputs": [mean, std], "dims": ["batch": 1], "files": [] as [Any]]
        components["vae_encoder"] = encoder
        manifest["components"] = components
        var tables = manifest["samplers"] as! [[String: Any]]
        for i in tables.indices {
            let steps = tables[i]["steps"] as! Int
            let rows: [[Double]] = (0..<steps).map { (j: Int) -> [Double] in [Double(j) / Double(steps), 1 - Double(j) / Double(steps)] }
            tables[i]["add_noise"] = rows
            if tables[i]["name"] as? String == "dpmpp" {
                let start: [String: Any] = [
                    "sampler": "DPMSolverMultistepScheduler", "steps": 2, "init_noise_sigma": 1.0, "timesteps": [499.0, 249.0],
                    "input_scale": [1.0, 1.0], "latent_coef": [[0.9], [1.1, -0.1]], "output_coef": [[-0.2], [-0.3, 0.1]],
                    "noise_coef": [0.0, 0.0],
                ]
                tables[i]["starts"] = ["2": start]
            }
        }
        manifest["samplers"] = tables
        edit(&manifest)
        return try read(manifest)
    }

    static func teacher() throws -> [String: Any] {
        let url = try ContractTests.repository().appendingPathComponent("tests/contract/teacher.json")
        return try JSONSerialization.jsonObject(with: Data(contentsOf: url)) as! [String: Any]
    }

    static func read(_ manifest: [String: Any]) throws -> BundleManifest {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("image-manifest-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: folder) }
        try JSONSerialization.data(withJSONObject: manifest).write(to: folder.appendingPathComponent("manifest.json"))
        return try BundleManifest.load(bundle: folder)
    }

    /// `manifest["samplers"][index][key] = value` (nil removes it).
    static func setTable(_ manifest: inout [String: Any], _ index: Int, _ key: String, _ value: Any?) {
        var tables = manifest["samplers"] as! [[String: Any]]
        tables[index][key] = value
        manifest["samplers"] = tables
    }

    func testTextToImageBundlesReadAsBefore() throws {
        let manifest = try Self.read(Self.teacher())
        XCTAssertNil(manifest.image)
        XCTAssertEqual(manifest.components.keys.sorted(), ["text_encoder", "unet", "vae_decoder"])
        XCTAssertTrue(manifest.samplers.allSatisfy { $0.addNoise == nil && $0.starts == nil })
        XCTAssertTrue(manifest.supports("txt2img"))
        XCTAssertFalse(manifest.supports("img2img"))
        XCTAssertFalse(manifest.supports("inpaint"))
        XCTAssertEqual(manifest.geometry.pixelsPerLatent, manifest.geometry.vaeScaleFactor ?? manifest.geometry.height / manifest.geometry.latentHeight)
    }

    func testImageRecordAndTablesAreRead() throws {
        let manifest = try Self.imageManifest()
        XCTAssertEqual(manifest.image, BundleManifest.ImageModes(modes: ["img2img", "inpaint"], encoderPosterior: "gaussian"))
        XCTAssertTrue(manifest.supports("img2img") && manifest.supports("inpaint"))
        XCTAssertEqual(try manifest.component("vae_encoder").outputs.map(\.name), ["latent_mean", "latent_std"])
        let ddim = try manifest.samplerTable("ddim", steps: 4)
        XCTAssertEqual(ddim.addNoise, [[0, 1], [0.25, 0.75], [0.5, 0.5], [0.75, 0.25]])
        XCTAssertNil(ddim.starts)
        let dpmpp = try manifest.samplerTable("dpmpp", steps: 4)
        XCTAssertEqual(dpmpp.starts?.keys.sorted(), [2])
        let start = try XCTUnwrap(dpmpp.starts?[2])
        XCTAssertEqual([start.name, "\(start.steps)"], ["dpmpp", "2"], "a start table takes its parent's name")
        XCTAssertEqual(start.latentCoef, [[0.9], [1.1, -0.1]])
        // one mode is enough; a deterministic posterior
        let one = try Self.imageManifest { $0["image"] = ["modes": ["img2img"], "encoder_posterior": "deterministic"] as [String: Any] }
        XCTAssertTrue(one.supports("img2img"))
        XCTAssertFalse(one.supports("inpaint"))
        // the runtimes an app offers need the encoder's file too
        XCTAssertEqual(manifest.pipelineComponents, ["text_encoder", "unet", "vae_decoder", "vae_encoder"])
        XCTAssertEqual(BackendKind.available(for: try Self.read(Self.teacher()), compiled: [.onnx]), [.onnx])
        XCTAssertEqual(BackendKind.available(for: manifest, compiled: [.onnx]), [], "the encoder has no onnx file")
        // add_noise without the image record (a table written by a newer exporter) reads
        var plain = try Self.teacher()
        Self.setTable(&plain, 0, "add_noise", [[0.5, 0.5], [0.5, 0.5], [0.5, 0.5], [0.5, 0.5]])
        XCTAssertNil(try Self.read(plain).image)
    }

    func testImageRecordRefusals() throws {
        let cases: [(String, (inout [String: Any]) -> Void, [String])] = [
            ("no encoder", { m in
                var components = m["components"] as! [String: Any]
                components["vae_encoder"] = nil
                m["components"] = components
            }, ["components.vae_encoder", "missing", "img2img, inpaint"]),
            ("unknown mode", { $0["image"] = ["modes": ["sketch"], "encoder_posterior": "gaussian"] as [String: Any] }, ["image.modes", "unknown image mode \"sketch\""]),
            ("no modes", { $0["image"] = ["modes": [] as [Any], "encoder_posterior": "gaussian"] as [String: Any] }, ["image.modes", "is empty"]),
            ("modes a string", { $0["image"] = ["modes": "img2img", "encoder_posterior": "gaussian"] as [String: Any] }, ["image.modes", "expected a list"]),
            ("unknown posterior", { $0["image"] = ["modes": ["img2img"], "encoder_posterior": "laplace"] as [String: Any] }, ["image.encoder_posterior", "laplace"]),
            ("no posterior", { $0["image"] = ["modes": ["img2img"]] as [String: Any] }, ["image.encoder_posterior", "missing"]),
            ("a table without add_noise", { Self.setTable(&$0, 1, "add_noise", nil) }, ["samplers[1].add_noise", "missing", "ddim:50"]),
            ("a row short", { Self.setTable(&$0, 0, "add_noise", [[0, 1], [0.5, 0.5], [1, 0]]) }, ["samplers[0].add_noise", "has 3 rows for 4 steps"]),
            ("a row of three", { Self.setTable(&$0, 0, "add_noise", [[0, 1, 2], [0, 1], [0, 1], [0, 1]]) }, ["samplers[0].add_noise", "row 0 has 3 numbers"]),
            ("a coefficient a string", { Self.setTable(&$0, 0, "add_noise", [["0", 1] as [Any], [0, 1], [0, 1], [0, 1]]) }, ["samplers[0].add_noise[0][0]", "expected a number"]),
            ("a start outside the table", { m in
                var tables = m["samplers"] as! [[String: Any]]
                var starts = tables[2]["starts"] as! [String: Any]
                starts["4"] = starts["2"]
                tables[2]["starts"] = starts
                m["samplers"] = tables
            }, ["samplers[2].starts.4", "1...3"]),
            ("a start of other steps", { m in
                var tables = m["samplers"] as! [[String: Any]]
                var start = (tables[2]["starts"] as! [String: Any])["2"] as! [String: Any]
                start["steps"] = 3
                tables[2]["starts"] = ["2": start]
                m["samplers"] = tables
            }, ["samplers[2].starts.2.steps", "must be 2"]),
            ("a start's list short", { m in
                var tables = m["samplers"] as! [[String: Any]]
                var start = (tables[2]["starts"] as! [String: Any])["2"] as! [String: Any]
                start["timesteps"] = [499.0]
                tables[2]["starts"] = ["2": start]
                m["samplers"] = tables
            }, ["samplers[2].starts.2.timesteps", "has 1 entries for 2 steps"]),
            ("a zero VAE factor", { m in
                var geometry = m["geometry"] as! [String: Any]
                geometry["vae_scale_factor"] = 0
                m["geometry"] = geometry
            }, ["geometry.vae_scale_factor", "must be >= 1"]),
        ]
        for (name, edit, mentions) in cases {
            XCTAssertThrowsError(try Self.imageManifest(edit), name) { error in
                guard case .invalidManifest(_, let reason)? = error as? MobileDiffError else { return XCTFail("\(name): \(error)") }
                for m in mentions { XCTAssertTrue(reason.contains(m), "\(name): '\(m)' not in: \(reason)") }
            }
        }
    }

    /// The fixtures' image-modes bundles as exported: the encoder's declared inputs and outputs, one add_noise row per
    /// step in every table, and DPM-Solver++'s start tables (its first step from a start is of lower order).
    func testFixtureBundlesHoldTheImageModes() throws {
        var checked = 0
        for name in try Fixtures.names() {
            let manifest = try BundleManifest.load(bundle: try Fixtures.bundle(name))
            guard let image = manifest.image else { continue }
            if image.inpaintingDenoiser {
                // an inpainting UNet: inpainting alone, and its two image inputs right after the text features
                XCTAssertEqual(image.modes, ["inpaint"], name)
                XCTAssertFalse(manifest.supports("txt2img") || manifest.supports("img2img"), name)
                let inputs = try manifest.component("unet").inputs
                let text = try XCTUnwrap(inputs.firstIndex { $0.name == "encoder_hidden_states" }, name)
                XCTAssertEqual(inputs.dropFirst(text + 1).prefix(2).map(\.name), BundleManifest.inpaintingInputs, name)
                let g = manifest.geometry
                XCTAssertEqual(inputs[text + 1].staticShape?.dropFirst().map { $0 }, [1, g.latentHeight, g.latentWidth], name)
                XCTAssertEqual(inputs[text + 2].staticShape?.dropFirst().map { $0 }, Array(g.latentShape.dropFirst()), name)
            } else {
                XCTAssertEqual(image.modes, ["img2img", "inpaint"], name)
            }
            let encoder = try manifest.component("vae_encoder")
            XCTAssertEqual(encoder.inputs.first?.staticShape, [1, 3, manifest.geometry.height, manifest.geometry.width], name)
            XCTAssertEqual(encoder.outputs.map(\.name), ["latent_mean", "latent_std"], name)
            XCTAssertEqual(manifest.geometry.pixelsPerLatent * manifest.geometry.latentHeight, manifest.geometry.height, name)
            for table in manifest.samplers {
                XCTAssertEqual(table.addNoise?.count, table.steps, "\(name) \(table.name):\(table.steps)")
                for (start, run) in table.starts ?? [:] {
                    XCTAssertEqual(run.steps, table.steps - start)
                    XCTAssertEqual(run.timesteps, Array(table.timesteps.dropFirst(start)), "a start table runs the same timesteps")
                }
            }
            if let dpmpp = manifest.samplers.first(where: { $0.name == "dpmpp" && $0.steps == 8 }) {
                XCTAssertEqual(dpmpp.starts?.keys.sorted(), Array(1...6), "\(name) dpmpp:8")
            }
            checked += 1
        }
        if checked == 0 { throw XCTSkip("no fixture bundle exported with image modes") }
    }

    // MARK: strength and the start table

    func testStrengthRule() throws {
        XCTAssertEqual(try ImageToImage.strengthSteps(steps: 8, strength: 0.6), 4, "floor(4.8)")
        XCTAssertEqual(try ImageToImage.strengthSteps(steps: 8, strength: 0.75), 6)
        XCTAssertEqual(try ImageToImage.strengthSteps(steps: 8, strength: 1), 8)
        XCTAssertEqual(try ImageToImage.strengthSteps(steps: 50, strength: 0.58), 28, "50 · 0.58 is 28.999999999999996 in doubles: Python's int() gives 28")
        XCTAssertEqual(try ImageToImage.strengthSteps(steps: 4, strength: 0.25), 1)
        XCTAssertEqual(try ImageToImage.strengthSteps(steps: 1, strength: 1), 1)
        for bad in [0, -0.5, 1.5, .nan, .infinity] {
            XCTAssertThrowsError(try ImageToImage.strengthSteps(steps: 8, strength: bad)) { error in
                XCTAssertTrue("\(error)".contains("--strength must be in (0, 1], got"), "\(error)")
            }
        }
        XCTAssertThrowsError(try ImageToImage.strengthSteps(steps: 8, strength: 0.1)) { error in
            XCTAssertEqual("\(error)", "--strength 0.1 denoises no step of 8: give at least 0.125, or more steps")
        }
        XCTAssertThrowsError(try ImageToImage.strengthSteps(steps: 3, strength: 0.3)) { error in
            XCTAssertEqual("\(error)", "--strength 0.3 denoises no step of 3: give at least 0.333, or more steps")
        }
    }

    /// A 4-step table whose rows reach back (a multistep solver): the run from step j keeps rows j.. with each row's
    /// coefficients cut to the run (row i of the run: at most i + 1 latents and outputs); a listed start replaces it.
    func testStartTableSelection() throws {
        var table = BundleManifest.SamplerTable(
            name: "dpmpp", steps: 4, initNoiseSigma: 1, timesteps: [999, 749, 499, 249], inputScale: [1, 1, 1, 0.5],
            latentCoef: [[1], [2, -1], [3, -2], [4, -3]], outputCoef: [[-1], [-2, 1], [-3, 2], [-4, 3]], noiseCoef: [0, 0, 0, 0.5])
        var (run, start) = try ImageToImage.startTable(table, strength: 0.5)
        XCTAssertEqual(start, 2)
        XCTAssertEqual([run.name, "\(run.steps)"], ["dpmpp", "2"])
        XCTAssertEqual(run.timesteps, [499, 249])
        XCTAssertEqual(run.inputScale, [1, 0.5])
        XCTAssertEqual(run.latentCoef, [[3], [4, -3]], "the first row of the run cannot reach before the run")
        XCTAssertEqual(run.outputCoef, [[-3], [-4, 3]])
        XCTAssertEqual(run.noiseCoef, [0, 0.5])
        (run, start) = try ImageToImage.startTable(table, strength: 1)
        XCTAssertEqual(start, 0)
        XCTAssertEqual(run.latentCoef, table.latentCoef, "strength 1: the whole table")
        (run, start) = try ImageToImage.startTable(table, strength: 0.3)
        XCTAssertEqual([start, run.steps], [3, 1], "floor(1.2) = 1 step")
        let listed = BundleManifest.SamplerTable(name: "dpmpp", steps: 2, initNoiseSigma: 1, timesteps: [499, 249], inputScale: [1, 1],
                                                 latentCoef: [[7], [8, 9]], outputCoef: [[6], [5, 4]], noiseCoef: [0, 0])
        table.starts = [2: listed]
        (run, start) = try ImageToImage.startTable(table, strength: 0.5)
        XCTAssertEqual(start, 2)
        XCTAssertEqual(run.latentCoef, [[7], [8, 9]], "the listed start table")
        (run, _) = try ImageToImage.startTable(table, strength: 0.75)
        XCTAssertEqual(run.latentCoef, [[2], [3, -2], [4, -3]], "an unlisted start: the rows")
    }

    /// The run on closed-form numbers: a 2-step table that keeps the latent (latent_coef 1, no output), add_noise
    /// rows (0.5, 2) and (0.25, 4), z0 = 1 and noise = 10 at every latent pixel.
    func testRunFromAnImage() throws {
        let table = BundleManifest.SamplerTable(
            name: "keep", steps: 2, initNoiseSigma: 3, timesteps: [900, 400], inputScale: [1, 1], latentCoef: [[1], [1]],
            outputCoef: [[], []], noiseCoef: [0, 0], addNoise: [[0.5, 2], [0.25, 4]])
        let z0: [Float] = [1, 1, 1, 1], noise: [Float] = [10, 10, 10, 10]  // 2 channels of a 1 x 2 latent
        var calls: [Double] = []
        func run(_ strength: Double, _ mask: [Float]?, steps: inout [[Float]]) throws -> [Float] {
            var seen: [[Float]] = []
            defer { steps = seen }
            return try ImageToImage.run(table: table, imageLatent: z0, noise: noise, strength: strength, mask: mask,
                                        denoise: { x, t, _ in calls.append(t); return x }, freshNoise: { [] },
                                        onStep: { _, x in seen.append(x) })
        }
        var steps: [[Float]] = []
        // image-to-image at strength 1: a_0 z0 + b_0 noise = 20.5, kept by both steps
        XCTAssertEqual(try run(1, nil, steps: &steps), [20.5, 20.5, 20.5, 20.5])
        XCTAssertEqual(calls, [900, 400])
        // at 0.5: one step from step 1, a_1 z0 + b_1 noise = 40.25
        calls = []
        XCTAssertEqual(try run(0.5, nil, steps: &steps), [40.25, 40.25, 40.25, 40.25])
        XCTAssertEqual(calls, [400])
        // inpainting the second latent pixel at 1: from init_noise_sigma · noise = 30; after step 0 the kept pixel is
        // the image noised to step 1 (40.25), after the last the clean image (1)
        XCTAssertEqual(try run(1, [0, 1], steps: &steps), [1, 30, 1, 30], "the mask repeats over the channels")
        XCTAssertEqual(steps, [[40.25, 30, 40.25, 30], [1, 30, 1, 30]])
        // inpainting at 0.5: from a_1 z0 + b_1 noise, the kept pixel the clean image after the one step
        XCTAssertEqual(try run(0.5, [1, 0], steps: &steps), [40.25, 1, 40.25, 1])
        // a table without add_noise
        var plain = table
        plain.addNoise = nil
        XCTAssertThrowsError(try ImageToImage.run(table: plain, imageLatent: z0, noise: noise, strength: 1, mask: nil,
                                                  denoise: { x, _, _ in x }, freshNoise: { [] })) { error in
            XCTAssertTrue("\(error)".contains("keep:2 table has no image-to-image coefficients (export the bundle with --image-modes)"), "\(error)")
        }
    }

    func testImageRunsNeedImageModes() throws {
        let url = try TinyBundle.write()
        defer { try? FileManager.default.removeItem(at: url) }
        let manifest = try BundleManifest.load(bundle: url)
        var configuration = Pipeline.Configuration.defaults(for: manifest, prompt: "a red circle")
        configuration.image = Pipeline.ImageCondition(pixels: [Float](repeating: 0, count: 48), strength: 0.5)
        XCTAssertEqual(configuration.mode, "img2img")
        XCTAssertThrowsError(try configuration.validate(against: manifest)) { error in
            XCTAssertTrue("\(error)".contains("exported without image modes: export it again with --image-modes for image-to-image"), "\(error)")
        }
        let images = try Self.imageManifest()
        var inpaint = Pipeline.Configuration.defaults(for: images, prompt: "a red circle")
        inpaint.image = Pipeline.ImageCondition(pixels: [Float](repeating: 0, count: 3 * 64 * 64), mask: [Float](repeating: 1, count: 16 * 16),
                                                strength: 1)
        XCTAssertEqual(inpaint.mode, "inpaint")
        XCTAssertNoThrow(try inpaint.validate(against: images))
        inpaint.image?.mask = [1]
        XCTAssertThrowsError(try inpaint.validate(against: images), "a mask of another size")
        inpaint.image?.mask = nil
        inpaint.image?.strength = 0.01
        XCTAssertThrowsError(try inpaint.validate(against: images)) { error in
            XCTAssertTrue("\(error)".contains("denoises no step of \(images.plan.steps)"), "\(error)")
        }
        let imageOnly = try Self.imageManifest { $0["image"] = ["modes": ["img2img"], "encoder_posterior": "gaussian"] as [String: Any] }
        inpaint.image = Pipeline.ImageCondition(pixels: [Float](repeating: 0, count: 3 * 64 * 64), mask: [Float](repeating: 1, count: 16 * 16),
                                                strength: 1)
        XCTAssertThrowsError(try inpaint.validate(against: imageOnly)) { error in
            XCTAssertTrue("\(error)".contains("runs img2img, not inpaint"), "\(error)")
        }
    }

    // MARK: on the fixtures' bundles

    /// Every image reference of every fixture: the engine from the same PNG files, prompt, seed, sampler, steps,
    /// guidance and strength against Python's `generate --bundle` image, PSNR >= 40 dB (images in [-1, 1], peak 2).
    func testImageReferencesEndToEnd() throws {
        #if canImport(COnnxRuntime)
        var checked = 0
        for name in try Fixtures.names() {
            let references = try Fixtures.imageReferences(name)
            if references.isEmpty { continue }
            let pipeline = try Pipeline(bundle: try Fixtures.bundle(name), backend: try ONNXRuntimeBackend())
            let inpaintingUNet = pipeline.manifest.image?.inpaintingDenoiser ?? false
            for (reference, expected) in references {
                let configuration = try Self.configuration(reference, fixture: name, manifest: pipeline.manifest)
                let result = try pipeline.generate(configuration)
                let psnr = Compare.psnr(result.rawImage, expected, peak: 2)
                print(String(format: "image_end_to_end %@ %@ strength %g %@-%d guidance %g seed %llu: %.1f dB (max abs %.2e), %d denoiser calls, %d encoder calls, engine %.0f ms, python %.0f ms",
                             name, reference.mode, reference.strength, reference.sampler, reference.steps, reference.guidance, reference.seed,
                             psnr, Compare.maxAbsError(result.rawImage, expected), result.timer.calls["unet"] ?? 0,
                             result.timer.calls["vae_encoder"] ?? 0, result.timer.totalMilliseconds, reference.ms ?? .nan))
                XCTAssertGreaterThanOrEqual(psnr, EndToEndTests.floorDB, "\(name) \(reference.mode) \(reference.sampler)-\(reference.steps) seed \(reference.seed)")
                XCTAssertEqual(result.timer.calls["unet"], try ImageToImage.strengthSteps(steps: reference.steps, strength: reference.strength))
                // an inpainting UNet encodes the masked image, and the image itself only to start from it (strength < 1)
                XCTAssertEqual(result.timer.calls["vae_encoder"], inpaintingUNet && reference.strength < 1 ? 2 : 1, "\(name) strength \(reference.strength)")
                checked += 1
            }
        }
        if checked == 0 { throw XCTSkip("no fixture has image references (python -m mobilediff.fixtures writes them)") }
        #else
        throw XCTSkip("no ONNX Runtime in this build")
        #endif
    }

    /// The low-memory mode with the encoder: it is loaded for its part and released before the text encoder loads
    /// (one model at a time), once per image, and the image is the resident one bit for bit. The resident pipeline
    /// loads the encoder at the first image run (not in `loadResources()`) and releases it in `unloadResources()`.
    func testLowMemoryLoadsTheEncoderForItsPart() throws {
        #if canImport(COnnxRuntime)
        let (name, reference) = try Self.inpaintingReference()
        let url = try Fixtures.bundle(name)
        let resident = try Pipeline(bundle: url, backend: try ONNXRuntimeBackend())
        let encoder = try XCTUnwrap(resident.imageEncoder)
        try resident.loadResources()
        XCTAssertFalse(encoder.model.isLoaded, "loaded at the first image run")
        let configuration = try Self.configuration(reference, fixture: name, manifest: resident.manifest)
        let expected = try resident.generate(configuration).rawImage
        XCTAssertTrue(encoder.model.isLoaded)
        resident.unloadResources()
        XCTAssertFalse(encoder.model.isLoaded)

        let pipeline = try Pipeline(bundle: url, backend: try ONNXRuntimeBackend(), lowMemory: true)
        let lowEncoder = try XCTUnwrap(pipeline.imageEncoder)
        for round in 1...2 {
            var loaded: [Pipeline.Progress.Stage: Set<[String]>] = [:]
            let result = try pipeline.generate(configuration, progress: { progress in
                loaded[progress.stage, default: []].insert((pipeline.models + [lowEncoder.model]).filter(\.isLoaded).map(\.component))
            })
            XCTAssertEqual(result.rawImage, expected, "round \(round): the resident image")
            XCTAssertEqual(loaded, [.textEncoded: [[]], .denoised: [["unet"]], .decoded: [[]]])
            XCTAssertEqual(lowEncoder.model.loads, round)
            XCTAssertEqual(Set(result.loadMilliseconds.keys), ["vae_encoder", "text_encoder", "unet", "vae_decoder"])
        }
        // a text-to-image run does not load the encoder
        _ = try pipeline.generate(.defaults(for: pipeline.manifest, prompt: "a red circle", seed: 1))
        XCTAssertEqual(lowEncoder.model.loads, 2)
        #else
        throw XCTSkip("no ONNX Runtime in this build")
        #endif
    }

    /// The command line's image options on a fixture bundle: the record says the mode and strength; a mask or a
    /// strength without an image, a strength out of range or one that leaves no step, and an image of another size,
    /// each one line `error: ...` with exit status 2.
    func testCommandLineImageOptions() throws {
        #if canImport(COnnxRuntime)
        let (name, reference) = try Self.inpaintingReference()
        let bundle = try Fixtures.bundle(name)
        let folder = try Fixtures.requireRoot().appendingPathComponent(name)
        let out = FileManager.default.temporaryDirectory.appendingPathComponent("cli-image-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: out, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: out) }
        let base = ["generate", "--bundle", bundle.path, "--backend", "onnx", "--prompt", reference.prompt, "--seed", "\(reference.seed)",
                    "--out", out.appendingPathComponent("x.png").path, "--json", out.appendingPathComponent("x.json").path]
        let initImage = folder.appendingPathComponent(reference.initImage).path
        let run = try CLITests.run(base + ["--sampler", reference.sampler, "--steps", "\(reference.steps)", "--guidance", "\(reference.guidance)",
                                           "--init-image", initImage, "--mask", folder.appendingPathComponent(reference.mask!).path,
                                           "--warmup", "0"])
        XCTAssertEqual(run.status, 0, run.stderr)
        let record = try JSONSerialization.jsonObject(with: Data(contentsOf: out.appendingPathComponent("x.json"))) as! [String: Any]
        XCTAssertEqual(record["mode"] as? String, "inpaint")
        XCTAssertEqual(record["strength"] as? Double, 1, "inpainting's default strength")
        XCTAssertNotNil((record["files"] as? [String: Any])?["vae_encoder"])
        let plain = try CLITests.run(base + ["--warmup", "0"])
        XCTAssertEqual(plain.status, 0, plain.stderr)
        let textRecord = try JSONSerialization.jsonObject(with: Data(contentsOf: out.appendingPathComponent("x.json"))) as! [String: Any]
        XCTAssertEqual(textRecord["mode"] as? String, "txt2img")
        XCTAssertTrue(textRecord["strength"] is NSNull)

        let small = out.appendingPathComponent("small.png")
        try Data(TestPNG.encode(width: 4, height: 4, colorType: 0, bitDepth: 8, rows: [[UInt8]](repeating: [255, 255, 255, 255], count: 4))).write(to: small)
        let g = try BundleManifest.load(bundle: bundle).geometry
        for (arguments, mention) in [
            (["--mask", initImage], "error: --mask needs --init-image"),
            (["--strength", "0.5"], "error: --strength needs --init-image"),
            (["--init-image", initImage, "--strength", "1.5"], "error: --strength must be in (0, 1], got 1.5"),
            (["--init-image", initImage, "--strength", "half"], "error: --strength must be a number, got half"),
            (["--init-image", initImage, "--sampler", reference.sampler, "--steps", "\(reference.steps)", "--strength", "\(0.5 / Double(reference.steps))"],
             "denoises no step of \(reference.steps)"),
            (["--init-image", small.path], "error: --init-image \(small.path) is 4x4 pixels, the model generates \(g.width)x\(g.height)"),
            (["--init-image", initImage, "--mask", initImage], "is in colour"),
        ] {
            let bad = try CLITests.run(base + arguments)
            let lines = bad.stderr.split(separator: "\n").filter { !$0.isEmpty && !$0.hasPrefix("Schema error: ") }
            XCTAssertEqual(bad.status, 2, "\(arguments): \(bad.stderr)")
            XCTAssertEqual(lines.count, 1, "\(arguments): \(bad.stderr)")
            XCTAssertTrue(lines.first?.contains(mention) == true, "'\(mention)' not in: \(lines)")
        }
        #else
        throw XCTSkip("no ONNX Runtime in this build")
        #endif
    }

    // MARK: an inpainting UNet (image.denoiser "inpainting")

    /// The record of an inpainting UNet's bundle: `denoiser` read (absent: "standard"), inpainting its only mode,
    /// refused with other modes, an unknown denoiser, or a UNet without the two image inputs.
    func testInpaintingDenoiserRecord() throws {
        func inpaintingUNet(_ record: [String: Any], unetInputs: [String] = BundleManifest.inpaintingInputs) throws -> BundleManifest {
            try Self.imageManifest { m in
                m["image"] = record
                var components = m["components"] as! [String: Any]
                var unet = components["unet"] as! [String: Any]
                var inputs = unet["inputs"] as! [[String: Any]]
                for name in unetInputs {
                    let channels = name == "mask" ? 1 : 4
                    inputs.append(["name": name, "dtype": "float32", "shape": ["batch", channels, 16, 16] as [Any], "static_shape": [2, channels, 16, 16]])
                }
                unet["inputs"] = inputs
                components["unet"] = unet
                m["components"] = components
            }
        }
        let record: [String: Any] = ["modes": ["inpaint"], "encoder_posterior": "gaussian", "denoiser": "inpainting"]
        let manifest = try inpaintingUNet(record)
        XCTAssertEqual(manifest.image, BundleManifest.ImageModes(modes: ["inpaint"], encoderPosterior: "gaussian", denoiser: "inpainting"))
        XCTAssertEqual(manifest.image?.inpaintingDenoiser, true)
        XCTAssertEqual(["txt2img", "img2img", "inpaint"].map(manifest.supports), [false, false, true])
        XCTAssertNoThrow(try manifest.requireMode("inpaint"))
        for mode in ["txt2img", "img2img"] {
            XCTAssertThrowsError(try manifest.requireMode(mode)) { error in
                XCTAssertEqual(error as? MobileDiffError, .invalidArgument(BundleManifest.inpaintingOnly), mode)
            }
        }
        // a standard denoiser, said or not
        XCTAssertEqual(try Self.imageManifest().image?.denoiser, "standard")
        let standard = try Self.imageManifest { $0["image"] = ["modes": ["img2img", "inpaint"], "encoder_posterior": "gaussian", "denoiser": "standard"] as [String: Any] }
        XCTAssertEqual(["txt2img", "img2img", "inpaint"].map(standard.supports), [true, true, true])

        let cases: [(String, () throws -> BundleManifest, [String])] = [
            ("an unknown denoiser", { try inpaintingUNet(["modes": ["inpaint"], "encoder_posterior": "gaussian", "denoiser": "outpainting"]) },
             ["image.denoiser", "unknown image denoiser \"outpainting\" (known: standard, inpainting)"]),
            ("an inpainting UNet with img2img", { try inpaintingUNet(["modes": ["img2img", "inpaint"], "encoder_posterior": "gaussian", "denoiser": "inpainting"]) },
             ["image.modes", "an inpainting denoiser runs the inpaint mode alone, not img2img, inpaint"]),
            ("no masked image input", { try inpaintingUNet(record, unetInputs: ["mask"]) },
             ["components.unet.inputs", "has no masked_image_latents"]),
            ("no image inputs", { try inpaintingUNet(record, unetInputs: []) }, ["components.unet.inputs", "has no mask"]),
        ]
        for (name, read, mentions) in cases {
            XCTAssertThrowsError(try read(), name) { error in
                guard case .invalidManifest(_, let reason)? = error as? MobileDiffError else { return XCTFail("\(name): \(error)") }
                for m in mentions { XCTAssertTrue(reason.contains(m), "\(name): '\(m)' not in: \(reason)") }
            }
        }
    }

    /// An inpainting UNet's bundle refuses text-to-image and image-to-image in one line, before any model loads:
    /// `Pipeline.generate` (invalidArgument) and the command line (`error: ...`, exit status 2).
    func testInpaintingUNetRefusesTextAndImageToImage() throws {
        #if canImport(COnnxRuntime)
        let (name, reference) = try Self.inpaintingUNetReference()
        let url = try Fixtures.bundle(name)
        let pipeline = try Pipeline(bundle: url, backend: try ONNXRuntimeBackend())
        let inpaint = try Self.configuration(reference, fixture: name, manifest: pipeline.manifest)
        var text = inpaint
        text.image = nil
        var imageToImage = inpaint
        imageToImage.image?.mask = nil
        imageToImage.image?.strength = 0.6
        for (mode, configuration) in [("txt2img", text), ("img2img", imageToImage)] {
            XCTAssertEqual(configuration.mode, mode)
            XCTAssertThrowsError(try pipeline.generate(configuration), mode) { error in
                XCTAssertEqual(error as? MobileDiffError, .invalidArgument(BundleManifest.inpaintingOnly), mode)
            }
        }
        XCTAssertFalse((pipeline.models + [try XCTUnwrap(pipeline.imageEncoder).model]).contains(where: \.isLoaded), "refused before any load")

        let folder = try Fixtures.requireRoot().appendingPathComponent(name)
        let out = FileManager.default.temporaryDirectory.appendingPathComponent("cli-inpainting-unet-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: out, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: out) }
        let base = ["generate", "--bundle", url.path, "--backend", "onnx", "--prompt", reference.prompt, "--seed", "\(reference.seed)",
                    "--sampler", reference.sampler, "--steps", "\(reference.steps)", "--warmup", "0",
                    "--out", out.appendingPathComponent("x.png").path, "--json", out.appendingPathComponent("x.json").path]
        let initImage = folder.appendingPathComponent(reference.initImage).path
        for arguments in [[], ["--init-image", initImage], ["--init-image", initImage, "--strength", "0.6"]] {
            let bad = try CLITests.run(base + arguments)
            let lines = bad.stderr.split(separator: "\n").filter { !$0.isEmpty && !$0.hasPrefix("Schema error: ") }
            XCTAssertEqual(bad.status, 2, "\(arguments): \(bad.stderr)")
            XCTAssertEqual(lines.map(String.init), ["error: \(BundleManifest.inpaintingOnly)"], "\(arguments)")
        }
        // inpainting runs: the record says so, the encoder ran once (strength 1: the masked image alone)
        let run = try CLITests.run(base + ["--init-image", initImage, "--mask", folder.appendingPathComponent(reference.mask!).path,
                                           "--strength", "\(reference.strength)", "--guidance", "\(reference.guidance)"])
        XCTAssertEqual(run.status, 0, run.stderr)
        let record = try JSONSerialization.jsonObject(with: Data(contentsOf: out.appendingPathComponent("x.json"))) as! [String: Any]
        XCTAssertEqual(record["mode"] as? String, "inpaint")
        XCTAssertEqual((record["calls"] as? [String: Any])?["vae_encoder"] as? Int, reference.strength < 1 ? 2 : 1)
        #else
        throw XCTSkip("no ONNX Runtime in this build")
        #endif
    }

    /// An inpainting UNet's run in the low-memory mode: the resident image bit for bit, one model at a time, the
    /// encoder loaded once per image although it runs twice at strength < 1 (the image, then the masked image).
    func testInpaintingUNetLowMemory() throws {
        #if canImport(COnnxRuntime)
        let (name, reference) = try Self.inpaintingUNetReference(strengthBelowOne: true)
        let url = try Fixtures.bundle(name)
        let resident = try Pipeline(bundle: url, backend: try ONNXRuntimeBackend())
        let configuration = try Self.configuration(reference, fixture: name, manifest: resident.manifest)
        let expected = try resident.generate(configuration)
        XCTAssertEqual(expected.timer.calls["vae_encoder"], 2)
        let pipeline = try Pipeline(bundle: url, backend: try ONNXRuntimeBackend(), lowMemory: true)
        let encoder = try XCTUnwrap(pipeline.imageEncoder)
        var loaded: [Pipeline.Progress.Stage: Set<[String]>] = [:]
        let result = try pipeline.generate(configuration, progress: { progress in
            loaded[progress.stage, default: []].insert((pipeline.models + [encoder.model]).filter(\.isLoaded).map(\.component))
        })
        XCTAssertEqual(result.rawImage, expected.rawImage, "the resident image")
        XCTAssertEqual(loaded, [.textEncoded: [[]], .denoised: [["unet"]], .decoded: [[]]])
        XCTAssertEqual(encoder.model.loads, 1)
        #else
        throw XCTSkip("no ONNX Runtime in this build")
        #endif
    }

    /// The first inpainting reference of a fixture whose bundle's denoiser is an inpainting UNet (`strengthBelowOne`:
    /// one that starts from the image).
    static func inpaintingUNetReference(strengthBelowOne: Bool = false) throws -> (String, Fixtures.ImageReference) {
        for name in try Fixtures.names() where try BundleManifest.load(bundle: try Fixtures.bundle(name)).image?.inpaintingDenoiser == true {
            if let found = try Fixtures.imageReferences(name).map(\.0).first(where: { $0.mode == "inpaint" && (!strengthBelowOne || $0.strength < 1) }) {
                return (name, found)
            }
        }
        throw XCTSkip("no fixture has an inpainting UNet's reference\(strengthBelowOne ? " at strength < 1" : "") (python -m mobilediff.fixtures writes inpainting-unet)")
    }

    /// The configuration of an image reference, its image and mask read from the fixture's files.
    static func configuration(_ reference: Fixtures.ImageReference, fixture: String, manifest: BundleManifest) throws -> Pipeline.Configuration {
        let folder = try Fixtures.requireRoot().appendingPathComponent(fixture)
        let g = manifest.geometry
        let pixels = try ImageInput.readImage(folder.appendingPathComponent(reference.initImage), height: g.height, width: g.width)
        let mask = try reference.mask.map {
            try ImageInput.readMask(folder.appendingPathComponent($0), height: g.height, width: g.width, factor: g.pixelsPerLatent)
        }
        XCTAssertEqual(mask == nil ? "img2img" : "inpaint", reference.mode)
        return Pipeline.Configuration(prompt: reference.prompt, seed: reference.seed, sampler: reference.sampler, steps: reference.steps,
                                      guidanceScale: reference.guidance,
                                      image: Pipeline.ImageCondition(pixels: pixels, mask: mask, strength: reference.strength))
    }

    /// The first inpainting reference of the fixtures whose bundles also run text-to-image (a standard UNet's; an
    /// inpainting UNet's is `inpaintingUNetReference`), preferring the fewest steps.
    static func inpaintingReference() throws -> (String, Fixtures.ImageReference) {
        let all = try Fixtures.textToImageNames().flatMap { name in try Fixtures.imageReferences(name).map { (name, $0.0) } }
        guard let found = all.filter({ $0.1.mode == "inpaint" }).min(by: { $0.1.steps < $1.1.steps }) else {
            throw XCTSkip("no fixture has an inpainting reference (python -m mobilediff.fixtures writes them)")
        }
        return found
    }
}
