import XCTest
@testable import MobileDiffKit

/// Token ids against the goldens (transformers' CLIPTokenizer on the bundle's own vocab.json/merges.txt).
final class TokenizerTests: XCTestCase {
    func testIdsEqualGoldens() throws {
        var checked = 0
        for name in try Fixtures.names() where try Fixtures.hasGoldens(name) {
            let bundle = try MobileDiffBundle(url: try Fixtures.bundle(name))
            let tokenizer = try BPETokenizer(folder: bundle.tokenizerURL(), info: bundle.manifest.tokenizer)
            for test in try Fixtures.goldens(name).document.tokenizer {
                XCTAssertEqual(tokenizer.encode(test.prompt), test.ids, "\(name): \(test.prompt.debugDescription)")
                checked += 1
            }
        }
        XCTAssertGreaterThan(checked, 0)
    }

    func testPaddingAndTruncation() throws {
        let bundle = try MobileDiffBundle(url: try Fixtures.bundle("default"))
        let info = bundle.manifest.tokenizer
        let tokenizer = try BPETokenizer(folder: bundle.tokenizerURL(), info: info)
        let empty = tokenizer.encode("")
        XCTAssertEqual(empty.count, info.maxLength)
        XCTAssertEqual(Array(empty.prefix(2)), [info.bosId, info.eosId])
        XCTAssertTrue(empty.dropFirst(2).allSatisfy { $0 == info.padId })
        let long = tokenizer.encode(String(repeating: "red circle ", count: 100))
        XCTAssertEqual(long.count, info.maxLength)
        XCTAssertEqual(long.first, info.bosId)
        XCTAssertEqual(long.last, info.eosId, "truncation keeps the end token")
    }

    func testNormalisationAndSplitting() {
        XCTAssertEqual(BPETokenizer.normalize("  A\tBIG\n\nSquare  "), "a big square")
        XCTAssertEqual(BPETokenizer.words(in: "it's 42x, ok!!"), ["it", "'s", "4", "2", "x", ",", "ok", "!!"])
    }

    func testByteTableIsABijection() {
        let table = BPETokenizer.bytesToUnicode()
        XCTAssertEqual(Set(table).count, 256)
        XCTAssertEqual(table[Int(UInt8(ascii: "a"))], "a")
        XCTAssertEqual(table[Int(UInt8(ascii: " "))], "Ġ")
    }
}
