import Foundation

/// CLIP's byte-level BPE tokenizer (the text encoder's own vocabulary: vocab.json + merges.txt).
///
/// Steps, as CLIP and transformers' CLIPTokenizer do them:
/// 0. the special tokens' own text (`<|startoftext|>`, `<|endoftext|>`, exactly so spelled) maps to their ids; the
///    text between them goes through steps 1-4;
/// 1. normalise: Unicode NFC, runs of whitespace to one space, trim, lower-case (each character on its own);
/// 2. split into words with CLIP's pattern (English contractions, letter runs, single digits, runs of other
///    non-space characters);
/// 3. map each word's UTF-8 bytes to printable characters (GPT-2's byte-to-unicode table) and mark the word's
///    end with `</w>`;
/// 4. merge adjacent symbol pairs, lowest merge rank first, until no ranked pair remains; look up the ids;
/// 5. `[bos] + ids + [eos]`, truncated to `maxLength` (keeping eos) and padded with `padId`; for a text encoder that
///    takes the caption's padding mask, the mask 1 over `[bos] + ids + [eos]` and 0 over the padding (`encodeWithMask`).
public final class BPETokenizer: @unchecked Sendable {
    // @unchecked: the only mutable state is `cache`, guarded by `lock`.
    public let maxLength: Int
    public let bosId: Int32
    public let eosId: Int32
    public let padId: Int32

    let vocabulary: [String: Int32]
    let mergeRanks: [SymbolPair: Int]
    private let byteEncoder: [Character]
    private var cache: [String: [Int32]] = [:]
    private let lock = NSLock()

    struct SymbolPair: Hashable {
        let first: String
        let second: String
    }

    /// - Parameters:
    ///   - vocabulary: token string → id (vocab.json).
    ///   - merges: merge rules in rank order, each "first second" (merges.txt without its version line).
    public init(vocabulary: [String: Int32], merges: [(String, String)], maxLength: Int, bosId: Int32, eosId: Int32, padId: Int32) {
        self.vocabulary = vocabulary
        var ranks: [SymbolPair: Int] = [:]
        for (rank, merge) in merges.enumerated() where ranks[SymbolPair(first: merge.0, second: merge.1)] == nil {
            ranks[SymbolPair(first: merge.0, second: merge.1)] = rank
        }
        self.mergeRanks = ranks
        self.maxLength = maxLength
        self.bosId = bosId
        self.eosId = eosId
        self.padId = padId
        self.byteEncoder = BPETokenizer.bytesToUnicode()
    }

    /// Token ids of `text` with bos/eos, truncated and padded to `maxLength` (what the text encoder takes).
    public func encode(_ text: String) -> [Int32] {
        var ids = [bosId] + tokenize(text)
        if ids.count > maxLength - 1 { ids = Array(ids.prefix(maxLength - 1)) }
        ids.append(eosId)
        return ids + [Int32](repeating: padId, count: maxLength - ids.count)
    }

    /// Token ids of `text` as `encode` gives them and the caption's padding mask (format-2 bundles whose text encoder
    /// takes `attention_mask`; mobilediff/engine.py `BundleTokenizer.ids_and_mask`): 1 over BOS, the ids and EOS, 0
    /// over the padding. Both are `maxLength` long.
    public func encodeWithMask(_ text: String) -> (ids: [Int32], mask: [Int32]) {
        let ids = encode(text)
        return (ids, paddingMask(ids))
    }

    /// The padding mask of ids `encode` made: 1 up to and including the EOS that ends the caption, 0 after it. When
    /// `padId` is `eosId` the padding cannot be told from an EOS, so the caption ends at the first EOS (an
    /// `<|endoftext|>` spelled in the prompt ends it there, as in the reference); otherwise the padding is the run of
    /// `padId` after the last other id.
    public func paddingMask(_ ids: [Int32]) -> [Int32] {
        let length: Int
        if padId == eosId {
            length = ids.firstIndex(of: eosId).map { $0 + 1 } ?? ids.count
        } else {
            length = (ids.lastIndex { $0 != padId } ?? -1) + 1
        }
        return [Int32](repeating: 1, count: length) + [Int32](repeating: 0, count: ids.count - length)
    }

    /// Token ids of `text` without bos/eos framing, padding or truncation. The special tokens' text inside `text`
    /// maps to their ids, as in transformers (which matches it before normalising, so only this exact spelling).
    public func tokenize(_ text: String) -> [Int32] {
        var ids: [Int32] = []
        let scalars = Array(text.unicodeScalars)
        var start = 0, i = 0
        func flush(upTo end: Int) {
            ids.append(contentsOf: tokenizeText(String(String.UnicodeScalarView(scalars[start..<end]))))
        }
        while i < scalars.count {
            guard let special = BPETokenizer.specialTokens.first(where: { scalars[i...].starts(with: $0.unicodeScalars) }) else {
                i += 1
                continue
            }
            flush(upTo: i)
            ids.append(vocabulary[special] ?? eosId)
            i += special.unicodeScalars.count
            start = i
        }
        flush(upTo: scalars.count)
        return ids
    }

