import Foundation
import XCTest
@testable import MobileDiffKit

/// The PNG reader (inflate, the five filters, every colour type it reads) and the init image and mask readers'
/// refusals, each one line naming the file (Python's messages, mobilediff/image_input.py). The PNG files are written
/// here (`TestPNG`); the fixtures' own init.png and mask.png (written by Pillow) are read in `ImageToImageTests`.
final class ImageInputTests: XCTestCase {
    // MARK: inflate

    /// Python's `zlib.compress(..., 9)` of 1200 patterned bytes: one fixed-Huffman block.
    static let fixedBlock = "eNpjENGwCUip6Fmw5QQDrZiHTl64fu/pm8+/GDn4xWRVtI0sHdwDI+LTckuqmzonTJ+3dM3mXQdPnL9298nrTz8Z2PlEZZS1DC3s3XxDopNyiqsaO/qnzV2yetPOA8fPXb3z+NXHH//ZeEWklTQNzO1cfYKjEjPyy2pp7wsRDc+A8LhUNAfduP/s7ZffTJwC4nKqOsZWjh7+YbEp2UWVDe19U+csXrVxx/5jZ6/cfvQSxfN+oTHJWYUV9W29U2YvWrlh+76jZy7fevji/be/LLT3hU0AZmz4hRIXG5kFxMVGSzftfZFSgRkbV+8QFxsfvhMXG9xCtPdFzwLM2IhJJi42yuuIi41JM2nviy0nUrFkVuJi4x8rcbEhqQAAI64Wvw=="
    /// Python's `zlib.compress(..., 9)` of 1470 bytes of words: one dynamic-Huffman block.
    static let dynamicBlock = "eNptVAlygzAM/Iq/ZogLTB1oHWcy/X11rIVEMk1DkCXtrg5Pef5e2vHcb2mqz5Kmo/fjnl7r1kvK9NePn9S2Ze1p2hb5b+WWcpdH8O5rCTlq+eo4EjMHzFuba0mPe671gtVTb1veFzo+dgEQVPrNiel9aaXsQDhZ07kecPq/UuvxMvbOzXKzHrCnh/MAGzAUmMfvMzcNEbUf0gExi4MohkUlcqj5jgK6PAOBFRptVIcZkDrwCmrUE20JvKUJajFcgMB8EhNNTie/o1/qigfb2V8j4QyZEk+FBOeTItmyqA1RWQgaM9czs/kGWGKbLSoIfVS5QKCXQ+NJAHl9XVyziZhOGdykdQPazW9oHkcAW2nFcZZSXusQC+pcoI+JgXx8XBhHNvImX2EuUCzjjI4joV+B93pdF20UzvYfISpIkWz6x6SIo/ByfYsjjzWORhmxVdGkMkC/rJ21nu2aKIdJdHdMkPs+F2Pd3AXFnMIcRH4fLi03ecoGyccVKVxHNsqeoynsQtgT5RNW4I0C6foHoQ4brg=="

    func testInflatesPythonsZlib() throws {
        let fixed = try Inflate.zlib([UInt8](Data(base64Encoded: Self.fixedBlock)!), limit: 1200)
        let expected: [UInt8] = (0..<1200).map { (i: Int) -> UInt8 in
            let value: Int = (i / 100) % 2 == 1 ? (i * 7 + (i / 40) * 3) % 256 : (i % 11) * 20
            return UInt8(value)
        }
        XCTAssertEqual(fixed, expected)
        let dynamic = try Inflate.zlib([UInt8](Data(base64Encoded: Self.dynamicBlock)!), limit: 1470)
        XCTAssertEqual(dynamic.count, 1470)
        XCTAssertEqual(PNGWriter.crc32(dynamic), 0x4C0B_1BD1, "Python's zlib.crc32 of the words")
        XCTAssertEqual(String(decoding: dynamic.prefix(15), as: UTF8.self), "background blue")
        // stored blocks, as PNGWriter writes them (one over 65535 bytes: two blocks)
        let bytes = (0..<70_000).map { UInt8(truncatingIfNeeded: $0 * 31) }
        XCTAssertEqual(try Inflate.zlib(PNGWriter.zlibStored(bytes), limit: bytes.count), bytes)
    }

