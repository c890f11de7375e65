/// The prompt rule of `mobilediff.sampling.check_prompt`, with its messages: a prompt is valid UTF-8 text, and holds
/// no control character other than tab, newline and carriage return (which the tokenizer reads as spaces). An escape
/// sequence or a NUL pasted into a prompt is a mistake, and stripping it would be a silent edit; invalid bytes are
/// refused, never replaced (a replaced prompt would silently be another prompt).
public enum Prompts {
    /// The control characters a prompt may hold.
    public static let allowedControls: Set<Unicode.Scalar> = ["\t", "\n", "\r"]

    /// Throws `invalidArgument`, one line naming `label`, for a control character (category Cc) other than
    /// `allowedControls`: "at character N", N its Unicode scalar index (Python's character index). A Swift string is
    /// always valid Unicode: bytes are checked where they arrive (`decodeUTF8`).
    public static func check(_ prompt: String, label: String = "prompt") throws {
        for (index, scalar) in prompt.unicodeScalars.enumerated()
        where scalar.properties.generalCategory == .control && !allowedControls.contains(scalar) {
            throw MobileDiffError.invalidArgument(
                "\(label) has a control character (U+\(hex(scalar.value, width: 4)) at character \(index)): only tab, newline and carriage return are allowed")
        }
    }

    /// `bytes` as text when they are valid UTF-8; else `invalidArgument` naming `label` and the first byte that starts
    /// no valid sequence ("not valid UTF-8 (byte 0xff at 3)", as Python's decoder reports it). Overlong forms, encoded
    /// surrogates and code points above U+10FFFF are invalid, as in Python.
    public static func decodeUTF8<Bytes: Collection>(_ bytes: Bytes, label: String = "prompt") throws -> String where Bytes.Element == UInt8 {
        let array = Array(bytes)
        if let bad = firstInvalidUTF8(array) {
            throw MobileDiffError.invalidArgument("\(label) is not valid UTF-8 (byte 0x\(hex(UInt32(array[bad]), width: 2).lowercased()) at \(bad))")
        }
        return String(decoding: array, as: UTF8.self)
    }

    /// The offset of the first byte that starts no valid UTF-8 sequence, or nil when all of `bytes` is valid.
    public static func firstInvalidUTF8(_ bytes: [UInt8]) -> Int? {
        var i = 0
        while i < bytes.count {
            let b = bytes[i]
            // the sequence length and the range of its second byte (the first continuation byte)
            let n: Int, second: ClosedRange<UInt8>
            switch b {
            case 0x00...0x7f: n = 1; second = 0x80...0xbf
            case 0xc2...0xdf: n = 2; second = 0x80...0xbf
            case 0xe0: n = 3; second = 0xa0...0xbf
            case 0xe1...0xec, 0xee, 0xef: n = 3; second = 0x80...0xbf
            case 0xed: n = 3; second = 0x80...0x9f
            case 0xf0: n = 4; second = 0x90...0xbf
            case 0xf1...0xf3: n = 4; second = 0x80...0xbf
            case 0xf4: n = 4; second = 0x80...0x8f
            default: return i
            }
            if i + n > bytes.count { return i }
            for k in 1..<n where !(k == 1 ? second : 0x80...0xbf).contains(bytes[i + k]) {
                return i
            }
            i += n
        }
        return nil
    }

    private static func hex(_ value: UInt32, width: Int) -> String {
        let digits = String(value, radix: 16, uppercase: true)
        return String(repeating: "0", count: max(width - digits.count, 0)) + digits
    }
}
