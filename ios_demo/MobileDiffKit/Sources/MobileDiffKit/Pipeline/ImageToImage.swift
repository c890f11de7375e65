/// Image-to-image and inpainting over a manifest's table, as diffusers' StableDiffusionImg2ImgPipeline and (4-channel
/// UNet) StableDiffusionInpaintPipeline run them (docs/bundle.md, "`image` (optional)"; the Python reference is
/// mobilediff/sampler_table.py `run_image_table`, `start_table`, `strength_steps` and `suffix`).
///
/// | name here     | meaning                                                        | manifest             |
/// |---------------|----------------------------------------------------------------|----------------------|
/// | `N`           | the table's steps                                              | `steps`              |
/// | `k`           | steps the run denoises: min(floor(N · strength), N), k ≥ 1     |                      |
/// | `start` (j)   | the run's first step, N - k                                    |                      |
/// | `run`         | `starts[j]` if listed, else the table's rows from j (`suffix`) | `starts`             |
/// | `imageLatent` | z0 = (mean + std · eps - shift_factor) · scaling_factor         | `geometry`           |
/// | `a_j`, `b_j`  | the scheduler's noising of z0 to step j: a_j · z0 + b_j · noise | `add_noise[j]`       |
/// | `mask`        | 1: repaint, 0: keep, one value per latent pixel                 |                      |
///
/// The first latent is `a_j · z0 + b_j · noise` (inpainting at strength exactly 1: `init_noise_sigma · noise`, as
/// text-to-image); for inpainting, after run step i the latent is `(1 - m) · known + m · latent`, `known` being z0
/// noised to step j + i + 1 (z0 itself after the last step). An inpainting UNet (`image.denoiser` "inpainting") sees the
/// mask and the masked image itself: the same start, no blend. Arithmetic is float32 in the reference's order.
public enum ImageToImage {
    /// How many of `steps` a run at `strength` denoises, diffusers' rule `min(floor(steps · strength), steps)`.
    /// Throws `invalidArgument` for a strength outside (0, 1] or one that leaves no step.
    public static func strengthSteps(steps: Int, strength: Double) throws -> Int {
        guard strength.isFinite, strength > 0, strength <= 1 else {
            throw MobileDiffError.invalidArgument("--strength must be in (0, 1], got \(shown(strength))")
        }
        let k = min(Int((Double(steps) * strength).rounded(.towardZero)), steps)
        guard k >= 1 else {
            throw MobileDiffError.invalidArgument(String(format: "--strength %@ denoises no step of %d: give at least %.3g, or more steps",
                                                         shown(strength), steps, 1 / Double(steps)))
        }
        return k
    }

    /// The run of `table` at `strength` and the step it starts at: the table's `starts` entry for that step where it
    /// has one, else its rows from there (`suffix`).
    public static func startTable(_ table: BundleManifest.SamplerTable,
                                  strength: Double) throws -> (table: BundleManifest.SamplerTable, start: Int) {
        let start = table.steps - (try strengthSteps(steps: table.steps, strength: strength))
        if let listed = table.starts?[start] { return (listed, start) }
        return (suffix(table, start: start), start)
    }

    /// The rows of `table` from step `start` on, as a table: a row that reaches back before `start` keeps only the
    /// coefficients within the run (row i of the run at most i + 1 latents and outputs).
    public static func suffix(_ table: BundleManifest.SamplerTable, start: Int) -> BundleManifest.SamplerTable {
        let rows = { (coefficients: [[Double]]) in coefficients.dropFirst(start).enumerated().map { Array($1.prefix($0 + 1)) } }
        return BundleManifest.SamplerTable(
            name: table.name, steps: table.steps - start, initNoiseSigma: table.initNoiseSigma,
            timesteps: Array(table.timesteps.dropFirst(start)), inputScale: Array(table.inputScale.dropFirst(start)),
            latentCoef: rows(table.latentCoef), outputCoef: rows(table.outputCoef),
            noiseCoef: Array(table.noiseCoef.dropFirst(start)))
    }

    /// Samples from an image: image-to-image (`mask` nil) or inpainting at `strength`, over `table` (which carries
    /// `addNoise`). `imageLatent` is z0 and `noise` the initial draw, both latent-sized; `mask` is (1, 1, h, w) of 0
    /// and 1. `blend` false: an inpainting UNet's run (it sees the mask and the masked image itself): inpainting's
    /// start rule, no blend after the steps, and `imageLatent` nil at strength 1, where it is not used.
    /// `denoise`, `freshNoise` and `onStep` as in `SamplerLoop.run` (step indices are the run's, from 0).
    public static func run(table: BundleManifest.SamplerTable, imageLatent: [Float]?, noise: [Float], strength: Double,
                           mask: [Float]?, blend: Bool = true, denoise: ([Float], Double, Int) throws -> [Float],
                           freshNoise: () -> [Float], onStep: (Int, [Float]) -> Void = { _, _ in }) throws -> [Float] {
        guard let noising = table.addNoise, noising.count == table.steps else {
            throw MobileDiffError.invalidArgument("the \(table.name):\(table.steps) table has no image-to-image coefficients (export the bundle with --image-modes)")
        }
        let (run, start) = try startTable(table, strength: strength)
        let fromNoise = mask != nil && strength == 1
        // z0 is used by the start (unless from noise) and by the blend
        let requireLatent = { () throws -> [Float] in
            guard let imageLatent else {
                throw MobileDiffError.invalidArgument("a run from an image at strength \(shown(strength)) needs the image's latent")
            }
            return imageLatent
        }
        let initial = fromNoise
            ? SamplerLoop.scale(noise, by: table.initNoiseSigma)
            : noised(try requireLatent(), noise, noising[start])
        guard let mask, blend else {
            return try SamplerLoop.run(table: run, initial: initial, denoise: denoise, freshNoise: freshNoise, onStep: onStep)
        }
        let imageLatent = try requireLatent()
        let plane = imageLatent.count / mask.count  // the mask repeats over the latent's channels
        return try SamplerLoop.run(table: run, initial: initial, denoise: denoise, freshNoise: freshNoise, blend: { i, latent in
            let known = i + 1 < run.steps ? noised(imageLatent, noise, noising[start + i + 1]) : imageLatent
            for c in 0..<plane {
                for p in 0..<mask.count {
                    let j = c * mask.count + p, m = mask[p]
                    latent[j] = (1 - m) * known[j] + m * latent[j]
                }
            }
        }, onStep: onStep)
    }

    /// `coefficients[0] · image + coefficients[1] · noise` (the scheduler's `add_noise`).
    static func noised(_ image: [Float], _ noise: [Float], _ coefficients: [Double]) -> [Float] {
        let a = Float(coefficients[0]), b = Float(coefficients[1])
        return (0..<image.count).map { a * image[$0] + b * noise[$0] }
    }

    /// A number as Python's `{:g}` shows it.
    static func shown(_ value: Double) -> String { String(format: "%g", value) }
}