    func testInflateRefusesDamagedStreams() throws {
        let data = [UInt8](Data(base64Encoded: Self.dynamicBlock)!)
        let dynamic = try Inflate.zlib(data, limit: 1470)
        XCTAssertThrowsError(try Inflate.zlib(data, limit: 1000), "more than the limit") { error in
            XCTAssertTrue("\(error)".contains("more than the 1000 bytes expected"), "\(error)")
        }
        XCTAssertThrowsError(try Inflate.zlib(Array(data.prefix(200)), limit: 1470), "truncated")
        XCTAssertThrowsError(try Inflate.zlib([0x78, 0x9C] + [0xFF, 0xFF, 0xFF, 0xFF, 0xFF], limit: 10), "block type 3 / bad code")
        XCTAssertThrowsError(try Inflate.zlib([0x78, 0x9D, 0, 0, 0, 0], limit: 10), "header checksum") { error in
            XCTAssertTrue("\(error)".contains("zlib header"), "\(error)")
        }
        // a flipped bit fails, one way or another (a code, a length, the checksum), and never crashes; the flips that
        // read are exactly those Python's zlib reads: bit 1430 (a copy's distance that lands on the same words) and
        // bit 3187 (a padding bit after the final block's end code)
        var read: [Int] = []
        for bit in stride(from: 16, to: data.count * 8, by: 7) {
            var damaged = data
            damaged[bit / 8] ^= UInt8(1 << (bit % 8))
            if let out = try? Inflate.zlib(damaged, limit: 1470) {
                XCTAssertEqual(out, dynamic, "bit \(bit)")
                read.append(bit)
            }
        }
        XCTAssertEqual(read, [1430, 3187])
    }

    // MARK: PNG

