/// The sampler loop over a manifest's table (the reference is mobilediff/sampler_table.py `run_table`).
///
/// | name here        | meaning                                         | table field            |
/// |------------------|-------------------------------------------------|------------------------|
/// | `latents[k]`     | latent_{i-k}, the current latent first          |                        |
/// | `outputs[k]`     | output_{i-k}, the denoiser's (guided) outputs   |                        |
/// | `modelInput`     | input_scale[i] · latent_i                       | `inputScale`           |
/// | next latent      | Σ latent_coef·latents + Σ output_coef·outputs + noise_coef·fresh noise | `latentCoef`, `outputCoef`, `noiseCoef` |
///
/// Arithmetic is float32 in the same order as the Python reference (latent terms summed, output terms summed,
/// the two sums added, then the noise term), so replaying recorded outputs reproduces its latents.
public enum SamplerLoop {
    /// Runs every step of `table`.
    /// - Parameters:
    ///   - noise: the initial N(0, I) draw, latent-sized.
    ///   - denoise: `(modelInput, timestep, stepIndex) → output` (after guidance).
    ///   - freshNoise: the next N(0, I) draw, for steps whose noise coefficient is non-zero.
    ///   - onStep: called with the step index and the latent after that step.
    /// - Returns: the final latent.
    public static func run(table: BundleManifest.SamplerTable, noise: [Float],
                           denoise: ([Float], Double, Int) throws -> [Float],
                           freshNoise: () -> [Float],
                           onStep: (Int, [Float]) -> Void = { _, _ in }) rethrows -> [Float] {
        try run(table: table, initial: scale(noise, by: table.initNoiseSigma), denoise: denoise, freshNoise: freshNoise,
                onStep: onStep)
    }

    /// Runs every step of `table` from the latent `initial` (image-to-image: the noised image latent,
    /// `ImageToImage.run`), with `blend(i, &latent)` applied to the latent after step i before anything sees it
    /// (inpainting: the known region put back).
    public static func run(table: BundleManifest.SamplerTable, initial: [Float],
                           denoise: ([Float], Double, Int) throws -> [Float],
                           freshNoise: () -> [Float],
                           blend: (Int, inout [Float]) -> Void = { _, _ in },
                           onStep: (Int, [Float]) -> Void = { _, _ in }) rethrows -> [Float] {
        var latents: [[Float]] = []  // newest first
        var outputs: [[Float]] = []
        var x = initial
        for i in 0..<table.steps {
            latents.insert(x, at: 0)
            outputs.insert(try denoise(scale(x, by: table.inputScale[i]), table.timesteps[i], i), at: 0)
            var next = weightedSum(table.latentCoef[i], latents, count: x.count)
            let outputTerm = weightedSum(table.outputCoef[i], outputs, count: x.count)
            if !table.outputCoef[i].isEmpty { add(outputTerm, into: &next) }
            if table.noiseCoef[i] != 0 {
                let fresh = freshNoise()
                let c = Float(table.noiseCoef[i])
                for j in 0..<next.count { next[j] += c * fresh[j] }
            }
            // keep only as much history as any later step reaches back
            let reach = max(table.latentCoef.dropFirst(i + 1).map(\.count).max() ?? 0,
                            table.outputCoef.dropFirst(i + 1).map(\.count).max() ?? 0)
            if latents.count >= reach { latents.removeLast(latents.count - max(reach - 1, 0)) }
            if outputs.count >= reach { outputs.removeLast(outputs.count - max(reach - 1, 0)) }
            blend(i, &next)
            x = next
            onStep(i, x)
        }
        return x
    }

    static func scale(_ values: [Float], by factor: Double) -> [Float] {
        let f = Float(factor)
        return values.map { $0 * f }
    }

    /// Σ_k coefficients[k] · terms[k], accumulated left to right from zero (Python's `sum`).
    static func weightedSum(_ coefficients: [Double], _ terms: [[Float]], count: Int) -> [Float] {
        var total = [Float](repeating: 0, count: count)
        for (k, c) in coefficients.enumerated() {
            let f = Float(c), term = terms[k]
            for j in 0..<count { total[j] += f * term[j] }
        }
        return total
    }

    static func add(_ values: [Float], into total: inout [Float]) {
        for j in 0..<total.count { total[j] += values[j] }
    }
}
