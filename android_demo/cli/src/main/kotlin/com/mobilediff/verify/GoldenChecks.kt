package com.mobilediff.verify

import com.mobilediff.engine.GenerationListener
import com.mobilediff.engine.GenerationRequest
import com.mobilediff.engine.Guidance
import com.mobilediff.engine.Manifest
import com.mobilediff.engine.Pipeline
import com.mobilediff.engine.TorchGenerator
import com.mobilediff.engine.sample
import org.json.JSONObject

/** One result row, as benchmarks/app_parity.py collects them. [seed] is null where no seed is involved. */
data class CheckRow(
    val check: String,
    val backend: String,
    val model: String,
    val seed: Long?,
    val psnrDb: Double?,
    val maxAbsError: Double,
    val passed: Boolean,
    val detail: String,
) {
    fun toJson(): JSONObject = JSONObject()
        .put("check", check).put("backend", backend).put("model", model)
        .put("seed", seed ?: JSONObject.NULL)
        .put("psnr_db", psnrDb?.let(::finite) ?: JSONObject.NULL)  // null = identical (infinite PSNR)
        .put("max_abs_error", finite(maxAbsError)).put("passed", passed).put("detail", detail)

    /** JSON has no NaN or infinity: such a value (a broken output) is written as null. */
    private fun finite(x: Double): Any = if (x.isFinite()) x else JSONObject.NULL
}

/**
 * The checks of an engine against a bundle's goldens. Bars: token ids identical; noise within [NOISE_TOLERANCE]
 * of torch's; latents after every step within [LATENT_MIN_PSNR] dB of the goldens (the sampler replayed on the
 * recorded model outputs must match to float32 rounding: [REPLAY_TOLERANCE]).
 */
class GoldenChecks(private val goldens: Goldens, private val model: String) {

    /** Token ids of every golden prompt against transformers' (one row). */
    fun tokenizer(pipeline: Pipeline): CheckRow {
        var worst = 0.0
        val wrong = goldens.tokenizer.filter { case ->
            val got = pipeline.tokenize(case.prompt)
            // ids compared position by position; a missing position counts as id -1
            val n = maxOf(got.size, case.ids.size)
            val a = IntArray(n) { got.getOrElse(it) { -1 } }
            val b = IntArray(n) { case.ids.getOrElse(it) { -1 } }
            worst = maxOf(worst, Comparison.of(a, b).maxAbsError)
            !got.contentEquals(case.ids)
        }
        return CheckRow("tokenizer", "none", model, null, null, worst, wrong.isEmpty(),
            "${goldens.tokenizer.size - wrong.size}/${goldens.tokenizer.size} prompts identical" +
                wrong.joinToString("") { "; differs: '${it.prompt}'" })
    }

    /** Initial noise for every golden seed against torch.randn (one row per seed). */
    fun noise(): List<CheckRow> = goldens.noise.map { case ->
        val got = TorchGenerator(case.seed).normal(case.shape)
        val c = Comparison.of(got, goldens.tensors.floats(case.tensor))
        CheckRow("noise", "none", model, case.seed, c.psnrDb, c.maxAbsError, c.maxAbsError <= NOISE_TOLERANCE,
            "torch.randn(${case.shape.joinToString("x")}) with manual_seed(${case.seed}); bar: max abs <= $NOISE_TOLERANCE")
    }

