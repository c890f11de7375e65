package com.mobilediff.engine

import kotlin.math.PI
import kotlin.math.cos
import kotlin.math.ln
import kotlin.math.ln1p
import kotlin.math.sin
import kotlin.math.sqrt

/** A source of N(0, I) noise for a latent shape. */
interface RandomSource {
    /** The next standard-normal draw of [shape] (row-major), continuing the stream. */
    fun normal(shape: IntArray): FloatArray
}

/**
 * PyTorch's CPU generator: `torch.randn(shape, generator=torch.Generator().manual_seed(seed))`, float32.
 *
 * The engine is a 32-bit Mersenne Twister (mt19937) seeded with the low 32 bits of the seed. `randn` then takes
 * one of two paths, as torch's CPU normal kernel does:
 *  - 16 elements or more: fill the tensor with float uniforms u = (next() & (2^24 - 1)) / 2^24, then Box-Muller
 *    each block of 16 in place (elements j and j+8 of a block give radius sqrt(-2 ln(1 - u_j)) and angle
 *    2 pi u_{j+8}: cos into j, sin into j+8). A tail that is not a multiple of 16 redraws the last 16 uniforms
 *    and transforms them again.
 *  - fewer than 16: one double-precision normal per element from two 53-bit uniforms (two 32-bit draws each),
 *    radius sqrt(-2 ln(1 - u2)), angle 2 pi u1; the sine half is cached in the generator for the next element.
 * torch vectorises the float path with its own log/sin/cos, so elements agree to ~2e-7, not always bit for bit.
 */
class TorchGenerator(seed: Long) : RandomSource {
    private val mt = IntArray(N)
    private var index = N
    private var cachedNormal: Double? = null

    init {
        mt[0] = seed.toInt()  // manual_seed keeps the low 32 bits
        for (i in 1 until N) {
            val prev = mt[i - 1]
            mt[i] = 1812433253 * (prev xor (prev ushr 30)) + i
        }
    }

    /** The next 32-bit output of mt19937, as an unsigned value in a Long. */
    fun nextUInt32(): Long {
        if (index >= N) twist()
        var y = mt[index++]
        y = y xor (y ushr 11)
        y = y xor ((y shl 7) and 0x9d2c5680.toInt())
        y = y xor ((y shl 15) and 0xefc60000.toInt())
        y = y xor (y ushr 18)
        return y.toLong() and 0xffffffffL
    }

    private fun twist() {
        for (k in 0 until N) {
            val y = (mt[k] and UPPER) or (mt[(k + 1) % N] and LOWER)
            var v = mt[(k + M) % N] xor (y ushr 1)
            if (y and 1 != 0) v = v xor MATRIX_A
            mt[k] = v
        }
        index = 0
    }

    private fun uniformFloat(): Float = (nextUInt32() and 0xffffffL).toFloat() * (1.0f / (1 shl 24))

    private fun uniformDouble(): Double {
        val bits = (nextUInt32() shl 32) or nextUInt32()
        return (bits and ((1L shl 53) - 1)).toDouble() * (1.0 / (1L shl 53))
    }

    override fun normal(shape: IntArray): FloatArray {
        val n = shape.fold(1) { a, b -> a * b }
        val out = FloatArray(n)
        if (n >= 16) {
            for (i in 0 until n) out[i] = uniformFloat()
            var start = 0
            while (start + 16 <= n) {
                boxMuller16(out, start)
                start += 16
            }
            if (n % 16 != 0) {
                for (i in n - 16 until n) out[i] = uniformFloat()
                boxMuller16(out, n - 16)
            }
        } else {
            for (i in 0 until n) out[i] = normalDouble().toFloat()
        }
        return out
    }

    private fun normalDouble(): Double {
        cachedNormal?.let { cachedNormal = null; return it }
        val u1 = uniformDouble()
        val u2 = uniformDouble()
        val radius = sqrt(-2.0 * ln1p(-u2))
        val theta = 2.0 * PI * u1
        cachedNormal = radius * sin(theta)
        return radius * cos(theta)
    }

    /** Box-Muller over 16 uniforms in place, in float32 as torch's normal_fill_16. */
    private fun boxMuller16(data: FloatArray, start: Int) {
        for (j in 0 until 8) {
            val u1 = 1f - data[start + j]
            val u2 = data[start + j + 8]
            val radius = sqrt(-2f * ln(u1.toDouble()).toFloat())
            val theta = (2.0 * PI).toFloat() * u2
            data[start + j] = radius * cos(theta.toDouble()).toFloat()
            data[start + j + 8] = radius * sin(theta.toDouble()).toFloat()
        }
    }

    private companion object {
        const val N = 624
        const val M = 397
        const val MATRIX_A = 0x9908b0df.toInt()
        const val UPPER = 0x80000000.toInt()
        const val LOWER = 0x7fffffff
    }
}
