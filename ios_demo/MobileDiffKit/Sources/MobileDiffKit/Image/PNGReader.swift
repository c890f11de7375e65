/// Reads a PNG file (ISO/IEC 15948) into 8-bit RGB, with no system image library (Linux has no ImageIO): the init
/// images and masks of image-to-image and inpainting.
///
/// Read: grayscale (1, 2, 4 or 8 bits), RGB (8), palette (1, 2, 4 or 8), grayscale + alpha (8), RGBA (8); every
/// chunk's CRC is checked, the image data inflated (`Inflate`) and unfiltered (the five PNG filters). Refused, each
/// in one `Failure` line: 16 bits per channel, Adam7 interlacing, an unknown critical chunk, a palette index outside
/// the palette, a corrupt or truncated file. Transparency (an alpha channel, `tRNS`) is not applied: the pixels it
/// makes transparent are counted (`transparentPixels`) for the caller to refuse. Ancillary chunks (gamma, colour
/// profile, text) are ignored, as Pillow's conversion to RGB ignores them.
public enum PNGReader {
    /// Why a file cannot be read, as the end of a sentence that begins with the file ("is interlaced (Adam7): ...").
    public struct Failure: Error, CustomStringConvertible {
        public var description: String
        /// Set when the file is readable but not of the size `decode` was asked for: its (width, height).
        public var foundSize: (width: Int, height: Int)?
        init(_ description: String, foundSize: (width: Int, height: Int)? = nil) {
            self.description = description
            self.foundSize = foundSize
        }
    }

    public struct Image: Sendable {
        public var width: Int
        public var height: Int
        /// (height, width, 3) row-major: grayscale replicated to three channels, palette indices looked up.
        public var rgb: [UInt8]
        /// Pixels whose alpha (an alpha channel, or `tRNS`) is below 255.
        public var transparentPixels: Int
        /// What the file holds, as messages show it: "8-bit RGB", "4-bit palette", ...
        public var kind: String
    }

    static let signature: [UInt8] = [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]

    /// Decodes `data`. `size` (width, height), when given, is checked right after the header, before the image data is
    /// inflated: another size is a `Failure` with `foundSize` set.
    public static func decode(_ data: [UInt8], size: (width: Int, height: Int)? = nil) throws -> Image {
        guard data.count >= 8, Array(data[0..<8]) == signature else { throw Failure("is not a PNG file (no PNG signature)") }
        var header: Header?
        var palette: [UInt8] = []
        var transparency: [UInt8]?
        var compressed: [UInt8] = []
        var position = 8
        var ended = false
        while !ended {
            guard position + 8 <= data.count else { throw Failure("is truncated (no IEND chunk)") }
            let length = Int(bigEndian(data, position))
            let typeBytes = Array(data[(position + 4)..<(position + 8)])
            let type = String(decoding: typeBytes, as: UTF8.self)
            guard length <= 0x7FFF_FFFF, position + 12 + length <= data.count else { throw Failure("is truncated (chunk \(type))") }
            let body = Array(data[(position + 8)..<(position + 8 + length)])
            guard bigEndian(data, position + 8 + length) == PNGWriter.crc32(typeBytes + body) else {
                throw Failure("is corrupt (chunk \(type) fails its CRC)")
            }
            position += 12 + length
            if header == nil && type != "IHDR" { throw Failure("is corrupt (its first chunk is \(type), not IHDR)") }
            switch type {
            case "IHDR":
                guard header == nil else { throw Failure("is corrupt (two IHDR chunks)") }
                let parsed = try Header(body)
                if let size, (parsed.width, parsed.height) != (size.width, size.height) {
                    throw Failure("is \(parsed.width)x\(parsed.height) pixels, not \(size.width)x\(size.height)",
                                  foundSize: (parsed.width, parsed.height))
                }
                header = parsed
            case "PLTE":
                guard length % 3 == 0, length / 3 >= 1, length / 3 <= 256 else { throw Failure("is corrupt (a palette of \(length) bytes)") }
                palette = body
            case "tRNS":
                transparency = body
            case "IDAT":
                compressed += body
            case "IEND":
                ended = true
            default:
                // bit 5 of the first letter: 0 (upper case) for a chunk a reader must understand
                if typeBytes[0] & 0x20 == 0 { throw Failure("has a critical chunk \(type) this reader does not support") }
            }
        }
        guard let header else { throw Failure("is corrupt (no IHDR chunk)") }
        guard !compressed.isEmpty else { throw Failure("is corrupt (no image data)") }
        if header.colorType == 3 && palette.isEmpty { throw Failure("is corrupt (a palette image without a palette)") }
        let rowBytes = (header.width * header.bitsPerPixel + 7) / 8
        let expected = header.height * (1 + rowBytes)
        let filtered: [UInt8]
        do { filtered = try Inflate.zlib(compressed, limit: expected) } catch let failure as Inflate.Failure {
            throw Failure("is corrupt (\(failure.description))")
        }
        guard filtered.count == expected else { throw Failure("is truncated (\(filtered.count) of \(expected) bytes of image data)") }
        let rows = try unfilter(filtered, height: header.height, rowBytes: rowBytes, bytesPerPixel: max(header.bitsPerPixel / 8, 1))
        return try convert(rows, header: header, rowBytes: rowBytes, palette: palette, transparency: transparency)
    }

