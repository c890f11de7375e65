package com.mobilediff.engine

import com.mobilediff.engine.TinyBundle.component
import org.json.JSONArray
import org.json.JSONObject
import org.junit.Assert.assertEquals
import org.junit.Assert.assertTrue
import org.junit.Assume.assumeTrue
import org.junit.Rule
import org.junit.Test
import org.junit.rules.TemporaryFolder
import java.util.Random
import kotlin.math.abs

/**
 * ONNX Runtime's mobile format: a component whose manifest lists an `ort` file (same precision as its `onnx` one) is
 * loaded from that file; without one, from the `.onnx`. On the fixtures (which `mobilediff export --target onnx`
 * writes with both forms), each ORT-format graph gives what its ONNX graph gives on the same inputs.
 */
class OrtFormatTest {
    @get:Rule
    val tmp = TemporaryFolder()

    /** A tiny bundle whose unet also lists an ORT-format file [ortPath] (the file itself is not written). */
    private fun tinyWithOrtEntry(ortPath: String = "unet/model.ort", precision: String = "fp32") = TinyBundle.write(tmp.newFolder("b")) { m ->
        m.component("unet").getJSONArray("files").put(
            JSONObject().put("target", Bundle.ORT).put("precision", precision).put("path", ortPath)
                .put("sha256", "0".repeat(64)).put("size_bytes", 1).put("external_data", JSONArray())
                .put("export", JSONObject().put("format", "ORT (flatbuffer)")),
        )
    }

    @Test
    fun theOrtEntryIsPreferredAndChecked() {
        val bundle = Bundle.open(tinyWithOrtEntry())
        // the ORT-format file is what the ONNX Runtime backend gets, so it is the file checked (and here missing)
        val e = expectBundleError { bundle.componentFile("unet", Bundle.ONNX) }
        assertEquals("unet/model.ort", e.file)
        assertTrue(e.problem, e.problem.contains("missing"))
        // the .onnx when asked for, and for components without an ORT form
        assertEquals("unet/model.onnx", bundle.componentFile("unet", Bundle.ONNX, preferOrt = false).second.file.path)
        assertEquals("vae_decoder/model.onnx", bundle.componentFile("vae_decoder", Bundle.ONNX).second.file.path)
    }

    @Test
    fun anOrtEntryOfAnotherPrecisionIsNotTaken() {
        val bundle = Bundle.open(tinyWithOrtEntry(precision = "fp16"))
        assertEquals("unet/model.onnx", bundle.componentFile("unet", Bundle.ONNX, "fp32").second.file.path)
    }

    @Test
    fun theOrtEntryKeepsItsGraphsBatchFacts() {
        val dir = tinyWithOrtEntry()
        val bundle = Bundle.open(dir)
        val ortEntry = bundle.manifest.component("unet").files.first { it.target == Bundle.ORT }
        val onnxEntry = bundle.manifest.component("unet").file(Bundle.ONNX)
        // the manifest's ort entry has no dynamic_dims of its own; the graph it was converted from has a dynamic batch
        assertTrue(onnxEntry.dynamicBatch)
        // write a file matching the entry's checksum, so componentFile hands the entry out
        val ort = java.io.File(dir, ortEntry.file.path).apply { writeBytes(byteArrayOf(1)) }
        val m = JSONObject(java.io.File(dir, Manifest.MANIFEST).readText())
        m.component("unet").getJSONArray("files").getJSONObject(1).put("sha256", Bundle.sha256(ort))
        java.io.File(dir, Manifest.MANIFEST).writeText(m.toString())
        val (file, entry) = Bundle.open(dir).componentFile("unet", Bundle.ONNX)
        assertEquals("model.ort", file.name)
        assertEquals(Bundle.ORT, entry.target)
        assertTrue(entry.dynamicBatch)
    }

    @Test
    fun anUnreadableOrtFileIsABundleErrorNamingIt() {
        val dir = tinyWithOrtEntry()
        val ort = java.io.File(dir, "unet/model.ort").apply { writeBytes(ByteArray(64) { 3 }) }
        val m = JSONObject(java.io.File(dir, Manifest.MANIFEST).readText())
        m.component("unet").getJSONArray("files").getJSONObject(1).put("sha256", Bundle.sha256(ort))
        java.io.File(dir, Manifest.MANIFEST).writeText(m.toString())
        val e = expectBundleError { TinyBundle.pipeline(dir).close() }
        assertEquals("unet/model.ort", e.file)
        assertTrue(e.problem, e.problem.contains("ONNX Runtime cannot load it"))
    }

