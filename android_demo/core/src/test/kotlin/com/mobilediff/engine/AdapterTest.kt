package com.mobilediff.engine

import com.mobilediff.verify.Comparison
import org.json.JSONArray
import org.json.JSONObject
import org.junit.Assert.assertArrayEquals
import org.junit.Assert.assertEquals
import org.junit.Assert.assertTrue
import org.junit.Assume.assumeTrue
import org.junit.Rule
import org.junit.Test
import org.junit.rules.TemporaryFolder
import java.io.File
import java.nio.ByteBuffer
import java.nio.ByteOrder
import kotlin.math.abs

/**
 * Run-time LoRA adapters (docs/bundle.md, `adapters`): the packed `lora_weights` vectors against the ones Python fed
 * (the fixtures' `lora_vectors`, max abs <= 1e-6), the images of every adapter reference row against Python's on each
 * backend the fixtures hold (>= 40 dB, as EndToEndTest), switching without reloading any component, the base model
 * again once the adapters are off, and the one-line refusals of a mix or an adapter file the engine cannot use.
 */
class AdapterTest {
    @get:Rule
    val tmp = TemporaryFolder()

    /** The fixture models with adapter references. */
    private fun models(): List<String> {
        Fixtures.require()
        return Fixtures.models.filter { Fixtures.adapterReferences(it).isNotEmpty() }
            .also { assumeTrue("the fixtures have no run-time adapter references (python -m mobilediff.fixtures writes them)", it.isNotEmpty()) }
    }

    @Test
    fun packedVectorsMatchPython() {
        var checked = 0
        for (model in models()) {
            val bundle = Bundle.open(Fixtures.bundle(model))
            val mixer = AdapterMixer(bundle)
            for (ref in Fixtures.adapterReferences(model)) {
                val mix = adapterMix(ref)
                mixer.set(mix)
                val expected = Safetensors.read(File(File(Fixtures.root, model), ref.getString("lora_vectors")))
                assertEquals("$model $mix: the slotted components", bundle.manifest.adapters!!.slots.keys, expected.keys)
                for (component in expected.keys) {
                    val want = expected.floats(component)
                    val got = mixer.vector(component)!!
                    assertEquals("$model $mix $component: vector size", want.size, got.size)
                    val maxAbs = got.indices.maxOfOrNull { abs(got[it] - want[it]) } ?: 0f
                    val nonzero = got.count { it != 0f }
                    println("adapter_vectors $model ${ref.getString("runtime")} $mix $component: ${got.size} values ($nonzero nonzero), max abs $maxAbs")
                    assertTrue("$model $mix $component: max abs $maxAbs", maxAbs <= 1e-6f)
                    checked++
                }
            }
            mixer.set(emptyList())
            for ((component, s) in bundle.manifest.adapters!!.slots) {
                assertArrayEquals("$model: no adapter on is all zeros", FloatArray(s.size), mixer.vector(component), 0f)
            }
        }
        assertTrue(checked > 0)
    }

    /** Counts component loads: switching adapters must not cause any. */
    private class Loads : GenerationListener {
        val loaded = ArrayList<String>()
        override fun onLoading(component: String) {
            loaded.add(component)
        }
    }