    struct Header {
        var width: Int
        var height: Int
        var bitDepth: Int
        /// 0 grayscale, 2 RGB, 3 palette, 4 grayscale + alpha, 6 RGBA.
        var colorType: Int
        var channels: Int { [0: 1, 2: 3, 3: 1, 4: 2, 6: 4][colorType]! }
        var bitsPerPixel: Int { channels * bitDepth }
        var kind: String {
            "\(bitDepth)-bit \([0: "grayscale", 2: "RGB", 3: "palette", 4: "grayscale + alpha", 6: "RGBA"][colorType]!)"
        }

        init(_ body: [UInt8]) throws {
            guard body.count == 13 else { throw Failure("is corrupt (an IHDR of \(body.count) bytes)") }
            width = Int(PNGReader.bigEndian(body, 0))
            height = Int(PNGReader.bigEndian(body, 4))
            bitDepth = Int(body[8])
            colorType = Int(body[9])
            guard width >= 1, height >= 1, width <= 1 << 14, height <= 1 << 14 else {
                throw Failure("is \(width)x\(height) pixels (this reader takes 1 to 16384 pixels a side)")
            }
            let allowed: [Int: [Int]] = [0: [1, 2, 4, 8, 16], 2: [8, 16], 3: [1, 2, 4, 8], 4: [8, 16], 6: [8, 16]]
            guard let depths = allowed[colorType], depths.contains(bitDepth) else {
                throw Failure("is corrupt (colour type \(colorType) with bit depth \(bitDepth))")
            }
            guard bitDepth != 16 else { throw Failure("has 16 bits per channel: give an 8-bit PNG (convert it first)") }
            guard body[10] == 0, body[11] == 0 else { throw Failure("is corrupt (compression \(body[10]), filter method \(body[11]))") }
            guard body[12] == 0 else { throw Failure("is interlaced (Adam7): save it without interlacing") }
        }
    }