    /// Ids of text holding no special token: steps 1-4.
    private func tokenizeText(_ text: String) -> [Int32] {
        var ids: [Int32] = []
        for word in BPETokenizer.words(in: BPETokenizer.normalize(text)) {
            let encoded = String(word.utf8.map { byteEncoder[Int($0)] })
            ids.append(contentsOf: bpeIds(encoded))
        }
        return ids
    }

    // MARK: - steps

    static let specialTokens = ["<|startoftext|>", "<|endoftext|>"]

    /// NFC, every run of Unicode whitespace to one space (trimmed at both ends), lower-case. Works on Unicode
    /// scalars, not characters: a space followed by a combining mark is one `Character` that is not whitespace
    /// as a whole, where the reference sees a space and a mark. Lower-cases each scalar on its own, as the
    /// tokenizers library's Lowercase normaliser does (no final-sigma rule).
    static func normalize(_ text: String) -> String {
        var out = String.UnicodeScalarView()
        var pendingSpace = false
        for scalar in text.precomposedStringWithCanonicalMapping.unicodeScalars {
            if scalar.properties.isWhitespace {
                pendingSpace = !out.isEmpty
                continue
            }
            if pendingSpace { out.append(" ") }
            pendingSpace = false
            out.append(contentsOf: scalar.properties.lowercaseMapping.unicodeScalars)
        }
        return String(out)
    }

    /// CLIP's pre-tokenization pattern, on normalised text:
    /// `'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+`.
    static func words(in text: String) -> [String] {
        var words: [String] = []
        let scalars = Array(text.unicodeScalars)
        var i = 0
        func isLetter(_ s: Unicode.Scalar) -> Bool {
            switch s.properties.generalCategory {
            case .uppercaseLetter, .lowercaseLetter, .titlecaseLetter, .modifierLetter, .otherLetter: return true
            default: return false
            }
        }
        func isNumber(_ s: Unicode.Scalar) -> Bool {
            switch s.properties.generalCategory {
            case .decimalNumber, .letterNumber, .otherNumber: return true
            default: return false
            }
        }
        func hasPrefix(_ p: String, at index: Int) -> Bool {
            let ps = Array(p.unicodeScalars)
            guard index + ps.count <= scalars.count else { return false }
            for k in 0..<ps.count where scalars[index + k] != ps[k] { return false }
            return true
        }
        outer: while i < scalars.count {
            let s = scalars[i]
            if s == "'" {
                for contraction in ["'s", "'t", "'re", "'ve", "'m", "'ll", "'d"] where hasPrefix(contraction, at: i) {
                    words.append(String(String.UnicodeScalarView(scalars[i..<(i + contraction.unicodeScalars.count)])))
                    i += contraction.unicodeScalars.count
                    continue outer
                }
            }
            if isLetter(s) {
                var j = i
                while j < scalars.count, isLetter(scalars[j]) { j += 1 }
                words.append(String(String.UnicodeScalarView(scalars[i..<j])))
                i = j
            } else if isNumber(s) {
                words.append(String(s))
                i += 1
            } else if s.properties.isWhitespace {
                i += 1
            } else {
                var j = i
                while j < scalars.count, !isLetter(scalars[j]), !isNumber(scalars[j]), !scalars[j].properties.isWhitespace { j += 1 }
                words.append(String(String.UnicodeScalarView(scalars[i..<j])))
                i = j
            }
        }
        return words
    }

    /// Ids of one byte-encoded word after BPE merges.
    func bpeIds(_ word: String) -> [Int32] {
        lock.lock()
        if let cached = cache[word] { lock.unlock(); return cached }
        lock.unlock()
        var symbols = word.map { String($0) }
        guard !symbols.isEmpty else { return [] }
        symbols[symbols.count - 1] += "</w>"
        while symbols.count > 1 {
            var best: (rank: Int, index: Int)? = nil
            for k in 0..<(symbols.count - 1) {
                if let rank = mergeRanks[SymbolPair(first: symbols[k], second: symbols[k + 1])], rank < (best?.rank ?? Int.max) {
                    best = (rank, k)
                }
            }
            guard let (_, index) = best else { break }
            let first = symbols[index], second = symbols[index + 1]
            // merge every occurrence of the pair, left to right
            var merged: [String] = []
            var k = 0
            while k < symbols.count {
                if k < symbols.count - 1, symbols[k] == first, symbols[k + 1] == second {
                    merged.append(first + second)
                    k += 2
                } else {
                    merged.append(symbols[k])
                    k += 1
                }
            }
            symbols = merged
        }
        let ids = symbols.map { vocabulary[$0] ?? eosId }  // CLIP's unknown token is <|endoftext|>
        lock.lock()
        cache[word] = ids
        lock.unlock()
        return ids
    }

    /// GPT-2's reversible byte → printable character table: printable Latin-1 bytes map to themselves, the
    /// others to U+0100 onwards in byte order.
    static func bytesToUnicode() -> [Character] {
        var printable = Array(33...126) + Array(161...172) + Array(174...255)
        var codepoints = printable
        var extra = 0
        for byte in 0..<256 where !printable.contains(byte) {
            printable.append(byte)
            codepoints.append(256 + extra)
            extra += 1
        }
        var table = [Character](repeating: " ", count: 256)
        for (byte, codepoint) in zip(printable, codepoints) {
            table[byte] = Character(Unicode.Scalar(UInt32(codepoint))!)
        }
        return table
    }
}
