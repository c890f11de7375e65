package com.mobilediff.engine

/**
 * Decoder output -> pixels, rounding as Python does (`mobilediff.data.to_uint8`):
 * `round((clamp(x, -1, 1) + 1) * 127.5)` in float32, round half to even.
 */
object ImageConversion {
    /** (3, H, W) planar values -> H*W packed ARGB pixels (alpha 255), row-major, for an Android Bitmap. */
    fun toArgb(chw: FloatArray, height: Int, width: Int): IntArray {
        val plane = height * width
        require(chw.size == 3 * plane) { "expected 3 x $height x $width values, got ${chw.size}" }
        return IntArray(plane) { p ->
            val r = toByte(chw[p])
            val g = toByte(chw[plane + p])
            val b = toByte(chw[2 * plane + p])
            (0xff shl 24) or (r shl 16) or (g shl 8) or b
        }
    }

    /** (3, H, W) planar -> (H, W, 3) interleaved, clamped to [-1, 1] (the engine's raw float image). */
    fun toHwc(chw: FloatArray, height: Int, width: Int): FloatArray {
        val plane = height * width
        return FloatArray(3 * plane) { i -> clamp(chw[(i % 3) * plane + i / 3]) }
    }

    /** One value in [-1, 1] (clamped) -> 0..255. */
    fun toByte(x: Float): Int = Math.rint(((clamp(x) + 1f) * 127.5f).toDouble()).toInt()

    fun clamp(x: Float): Float = if (x < -1f) -1f else if (x > 1f) 1f else x
}
