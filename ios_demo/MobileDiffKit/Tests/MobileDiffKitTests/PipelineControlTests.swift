import Foundation
import XCTest
@testable import MobileDiffKit

/// What the app builds on: progress after every unit of work, cancellation between model calls, the peak memory of
/// a generation, models released under memory pressure (also from another thread, mid-generation) with the same
/// image, and bundles imported into the app's own library.
final class PipelineControlTests: XCTestCase {
    /// The tiny bundle with a 4-step table (each step: latent = unet output) as its default plan.
    private func fourStepBundle() throws -> URL {
        let url = try TinyBundle.write { manifest, _ in
            var samplers = manifest["samplers"] as! [[String: Any]]
            samplers.append(["name": "ddim", "steps": 4, "init_noise_sigma": 1.0, "timesteps": [999.0, 749.0, 499.0, 249.0],
                             "input_scale": [1.0, 1.0, 1.0, 1.0], "latent_coef": [[0.0], [0.0], [0.0], [0.0]],
                             "output_coef": [[1.0], [1.0], [1.0], [1.0]], "noise_coef": [0.0, 0.0, 0.0, 0.0]])
            manifest["samplers"] = samplers
            manifest["default_sampling"] = ["sampler": "ddim", "steps": 4, "guidance": 1.0]
        }
        addTeardownBlock { try? FileManager.default.removeItem(at: url) }
        return url
    }

    #if canImport(COnnxRuntime)
    func testProgressAfterEveryStep() throws {
        let pipeline = try Pipeline(bundle: try fourStepBundle(), backend: try ONNXRuntimeBackend())
        var reports: [Pipeline.Progress] = []
        let result = try pipeline.generate(.defaults(for: pipeline.manifest, prompt: "a red circle", seed: 1),
                                           progress: { reports.append($0) })
        XCTAssertEqual(reports.map(\.stage), [.textEncoded, .denoised, .denoised, .denoised, .denoised, .decoded])
        XCTAssertEqual(reports.map(\.step), [0, 1, 2, 3, 4, 4])
        XCTAssertEqual(reports.map(\.fraction), [1.0 / 6, 2.0 / 6, 3.0 / 6, 4.0 / 6, 5.0 / 6, 1])
        XCTAssertTrue(zip(reports, reports.dropFirst()).allSatisfy { $0.elapsedSeconds <= $1.elapsedSeconds })
        XCTAssertTrue(reports.allSatisfy { $0.steps == 4 })
        // the peak covers every footprint seen during the generation
        let seen = reports.compactMap(\.memoryBytes)
        XCTAssertEqual(seen.count, reports.count, "the footprint is readable here")
        XCTAssertGreaterThanOrEqual(result.peakMemoryBytes, seen.max() ?? 0)
        #if os(Linux)
        XCTAssertEqual(result.peakMemoryMethod, "VmHWM")
        #endif
        print(String(format: "peak_memory %.1f MiB (%@)", Double(result.peakMemoryBytes) / 1_048_576, result.peakMemoryMethod))
    }

    /// Without a per-generation reset the peak is the kernel's mark over everything before (what the engine's
    /// command line reports: "process" there, "last_reset" here, where earlier generations reset it), so it is at
    /// least the last generation's own.
    func testPeakWithoutAResetCoversEarlierWork() throws {
        let pipeline = try Pipeline(bundle: try fourStepBundle(), backend: try ONNXRuntimeBackend())
        let configuration = Pipeline.Configuration.defaults(for: pipeline.manifest, prompt: "a red circle", seed: 1)
        let own = try pipeline.generate(configuration)
        pipeline.peakPerGeneration = false
        let whole = try pipeline.generate(configuration)
        XCTAssertEqual(own.peakMemoryScope, "generation")
        #if os(Linux)
        XCTAssertEqual(whole.peakMemoryScope, MemoryFootprint.wasReset ? "last_reset" : "process")
        XCTAssertEqual(whole.peakMemoryMethod, "VmHWM")
        XCTAssertGreaterThanOrEqual(whole.peakMemoryBytes, own.peakMemoryBytes)
        #endif
        XCTAssertEqual(own.rawImage, whole.rawImage)
    }

    func testCancelStopsBeforeTheNextModelCall() throws {
        let pipeline = try Pipeline(bundle: try fourStepBundle(), backend: try ONNXRuntimeBackend())
        let configuration = Pipeline.Configuration.defaults(for: pipeline.manifest, prompt: "a red circle", seed: 1)
        var reports: [Pipeline.Progress] = []
        XCTAssertThrowsError(try pipeline.generate(configuration, progress: { reports.append($0) },
                                                   isCancelled: { reports.count >= 3 })) { error in
            XCTAssertEqual(error as? MobileDiffError, .cancelled)
            XCTAssertEqual("\(error)", "generation cancelled")
        }
        XCTAssertEqual(reports.map(\.step), [0, 1, 2], "no step after the cancel")
        XCTAssertThrowsError(try pipeline.generate(configuration, isCancelled: { true })) { error in
            XCTAssertEqual(error as? MobileDiffError, .cancelled, "cancelled before the text encoder")
        }
        // a cancelled generation leaves the pipeline as it was: the next one makes the image as a fresh pipeline does
        let again = try pipeline.generate(configuration)
        let fresh = try Pipeline(bundle: pipeline.bundle.url, backend: try ONNXRuntimeBackend()).generate(configuration)
        XCTAssertEqual(again.rawImage, fresh.rawImage)
    }

