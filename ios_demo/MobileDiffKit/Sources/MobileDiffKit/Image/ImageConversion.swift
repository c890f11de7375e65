/// An 8-bit RGBA image, row-major, alpha 255.
public struct RGBAImage: Sendable, Equatable {
    public var width: Int
    public var height: Int
    /// width · height · 4 bytes.
    public var pixels: [UInt8]

    public init(width: Int, height: Int, pixels: [UInt8]) {
        precondition(pixels.count == width * height * 4, "\(width)x\(height) RGBA needs \(width * height * 4) bytes, got \(pixels.count)")
        self.width = width
        self.height = height
        self.pixels = pixels
    }

    /// The RGB bytes (width · height · 3), dropping alpha.
    public var rgb: [UInt8] {
        var out = [UInt8]()
        out.reserveCapacity(width * height * 3)
        for p in 0..<(width * height) { out.append(contentsOf: pixels[(4 * p)..<(4 * p + 3)]) }
        return out
    }
}

/// Decoder output → image, exactly as the Python side converts (mobilediff/data.py `to_uint8`):
/// clamp to [-1, 1], `round((x + 1) · 127.5)` with ties to even (torch.round), as uint8.
public enum ImageConversion {
    /// (3, H, W) planar floats → (H, W, 3) interleaved, clamped to [-1, 1].
    public static func hwcClamped(chw: [Float], height: Int, width: Int) -> [Float] {
        let plane = height * width
        var out = [Float](repeating: 0, count: plane * 3)
        for p in 0..<plane {
            for c in 0..<3 { out[3 * p + c] = min(max(chw[c * plane + p], -1), 1) }
        }
        return out
    }

    public static func byte(_ value: Float) -> UInt8 {
        let clamped = min(max(value, -1), 1)
        return UInt8(((clamped + 1) * 127.5).rounded(.toNearestOrEven))
    }

    /// (H, W, 3) floats in [-1, 1] → RGBA bytes.
    public static func rgba(hwc: [Float], height: Int, width: Int) -> RGBAImage {
        var pixels = [UInt8](repeating: 255, count: height * width * 4)
        for p in 0..<(height * width) {
            for c in 0..<3 { pixels[4 * p + c] = byte(hwc[3 * p + c]) }
        }
        return RGBAImage(width: width, height: height, pixels: pixels)
    }
}

#if canImport(CoreGraphics)
import CoreGraphics
import Foundation

extension RGBAImage {
    /// The image as a CGImage (sRGB, premultiplied-last alpha; alpha is always 255).
    public var cgImage: CGImage? {
        guard let provider = CGDataProvider(data: Data(pixels) as CFData) else { return nil }
        return CGImage(width: width, height: height, bitsPerComponent: 8, bitsPerPixel: 32, bytesPerRow: width * 4,
                       space: CGColorSpace(name: CGColorSpace.sRGB)!,
                       bitmapInfo: CGBitmapInfo(rawValue: CGImageAlphaInfo.premultipliedLast.rawValue),
                       provider: provider, decode: nil, shouldInterpolate: false, intent: .defaultIntent)
    }
}
#endif
