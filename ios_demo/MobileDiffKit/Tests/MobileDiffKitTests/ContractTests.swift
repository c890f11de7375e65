import Foundation
import XCTest
@testable import MobileDiffKit

/// The bundle contract's conformance cases (tests/contract/, see its README.md), read alike by Python
/// (tests/test_contract.py), Kotlin (ContractTest.kt) and this engine: every manifest case of `cases.json` through
/// `BundleManifest.load` (the role, the default plan and whether it has a table, the modes and adapters where a case
/// lists them, or the one error and the fields it names), and every prompt of `tokenizer.json` through
/// `BPETokenizer` for each of its specs. Each failure names its case.
final class ContractTests: XCTestCase {
    /// The repository's tests/contract: the first folder holding tests/contract/cases.json above this file
    /// (ios_demo/scripts/test.sh mounts the whole repository in its chroot, so this holds there too). Missing, the
    /// tests fail: the contract is part of the repository, never optional.
    static func repository(file: String = #filePath) throws -> URL {
        var folder = URL(fileURLWithPath: file).deletingLastPathComponent()
        while folder.path != "/" {
            if FileManager.default.fileExists(atPath: folder.appendingPathComponent("tests/contract/cases.json").path) {
                return folder
            }
            folder = folder.deletingLastPathComponent()
        }
        throw ContractError("no tests/contract/cases.json in any folder above \(file)")
    }

    struct ContractError: Error, CustomStringConvertible {
        var description: String
        init(_ description: String) { self.description = description }
    }

    static func json(_ url: URL) throws -> [String: Any] {
        guard let object = try JSONSerialization.jsonObject(with: Data(contentsOf: url)) as? [String: Any] else {
            throw ContractError("\(url.path) is not a JSON object")
        }
        return object
    }

    /// RFC 7386 JSON merge patch: an object merges key by key (null removes the key), anything else replaces.
    static func mergePatch(_ target: Any?, _ patch: Any) -> Any {
        guard let patch = patch as? [String: Any] else { return patch }
        var out = target as? [String: Any] ?? [:]
        for (key, value) in patch {
            if value is NSNull { out[key] = nil } else { out[key] = mergePatch(out[key], value) }
        }
        return out
    }

    /// The case's manifest text: its base, `text_replace` applied to the text, then `patch`.
    static func manifestText(_ testCase: [String: Any], contract: URL) throws -> String {
        let base = testCase["base"] as! String
        var text = try String(contentsOf: contract.appendingPathComponent(base), encoding: .utf8)
        for pair in testCase["text_replace"] as? [[String]] ?? [] {
            guard text.contains(pair[0]) else { throw ContractError("text_replace: \(pair[0].debugDescription) does not occur in \(base)") }
            text = text.replacingOccurrences(of: pair[0], with: pair[1])
        }
        guard let patch = testCase["patch"] else { return text }
        let patched = mergePatch(try JSONSerialization.jsonObject(with: Data(text.utf8)), patch)
        return String(decoding: try JSONSerialization.data(withJSONObject: patched, options: [.prettyPrinted, .sortedKeys]), as: UTF8.self)
    }

    func testManifestCases() throws {
        let contract = try Self.repository().appendingPathComponent("tests/contract")
        let cases = try Self.json(contract.appendingPathComponent("cases.json"))["cases"] as? [[String: Any]] ?? []
        XCTAssertGreaterThan(cases.count, 0, "no cases in cases.json")
        for testCase in cases {
            let name = testCase["name"] as! String
            let folder = FileManager.default.temporaryDirectory.appendingPathComponent("contract-\(UUID().uuidString)")
            try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
            defer { try? FileManager.default.removeItem(at: folder) }
            try Self.manifestText(testCase, contract: contract).write(to: folder.appendingPathComponent("manifest.json"), atomically: true, encoding: .utf8)
            let expect = testCase["expect"] as! [String: Any]
            if let mentions = expect["error_mentions"] as? [String] {
                checkError(name, folder: folder, mentions: mentions)
            } else {
                checkPlan(name, folder: folder, expect: expect)
            }
        }
    }

