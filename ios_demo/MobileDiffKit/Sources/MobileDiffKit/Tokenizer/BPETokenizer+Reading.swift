import Foundation

extension BPETokenizer {
    /// Reads `vocab.json` and `merges.txt` from a bundle's tokenizer folder, with the lengths and special ids
    /// the manifest records.
    public convenience init(folder: URL, info: BundleManifest.TokenizerInfo) throws {
        let vocabURL = folder.appendingPathComponent("vocab.json")
        let mergesURL = folder.appendingPathComponent("merges.txt")
        for url in [vocabURL, mergesURL] where !FileManager.default.fileExists(atPath: url.path) {
            throw MobileDiffError.fileMissing(path: url.path)
        }
        let vocabulary: [String: Int32]
        do {
            vocabulary = try JSONDecoder().decode([String: Int32].self, from: Data(contentsOf: vocabURL))
        } catch {
            throw MobileDiffError.tokenizer("cannot read \(vocabURL.path): \(error)")
        }
        guard let text = try? String(contentsOf: mergesURL, encoding: .utf8) else {
            throw MobileDiffError.tokenizer("cannot read \(mergesURL.path) as UTF-8")
        }
        var merges: [(String, String)] = []
        for line in text.split(separator: "\n", omittingEmptySubsequences: true) {
            if line.hasPrefix("#version") { continue }
            let parts = line.split(separator: " ")
            guard parts.count == 2 else { throw MobileDiffError.tokenizer("malformed merge rule in \(mergesURL.path): \(line)") }
            merges.append((String(parts[0]), String(parts[1])))
        }
        self.init(vocabulary: vocabulary, merges: merges, maxLength: info.maxLength,
                  bosId: info.bosId, eosId: info.eosId, padId: info.padId)
    }
}
