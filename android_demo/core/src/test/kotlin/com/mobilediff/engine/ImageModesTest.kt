package com.mobilediff.engine

import com.mobilediff.engine.TinyBundle.component
import org.json.JSONArray
import org.json.JSONObject
import org.junit.Assert.assertArrayEquals
import org.junit.Assert.assertEquals
import org.junit.Assert.assertFalse
import org.junit.Assert.assertNull
import org.junit.Assert.assertTrue
import org.junit.Rule
import org.junit.Test
import org.junit.rules.TemporaryFolder

/**
 * Image-to-image and inpainting on the tiny bundle ([TinyBundle] with `imageModes`), without fixtures: the
 * manifest's `image` record, `vae_encoder` component and tables' `add_noise` / `starts` rows read (or refused in one
 * line naming the field), and a whole generation from an image against the contract's arithmetic written out here,
 * the seed's draws in the contract's order included.
 */
class ImageModesTest {
    @get:Rule
    val tmp = TemporaryFolder()

    private fun bundle(
        imageModes: Boolean = true,
        posterior: String = ImageModes.GAUSSIAN,
        executorch: Boolean = false,
        edit: (JSONObject) -> Unit = {},
    ) = TinyBundle.write(tmp.newFolder(), imageModes = imageModes, posterior = posterior, executorch = executorch, edit = edit)

    private fun manifestError(edit: (JSONObject) -> Unit): String = expectBundleError { Bundle.open(bundle(edit = edit)) }.message!!

    /** A 3-step table with image rows: add_noise per step and the run from step 1 listed in `starts`. */
    private fun threeStepTable(): JSONObject {
        fun rows(vararg r: List<Double>) = JSONArray().apply { r.forEach { put(JSONArray(it)) } }
        val start1 = JSONObject().put("sampler", "DDIMScheduler").put("steps", 2).put("init_noise_sigma", 1.0)
            .put("timesteps", JSONArray(listOf(500.0, 100.0))).put("input_scale", JSONArray(listOf(1.0, 1.0)))
            .put("latent_coef", rows(listOf(0.7), listOf(0.6, 0.05))).put("output_coef", rows(listOf(0.2), listOf(0.3, 0.01)))
            .put("noise_coef", JSONArray(listOf(0.0, 0.0))).put("a_future_field", 1)
        return JSONObject().put("name", "ddim").put("steps", 3).put("init_noise_sigma", 1.0)
            .put("timesteps", JSONArray(listOf(900.0, 500.0, 100.0))).put("input_scale", JSONArray(listOf(1.0, 1.0, 1.0)))
            .put("latent_coef", rows(listOf(0.9), listOf(0.8, 0.1), listOf(0.7, 0.2)))
            .put("output_coef", rows(listOf(-0.3), listOf(-0.2, 0.05), listOf(0.4, 0.02)))
            .put("noise_coef", JSONArray(listOf(0.0, 0.0, 0.0)))
            .put("add_noise", rows(listOf(0.1, 0.99), listOf(0.5, 0.86), listOf(0.9, 0.43)))
            .put("starts", JSONObject().put("1", start1))
    }

    // ---- the manifest

    @Test
    fun aBundleWithoutImageModesReadsAsBefore() {
        // a vae_encoder entry without the image record is not read (it could be anything)
        val m = Bundle.open(bundle(imageModes = false) { it.getJSONObject("components").put(Manifest.IMAGE_ENCODER, JSONObject().put("x", 1)) }).manifest
        assertNull(m.image)
        assertEquals(Manifest.COMPONENTS, m.components.keys.toList())
        assertEquals(Manifest.COMPONENTS, m.componentNames)
        assertNull(m.samplers.single().addNoise)
        assertTrue(m.samplers.single().starts.isEmpty())
        assertTrue(m.supports(Manifest.MODE_TXT2IMG))
        assertFalse(m.supports(ImageModes.IMG2IMG))
        assertEquals(1, m.geometry.vaeScaleFactor)  // height / latent_height where the manifest has none
    }

