import Foundation

/// PyTorch's CPU generator: `torch.randn(shape, generator=torch.Generator().manual_seed(seed))`.
///
/// Mersenne Twister (MT19937, 32-bit, seeded with the low 32 bits of the seed) feeding torch's normal
/// sampler (aten/src/ATen/native/cpu/DistributionTemplates.h), which has two paths:
/// - a tensor of >= 16 contiguous float32 elements (every latent here): fill the tensor with uniforms
///   `u = (r & (2^24 - 1)) / 2^24` from single 32-bit draws, then transform each block of 16 with Box-Muller,
///   `x[j] = √(-2 ln(1 - u[j]))·cos(2π u[j+8])`, `x[j+8] = √(-2 ln(1 - u[j]))·sin(2π u[j+8])` for j < 8;
///   if the count is not a multiple of 16, 16 fresh uniforms replace the last 16 elements and are transformed;
/// - fewer than 16 elements: one double-precision Box-Muller pair per two elements from 53-bit uniforms
///   (two 32-bit draws each), `√(-2 log1p(-u2))·cos(2π u1)` now and the matching sine cached for the next draw.
/// torch's vectorised path computes log/sin/cos with SLEEF (1 ulp); Foundation's float functions may differ in
/// the last bit, so the fast path agrees to ~2.4e-7 rather than bit for bit (the slow path agrees exactly).
public struct TorchRandomSource: RandomSource {
    private var generator: MersenneTwister
    /// The cached second value of the last double-precision Box-Muller pair (torch's next_double_normal_sample).
    private var nextDoubleNormal: Double?

    public init(seed: UInt64) {
        generator = MersenneTwister(seed: UInt32(truncatingIfNeeded: seed))
    }

    public mutating func normalArray(count: Int, mean: Double = 0, stdev: Double = 1) -> [Float] {
        if count >= 16 { return vectorisedNormal(count: count, mean: Float(mean), stdev: Float(stdev)) }
        return (0..<count).map { _ in Float(scalarNormal(mean: mean, stdev: stdev)) }
    }

    // MARK: - torch's two paths

    private mutating func uniformFloat() -> Float {
        Float(generator.next() & ((1 << 24) - 1)) * (1.0 / Float(1 << 24))
    }

    private mutating func uniformDouble() -> Double {
        let high = UInt64(generator.next()), low = UInt64(generator.next())
        let bits = (high << 32) | low
        return Double(bits & ((1 << 53) - 1)) * (1.0 / Double(UInt64(1) << 53))
    }

    private mutating func vectorisedNormal(count: Int, mean: Float, stdev: Float) -> [Float] {
        var data = (0..<count).map { _ in uniformFloat() }
        var start = 0
        while start + 16 <= count {
            TorchRandomSource.boxMuller16(&data, at: start, mean: mean, stdev: stdev)
            start += 16
        }
        if count % 16 != 0 {
            let tail = count - 16
            for k in 0..<16 { data[tail + k] = uniformFloat() }
            TorchRandomSource.boxMuller16(&data, at: tail, mean: mean, stdev: stdev)
        }
        return data
    }

    private static func boxMuller16(_ data: inout [Float], at start: Int, mean: Float, stdev: Float) {
        let twoPi = Float(2.0 * Double.pi)
        for j in 0..<8 {
            let u1 = 1 - data[start + j]  // [0, 1) -> (0, 1] for the log
            let u2 = data[start + j + 8]
            let radius = (-2 * Foundation.log(u1)).squareRoot()
            let theta = twoPi * u2
            data[start + j] = radius * Foundation.cos(theta) * stdev + mean
            data[start + j + 8] = radius * Foundation.sin(theta) * stdev + mean
        }
    }

    private mutating func scalarNormal(mean: Double, stdev: Double) -> Double {
        if let cached = nextDoubleNormal {
            nextDoubleNormal = nil
            return cached * stdev + mean
        }
        let u1 = uniformDouble(), u2 = uniformDouble()
        let radius = (-2.0 * Foundation.log1p(-u2)).squareRoot()
        let theta = 2.0 * Double.pi * u1
        nextDoubleNormal = radius * Foundation.sin(theta)
        return radius * Foundation.cos(theta) * stdev + mean
    }
}

/// MT19937 (Matsumoto & Nishimura 1998), the 32-bit Mersenne Twister std::mt19937 and torch's CPU generator use.
struct MersenneTwister {
    private var state = [UInt32](repeating: 0, count: 624)
    private var index = 624

    init(seed: UInt32) {
        state[0] = seed
        for i in 1..<624 {
            state[i] = 1_812_433_253 &* (state[i - 1] ^ (state[i - 1] >> 30)) &+ UInt32(i)
        }
    }

    mutating func next() -> UInt32 {
        if index >= 624 { twist() }
        var y = state[index]
        index += 1
        y ^= y >> 11
        y ^= (y << 7) & 0x9D2C_5680
        y ^= (y << 15) & 0xEFC6_0000
        y ^= y >> 18
        return y
    }

    private mutating func twist() {
        for i in 0..<624 {
            let y = (state[i] & 0x8000_0000) | (state[(i + 1) % 624] & 0x7FFF_FFFF)
            state[i] = state[(i + 397) % 624] ^ (y >> 1) ^ ((y & 1) != 0 ? 0x9908_B0DF : 0)
        }
        index = 0
    }
}
