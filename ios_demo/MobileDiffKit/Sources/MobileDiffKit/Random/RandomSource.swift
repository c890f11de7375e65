/// A source of the initial latent noise and of the fresh noise some samplers draw between steps.
///
/// Each draw must equal what the Python side draws for the same seed and shape, or a seed would not reproduce
/// the image `mobilediff generate --bundle` makes.
public protocol RandomSource {
    /// `count` samples of N(mean, stdev²), in the order the reference fills a contiguous tensor of that many
    /// elements.
    mutating func normalArray(count: Int, mean: Double, stdev: Double) -> [Float]
}

extension RandomSource {
    public mutating func normalArray(count: Int) -> [Float] {
        normalArray(count: count, mean: 0, stdev: 1)
    }
}
