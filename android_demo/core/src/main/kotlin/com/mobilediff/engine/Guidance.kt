package com.mobilediff.engine

import org.json.JSONObject
import kotlin.math.exp
import kotlin.math.ln

/** How the denoiser is guided, as the manifest states it. */
sealed class Guidance {
    abstract val defaultScale: Double

    /**
     * Classifier-free guidance: the UNet runs on batch rows [uncond, cond] (the unconditional text is
     * [unconditionalPrompt]) and `out = uncond + scale * (cond - uncond)`, only when scale > 1.
     */
    class ClassifierFree(override val defaultScale: Double, val unconditionalPrompt: String) : Guidance()

    /**
     * Guidance embedding (LCM students): one UNet row, with [embeddingDim] extra features as UNet input [input].
     * [defaultEmbedding] is the manifest's embedding for [defaultScale].
     */
    class Embedding(
        override val defaultScale: Double,
        val input: String,
        val embeddingDim: Int,
        val defaultEmbedding: FloatArray,
    ) : Guidance() {
        /**
         * The embedding for [scale], as `mobilediff.bundle.guidance_embedding` computes it in float32:
         * w = (scale - 1) * 1000; f_k = exp(-k ln(10000) / (dim/2 - 1)) for k < dim/2;
         * embedding = [sin(w f_0..), cos(w f_0..)], zero-padded to dim.
         */
        fun embedding(scale: Double): FloatArray {
            if (scale == defaultScale && defaultEmbedding.size == embeddingDim) return defaultEmbedding.copyOf()
            val half = embeddingDim / 2
            val step = (-(ln(10000.0) / (half - 1))).toFloat()
            val w = ((scale.toFloat() - 1f) * 1000f)
            val out = FloatArray(embeddingDim)
            for (k in 0 until half) {
                val freq = exp((k.toFloat() * step).toDouble()).toFloat()
                val arg = w * freq  // float32 product, as torch computes it: sin of a large argument is sensitive to it
                out[k] = kotlin.math.sin(arg.toDouble()).toFloat()
                out[half + k] = kotlin.math.cos(arg.toDouble()).toFloat()
            }
            return out
        }
    }

    companion object {
        const val CLASSIFIER_FREE = "classifier_free"
        const val EMBEDDING = "embedding"

        internal fun parse(r: JsonReader, g: JSONObject): Guidance {
            val type = r.str(g, "type", "guidance.type")
            if (type != CLASSIFIER_FREE && type != EMBEDDING) {
                val known = "$CLASSIFIER_FREE, $EMBEDDING"
                r.fail("guidance.type", "unknown guidance type ${JsonReader.describe(type)} (known: $known)")
            }
            val scale = r.double(g, "default_scale", "guidance.default_scale")
            if (scale < 0) r.fail("guidance.default_scale", "must be >= 0, got $scale")
            return when (type) {
                CLASSIFIER_FREE ->
                    ClassifierFree(scale, r.optStr(g, "unconditional_prompt", "guidance.unconditional_prompt") ?: "")
                else -> {
                    // the UNet input the embedding feeds, and its width
                    val input = r.str(g, "input", "guidance.input")
                    if (input.isEmpty()) r.fail("guidance.input", "is empty (an embedding names the UNet input it feeds)")
                    val dim = r.int(g, "embedding_dim", "guidance.embedding_dim")
                    if (dim < 1) r.fail("guidance.embedding_dim", "must be >= 1, got $dim")
                    Embedding(
                        defaultScale = scale,
                        input = input,
                        embeddingDim = dim,
                        defaultEmbedding = r.optDoubles(g, "default_embedding", "guidance.default_embedding")?.let { d ->
                            FloatArray(d.size) { d[it].toFloat() }
                        } ?: FloatArray(0),
                    )
                }
            }
        }
    }
}
