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
 *
 * Image-to-image and inpainting (bundles exported with `--image-modes`) add [addNoise] and [starts]:
 *
 *     addNoise[j] = [a_j, b_j]       the scheduler noises a clean latent z0 to step j as a_j * z0 + b_j * noise
 *     starts[j]                      the table of a run that begins at step j, where it is not this table's rows
 *                                    from j ([suffix]); e.g. DPM-Solver++'s first step of lower order
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
    /** [a_j, b_j] per step j (the manifest's `add_noise`), or null in a table without image-to-image rows. */
    val addNoise: List<DoubleArray>? = null,
    /** The manifest's `starts`: start step j (1..steps-1) -> the table of the run from j ([startTable]). */
    val starts: Map<Int, SamplerTable> = emptyMap(),
) {
    init {
        for ((what, n) in listOf("timesteps" to timesteps.size, "input_scale" to inputScale.size,
            "latent_coef" to latentCoef.size, "output_coef" to outputCoef.size, "noise_coef" to noiseCoef.size)) {
            if (n != steps) throw BundleError(Manifest.MANIFEST, "sampler $name:$steps has $n $what entries, expected $steps")
        }
        if (addNoise != null && addNoise.size != steps) {
            throw BundleError(Manifest.MANIFEST, "sampler $name:$steps has ${addNoise.size} add_noise rows, expected $steps")
        }
    }

    /**
     * The rows of this table from step [start] on, as a table of `steps - start` steps (`sampler_table.suffix`): a
     * run's earlier latents and outputs do not exist, so a row that reaches back before [start] keeps only the
     * coefficients within the run (row i of the run keeps its first i + 1).
     */
    fun suffix(start: Int): SamplerTable {
        require(start in 0 until steps) { "a run of $name:$steps starts at a step in 0..${steps - 1}, got $start" }
        val n = steps - start
        return SamplerTable(
            name, n, initNoiseSigma,
            timesteps = timesteps.copyOfRange(start, steps),
            inputScale = inputScale.copyOfRange(start, steps),
            latentCoef = List(n) { i -> latentCoef[start + i].let { it.copyOf(minOf(it.size, i + 1)) } },
            outputCoef = List(n) { i -> outputCoef[start + i].let { it.copyOf(minOf(it.size, i + 1)) } },
            noiseCoef = noiseCoef.copyOfRange(start, steps),
        )
    }

    /**
     * The run of an image-to-image or inpainting generation at [strength] (`sampler_table.start_table`):
     * k = [strengthSteps] of [steps] steps, from start step j = steps - k, with the table [starts] lists for j, else
     * this table's rows from j ([suffix]). Throws IllegalArgumentException for a strength [strengthSteps] refuses.
     */
    fun startTable(strength: Double): ImageRun {
        val start = steps - strengthSteps(steps, strength)
        return ImageRun(starts[start] ?: suffix(start), start)
    }

    companion object {
        internal fun parse(r: JsonReader, t: JSONObject, at: String): SamplerTable {
            val name = r.str(t, "name", "$at.name")
            val steps = r.int(t, "steps", "$at.steps")
            val addNoise = r.optRows(t, "add_noise", "$at.add_noise")?.also { rows ->
                rows.forEachIndexed { j, row -> if (row.size != 2) r.fail("$at.add_noise[$j]", "expected [image_coef, noise_coef], got ${row.size} numbers") }
                if (rows.size != steps) r.fail("$at.add_noise", "has ${rows.size} rows, expected one per step ($steps)")
            }
            val starts = r.optObj(t, "starts", "$at.starts")?.let { o ->
                o.keys().asSequence().toList().associate { key ->
                    val where = "$at.starts.$key"
                    val j = key.toIntOrNull()?.takeIf { it in 1 until steps }
                        ?: r.fail(where, "is not a start step of $name:$steps (a step in 1..${steps - 1})")
                    // a start's table has the fields of this one (its name is this table's)
                    val entry = r.obj(o, key, where)
                    val table = body(r, entry, where, name, r.int(entry, "steps", "$where.steps"))
                    if (table.steps != steps - j) r.fail("$where.steps", "a run from step $j of $steps has ${steps - j} steps, got ${table.steps}")
                    j to table
                }
            } ?: emptyMap()
            return body(r, t, at, name, steps, addNoise, starts)
        }

        private fun body(
            r: JsonReader, t: JSONObject, at: String, name: String, steps: Int,
            addNoise: List<DoubleArray>? = null, starts: Map<Int, SamplerTable> = emptyMap(),
        ): SamplerTable {
            fun rows(key: String) = r.rows(t, key, "$at.$key")
            return SamplerTable(
                name = name,
                steps = steps,
                initNoiseSigma = r.double(t, "init_noise_sigma", "$at.init_noise_sigma"),
                timesteps = r.doubles(t, "timesteps", "$at.timesteps"),
                inputScale = r.doubles(t, "input_scale", "$at.input_scale"),
                latentCoef = rows("latent_coef"),
                outputCoef = rows("output_coef"),
                noiseCoef = r.doubles(t, "noise_coef", "$at.noise_coef"),
                addNoise = addNoise,
                starts = starts,
            )
        }
    }
}

/** Where an image-to-image or inpainting run begins: its [table] (from [SamplerTable.startTable]) and start step [start]. */
class ImageRun(val table: SamplerTable, val start: Int)

/**
 * How many of [steps] an image-to-image run at [strength] denoises, diffusers' rule `min(floor(steps * strength),
 * steps)` (`sampler_table.strength_steps`). Throws IllegalArgumentException for a strength outside (0, 1] or one
 * that leaves no step.
 */
fun strengthSteps(steps: Int, strength: Double): Int {
    require(strength.isFinite() && strength > 0 && strength <= 1) { "strength must be in (0, 1], got $strength" }
    val k = minOf(Math.floor(steps * strength).toInt(), steps)
    require(k >= 1) { "strength $strength denoises no step of $steps: give at least ${significant(1.0 / steps)}, or more steps" }
    return k
}

/** [x] to 3 significant digits, without trailing zeros (Python's `:.3g`). */
private fun significant(x: Double): String =
    java.math.BigDecimal(x).round(java.math.MathContext(3)).stripTrailingZeros().toPlainString()