    /// Models are loaded when first used; a release between steps (the app's memory-warning handler) drops them
    /// and the generation reloads what it needs, with the same image.
    func testReleaseBetweenStepsReloadsLazily() throws {
        let pipeline = try Pipeline(bundle: try fourStepBundle(), backend: try ONNXRuntimeBackend())
        XCTAssertFalse(pipeline.textEncoder.model.isLoaded || pipeline.denoiser.model.isLoaded || pipeline.decoder.model.isLoaded,
                       "nothing is loaded before it is needed")
        let configuration = Pipeline.Configuration.defaults(for: pipeline.manifest, prompt: "a red circle", seed: 2)
        let undisturbed = try pipeline.generate(configuration)
        XCTAssertEqual(pipeline.denoiser.model.loads, 1)
        let released = try pipeline.generate(configuration, progress: { progress in
            if progress.step == 2 { pipeline.unloadResources() }
        })
        XCTAssertEqual(released.rawImage, undisturbed.rawImage)
        XCTAssertEqual(pipeline.denoiser.model.loads, 2, "the denoiser was released at step 2 and loaded again for step 3")
        XCTAssertEqual(pipeline.textEncoder.model.loads, 1, "the text encoder was not needed again")
        XCTAssertFalse(pipeline.textEncoder.model.isLoaded)
    }
    #endif

    /// A release from another thread while a real model runs: the call in flight finishes on its model, which is
    /// released afterwards; the image is the one an undisturbed generation makes.
    func testReleaseFromAnotherThreadDuringAGeneration() throws {
        #if canImport(COnnxRuntime)
        let pipeline = try Pipeline(bundle: try Fixtures.bundle("progressive-4"), backend: try ONNXRuntimeBackend())
        let configuration = Pipeline.Configuration.defaults(for: pipeline.manifest, prompt: "a red circle", seed: 4)
        let undisturbed = try pipeline.generate(configuration)
        let done = DispatchSemaphore(value: 0)
        let stop = ManagedAtomicFlag()
        let models = UncheckedBox(pipeline.models)
        let releases = UncheckedBox(0)
        Thread.detachNewThread {
            while !stop.isSet {
                models.value.forEach { $0.unloadResources() }  // what Pipeline.unloadResources does
                releases.value += 1
                usleep(2_000)
            }
            done.signal()
        }
        let disturbed = try pipeline.generate(configuration)
        stop.set()
        done.wait()
        let loads = pipeline.models.map(\.loads).reduce(0, +)
        print("release_under_pressure progressive-4: \(releases.value) releases, \(loads) loads in all, same image: \(disturbed.rawImage == undisturbed.rawImage)")
        XCTAssertGreaterThan(loads, 3, "some model was released and loaded again")
        XCTAssertGreaterThanOrEqual(Compare.psnr(disturbed.rawImage, undisturbed.rawImage, peak: 2), 120)
        #else
        throw XCTSkip("no ONNX Runtime in this build")
        #endif
    }

    func testBundleLibraryImportsCopiesAndRefusesNonBundles() throws {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("library-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: root) }
        let library = BundleLibrary(root: root)
        XCTAssertEqual(library.bundles(), [])
        let source = try TinyBundle.write()
        defer { try? FileManager.default.removeItem(at: source) }
        let imported = try library.importBundle(from: source, name: "tiny")
        XCTAssertEqual(library.bundles().map(\.lastPathComponent), ["tiny"])
        let copy = try MobileDiffBundle(url: imported)
        XCTAssertEqual(try copy.verifiedURL(of: copy.file(component: "unet", target: "onnx")).lastPathComponent, "model.onnx",
                       "the copy's files match their sha256")
        // importing again under the same name replaces the earlier copy
        try library.importBundle(from: source, name: "tiny")
        XCTAssertEqual(library.bundles().map(\.lastPathComponent), ["tiny"])
        // not a bundle: refused before anything is copied, and nothing is left behind
        let notABundle = FileManager.default.temporaryDirectory.appendingPathComponent("not-a-bundle-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: notABundle, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: notABundle) }
        XCTAssertThrowsError(try library.importBundle(from: notABundle)) { error in
            guard case .bundleNotFound = error as? MobileDiffError else { return XCTFail("\(error)") }
        }
        let broken = try TinyBundle.write()
        defer { try? FileManager.default.removeItem(at: broken) }
        try Data("not a vocabulary".utf8).write(to: broken.appendingPathComponent("tokenizer/vocab.json"))
        XCTAssertThrowsError(try library.importBundle(from: broken)) { error in
            guard case .checksumMismatch = error as? MobileDiffError else { return XCTFail("\(error)") }
        }
        XCTAssertThrowsError(try library.importBundle(from: source, name: "../escape"))
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: root.path), ["tiny"], "no staging folder left")
        try library.remove(imported)
        XCTAssertEqual(library.bundles(), [])
        XCTAssertThrowsError(try library.remove(source), "only the library's own bundles are removed")
    }
}

/// A value handed to one other thread, read after it is done (the semaphore orders the accesses).
final class UncheckedBox<T>: @unchecked Sendable {
    var value: T
    init(_ value: T) { self.value = value }
}

/// A flag one thread sets and another reads.
final class ManagedAtomicFlag: @unchecked Sendable {
    private let lock = NSLock()
    private var value = false
    var isSet: Bool { lock.withLock { value } }
    func set() { lock.withLock { value = true } }
}
