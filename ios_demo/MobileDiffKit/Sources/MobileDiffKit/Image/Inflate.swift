/// zlib (RFC 1950) decompression of deflate data (RFC 1951), for reading PNG files where no system image library is
/// at hand (Linux; the Apple apps may use ImageIO instead). A small canonical-Huffman decoder in the manner of zlib's
/// `puff.c`: stored, fixed-Huffman and dynamic-Huffman blocks; the zlib header and the Adler-32 of the output are
/// checked. Every malformed input is a `Failure` naming what is wrong, never a crash or an unbounded output.
enum Inflate {
    struct Failure: Error, CustomStringConvertible {
        var description: String
        init(_ description: String) { self.description = description }
    }

    /// The bytes of the zlib stream `data`, at most `limit` of them (more is a `Failure`: a PNG's header says how
    /// many its image holds).
    static func zlib(_ data: [UInt8], limit: Int) throws -> [UInt8] {
        guard data.count >= 6 else { throw Failure("the compressed data ends early (\(data.count) bytes)") }
        let cmf = Int(data[0]), flags = Int(data[1])
        guard cmf & 0x0F == 8, cmf >> 4 <= 7 else { throw Failure("the compressed data is not deflate (zlib method \(cmf & 0x0F))") }
        guard (cmf << 8 | flags) % 31 == 0 else { throw Failure("the compressed data's zlib header is corrupt") }
        guard flags & 0x20 == 0 else { throw Failure("the compressed data needs a preset dictionary (not used by PNG)") }
        var reader = BitReader(bytes: data, position: 2)
        let out = try deflate(&reader, limit: limit)
        reader.alignToByte()
        guard reader.position + 4 <= data.count else { throw Failure("the compressed data ends before its checksum") }
        let stored = data[reader.position..<(reader.position + 4)].reduce(UInt32(0)) { $0 << 8 | UInt32($1) }
        guard stored == PNGWriter.adler32(out) else { throw Failure("the compressed data fails its Adler-32 checksum") }
        return out
    }

    /// The bytes of the deflate blocks `reader` is at, up to and with the final block.
    static func deflate(_ reader: inout BitReader, limit: Int) throws -> [UInt8] {
        var out: [UInt8] = []
        var final = false
        while !final {
            final = try reader.bits(1) == 1
            switch try reader.bits(2) {
            case 0: try stored(&reader, into: &out, limit: limit)
            case 1: try codes(&reader, into: &out, limit: limit, literals: fixedLiterals, distances: fixedDistances)
            case 2:
                let (literals, distances) = try dynamicCodes(&reader)
                try codes(&reader, into: &out, limit: limit, literals: literals, distances: distances)
            default: throw Failure("the compressed data has a block of unknown type 3")
            }
        }
        return out
    }

    /// Reads bits least significant first, as deflate packs them.
    struct BitReader {
        let bytes: [UInt8]
        var position: Int
        private var buffer: UInt32 = 0
        private var count = 0

        init(bytes: [UInt8], position: Int) {
            self.bytes = bytes
            self.position = position
        }

        /// The next `n` (<= 16) bits as an integer.
        mutating func bits(_ n: Int) throws -> Int {
            while count < n {
                guard position < bytes.count else { throw Failure("the compressed data ends early") }
                buffer |= UInt32(bytes[position]) << UInt32(count)
                position += 1
                count += 8
            }
            let value = Int(buffer & ((1 << UInt32(n)) - 1))
            buffer >>= UInt32(n)
            count -= n
            return value
        }

        /// Drops the rest of the current byte (bits are only ever read from the bytes before `position`).
        mutating func alignToByte() {
            buffer = 0
            count = 0
        }
    }

    /// A canonical Huffman code: how many codes of each length (1...15) and the symbols in code order.
    struct Huffman {
        var counts = [Int](repeating: 0, count: 16)
        var symbols: [Int] = []

        /// The code of `lengths[symbol]` (0: the symbol is absent). An over-subscribed set of lengths is refused;
        /// an incomplete one is kept (a code it lacks fails when it is read).
        init(lengths: [Int]) throws {
            for length in lengths { counts[length] += 1 }
            var left = 1
            for length in 1..<16 {
                left = left << 1 - counts[length]
                guard left >= 0 else { throw Failure("the compressed data has an over-subscribed Huffman code") }
            }
            var offsets = [Int](repeating: 0, count: 16)
            for length in 1..<15 { offsets[length + 1] = offsets[length] + counts[length] }
            symbols = [Int](repeating: 0, count: lengths.count)
            for (symbol, length) in lengths.enumerated() where length != 0 {
                symbols[offsets[length]] = symbol
                offsets[length] += 1
            }
            counts[0] = 0
        }