    @Test
    fun theImageRecordTheEncoderAndTheRowsAreRead() {
        val m = Bundle.open(bundle { root ->
            root.put("samplers", JSONArray().put(threeStepTable()))
            root.put("default_sampling", JSONObject().put("sampler", "ddim").put("steps", 3).put("guidance", 1.0))
            root.getJSONObject("image").put("a_future_field", JSONArray(listOf(1)))
        }).manifest
        val image = m.image!!
        assertEquals(ImageModes.MODES, image.modes)
        assertTrue(image.gaussian)
        assertTrue(m.supports(ImageModes.IMG2IMG) && m.supports(ImageModes.INPAINT))
        assertEquals(Manifest.COMPONENTS + Manifest.IMAGE_ENCODER, m.componentNames)
        assertEquals(listOf("latent_mean", "latent_std"), m.component(Manifest.IMAGE_ENCODER).outputs.map { it.name })
        val t = m.samplers.single()
        assertArrayEquals(doubleArrayOf(0.5, 0.86), t.addNoise!![1], 0.0)
        val start1 = t.starts.getValue(1)
        assertEquals("ddim", start1.name)  // a start's table is named after its table
        assertEquals(2, start1.steps)
        assertArrayEquals(doubleArrayOf(500.0, 100.0), start1.timesteps, 0.0)
    }

    @Test
    fun aBadImageRecordIsRefusedNamingTheField() {
        val cases = mapOf<String, (JSONObject) -> Unit>(
            "components.vae_encoder" to { m -> m.getJSONObject("components").remove(Manifest.IMAGE_ENCODER) },
            "image.modes" to { m -> m.getJSONObject("image").put("modes", JSONArray(listOf("outpaint"))) },
            "image.encoder_posterior" to { m -> m.getJSONObject("image").put("encoder_posterior", "laplace") },
            "samplers[0].add_noise" to { m -> m.getJSONArray("samplers").getJSONObject(0).remove("add_noise") },
            "samplers[0].add_noise[0]" to { m ->
                m.getJSONArray("samplers").getJSONObject(0).put("add_noise", JSONArray().put(JSONArray(listOf(0.1, 0.2, 0.3))))
            },
            "samplers[0].starts.3" to { m -> m.put("samplers", JSONArray().put(threeStepTable().apply { getJSONObject("starts").put("3", getJSONObject("starts").get("1")) })) },
            "samplers[0].starts.2.steps" to { m -> m.put("samplers", JSONArray().put(threeStepTable().apply { getJSONObject("starts").put("2", getJSONObject("starts").get("1")) })) },
            "components.vae_encoder.files" to { m -> m.component(Manifest.IMAGE_ENCODER).remove("files") },
        )
        for ((field, edit) in cases) {
            val message = manifestError(edit)
            assertTrue("'$field' not in: $message", message.contains("field '$field"))
            assertFalse(message.contains('\n'))
        }
    }

    // ---- generation on the tiny bundle: ddim:1 with its add_noise row, a fresh draw of weight 0.5 after the step

    /** The tiny table with a fresh-noise term, so that the fresh draw's place in the seed's stream shows in the image. */
    private fun withFreshNoise(m: JSONObject) {
        m.getJSONArray("samplers").getJSONObject(0).put("noise_coef", JSONArray(listOf(FRESH)))
    }

    /** A 4 x 4 RGB image with distinct values; its pixels are `x / 127.5 - 1`. */
    private val init = RgbImage(4, 4, ByteArray(48) { (it * 5 + 7).toByte() })

    /** Inpainting mask: the left half (x < 2) repainted. */
    private val mask = RgbImage(4, 4, ByteArray(48) { i -> if ((i / 3) % 4 < 2) -1 else 0 })

    private val pixels = ImageInput.pixels(init)
    private val maskLatent = FloatArray(16) { p -> if (p % 4 < 2) 1f else 0f }

    private fun generate(dir: java.io.File, request: GenerationRequest, backend: Backend = OnnxRuntimeBackend()) =
        Pipeline(Bundle.open(dir), backend).use { it.generate(request) }

    /** (H, W, 3) of a (3, H, W) latent decoded by the tiny decoder (the identity), clamped. */
    private fun decoded(latent: FloatArray) = ImageConversion.toHwc(latent, 4, 4)

    private fun axpy(a: Double, x: FloatArray, b: Double, y: FloatArray) = FloatArray(x.size) { a.toFloat() * x[it] + b.toFloat() * y[it] }