    func testReadsEveryColourTypeAndFilter() throws {
        let width = 5, height = 4
        let rgb: [UInt8] = (0..<(width * height * 3)).map { (i: Int) -> UInt8 in UInt8((i * 37 + i / 3 * 11) % 256) }
        // RGB with each filter type on its own row (None, Sub, Up, Average, Paeth), and all on every row
        for filters in [[0, 1, 2, 3], [4, 4, 4, 4], [3, 2, 1, 0]] {
            let png = TestPNG.encode(width: width, height: height, colorType: 2, bitDepth: 8, rows: TestPNG.rows(rgb, width: width, height: height, channels: 3), filters: filters.map(UInt8.init))
            let image = try PNGReader.decode(png)
            XCTAssertEqual(image.rgb, rgb, "filters \(filters)")
            XCTAssertEqual([image.width, image.height, image.transparentPixels], [width, height, 0])
        }
        // grayscale at 1, 2, 4 and 8 bits: samples scaled to 8 bits (1 → 255, 2 → 85, 4 → 17)
        for depth in [1, 2, 4, 8] {
            let levels: [Int] = (0..<(width * height)).map { (p: Int) -> Int in p % (1 << depth) }
            let png = TestPNG.encode(width: width, height: height, colorType: 0, bitDepth: depth, rows: TestPNG.packed(levels, width: width, depth: depth))
            let image = try PNGReader.decode(png)
            let scaled: [UInt8] = levels.flatMap { (v: Int) -> [UInt8] in [UInt8](repeating: UInt8(v * 255 / ((1 << depth) - 1)), count: 3) }
            XCTAssertEqual(image.rgb, scaled, "\(depth)-bit grayscale")
            XCTAssertEqual(image.kind, "\(depth)-bit grayscale")
        }
        // a 2-bit palette of four colours
        let palette: [UInt8] = [255, 0, 0, 0, 255, 0, 0, 0, 255, 9, 8, 7]
        let indices: [Int] = (0..<(width * height)).map { (p: Int) -> Int in (p * 3) % 4 }
        let image = try PNGReader.decode(TestPNG.encode(width: width, height: height, colorType: 3, bitDepth: 2,
                                                        rows: TestPNG.packed(indices, width: width, depth: 2), palette: palette))
        let colours: [UInt8] = indices.flatMap { (i: Int) -> [UInt8] in Array(palette[(3 * i)..<(3 * i + 3)]) }
        XCTAssertEqual(image.rgb, colours)
        // RGBA and grayscale + alpha, every pixel opaque: read; one translucent pixel: counted
        var rgba: [UInt8] = (0..<(width * height)).flatMap { (p: Int) -> [UInt8] in Array(rgb[(3 * p)..<(3 * p + 3)]) + [255] }
        XCTAssertEqual(try PNGReader.decode(TestPNG.encode(width: width, height: height, colorType: 6, bitDepth: 8,
                                                           rows: TestPNG.rows(rgba, width: width, height: height, channels: 4))).rgb, rgb)
        rgba[7] = 254
        XCTAssertEqual(try PNGReader.decode(TestPNG.encode(width: width, height: height, colorType: 6, bitDepth: 8,
                                                           rows: TestPNG.rows(rgba, width: width, height: height, channels: 4))).transparentPixels, 1)
        let grayAlpha: [UInt8] = (0..<(width * height)).flatMap { (p: Int) -> [UInt8] in [UInt8(p * 10), p == 3 ? 0 : 255] }
        let decoded = try PNGReader.decode(TestPNG.encode(width: width, height: height, colorType: 4, bitDepth: 8,
                                                          rows: TestPNG.rows(grayAlpha, width: width, height: height, channels: 2)))
        XCTAssertEqual(decoded.transparentPixels, 1)
        XCTAssertEqual(Array(decoded.rgb.prefix(6)), [0, 0, 0, 10, 10, 10])
        // tRNS: a palette entry with alpha < 255 (used by the pixels of index 1), an RGB colour key (one pixel)
        XCTAssertEqual(try PNGReader.decode(TestPNG.encode(width: width, height: height, colorType: 3, bitDepth: 2,
                                                           rows: TestPNG.packed(indices, width: width, depth: 2), palette: palette,
                                                           transparency: [255, 0])).transparentPixels, indices.filter { $0 == 1 }.count)
        XCTAssertEqual(try PNGReader.decode(TestPNG.encode(width: width, height: height, colorType: 2, bitDepth: 8,
                                                           rows: TestPNG.rows(rgb, width: width, height: height, channels: 3),
                                                           transparency: [0, rgb[3], 0, rgb[4], 0, rgb[5]])).transparentPixels, 1)
        // ancillary chunks are skipped
        XCTAssertEqual(try PNGReader.decode(TestPNG.encode(width: width, height: height, colorType: 2, bitDepth: 8,
                                                           rows: TestPNG.rows(rgb, width: width, height: height, channels: 3),
                                                           extra: [("gAMA", [0, 0, 0xB1, 0x8F]), ("tEXt", Array("Comment\u{0}hi".utf8))])).rgb, rgb)
    }

    func testPNGRefusalsAreOneLine() throws {
        let rows = TestPNG.rows([UInt8](repeating: 7, count: 4 * 4 * 3), width: 4, height: 4, channels: 3)
        let good = TestPNG.encode(width: 4, height: 4, colorType: 2, bitDepth: 8, rows: rows)
        func refused(_ data: [UInt8], _ mention: String, size: (Int, Int)? = nil, line: UInt = #line) {
            XCTAssertThrowsError(try PNGReader.decode(data, size: size.map { (width: $0.0, height: $0.1) }), line: line) { error in
                let message = "\(error)"
                XCTAssertTrue(message.contains(mention), "'\(mention)' not in: \(message)", line: line)
                XCTAssertFalse(message.contains("\n"), line: line)
            }
        }
        refused(Array("GIF89a....".utf8), "is not a PNG file")
        var flipped = good
        flipped[45] ^= 1  // inside the IDAT chunk's data
        refused(flipped, "fails its CRC")
        refused(Array(good.prefix(good.count - 12)), "truncated (no IEND chunk)")
        refused(Array(good.prefix(50)), "truncated")
        refused(TestPNG.encode(width: 4, height: 4, colorType: 2, bitDepth: 16, rows: rows), "16 bits per channel")
        refused(TestPNG.encode(width: 4, height: 4, colorType: 2, bitDepth: 8, rows: rows, interlace: 1), "interlaced (Adam7)")
        refused(TestPNG.encode(width: 4, height: 4, colorType: 2, bitDepth: 8, rows: rows, extra: [("ABCD", [1])]), "critical chunk ABCD")
        refused(TestPNG.encode(width: 4, height: 4, colorType: 3, bitDepth: 8, rows: TestPNG.rows([0, 1, 2, 3].repeated(4), width: 4, height: 4, channels: 1),
                               palette: [1, 2, 3, 4, 5, 6]), "palette index 2 of 2")
        refused(TestPNG.encode(width: 4, height: 4, colorType: 2, bitDepth: 8, rows: Array(rows.prefix(3))), "truncated (39 of 52 bytes")
        refused(TestPNG.encode(width: 4, height: 4, colorType: 2, bitDepth: 8, rows: rows, filters: [9]), "row 0 has filter type 9")
        refused(good, "is 4x4 pixels, not 8x4", size: (8, 4))
        XCTAssertNoThrow(try PNGReader.decode(good, size: (4, 4)))
    }

