import MobileDiffKit
import SwiftUI

/// The init image with the inpainting mask drawn over it: a drag paints a stroke of the brush (`MaskStroke`, in the
/// image's own coordinates, so the mask does not depend on the view's size); the strokes show in translucent red.
struct MaskCanvas: View {
    let image: CGImage
    @Binding var strokes: [MaskStroke]
    /// The brush's radius as a fraction of the image's width.
    let radius: Double
    /// Drawing is on only for bundles that inpaint.
    let drawing: Bool
    @State private var inStroke = false

    var body: some View {
        Image(decorative: image, scale: 1)
            .interpolation(.none)
            .resizable()
            .aspectRatio(CGFloat(image.width) / CGFloat(image.height), contentMode: .fit)
            .overlay {
                GeometryReader { proxy in
                    Canvas { context, size in
                        for stroke in strokes {
                            let points = stroke.points.map { CGPoint(x: $0.x * size.width, y: $0.y * size.height) }
                            var path = Path()
                            path.addLines(points.count == 1 ? [points[0], points[0]] : points)
                            context.stroke(path, with: .color(.red.opacity(0.45)),
                                           style: StrokeStyle(lineWidth: 2 * stroke.radius * size.width, lineCap: .round, lineJoin: .round))
                        }
                    }
                    .contentShape(Rectangle())
                    .gesture(brush(in: proxy.size))
                    .allowsHitTesting(drawing)
                }
            }
    }

    /// A drag: its first point starts a stroke, every later one extends it.
    private func brush(in size: CGSize) -> some Gesture {
        DragGesture(minimumDistance: 0)
            .onChanged { value in
                let point = SIMD2(min(max(Double(value.location.x / size.width), 0), 1), min(max(Double(value.location.y / size.height), 0), 1))
                if inStroke, !strokes.isEmpty {
                    strokes[strokes.count - 1].points.append(point)
                } else {
                    strokes.append(MaskStroke(points: [point], radius: radius))
                    inStroke = true
                }
            }
            .onEnded { _ in inStroke = false }
    }
}
