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
 * @param init the first latent in place of `initNoiseSigma * noise` (image-to-image: [sampleImage])
 * @param blend replaces the latent after step i (inpainting: [sampleImage]), before [onStep] sees it
 * @param onStep called after every step with (step index from 0, latent after the step)
 * @return the final latent (to decode)
 */
fun sample(
    table: SamplerTable,
    noise: FloatArray,
    denoise: (modelInput: FloatArray, timestep: Double) -> FloatArray,
    freshNoise: () -> FloatArray,
    init: FloatArray? = null,
    blend: ((step: Int, latent: FloatArray) -> FloatArray)? = null,
    onStep: (step: Int, latent: FloatArray) -> Unit = { _, _ -> },
): FloatArray {
    val latents = ArrayDeque<FloatArray>()  // newest first: latents[k] = latent_{i-k}
    val outputs = ArrayDeque<FloatArray>()
    var x = init ?: scale(noise, table.initNoiseSigma)
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
        x = if (blend == null) next else blend(i, next)
        onStep(i, x)
    }
    return x
}

/**
 * Image-to-image ([mask] null) or inpainting with a tabulated sampler (the Kotlin twin of
 * `mobilediff.sampler_table.run_image_table`), as diffusers' StableDiffusionImg2ImgPipeline and (4-channel UNet)
 * StableDiffusionInpaintPipeline run it. With z0 the clean latent of the image, j the start step and a, b the
 * table's [SamplerTable.addNoise] rows:
 *
 *     run        = table.startTable(strength)                 (k = floor(N * strength) steps from j = N - k)
 *     latent_0   = a_j * z0 + b_j * noise                     (inpainting at strength 1: initNoiseSigma * noise)
 *     after step i of the run, inpainting only:
 *     latent     = mask ? latent : known,   known = a_{j+i+1} * z0 + b_{j+i+1} * noise, or z0 after the last step
 *
 * Float32 throughout, each coefficient rounded to float32 first, as torch computes it.
 *
 * An inpainting UNet's run ([blend] false: the UNet sees the mask and the masked image itself) starts as inpainting
 * does and blends nothing; at strength 1 it needs no [z0] (null: the image was not encoded).
 *
 * @param z0 the clean latent (1, C, h, w): `(mean + std * eps - shift_factor) * scaling_factor` of the VAE encoder;
 *   null only where nothing reads it (an inpainting UNet's run at strength 1)
 * @param mask (1, 1, h, w) of 0 (keep) and 1 (repaint), or null for image-to-image
 * @param blend whether inpainting blends the kept region after every step (false: an inpainting UNet)
 * @throws IllegalArgumentException for a strength [strengthSteps] refuses, or a table without `add_noise` rows
 */
fun sampleImage(
    table: SamplerTable,
    strength: Double,
    z0: FloatArray?,
    noise: FloatArray,
    mask: FloatArray?,
    denoise: (modelInput: FloatArray, timestep: Double) -> FloatArray,
    freshNoise: () -> FloatArray,
    blend: Boolean = true,
    onStep: (step: Int, latent: FloatArray) -> Unit = { _, _ -> },
): FloatArray {
    val noising = table.addNoise
        ?: throw IllegalArgumentException("the ${table.name}:${table.steps} table has no image-to-image rows (export the bundle with --image-modes)")
    require(z0 == null || z0.size == noise.size) { "the clean latent has ${z0?.size} values, the noise ${noise.size}" }
    val run = table.startTable(strength)
    fun noised(j: Int): FloatArray {
        requireNotNull(z0) { "a run from an image at strength $strength needs the image's clean latent" }
        val a = noising[j][0].toFloat()
        val b = noising[j][1].toFloat()
        return FloatArray(z0.size) { a * z0[it] + b * noise[it] }
    }
    val init = if (mask != null && strength == 1.0) scale(noise, table.initNoiseSigma) else noised(run.start)
    var mix: ((Int, FloatArray) -> FloatArray)? = null
    if (mask != null && blend) {
        val plane = mask.size
        require(plane > 0 && noise.size % plane == 0) { "a mask of $plane values does not cover a latent of ${noise.size}" }
        mix = { i, x ->
            val known = if (i + 1 < run.table.steps) noised(run.start + i + 1) else z0!!
            FloatArray(x.size) { k -> if (mask[k % plane] != 0f) x[k] else known[k] }
        }
    }
    return sample(run.table, noise, denoise, freshNoise, init, mix, onStep)
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
