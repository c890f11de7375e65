import XCTest
@testable import MobileDiffKit

final class ImageTests: XCTestCase {
    /// mobilediff/data.py to_uint8: round((clamp(x) + 1) · 127.5), ties to even as torch.round.
    func testByteConversionMatchesPython() {
        XCTAssertEqual(ImageConversion.byte(-1), 0)
        XCTAssertEqual(ImageConversion.byte(1), 255)
        XCTAssertEqual(ImageConversion.byte(-2), 0)
        XCTAssertEqual(ImageConversion.byte(0), 128)  // 127.5 rounds to even
        XCTAssertEqual(ImageConversion.byte(1 / 127.5 - 1), 1)
    }

    func testPlanarToRGBA() {
        // (3, 1, 2): R plane [-1, 1], G plane [0, 0], B plane [1, -1]
        let hwc = ImageConversion.hwcClamped(chw: [-1, 1, 0, 0, 1, -1], height: 1, width: 2)
        XCTAssertEqual(hwc, [-1, 0, 1, 1, 0, -1])
        XCTAssertEqual(ImageConversion.rgba(hwc: hwc, height: 1, width: 2).pixels, [0, 128, 255, 255, 255, 128, 0, 255])
    }

    func testPNGStructure() {
        let image = RGBAImage(width: 2, height: 1, pixels: [0, 128, 255, 255, 255, 128, 0, 255])
        let png = [UInt8](PNGWriter.data(image))
        XCTAssertEqual(Array(png.prefix(8)), [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A])
        XCTAssertEqual(Array(png.suffix(12)), [0, 0, 0, 0, 0x49, 0x45, 0x4E, 0x44, 0xAE, 0x42, 0x60, 0x82], "IEND with its standard CRC")
        XCTAssertEqual(PNGWriter.adler32(Array("Wikipedia".utf8)), 0x11E6_0398)
    }
}