    @Test
    fun imageToImageDrawsEpsThenNoiseThenFreshNoise() {
        val dir = bundle(edit = ::withFreshNoise)
        val result = generate(dir, GenerationRequest("a red circle", SEED, initImage = init, strength = 1.0))
        val g = TorchGenerator(SEED)
        val shape = intArrayOf(1, 3, 4, 4)
        val eps = g.normal(shape)
        val noise = g.normal(shape)
        val fresh = g.normal(shape)
        val z0 = FloatArray(48) { 0.5f * pixels[it] + TinyBundle.ENCODER_STD * eps[it] }  // scaling 1, shift 0
        val latent0 = axpy(TinyBundle.ADD_NOISE_IMAGE, z0, TinyBundle.ADD_NOISE_NOISE, noise)
        val latent1 = FloatArray(48) { 0.5f * latent0[it] + FRESH.toFloat() * fresh[it] }  // UNet: sample / 2
        assertArrayEquals(decoded(latent1), result.raw, 1e-6f)
        assertEquals(ImageModes.IMG2IMG, result.mode)
        assertEquals(1.0, result.strength!!, 0.0)
        assertEquals(1, result.stepsRun)
    }

    @Test
    fun inpaintingDrawsOneUnusedLatentBeforeTheFreshNoiseAndKeepsTheUnmaskedImage() {
        val dir = bundle(edit = ::withFreshNoise)
        val result = generate(dir, GenerationRequest("a red circle", SEED, initImage = init, mask = mask))
        val g = TorchGenerator(SEED)
        val shape = intArrayOf(1, 3, 4, 4)
        val eps = g.normal(shape)
        val noise = g.normal(shape)
        g.normal(shape)  // diffusers' masked-image encoding
        val fresh = g.normal(shape)
        val z0 = FloatArray(48) { 0.5f * pixels[it] + TinyBundle.ENCODER_STD * eps[it] }
        // strength 1 (inpainting's default): from noise alone; after the last step the kept region is z0
        val latent1 = FloatArray(48) { 0.5f * noise[it] + FRESH.toFloat() * fresh[it] }
        val blended = FloatArray(48) { if (maskLatent[it % 16] != 0f) latent1[it] else z0[it] }
        assertArrayEquals(decoded(blended), result.raw, 1e-6f)
        assertEquals(ImageModes.INPAINT, result.mode)
        assertEquals(1.0, result.strength!!, 0.0)
    }

    @Test
    fun aDeterministicEncoderDrawsNothingAndItsLatentIsTheMean() {
        val dir = bundle(posterior = ImageModes.DETERMINISTIC, edit = ::withFreshNoise)
        val result = generate(dir, GenerationRequest("a red circle", SEED, initImage = init, mask = mask))
        val g = TorchGenerator(SEED)
        val shape = intArrayOf(1, 3, 4, 4)
        val noise = g.normal(shape)
        val fresh = g.normal(shape)
        val z0 = FloatArray(48) { 0.5f * pixels[it] }
        val latent1 = FloatArray(48) { 0.5f * noise[it] + FRESH.toFloat() * fresh[it] }
        val blended = FloatArray(48) { if (maskLatent[it % 16] != 0f) latent1[it] else z0[it] }
        assertArrayEquals(decoded(blended), result.raw, 1e-6f)
    }

    @Test
    fun textToImageOnAnImageBundleNeverLoadsTheEncoder() {
        val plain = generate(bundle(imageModes = false), GenerationRequest("a red circle", SEED))
        Pipeline(Bundle.open(bundle()), OnnxRuntimeBackend()).use { p ->
            val result = p.generate(GenerationRequest("a red circle", SEED))
            assertArrayEquals(plain.raw, result.raw, 0f)
            assertEquals(Manifest.COMPONENTS, p.loadedComponents)
            assertEquals(Manifest.MODE_TXT2IMG, result.mode)
            assertNull(result.strength)
            // the first run from an image loads it, and it stays with the others
            p.generate(GenerationRequest("a red circle", SEED, initImage = init, strength = 1.0))
            assertEquals(Manifest.COMPONENTS + Manifest.IMAGE_ENCODER, p.loadedComponents)
        }
    }

