import Foundation
import XCTest
@testable import MobileDiffKit

/// Format 2 (transformer bundles): this engine reads format versions 1...2 and runs CLIP BPE bundles only. A
/// `tokenizer.kind` other than "clip-bpe" (format 2's "unigram", which has no bos_id) is refused in one line naming
/// it, before any complaint about the fields it lacks; "clip-bpe" reads as a bundle without the field. On `TinyBundle`:
/// no fixtures needed. The Kotlin engine's TokenizerKindTest.kt checks the same.
final class TokenizerKindTests: XCTestCase {
    /// A format-2 manifest of a unigram tokenizer, as mobilediff's Python side writes one for a transformer bundle.
    static func unigram(_ manifest: inout [String: Any]) {
        manifest["format_version"] = 2
        var tokenizer = manifest["tokenizer"] as! [String: Any]
        tokenizer["kind"] = "unigram"
        tokenizer["bos_id"] = NSNull()
        tokenizer["files"] = ["tokenizer/tokenizer.json"]
        manifest["tokenizer"] = tokenizer
    }

    static func tokenizerKind(_ kind: Any) -> (inout [String: Any], URL) throws -> Void {
        { manifest, _ in
            var tokenizer = manifest["tokenizer"] as! [String: Any]
            tokenizer["kind"] = kind
            manifest["tokenizer"] = tokenizer
        }
    }

    /// The one line `MobileDiffBundle(url:)` refuses `bundle` with (an `invalidManifest`).
    private func refusal(_ bundle: URL, file: StaticString = #filePath, line: UInt = #line) -> String {
        do {
            let opened = try MobileDiffBundle(url: bundle)
            XCTFail("read without an error (format version \(opened.manifest.formatVersion))", file: file, line: line)
            return ""
        } catch let error as MobileDiffError {
            guard case .invalidManifest = error else {
                XCTFail("expected invalidManifest, got \(error)", file: file, line: line)
                return ""
            }
            let message = error.description
            XCTAssertFalse(message.contains("\n"), "one line: \(message)", file: file, line: line)
            return message
        } catch {
            XCTFail("expected a MobileDiffError, got \(error)", file: file, line: line)
            return ""
        }
    }

    func testAUnigramTokenizerIsRefusedInOneLineNamingIt() throws {
        let bundle = try TinyBundle.write { manifest, _ in Self.unigram(&manifest) }
        defer { try? FileManager.default.removeItem(at: bundle) }
        let message = refusal(bundle)
        XCTAssertTrue(message.contains(#"tokenizer.kind "unigram" is not supported by this app"#), message)
        XCTAssertTrue(message.contains("CLIP BPE"), message)
        // refused for its kind, not for the bos_id a unigram tokenizer does not have
        XCTAssertFalse(message.contains("bos_id"), message)
    }

    func testAUnigramTokenizerIsRefusedBeforeAnyOtherField() throws {
        // the kind is checked first: a transformer bundle is named for what it is, whatever else it holds
        let bundle = try TinyBundle.write { manifest, _ in
            Self.unigram(&manifest)
            manifest["geometry"] = nil
        }
        defer { try? FileManager.default.removeItem(at: bundle) }
        XCTAssertTrue(refusal(bundle).contains("unigram"))
    }

    func testAnyOtherKindAndAMistypedKindAreRefused() throws {
        let other = try TinyBundle.write(edit: Self.tokenizerKind("wordpiece"))
        defer { try? FileManager.default.removeItem(at: other) }
        XCTAssertTrue(refusal(other).contains(#"tokenizer.kind "wordpiece""#))
        let mistyped = try TinyBundle.write(edit: Self.tokenizerKind(5))
        defer { try? FileManager.default.removeItem(at: mistyped) }
        let message = refusal(mistyped)
        XCTAssertTrue(message.contains("tokenizer.kind") && message.contains("expected a string"), message)
    }

    func testFormatTwoWithAClipTokenizerReadsAsFormatOne() throws {
        for kind in ["clip-bpe", NSNull()] as [Any] {
            let bundle = try TinyBundle.write { manifest, url in
                try Self.tokenizerKind(kind)(&manifest, url)
                manifest["format_version"] = 2
            }
            defer { try? FileManager.default.removeItem(at: bundle) }
            let opened = try MobileDiffBundle(url: bundle)
            XCTAssertEqual(opened.manifest.formatVersion, 2)
            XCTAssertEqual(opened.manifest.tokenizer.bosId, 49406)
            let ids = try BPETokenizer(folder: opened.tokenizerURL(), info: opened.manifest.tokenizer).encode("a photo")
            XCTAssertEqual(ids.count, TinyBundle.maxLength)
            XCTAssertEqual(ids.first, 49406)
        }
    }

    func testANewerFormatThanTwoIsStillRefused() throws {
        let bundle = try TinyBundle.write { manifest, _ in manifest["format_version"] = 3 }
        defer { try? FileManager.default.removeItem(at: bundle) }
        XCTAssertThrowsError(try MobileDiffBundle(url: bundle)) { error in
            XCTAssertEqual(error as? MobileDiffError, .unsupportedManifestVersion(found: 3, supported: 2))
            XCTAssertFalse("\(error)".contains("\n"))
        }
    }
}