    private func checkError(_ name: String, folder: URL, mentions: [String]) {
        do {
            let manifest = try BundleManifest.load(bundle: folder)
            XCTFail("\(name): read without an error (role \(manifest.role.role), plan \(manifest.plan))")
        } catch let error as MobileDiffError {
            // the folder is a temporary name: only what the reader says about the manifest counts
            let message = error.description.replacingOccurrences(of: folder.path, with: "<bundle>")
            XCTAssertFalse(message.contains("\n"), "\(name): one line: \(message)")
            for part in mentions where !message.contains(part) {
                XCTFail("\(name): \(part.debugDescription) not in: \(message)")
            }
        } catch {
            XCTFail("\(name): expected a MobileDiffError, got \(error)")
        }
    }

    private func checkPlan(_ name: String, folder: URL, expect: [String: Any]) {
        let manifest: BundleManifest
        do { manifest = try BundleManifest.load(bundle: folder) } catch {
            return XCTFail("\(name): refused: \(error)")
        }
        XCTAssertEqual(manifest.role.role, expect["role"] as? String, "\(name): role")
        XCTAssertEqual(manifest.role.method, expect["method"] as? String, "\(name): method")
        let plan = expect["plan"] as! [String: Any]
        XCTAssertEqual(manifest.plan.sampler, plan["sampler"] as? String, "\(name): plan sampler")
        XCTAssertEqual(manifest.plan.steps, (plan["steps"] as? NSNumber)?.intValue, "\(name): plan steps")
        XCTAssertEqual(manifest.plan.guidance, (plan["guidance"] as? NSNumber)?.doubleValue, "\(name): plan guidance")
        let hasTable = manifest.samplers.contains { $0.name == manifest.plan.sampler && $0.steps == manifest.plan.steps }
        XCTAssertEqual(hasTable, (expect["plan_table"] as? NSNumber)?.boolValue, "\(name): plan_table")
        let configuration = Pipeline.Configuration.defaults(for: manifest)
        XCTAssertEqual([configuration.sampler, "\(configuration.steps)", "\(configuration.guidanceScale)"],
                       [manifest.plan.sampler, "\(manifest.plan.steps)", "\(manifest.plan.guidance)"], "\(name): the pipeline's defaults are the plan")
        if hasTable {
            XCTAssertNoThrow(try manifest.samplerTable(manifest.plan.sampler, steps: manifest.plan.steps), name)
        } else {
            XCTAssertThrowsError(try manifest.samplerTable(manifest.plan.sampler, steps: manifest.plan.steps), "\(name): sampling without a table is refused") { error in
                guard case .samplerUnavailable? = error as? MobileDiffError else { return XCTFail("\(name): \(error)") }
            }
        }
        // optional: the modes the bundle runs (in this order) and its adapters' names (the record's order)
        if let modes = expect["modes"] as? [String] {
            XCTAssertEqual(["txt2img", "img2img", "inpaint"].filter(manifest.supports), modes, "\(name): modes")
        }
        if let adapters = expect["adapters"] as? [String] {
            XCTAssertEqual(manifest.adapters?.names ?? [], adapters, "\(name): adapters")
        }
    }

    func testTokenizerCases() throws {
        let repository = try Self.repository()
        let document = try Self.json(repository.appendingPathComponent("tests/contract/tokenizer.json"))
        let folder = repository.appendingPathComponent(document["tokenizer"] as! String)
        let specs = document["specs"] as? [[String: Any]] ?? []
        XCTAssertGreaterThan(specs.count, 0, "no tokenizer specs")
        for spec in specs {
            func int(_ key: String) -> Int { (spec[key] as! NSNumber).intValue }
            let info = BundleManifest.TokenizerInfo(files: ["tokenizer/vocab.json", "tokenizer/merges.txt"], maxLength: int("max_length"),
                                                    bosId: Int32(int("bos_id")), eosId: Int32(int("eos_id")), padId: Int32(int("pad_id")))
            let tokenizer = try BPETokenizer(folder: folder, info: info)
            let cases = spec["cases"] as? [[String: Any]] ?? []
            XCTAssertGreaterThan(cases.count, 0, "no prompts")
            for (i, testCase) in cases.enumerated() {
                let prompt = testCase["prompt"] as! String
                let expected = (testCase["ids"] as! [NSNumber]).map { $0.int32Value }
                XCTAssertEqual(tokenizer.encode(prompt), expected,
                               "tokenizer max_length=\(int("max_length")) pad_id=\(int("pad_id")) #\(i): \(prompt.debugDescription)")
            }
        }
    }
}
