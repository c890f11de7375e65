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

    /// The embedding for `scale`: the manifest's own `default_embedding` (Python's exact values) at the default
    /// scale, else computed. Computing it cannot match Python bit for bit: the angles reach (scale - 1)·1000 rad,
    /// so a 1-ulp difference between platform float32 `exp`s moves a feature by up to ~3e-4.
    public static func embeddingVector(scale: Double, dim: Int, record: BundleManifest.Guidance) -> [Float] {
        if scale == record.defaultScale, let stored = record.defaultEmbedding, stored.count == dim {
            return stored.map(Float.init)
        }
        return embeddingVector(scale: scale, dim: dim)
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
