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
        internal fun parse(r: JsonReader, g: JSONObject): Guidance =
            when (val type = r.str(g, "type", "guidance.type")) {
                "classifier_free" -> ClassifierFree(
                    r.double(g, "default_scale", "guidance.default_scale"),
                    g.optString("unconditional_prompt", ""),
                )
                "embedding" -> Embedding(
                    defaultScale = r.double(g, "default_scale", "guidance.default_scale"),
                    input = r.str(g, "input", "guidance.input"),
                    embeddingDim = r.int(g, "embedding_dim", "guidance.embedding_dim"),
                    defaultEmbedding = g.optJSONArray("default_embedding")?.toDoubles()?.let { d ->
                        FloatArray(d.size) { d[it].toFloat() }
                    } ?: FloatArray(0),
                )
                else -> throw BundleError(Manifest.MANIFEST, "field 'guidance.type': unknown guidance type '$type'")
            }
    }
}
