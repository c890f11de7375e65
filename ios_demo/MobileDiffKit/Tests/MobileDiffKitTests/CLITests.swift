import Foundation
import XCTest
@testable import MobileDiffKit

/// The engine's command line (`mobilediff-engine`, what ios_demo/scripts/engine.sh runs) keeps the Python CLI's
/// convention: bad input (a bad bundle, option or prompt) is exactly one line `error: ...` on stderr and exit code 2.
/// Runs the built executable (`swift build --build-tests` builds it beside the tests) on the tiny bundle.
final class CLITests: XCTestCase {
    struct Run {
        var status: Int32
        var stdout: String
        var stderr: String
    }

    static func engine(file: String = #filePath) throws -> URL {
        let package = URL(fileURLWithPath: file).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        for configuration in ["debug", "release"] {
            let url = package.appendingPathComponent(".build/\(configuration)/mobilediff-engine")
            if FileManager.default.isExecutableFile(atPath: url.path) { return url }
        }
        throw XCTSkip("mobilediff-engine is not built (swift build --build-tests builds it)")
    }

    /// The engine with `arguments`, through bash: a `$'...'` argument can hold bytes no Swift string can.
    private func cli(_ arguments: [String]) throws -> Run { try Self.run(arguments) }

    /// The engine with `arguments` (see `cli`), for other suites.
    static func run(_ arguments: [String]) throws -> Run {
        let quoted = try [Self.engine().path] + arguments
        let script = quoted.map { $0.hasPrefix("$'") ? $0 : "'" + $0.replacingOccurrences(of: "'", with: "'\\''") + "'" }
            .joined(separator: " ")
        // the outputs go to files: ONNX Runtime's notices can fill a pipe nobody reads yet
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("cli-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: folder) }
        let out = folder.appendingPathComponent("stdout"), err = folder.appendingPathComponent("stderr")
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/bash")
        process.arguments = ["-c", "exec \(script) >'\(out.path)' 2>'\(err.path)'"]
        try process.run()
        process.waitUntilExit()
        return Run(status: process.terminationStatus, stdout: String(decoding: try Data(contentsOf: out), as: UTF8.self),
                   stderr: String(decoding: try Data(contentsOf: err), as: UTF8.self))
    }

    /// ONNX Runtime's duplicate-schema notices on stderr (see ios_demo/scripts/lib/chroot.sh) are not the engine's.
    private func errorLines(_ run: Run) -> [String] {
        run.stderr.split(separator: "\n").map(String.init).filter { !$0.isEmpty && !$0.hasPrefix("Schema error: ") }
    }

    private func assertBadInput(_ run: Run, _ mentions: String..., line: UInt = #line) {
        let lines = errorLines(run)
        XCTAssertEqual(run.status, 2, "exit status (stderr: \(run.stderr))", line: line)
        XCTAssertEqual(lines.count, 1, "one line on stderr: \(run.stderr)", line: line)
        XCTAssertTrue(lines.first?.hasPrefix("error: ") == true, "\(lines)", line: line)
        for m in mentions { XCTAssertTrue(lines.first?.contains(m) == true, "'\(m)' not in: \(lines)", line: line) }
    }

    private func generate(_ bundle: URL, prompt: String = "a red circle", backend: String = "onnx", _ more: String...) throws -> Run {
        let out = bundle.deletingLastPathComponent().appendingPathComponent("\(bundle.lastPathComponent).png")
        let json = bundle.deletingLastPathComponent().appendingPathComponent("\(bundle.lastPathComponent).json")
        return try cli(["generate", "--bundle", bundle.path, "--backend", backend, "--prompt", prompt, "--seed", "0",
                        "--out", out.path, "--json", json.path] + more)
    }

    #if canImport(COnnxRuntime)
    func testGeneratesOnTheTinyBundle() throws {
        let url = try TinyBundle.write()
        defer { try? FileManager.default.removeItem(at: url) }
        let run = try generate(url, prompt: "café\tau lait")
        XCTAssertEqual(run.status, 0, run.stderr)
        XCTAssertEqual(errorLines(run), [])
    }

    func testLowMemoryGivesTheSameImageAndSaysSo() throws {
        let url = try TinyBundle.write()
        defer { try? FileManager.default.removeItem(at: url) }
        var raws: [Data] = []
        for low in [false, true] {
            let folder = url.deletingLastPathComponent()
            let out = folder.appendingPathComponent("\(url.lastPathComponent)-low\(low).png")
            let json = folder.appendingPathComponent("\(url.lastPathComponent)-low\(low).json")
            defer { for f in [out, json] { try? FileManager.default.removeItem(at: f) } }
            let run = try cli(["generate", "--bundle", url.path, "--backend", "onnx", "--prompt", "a red circle", "--seed", "0",
                               "--warmup", "0", "--out", out.path, "--json", json.path] + (low ? ["--low-memory"] : []))
            XCTAssertEqual(run.status, 0, run.stderr)
            let record = try JSONSerialization.jsonObject(with: Data(contentsOf: json)) as! [String: Any]
            XCTAssertEqual(record["low_memory"] as? Bool, low)
            XCTAssertEqual(record["peak_memory_scope"] as? String, "process")
            XCTAssertGreaterThan(record["peak_memory_bytes"] as? Int ?? 0, 0)
            let raw = URL(fileURLWithPath: record["image_raw"] as! String)
            raws.append(try Data(contentsOf: raw))
            try? FileManager.default.removeItem(at: raw)
        }
        XCTAssertEqual(raws[0], raws[1], "the low-memory image is the resident one, byte for byte")
        // a switch takes no value: what follows it is the next option
        assertBadInput(try generate(url, "--low-memory", "1"), "error: unknown option 1")
    }

    func testBadBundlesAreOneLine() throws {
        assertBadInput(try generate(URL(fileURLWithPath: "/nonexistent/bundle")), "bundle not found")
        let swapped = try TinyBundle.write { m, _ in TinyBundle.set(&m, "unet", "files", TinyBundle.get(m, "vae_decoder", "files")) }
        defer { try? FileManager.default.removeItem(at: swapped) }
        assertBadInput(try generate(swapped), "/vae_decoder/model.onnx: declares inputs (latent_sample) but the manifest's unet takes")
        let nan = try TinyBundle.write(unetScale: .nan)
        defer { try? FileManager.default.removeItem(at: nan) }
        assertBadInput(try generate(nan), "/unet/model.onnx: unet gave non-finite values")
    }

    func testUnwritableOutputIsOneLine() throws {
        let url = try TinyBundle.write()
        defer { try? FileManager.default.removeItem(at: url) }
        // /proc takes no new files
        assertBadInput(try cli(["generate", "--bundle", url.path, "--backend", "onnx", "--prompt", "x", "--seed", "0",
                                "--out", "/proc/mobilediff/x.png", "--json", url.path + ".json"]), "error: /proc/mobilediff/x.png")
    }
    #endif

    func testBadPromptsAreOneLine() throws {
        let url = try TinyBundle.write()
        defer { try? FileManager.default.removeItem(at: url) }
        assertBadInput(try generate(url, prompt: "red\u{1b}[0m"), "error: --prompt has a control character (U+001B at character 3)")
        assertBadInput(try generate(url, prompt: "$'a\\xffb'"), "error: --prompt is not valid UTF-8 (byte 0xff at 1)")
    }

    func testBadArgumentsAreOneLine() throws {
        let url = try TinyBundle.write()
        defer { try? FileManager.default.removeItem(at: url) }
        assertBadInput(try cli([]), "error: a command is required")
        assertBadInput(try cli(["render"]), "error: unknown command 'render'")
        assertBadInput(try generate(url, "--stpes", "4"), "error: unknown option --stpes")
        assertBadInput(try generate(url, "--steps", "four"), "error: --steps must be a number, got four")
        assertBadInput(try generate(url, "--steps"), "error: --steps needs a value")
        assertBadInput(try generate(url, backend: "tflite"), "error: unknown backend tflite")
        XCTAssertEqual(try cli(["--help"]).status, 0)
    }
}
