import Foundation
import XCTest
@testable import MobileDiffKit

final class BundleTests: XCTestCase {
    func testSHA256KnownAnswer() throws {
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("abc-\(UUID().uuidString)")
        try Data("abc".utf8).write(to: file)
        defer { try? FileManager.default.removeItem(at: file) }
        XCTAssertEqual(try FileChecks.sha256(of: file), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
    }

    /// A directory (an .mlpackage) hashes as mobilediff/bundle.py `sha256_path` does: files in Python's sorted
    /// Path order (component-wise: "a/b" before "a-b"), each as relative path bytes then file bytes.
    /// Expected value from Python on the same tree.
    func testDirectorySHA256MatchesPython() throws {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("dir-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: root) }
        try FileManager.default.createDirectory(at: root.appendingPathComponent("a"), withIntermediateDirectories: true)
        try Data("x".utf8).write(to: root.appendingPathComponent("a-b"))
        try Data("yy".utf8).write(to: root.appendingPathComponent("a/b"))
        try Data().write(to: root.appendingPathComponent("Z"))
        XCTAssertEqual(try FileChecks.sha256(of: root), "0fc13c0f791cfcf8510192f1c8973e2cddd95eb68c1a03ab8885867d6cabe73f")
    }

    func testManifestOfEveryFixtureDecodes() throws {
        for name in try Fixtures.names() {
            let manifest = try BundleManifest.load(bundle: try Fixtures.bundle(name))
            // format 2: the fixtures' transformer bundle, whose text encoder and denoiser take the caption's mask
            XCTAssertEqual(manifest.formatVersion, manifest.masksText ? 2 : 1, name)
            XCTAssertEqual(manifest.geometry.latentShape.count, 4, name)
            XCTAssertFalse(manifest.samplers.isEmpty, name)
            let plan = Pipeline.Configuration.defaults(for: manifest)
            XCTAssertNoThrow(try manifest.samplerTable(plan.sampler, steps: plan.steps), "\(name): the default plan has a table")
            for component in ["text_encoder", "unet", "vae_decoder"] {
                XCTAssertNoThrow(try MobileDiffBundle(url: try Fixtures.bundle(name)).file(component: component, target: "onnx"), "\(name) \(component)")
            }
        }
    }

    func testMissingBundle() {
        let url = URL(fileURLWithPath: "/nonexistent/bundle")
        XCTAssertThrowsError(try MobileDiffBundle(url: url)) { error in
            XCTAssertEqual(error as? MobileDiffError, .bundleNotFound(path: url.path))
        }
    }

    func testMissingFile() throws {
        let bundle = try Fixtures.bundleCopy("default")
        defer { try? FileManager.default.removeItem(at: bundle) }
        let opened = try MobileDiffBundle(url: bundle)
        let entry = try opened.file(component: "unet", target: "onnx")
        try FileManager.default.removeItem(at: bundle.appendingPathComponent(entry.path))
        XCTAssertThrowsError(try opened.verifiedURL(of: entry)) { error in
            XCTAssertEqual(error as? MobileDiffError, .fileMissing(path: bundle.appendingPathComponent(entry.path).path))
        }
        // and through the pipeline, which checks each file when it loads its model
        XCTAssertThrowsError(try Pipeline(bundle: bundle, backend: NullBackend()).denoiser.loadResources()) { error in
            guard case .fileMissing = error as? MobileDiffError else { return XCTFail("expected fileMissing, got \(error)") }
        }
    }

    func testChecksumMismatch() throws {
        let bundle = try Fixtures.bundleCopy("default")
        defer { try? FileManager.default.removeItem(at: bundle) }
        let opened = try MobileDiffBundle(url: bundle)
        let entry = try opened.file(component: "vae_decoder", target: "onnx")
        let url = bundle.appendingPathComponent(entry.path)
        var bytes = try Data(contentsOf: url)
        bytes[bytes.count / 2] ^= 0x01  // one flipped bit
        try bytes.write(to: url)
        XCTAssertThrowsError(try opened.verifiedURL(of: entry)) { error in
            guard case .checksumMismatch(let path, let expected, let actual)? = error as? MobileDiffError else {
                return XCTFail("expected checksumMismatch, got \(error)")
            }
            XCTAssertEqual(path, url.path)
            XCTAssertEqual(expected, entry.sha256)
            XCTAssertNotEqual(actual, expected)
        }
    }

    func testNewerManifestIsRefused() throws {
        let bundle = try Fixtures.bundleCopy("default")
        defer { try? FileManager.default.removeItem(at: bundle) }
        let url = bundle.appendingPathComponent("manifest.json")
        var json = try JSONSerialization.jsonObject(with: Data(contentsOf: url)) as! [String: Any]
        json["format_version"] = 3
        json["geometry"] = "changed meaning in version 3"  // a newer major version need not decode at all
        try JSONSerialization.data(withJSONObject: json).write(to: url)
        XCTAssertThrowsError(try MobileDiffBundle(url: bundle)) { error in
            XCTAssertEqual(error as? MobileDiffError, .unsupportedManifestVersion(found: 3, supported: 2))
        }
    }

    func testNotAManifest() throws {
        let bundle = try Fixtures.bundleCopy("default")
        defer { try? FileManager.default.removeItem(at: bundle) }
        try Data(#"{"format": "something.else", "format_version": 1}"#.utf8).write(to: bundle.appendingPathComponent("manifest.json"))
        XCTAssertThrowsError(try MobileDiffBundle(url: bundle)) { error in
            guard case .invalidManifest = error as? MobileDiffError else { return XCTFail("expected invalidManifest, got \(error)") }
        }
    }

    func testUnknownSamplerAndBadArguments() throws {
        let pipeline = try Pipeline(bundle: try Fixtures.bundle("default"), backend: NullBackend())
        var configuration = Pipeline.Configuration.defaults(for: pipeline.manifest, prompt: "x")
        configuration.steps = 7
        XCTAssertThrowsError(try pipeline.generate(configuration)) { error in
            guard case .samplerUnavailable(_, 7, let available)? = error as? MobileDiffError else { return XCTFail("\(error)") }
            XCTAssertFalse(available.isEmpty)
        }
        configuration.steps = 0
        XCTAssertThrowsError(try pipeline.generate(configuration)) { error in
            XCTAssertEqual(error as? MobileDiffError, .invalidArgument("steps must be >= 1, got 0"))
        }
    }
}

/// A backend that loads nothing (for tests that fail before any model runs).
final class NullBackend: InferenceBackend {
    let target = "onnx"
    func loadModel(at url: URL, component: String, file: BundleManifest.ComponentFile,
                   spec: BundleManifest.Component) throws -> any InferenceModel {
        throw MobileDiffError.backendUnavailable("NullBackend runs nothing")
    }
}
