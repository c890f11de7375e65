import Foundation

/// How the denoiser is guided, from the manifest's `guidance` record.
public enum GuidanceMode: Sendable, Equatable {
    /// No guidance: one batch row, the conditional prompt.
    case none
    /// Classifier-free guidance: rows [unconditional, conditional]; out = uncond + scale · (cond - uncond).
    case classifierFree(scale: Double)
    /// LCM students: one row and the guidance scale as an embedding input.
    case embedding(scale: Double, dim: Int)

    /// The mode for a bundle's guidance record at `scale`. Classifier-free guidance applies only above 1.
    public static func make(_ record: BundleManifest.Guidance, scale: Double) throws -> GuidanceMode {
        switch record.type {
        case "classifier_free":
            return scale > 1 ? .classifierFree(scale: scale) : .none
        case "embedding":
            guard let dim = record.embeddingDim else { throw MobileDiffError.invalidArgument("guidance embedding without embedding_dim") }
            return .embedding(scale: scale, dim: dim)
        default:
            throw MobileDiffError.invalidArgument("unknown guidance type \(record.type) (this engine knows classifier_free and embedding)")
        }
    }

    /// Combines the denoiser's rows [uncond, cond] into one guided output (float32, as the Python side).
    static func combine(_ output: [Float], scale: Double) -> [Float] {
        let half = output.count / 2
        let s = Float(scale)
        return (0..<half).map { j in output[j] + s * (output[half + j] - output[j]) }
    }

    /// diffusers' guidance-scale embedding (mobilediff/bundle.py `guidance_embedding_tensor`):
    /// w = (scale - 1)·1000, f_k = exp(-k·ln(10000)/(dim/2 - 1)), embedding = [sin(w f), cos(w f)], zero-padded to dim.
    /// Computed in float32 like the reference.
    public static func embeddingVector(scale: Double, dim: Int) -> [Float] {
        let half = dim / 2
        let step = Float(-(log(10000.0) / Double(half - 1)))
        let w = (Float(scale) - 1) * 1000
        var sines: [Float] = [], cosines: [Float] = []
        for k in 0..<half {
            let frequency = Foundation.exp(Float(k) * step)
            let angle = w * frequency
            sines.append(Foundation.sin(angle))
            cosines.append(Foundation.cos(angle))
        }
        return sines + cosines + (dim % 2 == 1 ? [0] : [])
    }
}