    private fun imagesMatchPython(backendName: String) {
        var ran = 0
        for (model in models()) {
            val refs = Fixtures.adapterReferences(model).filter { it.getString("runtime") == backendName }
            if (refs.isEmpty()) continue
            val bundle = Bundle.open(Fixtures.bundle(model))
            Pipeline(bundle, Backend.forTarget(backendName)).use { p ->
                val loads = Loads()
                for (ref in refs) {
                    val mix = adapterMix(ref)
                    p.setAdapters(mix)
                    val request = GenerationRequest(ref.getString("prompt"), ref.getLong("seed"), ref.getInt("steps"), ref.getString("sampler"), ref.getDouble("guidance"))
                    val result = p.generate(request, loads)
                    assertEquals(mix, result.adapters)
                    val raw = Safetensors.read(File(File(Fixtures.root, model), ref.getString("raw"))).floats("image")
                    val c = Comparison.of(result.raw, raw)
                    val what = "$backendName $model adapters ${mix.joinToString(" + ")} seed ${ref.getLong("seed")}"
                    println("adapter_image $what: psnr ${c.psnrDb ?: "inf"} dB, max abs ${c.maxAbsError}, ${"%.0f".format(result.totalMs)} ms")
                    assertTrue("$what: ${c.psnrDb} dB", c.within(minPsnr = 40.0))
                    ran++
                }
                // adapters off again: the base model's image (the zeros vector), still without a reload
                val base = Fixtures.referenceImage(model, backendName, 0)
                if (base != null) {
                    p.setAdapters(emptyList())
                    val prompt = Fixtures.referenceRecord(model, backendName, 0)?.optString("prompt")?.ifEmpty { null } ?: EndToEndTest.PROMPT
                    val result = p.generate(GenerationRequest(prompt, 0), loads)
                    val c = Comparison.of(result.raw, base)
                    println("adapter_image $backendName $model adapters off seed 0: psnr ${c.psnrDb ?: "inf"} dB (the base reference)")
                    assertTrue("$backendName $model adapters off: ${c.psnrDb} dB", c.within(minPsnr = 40.0))
                }
                assertEquals("$backendName $model: switching adapters loaded components", emptyList<String>(), loads.loaded)
            }
        }
        assumeTrue("the fixtures have no $backendName adapter references", ran > 0)
    }

    @Test
    fun onnxRuntimeImagesMatchPython() = imagesMatchPython("onnx")

    @Test
    fun executorchImagesMatchPython() = imagesMatchPython("executorch")

    // ---- refusals

    private fun message(block: () -> Unit): String = expectThrown<IllegalArgumentException>(block).message!!

    private fun assertMentions(message: String, vararg parts: String) {
        assertTrue("one line: $message", !message.contains('\n'))
        for (p in parts) assertTrue("'$p' not in: $message", message.contains(p))
    }

    @Test
    fun badMixesAreRefusedInOneLine() {
        val model = models().first()
        val bundle = Bundle.open(Fixtures.bundle(model))
        val names = bundle.manifest.adapters!!.names
        val mixer = AdapterMixer(bundle)
        assertMentions(message { mixer.set(listOf(AdapterChoice("no-such", 1.0))) }, "no-such", "it holds: ${names.joinToString()}")
        assertMentions(message { mixer.set(listOf(AdapterChoice(names[0], Double.NaN))) }, names[0], "finite", "NaN")
        assertMentions(message { mixer.set(listOf(AdapterChoice(names[0], Double.POSITIVE_INFINITY))) }, "finite")
        assertMentions(message { mixer.set(listOf(AdapterChoice(names[0], 1.0), AdapterChoice(names[0], 0.5))) }, names[0], "twice")
        // a refused mix leaves the previous one on
        mixer.set(listOf(AdapterChoice(names[0], 1.0)))
        expectThrown<IllegalArgumentException> { mixer.set(listOf(AdapterChoice("no-such", 1.0))) }
        assertEquals(listOf(AdapterChoice(names[0], 1.0)), mixer.mix)
        // the pipeline refuses the same, before any component loads
        val lazy = Pipeline(bundle, OnnxRuntimeBackend(), loading = Pipeline.Loading.LAZY)
        assertMentions(message { lazy.setAdapters(listOf(AdapterChoice("no-such", 1.0))) }, "no-such")
        assertEquals(emptyList<String>(), lazy.loadedComponents)
        lazy.close()
        assertMentions(message { Pipeline(bundle, OnnxRuntimeBackend(), adapters = listOf(AdapterChoice("x", 1.0))) }, "x", "it holds")
    }

    @Test
    fun aBundleWithoutAdaptersRefusesThem() {
        val bundle = Bundle.open(TinyBundle.write(tmp.newFolder("tiny")))
        assertEquals(null, bundle.manifest.adapters)
        val p = TinyBundle.pipeline(bundle.dir)
        p.setAdapters(emptyList())  // the base model: nothing to switch
        assertMentions(message { p.setAdapters(listOf(AdapterChoice("any", 1.0))) }, "holds no run-time adapters", "--runtime-lora")
        p.close()
    }

