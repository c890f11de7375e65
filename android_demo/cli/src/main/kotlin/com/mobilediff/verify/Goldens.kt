package com.mobilediff.verify

import com.mobilediff.engine.BundleError
import com.mobilediff.engine.Safetensors
import org.json.JSONObject
import java.io.File

/**
 * The golden vectors `mobilediff goldens --bundle B --out DIR` writes (format "mobilediff.goldens" v1, see
 * notes in android_demo/README.md): `goldens.json` indexes tensors stored in `goldens.safetensors`.
 */
class Goldens(val dir: File, val runtime: String, val bundleManifestSha256: String?,
              val tokenizer: List<TokenCase>, val noise: List<NoiseCase>, val plans: List<Plan>,
              val tensors: Safetensors) {

    class TokenCase(val prompt: String, val ids: IntArray)
    class NoiseCase(val seed: Long, val shape: IntArray, val tensor: String)

    /** One recorded component call: input and output tensor keys by graph input/output name. */
    class Call(val component: String, val inputs: Map<String, String>, val outputs: Map<String, String>)

    /** One sampling plan replayed: every component call in order, the fresh noise draws, the latents after each step. */
    class Plan(val name: String, val sampler: String, val steps: Int, val guidance: Double, val prompt: String,
               val seed: Long, val calls: List<Call>, val freshNoise: List<String>, val latents: List<String>,
               val decoded: String?, val image: String?)

    companion object {
        const val FORMAT = "mobilediff.goldens"

        fun load(dir: File): Goldens {
            val index = File(dir, "goldens.json")
            if (!index.isFile) throw BundleError(index.path, "goldens index missing (regenerate: mobilediff goldens --bundle B --out DIR)")
            val root = JSONObject(index.readText())
            if (root.optString("format") != FORMAT) throw BundleError(index.path, "is not a goldens index (format '${root.optString("format")}')")
            if (root.optInt("format_version", 0) > 1) throw BundleError(index.path, "has a newer format version ${root.optInt("format_version")}")
            fun strMap(o: JSONObject?): Map<String, String> =
                o?.keys()?.asSequence()?.associateWith { o.getString(it) } ?: emptyMap()
            fun keys(o: JSONObject, k: String): List<String> =
                o.optJSONArray(k)?.let { a -> List(a.length()) { a.getString(it) } } ?: emptyList()
            val tok = root.optJSONArray("tokenizer")?.let { a ->
                List(a.length()) { i ->
                    val t = a.getJSONObject(i)
                    val ids = t.getJSONArray("ids")
                    TokenCase(t.getString("prompt"), IntArray(ids.length()) { ids.getInt(it) })
                }
            } ?: emptyList()
            val noise = root.optJSONArray("noise")?.let { a ->
                List(a.length()) { i ->
                    val n = a.getJSONObject(i)
                    val s = n.getJSONArray("shape")
                    NoiseCase(n.getLong("seed"), IntArray(s.length()) { s.getInt(it) }, n.getString("tensor"))
                }
            } ?: emptyList()
            val plans = root.optJSONArray("plans")?.let { a ->
                List(a.length()) { i ->
                    val p = a.getJSONObject(i)
                    val calls = p.optJSONArray("calls")?.let { c ->
                        List(c.length()) { k ->
                            val call = c.getJSONObject(k)
                            Call(call.getString("component"), strMap(call.optJSONObject("inputs")), strMap(call.optJSONObject("outputs")))
                        }
                    } ?: emptyList()
                    Plan(p.optString("name", "plan$i"), p.getString("sampler"), p.getInt("steps"), p.getDouble("guidance"),
                        p.getString("prompt"), p.getLong("seed"), calls, keys(p, "fresh_noise"), keys(p, "latents"),
                        p.optString("decoded").ifEmpty { null }, p.optString("image").ifEmpty { null })
                }
            } ?: emptyList()
            return Goldens(dir, root.optString("runtime", "onnx"), root.optString("bundle_manifest_sha256").ifEmpty { null },
                tok, noise, plans, Safetensors.read(File(dir, "goldens.safetensors")))
        }
    }
}