    /** Every fixture component with an ORT form: the same outputs as its ONNX graph on the same seeded inputs. */
    @Test
    fun ortGraphsMatchTheirOnnxGraphs() {
        Fixtures.require()
        val withOrt = Fixtures.models.filter { model ->
            Bundle.open(Fixtures.bundle(model)).manifest.components.values.any { c -> c.files.any { it.target == Bundle.ORT } }
        }
        assumeTrue("no fixture bundle has ORT-format files (fixtures made before export wrote them)", withOrt.isNotEmpty())
        val backend = OnnxRuntimeBackend()
        for (model in withOrt) {
            val bundle = Bundle.open(Fixtures.bundle(model))
            for (name in Manifest.COMPONENTS) {
                val spec = bundle.manifest.component(name)
                val (ortFile, ortEntry) = bundle.componentFile(name, Bundle.ONNX)
                assertEquals("$model $name: the ORT-format file is the one loaded", Bundle.ORT, ortEntry.target)
                val (onnxFile, _) = bundle.componentFile(name, Bundle.ONNX, preferOrt = false)
                val inputs = seededInputs(spec, adapterVector(bundle, name))
                val fromOrt = backend.load(ortFile, spec, ortEntry.file.path).use { it.run(inputs) }
                val fromOnnx = backend.load(onnxFile, spec).use { it.run(inputs) }
                for ((i, o) in spec.outputs.withIndex()) {
                    val a = fromOrt[i].data
                    val b = fromOnnx[i].data
                    assertEquals(b.size, a.size)
                    val maxAbs = a.indices.maxOf { abs(a[it] - b[it]) }
                    val scale = b.maxOf { abs(it) }.coerceAtLeast(1e-6f)
                    println("ort_format $model $name.${o.name}: ${ortFile.name} vs ${onnxFile.name} on ONNX Runtime " +
                        "${backend.runtimeVersion}: max abs ${maxAbs} (output scale $scale)")
                    assertTrue("$model $name.${o.name}: max abs $maxAbs against scale $scale", maxAbs <= 1e-4f * scale)
                }
            }
        }
    }

    /**
     * The `lora_weights` input of a slotted [component] (run-time adapters): the bundle's adapters packed at their
     * default scales (as many as its rank slots hold, in its order), so the adapter path runs with the weights it was
     * made for; N(0, 1) values there would blow the activations up past any comparison. Null for other components.
     */
    private fun adapterVector(bundle: Bundle, component: String): FloatArray? {
        val record = bundle.manifest.adapters ?: return null
        if (component !in record.slots) return null
        val mixer = AdapterMixer(bundle)
        val all = record.files.map { AdapterChoice(it.name, it.defaultScale) }
        for (n in all.size downTo 1) {
            try {
                mixer.set(all.take(n))
                break
            } catch (e: IllegalArgumentException) {
                // more adapters than the rank slots hold: fewer
            }
        }
        return mixer.vector(component)
    }

    /**
     * Inputs for [spec] at its static shapes: token ids in the vocabulary, timesteps in [0, 1000), N(0, 1) floats;
     * [lora] as the `lora_weights` input of a component with run-time adapter slots.
     */
    private fun seededInputs(spec: ComponentSpec, lora: FloatArray? = null): List<Tensor> {
        val rng = Random(0)
        return spec.inputs.map { s ->
            val shape = s.staticShape ?: error("${spec.name}.${s.name} has no static shape in the manifest")
            val n = shape.fold(1) { a, d -> a * d }
            when {
                lora != null && s.name == AdapterRecord.INPUT -> Tensor.F32(shape, lora)
                s.dtype == "int32" -> Tensor.I32(shape, IntArray(n) { rng.nextInt(49408) })
                s.name.contains("timestep") -> Tensor.F32(shape, FloatArray(n) { rng.nextInt(1000).toFloat() })
                else -> Tensor.F32(shape, FloatArray(n) { rng.nextGaussian().toFloat() })
            }
        }
    }
}