    @Test
    fun aMixNeedingMoreRankSlotsIsRefused() {
        val slots = AdapterSlots("unet", 3, 2 * (3 * 2 + 2 * 3), listOf(SlotLayer("a", 2, 2, 0, 6), SlotLayer("b", 2, 2, 12, 18)))
        val rank2 = mapOf("a" to LoraLayer(2, FloatArray(4) { 1f }, FloatArray(4) { 1f }))
        val message = message { AdapterWeights.pack(slots, listOf(rank2 to 1.0, rank2 to 1.0)) }
        assertMentions(message, "these adapters together need 4 rank slots; the bundle's unet has 3")
    }

    /** The packing rule written out on a small case: consecutive slots, up scaled, untouched layers zero. */
    @Test
    fun packFillsConsecutiveSlots() {
        // rank 3 slots; layer a: in 2, out 2; layer b: in 1, out 2
        val slots = AdapterSlots("unet", 3, 3 * (2 + 2) + 3 * (1 + 2), listOf(SlotLayer("a", 2, 2, 0, 6), SlotLayer("b", 1, 2, 12, 15)))
        val first = mapOf("a" to LoraLayer(1, floatArrayOf(1f, 2f), floatArrayOf(3f, 4f)))  // down 1 x 2, up 2 x 1
        val second = mapOf(
            "a" to LoraLayer(2, floatArrayOf(5f, 6f, 7f, 8f), floatArrayOf(9f, 10f, 11f, 12f)),  // down 2 x 2, up 2 x 2
            "b" to LoraLayer(1, floatArrayOf(13f), floatArrayOf(14f, 15f)),
        )
        val v = AdapterWeights.pack(slots, listOf(first to 2.0, second to 0.5))
        val expected = floatArrayOf(
            1f, 2f, 5f, 6f, 7f, 8f,  // a.down (3 x 2): row 0 first's, rows 1-2 second's
            6f, 4.5f, 5f, 8f, 5.5f, 6f,  // a.up (2 x 3): column 0 = 2 x first's, columns 1-2 = 0.5 x second's
            0f, 13f, 0f,  // b.down (3 x 1): first has no b: its slot 0 stays zero; second's row at slot 1
            0f, 7f, 0f, 0f, 7.5f, 0f,  // b.up (2 x 3)
        )
        assertArrayEquals(expected, v, 0f)
    }

    // ---- adapter files

    /** A copy of the fixture bundle (large files linked), its first adapter file replaced by [bytes], the manifest's sha256 updated. */
    private fun bundleWithAdapterFile(bytes: ByteArray, updateSha: Boolean = true): Pair<Bundle, String> {
        val src = Fixtures.bundle(models().first())
        val dst = tmp.newFolder()
        src.walkTopDown().filter { it.isFile }.forEach { f ->
            val target = File(dst, f.relativeTo(src).path)
            target.parentFile.mkdirs()
            if (f.length() < 4_000_000) f.copyTo(target) else java.nio.file.Files.createSymbolicLink(target.toPath(), f.absoluteFile.toPath())
        }
        val manifestFile = File(dst, Manifest.MANIFEST)
        val m = JSONObject(manifestFile.readText())
        val entry = m.getJSONObject("adapters").getJSONArray("files").getJSONObject(0)
        val adapter = File(dst, entry.getString("path"))
        adapter.delete()
        adapter.writeBytes(bytes)
        if (updateSha) {
            entry.put("sha256", Bundle.sha256(adapter)).put("size_bytes", adapter.length())
            manifestFile.writeText(m.toString())
        }
        return Bundle.open(dst) to entry.getString("name")
    }

    private fun safetensors(tensors: Map<String, JSONObject>, data: ByteArray): ByteArray {
        val header = JSONObject().put("__metadata__", JSONObject().put("format", "mobilediff.runtime_lora"))
        for ((k, v) in tensors) header.put(k, v)
        val h = header.toString().toByteArray(Charsets.UTF_8)
        return ByteBuffer.allocate(8 + h.size + data.size).order(ByteOrder.LITTLE_ENDIAN).putLong(h.size.toLong()).put(h).put(data).array()
    }

