import Foundation
import XCTest
@testable import MobileDiffKit

/// The prompt rule of mobilediff.sampling.check_prompt, with Python's messages (expected strings from Python).
final class PromptTests: XCTestCase {
    private func refusal(_ body: () throws -> Void) -> String {
        do {
            try body()
        } catch MobileDiffError.invalidArgument(let message) {
            return message
        } catch {
            return "unexpected \(error)"
        }
        return "no error"
    }

    func testControlCharactersAreRefusedButTabNewlineAndReturn() throws {
        try Prompts.check("tab\tnl\nr\r ok \r\n")
        try Prompts.check("😀 café ¿qué? \u{a0} \u{2028}")
        let tail = ": only tab, newline and carriage return are allowed"
        XCTAssertEqual(refusal { try Prompts.check("a\u{1b}b") }, "prompt has a control character (U+001B at character 1)\(tail)")
        XCTAssertEqual(refusal { try Prompts.check("x\u{7f}y") }, "prompt has a control character (U+007F at character 1)\(tail)")
        XCTAssertEqual(refusal { try Prompts.check("\u{85}z") }, "prompt has a control character (U+0085 at character 0)\(tail)")
        XCTAssertEqual(refusal { try Prompts.check("e\u{301}\u{0}") }, "prompt has a control character (U+0000 at character 2)\(tail)")
        // characters are Unicode scalars, as Python counts them
        XCTAssertEqual(refusal { try Prompts.check("😀\u{1}", label: "--prompt") }, "--prompt has a control character (U+0001 at character 1)\(tail)")
    }

    func testInvalidUTF8BytesAreRefusedAsPythonReportsThem() throws {
        let cases: [([UInt8], String)] = [
            ([0x61, 0x62, 0xff, 0x63, 0x64], "byte 0xff at 2"),
            ([0xe2, 0x82], "byte 0xe2 at 0"),
            ([0xe2, 0x28, 0xa1], "byte 0xe2 at 0"),
            (Array("ok ".utf8) + [0xc0, 0xaf], "byte 0xc0 at 3"),
            ([0xed, 0xa0, 0x80, 0x78], "byte 0xed at 0"),
            ([0xf4, 0x90, 0x80, 0x80], "byte 0xf4 at 0"),
            (Array("café 😀".utf8) + [0xf8], "byte 0xf8 at 10"),
            ([0xf0, 0x9f, 0x98], "byte 0xf0 at 0"),
        ]
        for (bytes, where_) in cases {
            XCTAssertEqual(refusal { _ = try Prompts.decodeUTF8(bytes) }, "prompt is not valid UTF-8 (\(where_))", "\(bytes)")
        }
        XCTAssertEqual(try Prompts.decodeUTF8(Array("café 😀".utf8)), "café 😀")
    }

    func testConfigurationRefusesABadPromptAndGuidance() throws {
        let url = try TinyBundle.write()
        defer { try? FileManager.default.removeItem(at: url) }
        let pipeline = try Pipeline(bundle: url, backend: NullBackend())
        var configuration = Pipeline.Configuration.defaults(for: pipeline.manifest, prompt: "red\u{1b}[0m circle")
        XCTAssertEqual(refusal { _ = try pipeline.generate(configuration) },
                       "prompt has a control character (U+001B at character 3): only tab, newline and carriage return are allowed")
        configuration.prompt = "red\tcircle"
        configuration.guidanceScale = .nan
        XCTAssertEqual(refusal { _ = try pipeline.generate(configuration) }, "guidance must be a finite number >= 0, got nan")
    }
}
