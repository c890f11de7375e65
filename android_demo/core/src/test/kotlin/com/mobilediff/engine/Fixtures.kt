package com.mobilediff.engine

import org.json.JSONObject
import org.junit.Assume.assumeTrue
import java.io.File

/**
 * The test fixtures `python -m mobilediff.fixtures DIR` writes (test.sh passes DIR as the system property
 * `mobilediff.fixtures`): DIR/<model>/bundle (onnx + executorch), DIR/<model>/goldens,
 * DIR/<model>/reference/<runtime>_seed<S>.{png,json,safetensors} (Python's `generate --bundle`, default plan).
 */
object Fixtures {
    val root: File? = System.getProperty("mobilediff.fixtures")?.let { File(it).absoluteFile }?.takeIf { it.isDirectory }

    /** The fixture models, from DIR/index.json when present, else every folder holding a bundle. */
    val models: List<String> by lazy {
        val dir = root ?: return@lazy emptyList()
        val index = File(dir, "index.json")
        val fromIndex = if (index.isFile) {
            val o = JSONObject(index.readText())
            val m = o.optJSONObject("models")?.keys()?.asSequence()?.toList()
                ?: o.optJSONArray("models")?.let { a -> List(a.length()) { i -> a.get(i).let { v -> (v as? JSONObject)?.getString("name") ?: v.toString() } } }
            m
        } else {
            null
        }
        (fromIndex ?: dir.listFiles()!!.filter { File(it, "bundle/manifest.json").isFile }.map { it.name }).sorted()
    }

    /** Skip the calling test (not fail) when no fixtures were generated, saying how to make them. */
    fun require() {
        assumeTrue("no fixtures: run android_demo/scripts/test.sh (python -m mobilediff.fixtures DIR)", models.isNotEmpty())
    }

    /**
     * The fixture models that have goldens (index.json's `goldens` not null and its folder there): not a bundle whose
     * denoiser is an inpainting UNet, which cannot sample the goldens' text-to-image plans.
     */
    val withGoldens: List<String> by lazy {
        val index = root?.let { File(it, "index.json") }?.takeIf { it.isFile }?.let { JSONObject(it.readText()).optJSONObject("models") }
        models.filter { m -> index?.optJSONObject(m)?.isNull("goldens") != true && File(goldens(m), "goldens.json").isFile }
    }

    /** The fixture models whose bundle runs text-to-image (all but an inpainting UNet's: [Manifest.inpaintingOnly]). */
    val textToImage: List<String> by lazy { models.filter { Bundle.open(bundle(it)).manifest.supports(Manifest.MODE_TXT2IMG) } }

    fun bundle(model: String) = File(root, "$model/bundle")
    fun goldens(model: String) = File(root, "$model/goldens")
    fun reference(model: String) = File(root, "$model/reference")
}

/** Python's reference image for [model] on [runtime] at [seed], as (H, W, 3) floats in [-1, 1]; null if absent. */
fun Fixtures.referenceImage(model: String, runtime: String, seed: Long): FloatArray? {
    val file = File(reference(model), "${runtime}_seed$seed.safetensors")
    if (!file.isFile) return null
    val st = Safetensors.read(file)
    val key = st.keys.firstOrNull { it.contains("image") } ?: st.keys.first()
    val shape = st.shape(key)
    val data = st.floats(key)
    // (1, 3, H, W) or (3, H, W) planar -> (H, W, 3); (H, W, 3) as is
    if (shape.last() == 3) return data
    val h = shape[shape.size - 2]
    val w = shape[shape.size - 1]
    return ImageConversion.toHwc(data, h, w)
}

/** The bundle targets the JVM can run here for [model]: onnx, plus executorch when the bundle has it. */
fun Fixtures.backends(model: String): List<String> {
    val m = Bundle.open(bundle(model)).manifest
    return listOf("onnx", "executorch").filter { t -> m.components.values.all { c -> c.files.any { it.target == t } } }
}

/** Python's record beside a reference image (prompt, plan, ms), or null. */
fun Fixtures.referenceRecord(model: String, runtime: String, seed: Long): JSONObject? =
    File(reference(model), "${runtime}_seed$seed.json").takeIf { it.isFile }?.let { JSONObject(it.readText()) }

/**
 * The image-to-image and inpainting references of [model] (DIR/index.json's `references` rows with a `mode`):
 * prompt, seed, plan, `strength`, `init_image` and `mask` (files in DIR/<model>/, mask null for image-to-image) and
 * `raw` (a safetensors file under DIR/<model>/reference, key "image": Python's BundleRunner output, (H, W, 3) in [-1, 1]).
 */
fun Fixtures.imageReferences(model: String): List<JSONObject> {
    val index = File(root ?: return emptyList(), "index.json").takeIf { it.isFile } ?: return emptyList()
    val refs = JSONObject(index.readText()).optJSONObject("models")?.optJSONObject(model)?.optJSONArray("references") ?: return emptyList()
    return List(refs.length()) { refs.getJSONObject(it) }.filter { it.has("mode") }
}

/**
 * The run-time adapter references of [model] (DIR/index.json's `references` rows with `adapters`): prompt, seed, plan,
 * `adapters` ([[name, scale], ...] in mix order), `raw` (Python's image, as for [imageReferences]) and `lora_vectors`
 * (a safetensors file under DIR/<model>/reference, keys `unet` and `text_encoder`: the packed vectors Python fed).
 */
fun Fixtures.adapterReferences(model: String): List<JSONObject> {
    val index = File(root ?: return emptyList(), "index.json").takeIf { it.isFile } ?: return emptyList()
    val refs = JSONObject(index.readText()).optJSONObject("models")?.optJSONObject(model)?.optJSONArray("references") ?: return emptyList()
    return List(refs.length()) { refs.getJSONObject(it) }.filter { it.has("adapters") }
}

/** A reference row's `adapters` as the engine's mix. */
fun adapterMix(ref: JSONObject): List<AdapterChoice> =
    ref.getJSONArray("adapters").let { a -> List(a.length()) { a.getJSONArray(it).let { p -> AdapterChoice(p.getString(0), p.getDouble(1)) } } }