    private fun tensor(dtype: String, shape: List<Int>, begin: Long, end: Long) =
        JSONObject().put("dtype", dtype).put("shape", JSONArray(shape)).put("data_offsets", JSONArray(listOf(begin, end)))

    private fun fileError(bytes: ByteArray, updateSha: Boolean = true): BundleError {
        val (bundle, name) = bundleWithAdapterFile(bytes, updateSha)
        val e = expectBundleError { AdapterMixer(bundle).set(listOf(AdapterChoice(name, 1.0))) }
        assertTrue("names the adapter file: ${e.file}", e.file.startsWith("adapters/"))
        assertTrue("one line: ${e.message}", !e.message!!.contains('\n'))
        return e
    }

    /** The first UNet layer of the fixture's slots, for a well-named tensor. */
    private fun firstLayer(): Pair<String, SlotLayer> =
        Bundle.open(Fixtures.bundle(models().first())).manifest.adapters!!.slots.getValue("unet").layers.first().let { "unet.${it.module}" to it }

    @Test
    fun aModifiedAdapterFileIsRefused() {
        val e = fileError(ByteArray(64) { 1 }, updateSha = false)
        assertTrue(e.problem, e.problem.contains("sha256"))
    }

    @Test
    fun aNonF32TensorIsRefused() {
        val (key, l) = firstLayer()
        val n = 2L * l.inFeatures
        val e = fileError(safetensors(mapOf("$key.down" to tensor("F16", listOf(1, l.inFeatures), 0, n)), ByteArray(n.toInt())))
        assertTrue(e.problem, e.problem.contains("not F32") && e.problem.contains("$key.down"))
    }

    @Test
    fun badOffsetsAreRefused() {
        val (key, l) = firstLayer()
        val n = 4L * l.inFeatures
        val outside = fileError(safetensors(mapOf("$key.down" to tensor("F32", listOf(1, l.inFeatures), 0, n + 400)), ByteArray(n.toInt())))
        assertTrue(outside.problem, outside.problem.contains("data_offsets"))
        val wrongSize = fileError(safetensors(mapOf("$key.down" to tensor("F32", listOf(2, l.inFeatures), 0, n)), ByteArray(n.toInt())))
        assertTrue(wrongSize.problem, wrongSize.problem.contains("its shape needs ${2 * n}"))
        val header = fileError(ByteArray(16).also { ByteBuffer.wrap(it).order(ByteOrder.LITTLE_ENDIAN).putLong(1 shl 20) })
        assertTrue(header.problem, header.problem.contains("header length"))
    }

    @Test
    fun unknownTensorNamesAreRefused() {
        val e = fileError(safetensors(mapOf("unet.no.such.module.down" to tensor("F32", listOf(1, 1), 0, 4)), ByteArray(4)))
        assertTrue(e.problem, e.problem.contains("unknown tensor 'unet.no.such.module.down'"))
        val (key, l) = firstLayer()
        val n = 4L * l.inFeatures
        val side = fileError(safetensors(mapOf("$key.left" to tensor("F32", listOf(1, l.inFeatures), 0, n)), ByteArray(n.toInt())))
        assertTrue(side.problem, side.problem.contains("unknown tensor '$key.left'"))
        val half = fileError(safetensors(mapOf("$key.down" to tensor("F32", listOf(1, l.inFeatures), 0, n)), ByteArray(n.toInt())))
        assertTrue(half.problem, half.problem.contains("lacks its up matrix"))
    }

    @Test
    fun adapterChoicesParseAsTheCliGivesThem() {
        assertEquals(AdapterChoice("swap-red-blue", 1.0), AdapterMixer.parseChoice("swap-red-blue"))
        assertEquals(AdapterChoice("swap-red-blue", 0.6), AdapterMixer.parseChoice("swap-red-blue:0.6"))
        assertEquals(AdapterChoice("a:b", -1.5), AdapterMixer.parseChoice("a:b:-1.5"))
        assertTrue(AdapterMixer.parseChoice("x:nan").scale.isNaN())
        assertMentions(message { AdapterMixer.parseChoice("x:big") }, "--lora x:big", "must be a number", "'big'")
        assertMentions(message { AdapterMixer.parseChoice("x:1f") }, "must be a number")
    }
}
