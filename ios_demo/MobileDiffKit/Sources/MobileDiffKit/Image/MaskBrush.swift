/// An inpainting mask drawn with a round brush (the app's mask over the init image): strokes in the image's own
/// coordinates, rasterized to the grayscale bytes `ImageInput.latentMask(gray:height:width:factor:name:)` takes.
public struct MaskStroke: Sendable, Equatable {
    /// The brush's path: (x, y) as fractions of the image's width and height, (0, 0) the top left corner.
    public var points: [SIMD2<Double>]
    /// The brush's radius as a fraction of the image's width.
    public var radius: Double

    public init(points: [SIMD2<Double>] = [], radius: Double) {
        self.points = points
        self.radius = radius
    }
}

public enum MaskBrush {
    /// (height, width) bytes: 255 where a pixel's centre lies within `radius` of a stroke's path (a one-point stroke:
    /// of the point), 0 elsewhere.
    public static func rasterize(_ strokes: [MaskStroke], width: Int, height: Int) -> [UInt8] {
        var gray = [UInt8](repeating: 0, count: width * height)
        for stroke in strokes where !stroke.points.isEmpty {
            let r = stroke.radius * Double(width)
            let path = stroke.points.map { SIMD2($0.x * Double(width), $0.y * Double(height)) }
            for (a, b) in zip(path, path.count == 1 ? path : Array(path.dropFirst())) {
                // the pixels whose centres can lie within r of the segment a-b
                let x0 = max(Int((min(a.x, b.x) - r).rounded(.down)), 0), x1 = min(Int((max(a.x, b.x) + r).rounded(.up)), width - 1)
                let y0 = max(Int((min(a.y, b.y) - r).rounded(.down)), 0), y1 = min(Int((max(a.y, b.y) + r).rounded(.up)), height - 1)
                guard x0 <= x1, y0 <= y1 else { continue }
                let d = b - a, length2 = (d * d).sum()
                for y in y0...y1 {
                    for x in x0...x1 {
                        let p = SIMD2(Double(x) + 0.5, Double(y) + 0.5)
                        let t = length2 > 0 ? min(max(((p - a) * d).sum() / length2, 0), 1) : 0
                        let q = p - (a + t * d)
                        if (q * q).sum() <= r * r { gray[y * width + x] = 255 }
                    }
                }
            }
        }
        return gray
    }
}
