import CoreGraphics
import Foundation
import MobileDiffKit
import UIKit

/// A photo from the library as image-to-image takes it: exactly the bundle's size (the engine never resizes), scaled
/// to cover it and centre-cropped, its EXIF orientation applied, over white (a photo with transparency is flattened).
enum PickedImage {
    struct Unreadable: Error, CustomStringConvertible {
        var description: String
    }

    /// The photo in `data` (any format UIImage reads: HEIC, JPEG, PNG, ...) at `width` x `height`, opaque 8-bit RGBA.
    static func fitted(_ data: Data, width: Int, height: Int) throws -> RGBAImage {
        guard let photo = UIImage(data: data), photo.size.width > 0, photo.size.height > 0 else {
            throw Unreadable(description: "The photo could not be read")
        }
        let size = CGSize(width: width, height: height)
        let scale = max(size.width / photo.size.width, size.height / photo.size.height)
        let drawn = CGSize(width: photo.size.width * scale, height: photo.size.height * scale)
        var pixels = [UInt8](repeating: 255, count: width * height * 4)
        let drew = pixels.withUnsafeMutableBytes { buffer -> Bool in
            // 8-bit RGBA, sRGB, row after row from the top (UIKit's flipped coordinates pushed onto the context)
            guard let context = CGContext(data: buffer.baseAddress, width: width, height: height, bitsPerComponent: 8,
                                          bytesPerRow: width * 4, space: CGColorSpace(name: CGColorSpace.sRGB)!,
                                          bitmapInfo: CGImageAlphaInfo.noneSkipLast.rawValue) else { return false }
            context.translateBy(x: 0, y: size.height)
            context.scaleBy(x: 1, y: -1)
            UIGraphicsPushContext(context)
            UIColor.white.setFill()
            UIRectFill(CGRect(origin: .zero, size: size))
            photo.draw(in: CGRect(x: (size.width - drawn.width) / 2, y: (size.height - drawn.height) / 2,
                                  width: drawn.width, height: drawn.height))
            UIGraphicsPopContext()
            return true
        }
        guard drew else { throw Unreadable(description: "The photo could not be drawn at the bundle's size") }
        for p in 0..<(width * height) { pixels[4 * p + 3] = 255 }  // noneSkipLast leaves the fourth byte undefined
        return RGBAImage(width: width, height: height, pixels: pixels)
    }
}