    // MARK: init image and mask

    func testInitImageAndMaskValues() throws {
        let folder = try temporaryFolder()
        // an 8 x 4 image, factor 2: the latent mask samples (0, 0), (0, 2), ... (2, 6)
        let rgb: [UInt8] = (0..<32).flatMap { (p: Int) -> [UInt8] in [UInt8(p * 8), 255, 0] }
        let image = folder.appendingPathComponent("init.png")
        try Data(TestPNG.encode(width: 8, height: 4, colorType: 2, bitDepth: 8, rows: TestPNG.rows(rgb, width: 8, height: 4, channels: 3))).write(to: image)
        let pixels = try ImageInput.readImage(image, height: 4, width: 8)
        XCTAssertEqual(pixels.count, 3 * 32)
        XCTAssertEqual(Array(pixels.prefix(3)), [-1, Float(8) / 127.5 - 1, Float(16) / 127.5 - 1], "planar R, x / 127.5 - 1")
        XCTAssertEqual(pixels[32], 1, "G plane")
        XCTAssertEqual(pixels[64], -1, "B plane")
        var gray = [UInt8](repeating: 0, count: 32)
        gray[2] = 128       // (0, 2): sampled, repainted
        gray[1] = 255       // (0, 1): not sampled
        gray[8 * 2 + 6] = 127  // (2, 6): sampled, below 128: kept
        let mask = folder.appendingPathComponent("mask.png")
        try Data(TestPNG.encode(width: 8, height: 4, colorType: 0, bitDepth: 8, rows: TestPNG.rows(gray, width: 8, height: 4, channels: 1))).write(to: mask)
        XCTAssertEqual(try ImageInput.readMask(mask, height: 4, width: 8, factor: 2), [0, 1, 0, 0, 0, 0, 0, 0])
    }

