package com.mobilediff.engine

import org.json.JSONObject

/**
 * One sampler as data (mobilediff/sampler_table.py measures it from diffusers' own scheduler). For step i of N:
 *
 *     model_input_i = input_scale[i] * latent_i
 *     output_i      = denoiser(model_input_i, timesteps[i], text)          (after guidance)
 *     latent_{i+1}  = sum_k latentCoef[i][k] * latent_{i-k}
 *                   + sum_k outputCoef[i][k] * output_{i-k}
 *                   + noiseCoef[i] * fresh N(0, I) noise
 *
 * with latent_0 = initNoiseSigma * N(0, I); latent_N is decoded. k = 0 is the current step.
 */
class SamplerTable(
    val name: String,
    val steps: Int,
    val initNoiseSigma: Double,
    val timesteps: DoubleArray,
    val inputScale: DoubleArray,
    val latentCoef: List<DoubleArray>,
    val outputCoef: List<DoubleArray>,
    val noiseCoef: DoubleArray,
) {
    init {
        for ((what, n) in listOf("timesteps" to timesteps.size, "input_scale" to inputScale.size,
            "latent_coef" to latentCoef.size, "output_coef" to outputCoef.size, "noise_coef" to noiseCoef.size)) {
            if (n != steps) throw BundleError(Manifest.MANIFEST, "sampler $name:$steps has $n $what entries, expected $steps")
        }
    }

    companion object {
        internal fun parse(r: JsonReader, t: JSONObject, at: String): SamplerTable {
            fun rows(key: String) = r.rows(t, key, "$at.$key")
            return SamplerTable(
                name = r.str(t, "name", "$at.name"),
                steps = r.int(t, "steps", "$at.steps"),
                initNoiseSigma = r.double(t, "init_noise_sigma", "$at.init_noise_sigma"),
                timesteps = r.doubles(t, "timesteps", "$at.timesteps"),
                inputScale = r.doubles(t, "input_scale", "$at.input_scale"),
                latentCoef = rows("latent_coef"),
                outputCoef = rows("output_coef"),
                noiseCoef = r.doubles(t, "noise_coef", "$at.noise_coef"),
            )
        }
    }
}