    /// The rows of `data` with each row's filter undone (filter byte dropped), (height, rowBytes).
    static func unfilter(_ data: [UInt8], height: Int, rowBytes: Int, bytesPerPixel bpp: Int) throws -> [UInt8] {
        var out = [UInt8](repeating: 0, count: height * rowBytes)
        for y in 0..<height {
            let filter = data[y * (rowBytes + 1)]
            let input = y * (rowBytes + 1) + 1, row = y * rowBytes, above = row - rowBytes
            for x in 0..<rowBytes {
                let a = x >= bpp ? Int(out[row + x - bpp]) : 0
                let b = y > 0 ? Int(out[above + x]) : 0
                let c = x >= bpp && y > 0 ? Int(out[above + x - bpp]) : 0
                let predicted: Int
                switch filter {
                case 0: predicted = 0
                case 1: predicted = a
                case 2: predicted = b
                case 3: predicted = (a + b) / 2
                case 4:
                    let p = a + b - c, pa = abs(p - a), pb = abs(p - b), pc = abs(p - c)
                    predicted = pa <= pb && pa <= pc ? a : pb <= pc ? b : c
                default: throw Failure("is corrupt (row \(y) has filter type \(filter))")
                }
                out[row + x] = UInt8(truncatingIfNeeded: Int(data[input + x]) + predicted)
            }
        }
        return out
    }

    /// Unfiltered rows → 8-bit RGB, counting the pixels an alpha channel or `tRNS` makes transparent.
    static func convert(_ rows: [UInt8], header: Header, rowBytes: Int, palette: [UInt8], transparency: [UInt8]?) throws -> Image {
        let width = header.width, height = header.height, depth = header.bitDepth
        var rgb = [UInt8](repeating: 0, count: width * height * 3)
        var transparent = 0
        // a sample of `depth` bits (1, 2, 4, 8), the leftmost first
        func sample(_ y: Int, _ index: Int) -> Int {
            let bit = index * depth
            let byte = Int(rows[y * rowBytes + bit / 8])
            return (byte >> (8 - depth - bit % 8)) & ((1 << depth) - 1)
        }
        let scale = 255 / ((1 << depth) - 1)  // a grayscale sample to 8 bits: 1 → 255, 2 → 85, 4 → 17, 8 → 1
        let key: [Int]? = transparency.flatMap { t in
            switch header.colorType {
            case 0 where t.count == 2: return [Int(t[0]) << 8 | Int(t[1])]
            case 2 where t.count == 6: return [0, 2, 4].map { Int(t[$0]) << 8 | Int(t[$0 + 1]) }
            default: return nil
            }
        }
        for y in 0..<height {
            for x in 0..<width {
                let p = (y * width + x) * 3
                switch header.colorType {
                case 0:
                    let v = sample(y, x)
                    rgb[p] = UInt8(v * scale); rgb[p + 1] = rgb[p]; rgb[p + 2] = rgb[p]
                    if key == [v] { transparent += 1 }
                case 2:
                    let s = (0..<3).map { Int(rows[y * rowBytes + x * 3 + $0]) }
                    for c in 0..<3 { rgb[p + c] = UInt8(s[c]) }
                    if key == s { transparent += 1 }
                case 3:
                    let index = sample(y, x)
                    guard 3 * index + 2 < palette.count else {
                        throw Failure("is corrupt (pixel \(x), \(y) has palette index \(index) of \(palette.count / 3))")
                    }
                    for c in 0..<3 { rgb[p + c] = palette[3 * index + c] }
                    if let alpha = transparency, index < alpha.count, alpha[index] < 255 { transparent += 1 }
                case 4:
                    let v = rows[y * rowBytes + x * 2]
                    rgb[p] = v; rgb[p + 1] = v; rgb[p + 2] = v
                    if rows[y * rowBytes + x * 2 + 1] < 255 { transparent += 1 }
                default:
                    for c in 0..<3 { rgb[p + c] = rows[y * rowBytes + x * 4 + c] }
                    if rows[y * rowBytes + x * 4 + 3] < 255 { transparent += 1 }
                }
            }
        }
        return Image(width: width, height: height, rgb: rgb, transparentPixels: transparent, kind: header.kind)
    }

    static func bigEndian(_ bytes: [UInt8], _ at: Int) -> UInt32 {
        bytes[at..<(at + 4)].reduce(UInt32(0)) { $0 << 8 | UInt32($1) }
    }
}
