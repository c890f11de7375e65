import Foundation
import XCTest
@testable import MobileDiffKit

/// The runtimes the engine runs on are the phone's (ios_demo/scripts/fetch-runtimes.sh), and ONNX Runtime runs a
/// bundle's `.ort` files (its mobile format) where the manifest lists them: on the tiny bundle (`.ort` files written
/// here through ONNX Runtime's own converter option) and on every fixture whose bundle has them.
final class RuntimeTests: XCTestCase {
    /// A backend double that only names its targets (for the file choice).
    final class Targets: InferenceBackend {
        let target: String
        let fileTargets: [String]
        init(_ target: String, _ fileTargets: [String]) {
            self.target = target
            self.fileTargets = fileTargets
        }
        func loadModel(at url: URL, component: String, file: BundleManifest.ComponentFile,
                       spec: BundleManifest.Component) throws -> any InferenceModel {
            throw MobileDiffError.backendUnavailable("a double")
        }
    }

    /// A tiny bundle whose components list `entries` (target, precision, path) after their onnx/fp32 file; the
    /// listed files are not written (the file choice does not open them).
    private func bundle(_ entries: [(String, String, String)]) throws -> MobileDiffBundle {
        let url = try TinyBundle.write { manifest, _ in
            for component in BundleManifest.componentNames {
                var files = TinyBundle.get(manifest, component, "files") as! [[String: Any]]
                for (target, precision, path) in entries {
                    files.append(["target": target, "precision": precision, "path": "\(component)/\(path)", "sha256": String(repeating: "0", count: 64)])
                }
                TinyBundle.set(&manifest, component, "files", files)
            }
        }
        addTeardownBlock { try? FileManager.default.removeItem(at: url) }
        return try MobileDiffBundle(url: url)
    }

    func testTheORTFileIsChosenInTheOnnxFilesPrecision() throws {
        let ort = Targets("onnx", ["ort", "onnx"])
        let plain = try bundle([("onnx", "int8", "model_int8.onnx")])
        XCTAssertEqual(try plain.file(component: "unet", for: ort).path, "unet/model.onnx", "no ort file: the onnx one")
        let both = try bundle([("ort", "int8", "model_int8.ort"), ("ort", "fp32", "model.ort"), ("onnx", "int8", "model_int8.onnx")])
        XCTAssertEqual(try both.file(component: "unet", for: ort).path, "unet/model.ort", "the first onnx file's precision (fp32), as ort")
        XCTAssertEqual(try both.file(component: "unet", for: ort, precision: "int8").path, "unet/model_int8.ort")
        XCTAssertEqual(try both.file(component: "unet", for: Targets("onnx", ["onnx"])).path, "unet/model.onnx", "onnx only")
        XCTAssertEqual(try both.file(component: "text_encoder", for: Targets("onnx", ["ort"])).path, "text_encoder/model.ort", "ort only")
        XCTAssertThrowsError(try plain.file(component: "unet", for: Targets("onnx", ["ort"]))) { error in
            XCTAssertEqual("\(error)", "bundle has no ort file for unet (it has: onnx/fp32, onnx/int8)")
        }
        XCTAssertThrowsError(try both.file(component: "unet", for: ort, precision: "fp16")) { error in
            XCTAssertEqual("\(error)", "bundle has no onnx file for unet (it has: onnx/fp32, ort/int8, ort/fp32, onnx/int8)")
        }
        XCTAssertTrue(both.runs(on: ort))
        XCTAssertFalse(plain.runs(on: Targets("executorch", ["executorch"])))
    }