    @Test
    fun lowMemoryLoadsTheEncoderFirstAndReleasesEveryComponent() {
        val dir = bundle()
        val request = GenerationRequest("a red circle", SEED, initImage = init, mask = mask)
        val resident = generate(dir, request)
        Pipeline(Bundle.open(dir), OnnxRuntimeBackend(), lowMemory = true).use { p ->
            val loading = ArrayList<String>()
            val residentAtLoad = ArrayList<List<String>>()
            val listener = object : GenerationListener {
                override fun onLoading(component: String) {
                    loading.add(component)
                }
                override fun onLoaded(component: String, ms: Double) {
                    residentAtLoad.add(p.loadedComponents)
                }
            }
            val result = p.generate(request, listener)
            assertEquals(listOf(Manifest.IMAGE_ENCODER) + Manifest.COMPONENTS, loading)
            assertEquals(loading.map { listOf(it) }, residentAtLoad)  // one component at a time
            assertTrue(p.loadedComponents.isEmpty())
            assertArrayEquals(resident.raw, result.raw, 0f)
        }
    }

    @Test
    fun executorchRunsTheEncoderAsOnnxRuntimeDoes() {
        val dir = bundle(executorch = true, edit = ::withFreshNoise)
        val request = GenerationRequest("a red circle", SEED, initImage = init, mask = mask)
        assertArrayEquals(generate(dir, request).raw, generate(dir, request, ExecuTorchBackend()).raw, 1e-6f)
    }

    @Test
    fun requestsABundleCannotRunAreRefusedBeforeAnyComponentRuns() {
        val image = bundle()
        fun refusal(dir: java.io.File, request: GenerationRequest): String =
            expectThrown<IllegalArgumentException> { generate(dir, request) }.message!!
        val cases = listOf(
            Triple(image, GenerationRequest("x", 0, mask = mask), "a mask needs the image it masks"),
            Triple(image, GenerationRequest("x", 0, strength = 0.5), "a strength needs an init image"),
            Triple(bundle(imageModes = false), GenerationRequest("x", 0, initImage = init), "--image-modes"),
            Triple(image, GenerationRequest("x", 0, initImage = init, strength = 0.0), "strength must be in (0, 1], got 0.0"),
            Triple(image, GenerationRequest("x", 0, initImage = init, strength = 1.5), "strength must be in (0, 1], got 1.5"),
            Triple(image, GenerationRequest("x", 0, initImage = init, strength = Double.NaN), "strength must be in (0, 1]"),
            // the tiny table has one step: 0.75 of it is none
            Triple(image, GenerationRequest("x", 0, initImage = init), "strength 0.75 denoises no step of 1: give at least 1"),
            Triple(image, GenerationRequest("x", 0, initImage = RgbImage(5, 4, ByteArray(60)), strength = 1.0), "the init image is 5x4 pixels, the model generates 4x4"),
            Triple(image, GenerationRequest("x", 0, initImage = init, mask = RgbImage(4, 4, ByteArray(48))), "the mask marks nothing to repaint"),
        )
        for ((dir, request, expected) in cases) {
            val message = refusal(dir, request)
            assertTrue("'$expected' not in: $message", message.contains(expected))
        }
        // a bundle that has image modes for one mode only
        val img2imgOnly = bundle { it.getJSONObject("image").put("modes", JSONArray(listOf(ImageModes.IMG2IMG))) }
        assertTrue(refusal(img2imgOnly, GenerationRequest("x", 0, initImage = init, mask = mask)).contains("for inpaint (it runs img2img)"))
    }

    @Test
    fun anEncoderWithoutAFileForTheBackendIsNamedWhenAnImageRunNeedsIt() {
        val dir = bundle { m -> m.component(Manifest.IMAGE_ENCODER).getJSONArray("files").getJSONObject(0).put("target", "coreml") }
        Pipeline(Bundle.open(dir), OnnxRuntimeBackend()).use { p ->
            p.generate(GenerationRequest("x", 0))  // text-to-image runs
            val e = expectBundleError { p.generate(GenerationRequest("x", 0, initImage = init, strength = 1.0)) }
            assertTrue(e.message!!, e.problem.contains("has no onnx file for vae_encoder (it has: coreml/fp32)"))
        }
    }

    private companion object {
        const val SEED = 7L
        const val FRESH = 0.5
    }
}