    func testInitImageAndMaskRefusals() throws {
        let folder = try temporaryFolder()
        func file(_ name: String, _ png: [UInt8]) throws -> URL {
            let url = folder.appendingPathComponent(name)
            try Data(png).write(to: url)
            return url
        }
        func refused(_ read: () throws -> [Float], _ mentions: String..., line: UInt = #line) {
            XCTAssertThrowsError(try read(), line: line) { error in
                guard case .invalidImage(let message)? = error as? MobileDiffError else { return XCTFail("\(error)", line: line) }
                for m in mentions { XCTAssertTrue(message.contains(m), "'\(m)' not in: \(message)", line: line) }
                XCTAssertFalse(message.contains("\n"), line: line)
            }
        }
        let rgb = TestPNG.rows([UInt8](repeating: 200, count: 64 * 3), width: 8, height: 8, channels: 3)
        let small = try file("small.png", TestPNG.encode(width: 8, height: 8, colorType: 2, bitDepth: 8, rows: rgb))
        refused({ try ImageInput.readImage(small, height: 16, width: 24) },
                "--init-image \(small.path) is 8x8 pixels, the model generates 24x16: resize or crop it to that size")
        refused({ try ImageInput.readImage(folder.appendingPathComponent("absent.png"), height: 8, width: 8) }, "absent.png: no such file")
        let text = try file("notes.png", Array("not an image".utf8))
        refused({ try ImageInput.readImage(text, height: 8, width: 8) }, "--init-image \(text.path) is not a PNG file")
        let deep = try file("deep.png", TestPNG.encode(width: 8, height: 8, colorType: 2, bitDepth: 16, rows: rgb))
        refused({ try ImageInput.readImage(deep, height: 8, width: 8) }, deep.path, "16 bits per channel")
        var rgba = [UInt8](repeating: 255, count: 64 * 4)
        rgba[3] = 0; rgba[7] = 100
        let clear = try file("clear.png", TestPNG.encode(width: 8, height: 8, colorType: 6, bitDepth: 8, rows: TestPNG.rows(rgba, width: 8, height: 8, channels: 4)))
        refused({ try ImageInput.readImage(clear, height: 8, width: 8) }, clear.path, "has transparent pixels (2): flatten it onto a background first")
        // masks: in colour, marking nothing, marking only pixels between the sampled ones
        let red = try file("red.png", TestPNG.encode(width: 8, height: 8, colorType: 2, bitDepth: 8,
                                                     rows: TestPNG.rows([255, 0, 0].repeated(64), width: 8, height: 8, channels: 3)))
        refused({ try ImageInput.readMask(red, height: 8, width: 8, factor: 2) }, "--mask \(red.path) is in colour")
        XCTAssertEqual(try ImageInput.readMask(small, height: 8, width: 8, factor: 2), [Float](repeating: 1, count: 16), "RGB with equal channels is gray")
        let black = try file("black.png", TestPNG.encode(width: 8, height: 8, colorType: 0, bitDepth: 8,
                                                         rows: TestPNG.rows([UInt8](repeating: 127, count: 64), width: 8, height: 8, channels: 1)))
        refused({ try ImageInput.readMask(black, height: 8, width: 8, factor: 2) }, black.path, "marks nothing to repaint (no pixel >= 128)")
        var between = [UInt8](repeating: 0, count: 64)
        for y in 0..<8 { between[y * 8 + 3] = 255 }  // column 3: never sampled at factor 2
        let thin = try file("thin.png", TestPNG.encode(width: 8, height: 8, colorType: 0, bitDepth: 8, rows: TestPNG.rows(between, width: 8, height: 8, channels: 1)))
        refused({ try ImageInput.readMask(thin, height: 8, width: 8, factor: 2) }, thin.path, "misses every latent pixel", "2x2-pixel cells")
        XCTAssertEqual(try ImageInput.readMask(thin, height: 8, width: 8, factor: 1).filter { $0 == 1 }.count, 8, "factor 1: every pixel")
        // a grayscale image is an init image too (replicated to RGB)
        XCTAssertEqual(try ImageInput.readImage(black, height: 8, width: 8), [Float](repeating: Float(127) / 127.5 - 1, count: 3 * 64))
    }

    private func temporaryFolder() throws -> URL {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("image-input-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        addTeardownBlock { try? FileManager.default.removeItem(at: folder) }
        return folder
    }
}

/// PNG files written for the tests: any colour type and bit depth, each row with its own filter (applied here),
/// stored (uncompressed) zlib blocks, optional palette, `tRNS`, extra chunks and an interlace flag.
enum TestPNG {
    /// Interleaved samples (height, width · channels) as rows of bytes (8-bit samples).
    static func rows(_ samples: [UInt8], width: Int, height: Int, channels: Int) -> [[UInt8]] {
        (0..<height).map { Array(samples[($0 * width * channels)..<(($0 + 1) * width * channels)]) }
    }

    /// One-channel samples of `depth` bits, packed leftmost first, as rows.
    static func packed(_ samples: [Int], width: Int, depth: Int) -> [[UInt8]] {
        stride(from: 0, to: samples.count, by: width).map { start in
            var row = [UInt8](repeating: 0, count: (width * depth + 7) / 8)
            for x in 0..<width {
                let bit = x * depth
                row[bit / 8] |= UInt8(samples[start + x] << (8 - depth - bit % 8))
            }
            return row
        }
    }

