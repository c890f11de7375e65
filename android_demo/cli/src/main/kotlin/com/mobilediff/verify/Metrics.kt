package com.mobilediff.verify

import kotlin.math.abs
import kotlin.math.log10

/** How close [got] is to [ref]: the largest absolute difference and PSNR (null when identical). */
data class Comparison(val maxAbsError: Double, val psnrDb: Double?) {
    /** True when within [maxAbs] everywhere or at least [minPsnr] dB. */
    fun within(maxAbs: Double = 0.0, minPsnr: Double = Double.POSITIVE_INFINITY): Boolean =
        maxAbsError <= maxAbs || (psnrDb ?: Double.POSITIVE_INFINITY) >= minPsnr

    companion object {
        /**
         * Compare two equally long arrays. PSNR uses the reference's peak-to-peak range as the signal range
         * (as `mobilediff.parity.psnr`), in double precision; null stands for infinity (an exact match).
         */
        fun of(got: FloatArray, ref: FloatArray): Comparison {
            require(got.size == ref.size) { "comparing ${got.size} values with ${ref.size}" }
            var maxAbs = 0.0
            var se = 0.0
            var lo = Double.POSITIVE_INFINITY
            var hi = Double.NEGATIVE_INFINITY
            for (i in got.indices) {
                val d = got[i].toDouble() - ref[i].toDouble()
                maxAbs = maxOf(maxAbs, abs(d))
                se += d * d
                lo = minOf(lo, ref[i].toDouble())
                hi = maxOf(hi, ref[i].toDouble())
            }
            val mse = se / got.size
            val range = (hi - lo).takeIf { it > 0 } ?: 1.0
            return Comparison(maxAbs, if (mse == 0.0) null else 10 * log10(range * range / mse))
        }

        fun of(got: IntArray, ref: IntArray): Comparison =
            of(FloatArray(got.size) { got[it].toFloat() }, FloatArray(ref.size) { ref[it].toFloat() })
    }
}