        /// The next symbol, read a bit at a time (codes are packed most significant bit first).
        func decode(_ reader: inout BitReader) throws -> Int {
            var code = 0, first = 0, index = 0
            for length in 1..<16 {
                code |= try reader.bits(1)
                let count = counts[length]
                if code - first < count { return symbols[index + code - first] }
                index += count
                first = (first + count) << 1
                code <<= 1
            }
            throw Failure("the compressed data has an invalid Huffman code")
        }
    }

    static let lengthBase = [3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83, 99, 115, 131, 163, 195, 227, 258]
    static let lengthExtra = [0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0]
    static let distanceBase = [1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193, 257, 385, 513, 769, 1025, 1537, 2049,
                               3073, 4097, 6145, 8193, 12289, 16385, 24577]
    static let distanceExtra = [0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13]
    /// The order in which a dynamic block lists the code lengths of its code-length code.
    static let codeLengthOrder = [16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15]

    static let fixedLiterals = try! Huffman(lengths: (0..<288).map { $0 < 144 ? 8 : $0 < 256 ? 9 : $0 < 280 ? 7 : 8 })
    static let fixedDistances = try! Huffman(lengths: [Int](repeating: 5, count: 30))

    /// A stored block: LEN, its complement NLEN, then LEN bytes, from the next byte boundary.
    static func stored(_ reader: inout BitReader, into out: inout [UInt8], limit: Int) throws {
        reader.alignToByte()
        let length = try reader.bits(16), complement = try reader.bits(16)
        guard length == complement ^ 0xFFFF else { throw Failure("the compressed data has a stored block whose length is corrupt") }
        guard reader.position + length <= reader.bytes.count else { throw Failure("the compressed data ends early") }
        guard out.count + length <= limit else { throw Failure("the compressed data holds more than the \(limit) bytes expected") }
        out += reader.bytes[reader.position..<(reader.position + length)]
        reader.position += length
    }

    /// The literal/length and distance codes of a dynamic block (RFC 1951 §3.2.7).
    static func dynamicCodes(_ reader: inout BitReader) throws -> (Huffman, Huffman) {
        let literalCount = try reader.bits(5) + 257, distanceCount = try reader.bits(5) + 1, codeCount = try reader.bits(4) + 4
        guard literalCount <= 286, distanceCount <= 30 else { throw Failure("the compressed data has a dynamic block with too many codes") }
        var codeLengths = [Int](repeating: 0, count: 19)
        for i in 0..<codeCount { codeLengths[codeLengthOrder[i]] = try reader.bits(3) }
        let lengthCode = try Huffman(lengths: codeLengths)
        var lengths: [Int] = []
        while lengths.count < literalCount + distanceCount {
            let symbol = try lengthCode.decode(&reader)
            switch symbol {
            case 0..<16: lengths.append(symbol)
            case 16:
                guard let previous = lengths.last else { throw Failure("the compressed data repeats a code length before the first") }
                lengths += [Int](repeating: previous, count: 3 + (try reader.bits(2)))
            case 17: lengths += [Int](repeating: 0, count: 3 + (try reader.bits(3)))
            default: lengths += [Int](repeating: 0, count: 11 + (try reader.bits(7)))
            }
        }
        guard lengths.count == literalCount + distanceCount else { throw Failure("the compressed data's code lengths overrun their count") }
        guard lengths[256] != 0 else { throw Failure("the compressed data has a block without an end code") }
        return (try Huffman(lengths: Array(lengths[0..<literalCount])), try Huffman(lengths: Array(lengths[literalCount...])))
    }

    /// A Huffman-coded block: literals, and (length, distance) copies from the output so far, up to the end code.
    static func codes(_ reader: inout BitReader, into out: inout [UInt8], limit: Int, literals: Huffman, distances: Huffman) throws {
        while true {
            let symbol = try literals.decode(&reader)
            if symbol < 256 {
                guard out.count < limit else { throw Failure("the compressed data holds more than the \(limit) bytes expected") }
                out.append(UInt8(symbol))
                continue
            }
            if symbol == 256 { return }
            let lengthIndex = symbol - 257
            guard lengthIndex < lengthBase.count else { throw Failure("the compressed data has an invalid length code \(symbol)") }
            let length = lengthBase[lengthIndex] + (try reader.bits(lengthExtra[lengthIndex]))
            let distanceIndex = try distances.decode(&reader)
            guard distanceIndex < distanceBase.count else { throw Failure("the compressed data has an invalid distance code \(distanceIndex)") }
            let distance = distanceBase[distanceIndex] + (try reader.bits(distanceExtra[distanceIndex]))
            guard distance <= out.count else { throw Failure("the compressed data refers back before its start") }
            guard out.count + length <= limit else { throw Failure("the compressed data holds more than the \(limit) bytes expected") }
            let from = out.count - distance
            for i in 0..<length { out.append(out[from + i]) }  // an overlapping copy repeats what it just wrote
        }
    }
}