    static func encode(width: Int, height: Int, colorType: UInt8, bitDepth: Int, rows: [[UInt8]], filters: [UInt8] = [0],
                       palette: [UInt8]? = nil, transparency: [UInt8]? = nil, interlace: UInt8 = 0,
                       extra: [(String, [UInt8])] = []) -> [UInt8] {
        let channels = [0: 1, 2: 3, 3: 1, 4: 2, 6: 4][Int(colorType)]!
        let bpp = max(channels * bitDepth / 8, 1)
        var raw: [UInt8] = []
        for (y, row) in rows.enumerated() {
            let filter = filters[y % filters.count]
            raw.append(filter)
            for x in 0..<row.count {
                let a = x >= bpp ? Int(row[x - bpp]) : 0
                let b = y > 0 && x < rows[y - 1].count ? Int(rows[y - 1][x]) : 0
                let c = x >= bpp && y > 0 ? Int(rows[y - 1][x - bpp]) : 0
                let p: Int = a + b - c
                let pa: Int = abs(p - a), pb: Int = abs(p - b), pc: Int = abs(p - c)
                let paeth: Int = pa <= pb && pa <= pc ? a : (pb <= pc ? b : c)
                let predictions: [Int] = [0, a, b, (a + b) / 2, paeth]
                let predicted: Int = predictions[Int(min(filter, 4))]
                raw.append(UInt8(truncatingIfNeeded: Int(row[x]) - predicted))
            }
        }
        var header = PNGWriter.bigEndian(UInt32(width)) + PNGWriter.bigEndian(UInt32(height))
        header += [UInt8(bitDepth), colorType, 0, 0, interlace]
        var png = Data(PNGReader.signature)
        png += PNGWriter.chunk("IHDR", header)
        for (type, body) in extra { png += PNGWriter.chunk(type, body) }
        if let palette { png += PNGWriter.chunk("PLTE", palette) }
        if let transparency { png += PNGWriter.chunk("tRNS", transparency) }
        png += PNGWriter.chunk("IDAT", PNGWriter.zlibStored(raw))
        png += PNGWriter.chunk("IEND", [])
        return [UInt8](png)
    }
}

extension Array {
    /// The array `count` times over.
    func repeated(_ count: Int) -> [Element] { (0..<count).flatMap { _ in self } }
}

final class MaskBrushTests: XCTestCase {
    /// A horizontal stroke across the middle of an 8 x 4 image with a radius of one pixel, and a dot: the pixels
    /// whose centres lie within the radius, as the latent mask then samples them.
    func testStrokesRasterizeToTheMaskTheEngineReads() throws {
        let stroke = MaskStroke(points: [SIMD2(0, 0.5), SIMD2(1, 0.5)], radius: 1.0 / 8)
        let gray = MaskBrush.rasterize([stroke], width: 8, height: 4)
        XCTAssertEqual(gray, [UInt8](repeating: 0, count: 8) + [UInt8](repeating: 255, count: 16) + [UInt8](repeating: 0, count: 8),
                       "rows 1 and 2 (centres 0.5 px from the path), not rows 0 and 3 (1.5 px)")
        XCTAssertEqual(try ImageInput.latentMask(gray: gray, height: 4, width: 8, factor: 2, name: "the drawn mask"), [0, 0, 0, 0, 1, 1, 1, 1])
        let dot = MaskBrush.rasterize([MaskStroke(points: [SIMD2(0.25, 0.5)], radius: 0.75 / 8)], width: 8, height: 4)
        XCTAssertEqual(dot.enumerated().filter { $0.element == 255 }.map(\.offset), [8 + 1, 8 + 2, 16 + 1, 16 + 2], "the four pixels around (2, 2)")
        XCTAssertEqual(MaskBrush.rasterize([], width: 8, height: 4), [UInt8](repeating: 0, count: 32))
        XCTAssertThrowsError(try ImageInput.latentMask(gray: MaskBrush.rasterize([], width: 8, height: 4), height: 4, width: 8, factor: 2,
                                                       name: "the drawn mask")) { error in
            XCTAssertTrue("\(error)".hasPrefix("the drawn mask marks nothing to repaint"), "\(error)")
        }
    }
}