    /**
     * The sampler loop replayed without a runtime: each denoiser call answers with the recorded UNet output (guided
     * by the engine), the noise is torch's (from the goldens); the model inputs the engine builds and every latent are compared
     * with the recorded ones. One row per plan, backend "replay".
     */
    fun samplerReplay(manifest: Manifest): List<CheckRow> = goldens.plans.map { plan ->
        val t = goldens.tensors
        val table = manifest.sampler(plan.sampler, plan.steps)
        val unetCalls = plan.calls.filter { it.component == "unet" }
        val shape = manifest.geometry.latentShape
        val generator = TorchGenerator(plan.seed)
        // the recorded torch noise for this seed where the goldens hold it, so only the sampler arithmetic is compared
        val noise = goldens.noise.firstOrNull { it.seed == plan.seed && it.shape.contentEquals(shape) }
            ?.let { t.floats(it.tensor).also { generator.normal(shape) } } ?: generator.normal(shape)
        var fresh = 0
        var call = 0
        var inputError = 0.0
        val cfg = manifest.guidance is Guidance.ClassifierFree && plan.guidance > 1.0
        val scale = plan.guidance.toFloat()
        val latents = ArrayList<FloatArray>()
        sample(table, noise, { x, _ ->
            val rec = unetCalls[call++]
            val recordedInput = t.floats(rec.inputs.getValue(manifest.component("unet").inputs[0].name))
            inputError = maxOf(inputError, Comparison.of(x, recordedInput.copyOf(x.size)).maxAbsError)
            val out = t.floats(rec.outputs.values.first())
            if (cfg) FloatArray(x.size) { j -> out[j] + scale * (out[x.size + j] - out[j]) } else out.copyOf(x.size)
        }, {
            // the recorded fresh draws, so the replay isolates the sampler arithmetic from the RNG
            plan.freshNoise.getOrNull(fresh++)?.let { t.floats(it) } ?: generator.normal(shape)
        }) { _, x -> latents.add(x.copyOf()) }
        val c = compareSteps(latents, plan)
        val maxAbs = maxOf(c.maxAbsError, inputError)
        CheckRow("sampler", "replay", model, plan.seed, c.psnrDb, maxAbs, maxAbs <= REPLAY_TOLERANCE,
            "${plan.name}: ${plan.sampler}-${plan.steps}, guidance ${plan.guidance}; recorded UNet outputs, " +
                "${latents.size} latents + model inputs (max abs $inputError); bar: max abs <= $REPLAY_TOLERANCE")
    }

    /** The sampler loop driven by the real graphs through [pipeline]'s backend: latents after every step (row per plan). */
    fun sampler(pipeline: Pipeline): List<CheckRow> = goldens.plans.map { plan ->
        val latents = ArrayList<FloatArray>()
        val result = pipeline.generate(
            GenerationRequest(plan.prompt, plan.seed, plan.steps, plan.sampler, plan.guidance),
            object : GenerationListener {
                override fun onStep(step: Int, steps: Int, latent: FloatArray) { latents.add(latent.copyOf()) }
            },
        )
        val c = compareSteps(latents, plan)
        val image = plan.image?.let { key ->
            val ref = goldens.tensors.ints(key)
            val got = result.argb.flatMap { p -> listOf((p shr 16) and 0xff, (p shr 8) and 0xff, p and 0xff) }.toIntArray()
            Comparison.of(got, ref).maxAbsError
        }
        CheckRow("sampler", pipeline.backend.target, model, plan.seed, c.psnrDb, c.maxAbsError,
            (c.psnrDb ?: Double.POSITIVE_INFINITY) >= LATENT_MIN_PSNR,
            "${plan.name}: ${plan.sampler}-${plan.steps}, guidance ${plan.guidance}; worst of ${latents.size} latents" +
                (image?.let { "; final image max abs ${it.toInt()}/255" } ?: "") + "; bar: >= $LATENT_MIN_PSNR dB")
    }

    /** Worst step: the largest max-abs error and the lowest PSNR over all steps. */
    private fun compareSteps(latents: List<FloatArray>, plan: Goldens.Plan): Comparison {
        require(latents.size == plan.latents.size) { "${plan.name}: ${latents.size} steps run, ${plan.latents.size} recorded" }
        var maxAbs = 0.0
        var minPsnr: Double? = null
        for ((x, key) in latents.zip(plan.latents)) {
            val c = Comparison.of(x, goldens.tensors.floats(key))
            maxAbs = maxOf(maxAbs, c.maxAbsError)
            c.psnrDb?.let { p -> minPsnr = minOf(minPsnr ?: p, p) }
        }
        return Comparison(maxAbs, minPsnr)
    }

    companion object {
        const val NOISE_TOLERANCE = 1e-6
        const val REPLAY_TOLERANCE = 1e-5
        const val LATENT_MIN_PSNR = 60.0
    }
}