    func testBackendChoiceOffersWhatTheBundleAndTheBuildHold() throws {
        let onnxOnly = try bundle([]).manifest
        let all = try bundle([("ort", "fp32", "model.ort"), ("executorch", "fp32", "model.pte"), ("coreml", "fp16", "model.mlpackage")]).manifest
        XCTAssertEqual(BackendKind.available(for: onnxOnly, compiled: [.coreml, .onnx, .executorch]), [.onnx])
        XCTAssertEqual(BackendKind.available(for: all, compiled: [.coreml, .onnx, .executorch]), [.coreml, .onnx, .executorch])
        XCTAssertEqual(BackendKind.available(for: all, compiled: [.onnx]), [.onnx], "only what the build holds")
        XCTAssertEqual(BackendKind.available(for: onnxOnly, compiled: [.coreml, .executorch]), [])
        XCTAssertEqual(BackendKind.choose(for: all, preferred: .executorch, compiled: [.coreml, .onnx, .executorch]), .executorch)
        XCTAssertEqual(BackendKind.choose(for: onnxOnly, preferred: .coreml, compiled: [.coreml, .onnx]), .onnx)
        XCTAssertNil(BackendKind.choose(for: onnxOnly, compiled: [.coreml]))
        XCTAssertEqual(BackendKind.unavailableReason(for: onnxOnly, compiled: [.coreml]),
                       "this bundle has files for onnx; this build runs Core ML")
        #if canImport(COnnxRuntime)
        XCTAssertTrue(BackendKind.compiledIn.contains(.onnx))
        #endif
        #if os(Linux)
        // Core ML is Apple's; ExecutorchLib has iOS slices only, so a Linux build holds ExecuTorch where the executorch
        // wheel's host runtime was laid out (test.sh names its version in MOBILEDIFF_EXECUTORCH_VERSION, and then it
        // must be there)
        let hostExecuTorch = BackendKind.compiledIn.contains(.executorch)
        XCTAssertEqual(BackendKind.compiledIn, hostExecuTorch ? [.onnx, .executorch] : [.onnx])
        if let version = ProcessInfo.processInfo.environment["MOBILEDIFF_EXECUTORCH_VERSION"] {
            XCTAssertTrue(hostExecuTorch, "test.sh laid out the executorch \(version) wheel's host runtime, but this build does not hold ExecuTorch")
            print("executorch_version \(version) (the executorch wheel's host runtime)")
        }
        XCTAssertEqual(try BackendKind.onnx.makeBackend().fileTargets, ["ort", "onnx"])
        if hostExecuTorch {
            XCTAssertEqual(try BackendKind.executorch.makeBackend().fileTargets, ["executorch"])
        }
        for kind in [BackendKind.coreml] + (hostExecuTorch ? [] : [.executorch]) {
            XCTAssertThrowsError(try kind.makeBackend()) { error in
                guard case .backendUnavailable = error as? MobileDiffError else { return XCTFail("\(error)") }
            }
        }
        #endif
    }

    #if canImport(COnnxRuntime)
    /// The library loaded at run time is the release the headers declare (ORT_API_VERSION 29: 1.29.x), and the one
    /// test.sh expects (MOBILEDIFF_ORT_VERSION, from the layout's runtimes.json). test.sh shows the printed line.
    func testONNXRuntimeIsThePhonesVersion() throws {
        let version = ONNXRuntimeBackend.version
        print("onnxruntime_version \(version) (C API \(ONNXRuntimeBackend.headerAPIVersion))")
        XCTAssertTrue(version.hasPrefix("1.\(ONNXRuntimeBackend.headerAPIVersion)."),
                      "the library is ONNX Runtime \(version), the headers declare C API \(ONNXRuntimeBackend.headerAPIVersion)")
        if let expected = ProcessInfo.processInfo.environment["MOBILEDIFF_ORT_VERSION"] {
            XCTAssertEqual(version, expected)
        }
        XCTAssertEqual(try ONNXRuntimeBackend().runtimeDescription, "onnxruntime \(version)")
    }

