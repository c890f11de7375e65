package com.mobilediff.engine

/**
 * The sampler loop over a [SamplerTable] (the Kotlin twin of `mobilediff.sampler_table.run_table`).
 *
 * Arithmetic is float32 in the same order as the Python reference (each coefficient rounded to float32 and
 * multiplied in, the latent terms summed, then the output terms summed and added, then the noise term), so the
 * same model outputs give the same latents to the last bit.
 *
 * @param denoise the guided model output for (model input, timestep); a latent-shaped array
 * @param noise the initial N(0, I) draw
 * @param freshNoise the next N(0, I) draw of the same generator (called only where noiseCoef != 0)
 * @param onStep called after every step with (step index from 0, latent after the step)
 * @return the final latent (to decode)
 */
fun sample(
    table: SamplerTable,
    noise: FloatArray,
    denoise: (modelInput: FloatArray, timestep: Double) -> FloatArray,
    freshNoise: () -> FloatArray,
    onStep: (step: Int, latent: FloatArray) -> Unit = { _, _ -> },
): FloatArray {
    val latents = ArrayDeque<FloatArray>()  // newest first: latents[k] = latent_{i-k}
    val outputs = ArrayDeque<FloatArray>()
    var x = scale(noise, table.initNoiseSigma)
    for (i in 0 until table.steps) {
        latents.addFirst(x)
        outputs.addFirst(denoise(scale(x, table.inputScale[i]), table.timesteps[i]))
        val next = combination(table.latentCoef[i], latents, x.size)
        val fromOutputs = combination(table.outputCoef[i], outputs, x.size)
        for (j in next.indices) next[j] += fromOutputs[j]
        if (table.noiseCoef[i] != 0.0) {
            val c = table.noiseCoef[i].toFloat()
            val z = freshNoise()
            for (j in next.indices) next[j] += c * z[j]
        }
        x = next
        onStep(i, x)
    }
    return x
}

/** sum_k coef[k] * values[k], accumulated in float32 in k order. */
private fun combination(coef: DoubleArray, values: List<FloatArray>, size: Int): FloatArray {
    val out = FloatArray(size)
    for (k in coef.indices) {
        val c = coef[k].toFloat()
        val v = values[k]
        for (j in 0 until size) out[j] += c * v[j]
    }
    return out
}

/** [x] times [factor] (rounded to float32 first, as torch does for a Python scalar). */
internal fun scale(x: FloatArray, factor: Double): FloatArray {
    val f = factor.toFloat()
    return FloatArray(x.size) { x[it] * f }
}
