import Foundation
import XCTest
@testable import MobileDiffKit

/// Every file of a bundle is checked against its sha256 before it is read, the tokenizer's included (manifest
/// `tokenizer.file_sha256`, as docs/bundle.md says loaders do). On the tiny bundle; no runtime is needed.
final class TokenizerChecksumTests: XCTestCase {
    func testModifiedTokenizerFileIsRefused() throws {
        let url = try TinyBundle.write()
        defer { try? FileManager.default.removeItem(at: url) }
        let merges = url.appendingPathComponent("tokenizer/merges.txt")
        let handle = try FileHandle(forWritingTo: merges)
        try handle.seekToEnd()
        try handle.write(contentsOf: Data("a b\n".utf8))
        try handle.close()
        XCTAssertThrowsError(try Pipeline(bundle: url, backend: NullBackend())) { error in
            guard case .checksumMismatch(let path, let expected, let actual)? = error as? MobileDiffError else {
                return XCTFail("expected checksumMismatch, got \(error)")
            }
            XCTAssertEqual(path, merges.path)
            XCTAssertNotEqual(expected, actual)
        }
    }

    func testMissingTokenizerFileIsNamed() throws {
        let url = try TinyBundle.write()
        defer { try? FileManager.default.removeItem(at: url) }
        let vocab = url.appendingPathComponent("tokenizer/vocab.json")
        try FileManager.default.removeItem(at: vocab)
        XCTAssertThrowsError(try Pipeline(bundle: url, backend: NullBackend())) { error in
            XCTAssertEqual(error as? MobileDiffError, .fileMissing(path: vocab.path))
        }
    }

    func testChecksumsAreReadFromTheManifest() throws {
        let url = try TinyBundle.write()
        defer { try? FileManager.default.removeItem(at: url) }
        let manifest = try BundleManifest.load(bundle: url)
        XCTAssertEqual(manifest.tokenizer.fileSha256.keys.sorted(), ["tokenizer/merges.txt", "tokenizer/vocab.json"])
        XCTAssertEqual(manifest.tokenizer.fileSha256["tokenizer/vocab.json"],
                       try FileChecks.sha256(of: url.appendingPathComponent("tokenizer/vocab.json")))
    }

    func testAMistypedChecksumIsRefusedByName() throws {
        let url = try TinyBundle.write { m, _ in
            var tokenizer = m["tokenizer"] as! [String: Any]
            tokenizer["file_sha256"] = ["tokenizer/vocab.json": 7]
            m["tokenizer"] = tokenizer
        }
        defer { try? FileManager.default.removeItem(at: url) }
        XCTAssertThrowsError(try BundleManifest.load(bundle: url)) { error in
            XCTAssertTrue("\(error)".contains("tokenizer.file_sha256.tokenizer/vocab.json"), "\(error)")
        }
    }
}