    /// The tiny bundle with an `ort` file beside each `onnx` one (written by ONNX Runtime's own ORT-format option):
    /// the engine loads the `.ort` files and makes the same image as from the `.onnx` files.
    func testTinyBundleRunsFromItsORTFiles() throws {
        let converter = try ONNXRuntimeBackend()
        let url = try TinyBundle.write { manifest, dir in
            for component in BundleManifest.componentNames {
                let ort = dir.appendingPathComponent("\(component)/model.ort")
                try converter.saveORTFormat(of: dir.appendingPathComponent("\(component)/model.onnx"), to: ort)
                var files = TinyBundle.get(manifest, component, "files") as! [[String: Any]]
                files.append(["target": "ort", "precision": "fp32", "path": "\(component)/model.ort",
                              "sha256": try FileChecks.sha256(of: ort), "size_bytes": try Data(contentsOf: ort).count])
                TinyBundle.set(&manifest, component, "files", files)
            }
        }
        defer { try? FileManager.default.removeItem(at: url) }
        let ortPipeline = try Pipeline(bundle: url, backend: try ONNXRuntimeBackend())
        XCTAssertEqual(ortPipeline.models.map(\.file.path),
                       ["text_encoder/model.ort", "unet/model.ort", "vae_decoder/model.ort"])
        let head = try Data(contentsOf: url.appendingPathComponent("unet/model.ort")).prefix(8)
        XCTAssertEqual(String(decoding: head.suffix(4), as: UTF8.self), "ORTM", "an ORT-format flatbuffer")
        let configuration = Pipeline.Configuration.defaults(for: ortPipeline.manifest, prompt: "a red circle", seed: 5)
        let fromORT = try ortPipeline.generate(configuration)
        let fromONNX = try Pipeline(bundle: url, backend: try ONNXRuntimeBackend(formats: ["onnx"])).generate(configuration)
        XCTAssertEqual(fromORT.rawImage, fromONNX.rawImage)
    }

    /// Every fixture whose bundle lists `ort` files, end to end from them (the engine's default choice) against
    /// Python's `generate --bundle` image (>= 40 dB) and against the same engine on the `.onnx` files.
    func testFixturesRunFromTheirORTFiles() throws {
        // the fixtures with text-to-image references (an inpainting UNet's has image references only)
        let names = try Fixtures.textToImageNames().filter { name in
            guard let manifest = try? BundleManifest.load(bundle: try Fixtures.bundle(name)) else { return false }
            return BundleManifest.componentNames.allSatisfy { manifest.components[$0]?.files.contains { $0.target == "ort" } ?? false }
        }
        guard !names.isEmpty else {
            throw XCTSkip("no fixture bundle lists ort files (fixtures made before `export --target onnx` wrote .ort: make them again)")
        }
        for name in names {
            let pipeline = try Pipeline(bundle: try Fixtures.bundle(name), backend: try ONNXRuntimeBackend())
            XCTAssertTrue(pipeline.models.allSatisfy { $0.file.target == "ort" }, name)
            let (reference, expected) = try Fixtures.reference(name, seed: 0)
            let configuration = Pipeline.Configuration(prompt: reference.prompt, seed: reference.seed, sampler: reference.sampler,
                                                       steps: reference.steps, guidanceScale: reference.guidance)
            let result = try pipeline.generate(configuration)
            let onnx = try Pipeline(bundle: try Fixtures.bundle(name), backend: try ONNXRuntimeBackend(formats: ["onnx"])).generate(configuration)
            let psnr = Compare.psnr(result.rawImage, expected, peak: 2)
            let formats = Compare.psnr(result.rawImage, onnx.rawImage, peak: 2)
            print(String(format: "end_to_end_ort %@ %@-%d seed 0: %.1f dB vs generate --bundle, %.1f dB vs the .onnx files, onnxruntime %@",
                         name, configuration.sampler, configuration.steps, psnr, formats, ONNXRuntimeBackend.version))
            XCTAssertGreaterThanOrEqual(psnr, EndToEndTests.floorDB, name)
        }
    }
    #endif
}
