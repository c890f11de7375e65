import Foundation

/// The images image-to-image and inpainting start from, in the tensors the pipeline takes (as diffusers'
/// VaeImageProcessor makes them; the Python reference is mobilediff/image_input.py, whose messages these are).
///
/// An init image is 8-bit RGB (grayscale and palette are converted; an alpha channel only when every pixel is opaque)
/// at exactly the bundle's size: it is never resized or cropped here (the app scales a picked photo before).
/// A mask is grayscale at the same size; a pixel >= 128 is repainted, one below kept; the latent mask takes the pixel
/// at (y · f, x · f), f the VAE factor (`Geometry.pixelsPerLatent`: diffusers' nearest interpolation).
/// Files are PNG (`PNGReader`). Every refusal is one `invalidImage` line naming the image and what it should be.
public enum ImageInput {
    /// (1, 3, height, width) float32 in [-1, 1], `x / 127.5 - 1`, of (height, width, 3) RGB bytes.
    public static func pixels(rgb: [UInt8], height: Int, width: Int) -> [Float] {
        let plane = height * width
        var out = [Float](repeating: 0, count: 3 * plane)
        for p in 0..<plane {
            for c in 0..<3 { out[c * plane + p] = Float(rgb[3 * p + c]) / 127.5 - 1 }
        }
        return out
    }

    /// The init image in the PNG file `url`: `pixels(rgb:height:width:)` of it. `label` names it in errors
    /// ("--init-image"). Refused: a missing or unreadable file, what `PNGReader` refuses, transparent pixels, another size.
    public static func readImage(_ url: URL, height: Int, width: Int, label: String = "--init-image") throws -> [Float] {
        pixels(rgb: try read(url, height: height, width: width, label: label), height: height, width: width)
    }

    /// The latent mask (1, 1, ⌈height / factor⌉, ⌈width / factor⌉) of 0 (keep) and 1 (repaint) of a grayscale mask,
    /// (height, width) bytes: the pixel at (y · factor, x · factor) >= 128. `name` is what errors call it ("--mask
    /// m.png", "the mask"). Refused: a mask that marks nothing, or whose marks miss every sampled pixel.
    public static func latentMask(gray: [UInt8], height: Int, width: Int, factor: Int, name: String) throws -> [Float] {
        guard gray.contains(where: { $0 >= 128 }) else {
            throw MobileDiffError.invalidImage("\(name) marks nothing to repaint (no pixel >= 128): leave the mask out for image-to-image")
        }
        var mask: [Float] = []
        for y in stride(from: 0, to: height, by: factor) {
            for x in stride(from: 0, to: width, by: factor) { mask.append(gray[y * width + x] >= 128 ? 1 : 0) }
        }
        guard mask.contains(1) else {
            throw MobileDiffError.invalidImage("\(name): its marked region misses every latent pixel (the model repaints \(factor)x\(factor)-pixel cells sampled at their top-left pixel): mark a larger region")
        }
        return mask
    }

    /// The latent mask of the PNG file `url` (`latentMask(gray:height:width:factor:name:)`); refused besides: what
    /// `readImage` refuses, and a mask in colour (which channel would mark the region?).
    public static func readMask(_ url: URL, height: Int, width: Int, factor: Int, label: String = "--mask") throws -> [Float] {
        let rgb = try read(url, height: height, width: width, label: label)
        let name = "\(label) \(url.path)"
        var gray = [UInt8](repeating: 0, count: height * width)
        for p in 0..<(height * width) {
            guard rgb[3 * p] == rgb[3 * p + 1], rgb[3 * p + 1] == rgb[3 * p + 2] else {
                throw MobileDiffError.invalidImage("\(name) is in colour: a mask is grayscale (white or >= 128: repaint, black: keep)")
            }
            gray[p] = rgb[3 * p]
        }
        return try latentMask(gray: gray, height: height, width: width, factor: factor, name: name)
    }

    /// The (height, width, 3) RGB bytes of the PNG file `url`, checked.
    static func read(_ url: URL, height: Int, width: Int, label: String) throws -> [UInt8] {
        let name = "\(label) \(url.path)"
        guard FileManager.default.fileExists(atPath: url.path) else { throw MobileDiffError.invalidImage("\(name): no such file") }
        let data: Data
        do { data = try Data(contentsOf: url) } catch {
            throw MobileDiffError.invalidImage("\(name) cannot be read (\(error.localizedDescription))")
        }
        let image: PNGReader.Image
        do { image = try PNGReader.decode([UInt8](data), size: (width, height)) } catch let failure as PNGReader.Failure {
            if let found = failure.foundSize {
                throw MobileDiffError.invalidImage("\(name) is \(found.width)x\(found.height) pixels, the model generates \(width)x\(height): resize or crop it to that size")
            }
            throw MobileDiffError.invalidImage("\(name) \(failure.description)")
        }
        guard image.transparentPixels == 0 else {
            throw MobileDiffError.invalidImage("\(name) has transparent pixels (\(image.transparentPixels)): flatten it onto a background first")
        }
        return image.rgb
    }
}
