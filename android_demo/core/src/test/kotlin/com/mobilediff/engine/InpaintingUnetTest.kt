package com.mobilediff.engine

import com.mobilediff.engine.TinyBundle.component
import org.json.JSONArray
import org.json.JSONObject
import org.junit.Assert.assertArrayEquals
import org.junit.Assert.assertEquals
import org.junit.Assert.assertFalse
import org.junit.Assert.assertTrue
import org.junit.Assume.assumeTrue
import org.junit.Rule
import org.junit.Test
import org.junit.rules.TemporaryFolder
import java.io.File

/**
 * A bundle whose denoiser is an inpainting UNet (`image.denoiser: "inpainting"`, docs/bundle.md "An inpainting
 * UNet"): the record read (or refused naming the field), text-to-image and image-to-image refused in one line before
 * anything loads, and a whole inpainting run on the tiny bundle ([TinyBundle] with `inpaintingUnet`) against the
 * contract's arithmetic written out here: the draws (eps only below strength 1), the masked image's latent from the
 * second draw, the mask and that latent fed to every UNet call (both guidance rows), and no blend. The fixtures'
 * inpainting-UNet references run in ImageToImageTest.
 */
class InpaintingUnetTest {
    @get:Rule
    val tmp = TemporaryFolder()

    private fun bundle(posterior: String = ImageModes.GAUSSIAN, edit: (JSONObject) -> Unit = {}) =
        TinyBundle.write(tmp.newFolder(), imageModes = true, posterior = posterior, inpaintingUnet = true, edit = edit)

    /** A 4 x 4 RGB image with distinct values; its pixels are `x / 127.5 - 1`. */
    private val init = RgbImage(4, 4, ByteArray(48) { (it * 5 + 7).toByte() })

    /** The left half (x < 2) repainted. */
    private val mask = RgbImage(4, 4, ByteArray(48) { i -> if ((i / 3) % 4 < 2) -1 else 0 })
    private val maskLatent = FloatArray(16) { p -> if (p % 4 < 2) 1f else 0f }
    private val pixels = ImageInput.pixels(init)
    private val shape = intArrayOf(1, 3, 4, 4)

    /** Two steps (so that a strength below 1 runs one), each taking the UNet's output as the next latent, fresh noise in the last. */
    private fun twoSteps(m: JSONObject) {
        m.put("samplers", JSONArray().put(JSONObject().put("name", "ddim").put("steps", 2).put("init_noise_sigma", 1.0)
            .put("timesteps", JSONArray(listOf(999.0, 500.0))).put("input_scale", JSONArray(listOf(1.0, 1.0)))
            .put("latent_coef", JSONArray().put(JSONArray(listOf(0.0))).put(JSONArray(listOf(0.0))))
            .put("output_coef", JSONArray().put(JSONArray(listOf(1.0))).put(JSONArray(listOf(1.0))))
            .put("noise_coef", JSONArray(listOf(0.0, FRESH)))
            .put("add_noise", JSONArray().put(JSONArray(listOf(0.1, 0.9))).put(JSONArray(listOf(A1, B1))))
            .put("starts", JSONObject())))
        m.put("default_sampling", JSONObject().put("sampler", "ddim").put("steps", 2).put("guidance", 1.0))
    }

    /** The tiny inpainting UNet's output (mask and masked image latent broadcast over its rows), as ONNX computes it. */
    private fun unet(x: FloatArray, maskedLatent: FloatArray) = FloatArray(x.size) { i ->
        (x[i] * 0.5f + maskLatent[i % 16] * TinyBundle.MASK_WEIGHT) + maskedLatent[i] * TinyBundle.MASKED_WEIGHT
    }

    /** The masked image's latent: the tiny encoder (mean = pixels / 2, std 0.25) on `pixels * (1 - mask)`, scaling 1. */
    private fun maskedLatent(eps2: FloatArray?) = FloatArray(48) { i ->
        val mean = pixels[i] * (1f - maskLatent[i % 16]) * 0.5f
        if (eps2 == null) mean else mean + TinyBundle.ENCODER_STD * eps2[i]
    }

    private fun decoded(latent: FloatArray) = ImageConversion.toHwc(latent, 4, 4)

    // ---- the manifest

    @Test
    fun theRecordIsReadAndTheBundleRunsInpaintingAlone() {
        val m = Bundle.open(bundle()).manifest
        assertEquals(ImageModes.INPAINTING, m.image!!.denoiser)
        assertTrue(m.image!!.inpaintingDenoiser && m.inpaintingOnly)
        assertTrue(m.supports(ImageModes.INPAINT))
        assertFalse(m.supports(Manifest.MODE_TXT2IMG))
        assertFalse(m.supports(ImageModes.IMG2IMG))
        // a record without the field: the standard UNet
        val standard = Bundle.open(TinyBundle.write(tmp.newFolder(), imageModes = true)).manifest
        assertEquals(ImageModes.STANDARD, standard.image!!.denoiser)
        assertFalse(standard.inpaintingOnly)
        assertTrue(standard.supports(Manifest.MODE_TXT2IMG))
    }

    @Test
    fun aBadDenoiserRecordIsRefusedNamingTheField() {
        val cases = mapOf<String, (JSONObject) -> Unit>(
            "image.denoiser" to { m -> m.getJSONObject("image").put("denoiser", "outpainting") },
            "image.modes" to { m -> m.getJSONObject("image").put("modes", JSONArray(ImageModes.MODES)) },
        )
        for ((field, edit) in cases) {
            val message = expectBundleError { Bundle.open(bundle(edit = edit)) }.message!!
            assertTrue("'$field' not in: $message", message.contains("field '$field"))
            assertFalse(message.contains('\n'))
        }
        // a UNet without the mask inputs: refused before any component loads
        val plain = bundle { m ->
            val inputs = m.component("unet").getJSONArray("inputs")
            inputs.remove(4)
            inputs.remove(3)
        }
        val e = expectBundleError { Pipeline(Bundle.open(plain), OnnxRuntimeBackend(), loading = Pipeline.Loading.LAZY) }
        assertTrue(e.message!!, e.problem.contains("declares an inpainting denoiser (image.denoiser) but its unet takes (sample, timestep, encoder_hidden_states)"))
    }

    // ---- the refusals

    /** Text-to-image and image-to-image on [dir] (an inpainting UNet's bundle): one line each, before anything loads. */
    private fun checkRefusals(dir: File, geometry: Geometry, image: RgbImage) {
        val manifest = Bundle.open(dir).manifest
        val requests = listOf(
            GenerationRequest("a red circle", 0),
            GenerationRequest("a red circle", 0, initImage = image, strength = 0.5),
            GenerationRequest("a red circle", 0, initImage = image),
        )
        Pipeline(Bundle.open(dir), OnnxRuntimeBackend(), loading = Pipeline.Loading.LAZY).use { p ->
            val loaded = ArrayList<String>()
            val listener = object : GenerationListener {
                override fun onLoading(component: String) {
                    loaded.add(component)
                }
            }
            for (request in requests) {
                for (message in listOf(
                    expectThrown<IllegalArgumentException> { Pipeline.check(manifest, request) }.message!!,
                    expectThrown<IllegalArgumentException> { p.generate(request, listener) }.message!!,
                )) {
                    assertEquals(Pipeline.INPAINTING_ONLY, message)
                    assertTrue(message.contains("inpainting UNet: it runs inpainting only"))
                    assertFalse(message.contains('\n'))
                }
            }
            assertEquals(emptyList<String>(), loaded)
        }
        // a mask without its image is refused as for any bundle
        val e = expectThrown<IllegalArgumentException> { Pipeline.check(manifest, GenerationRequest("x", 0, mask = image)) }
        assertTrue(e.message!!, e.message!!.contains("a mask needs the image it masks"))
        assertEquals(geometry.width, image.width)
    }

    @Test
    fun textToImageAndImageToImageAreRefusedInOneLine() {
        val dir = bundle()
        checkRefusals(dir, Bundle.open(dir).manifest.geometry, init)
    }

    @Test
    fun theFixtureInpaintingUnetRefusesTextToImageAndImageToImage() {
        Fixtures.require()
        val models = Fixtures.models.filter { Bundle.open(Fixtures.bundle(it)).manifest.inpaintingOnly }
        assumeTrue("no fixture bundle has an inpainting UNet", models.isNotEmpty())
        for (model in models) {
            val geometry = Bundle.open(Fixtures.bundle(model)).manifest.geometry
            val ref = Fixtures.imageReferences(model).first()
            val image = ImageInput.readInitImage(File(File(Fixtures.root, model), ref.getString("init_image")), geometry)
            checkRefusals(Fixtures.bundle(model), geometry, image)
            println("inpainting_unet $model: text-to-image and image-to-image refused: ${Pipeline.INPAINTING_ONLY}")
        }
    }

    // ---- generation

    @Test
    fun atStrengthOneTheImageIsNotEncodedAndTheSecondDrawMakesTheMaskedLatent() {
        val dir = bundle { it.getJSONArray("samplers").getJSONObject(0).put("noise_coef", JSONArray(listOf(FRESH))) }
        val encoderInputs = ArrayList<FloatArray>()
        val unetInputs = ArrayList<List<Tensor>>()
        val listener = object : GenerationListener {
            override fun onCall(component: String, inputs: List<Tensor>, outputs: List<Tensor.F32>, ms: Double) {
                if (component == Manifest.IMAGE_ENCODER) encoderInputs.add((inputs[0] as Tensor.F32).data)
                if (component == "unet") unetInputs.add(inputs)
            }
        }
        val result = Pipeline(Bundle.open(dir), OnnxRuntimeBackend()).use {
            it.generate(GenerationRequest("a red circle", SEED, initImage = init, mask = mask), listener)
        }
        val g = TorchGenerator(SEED)
        val noise = g.normal(shape)  // no eps: the run does not start from the image
        val eps2 = g.normal(shape)
        val fresh = g.normal(shape)
        val masked = maskedLatent(eps2)
        val latent1 = FloatArray(48) { unet(noise, masked)[it] + FRESH.toFloat() * fresh[it] }  // no blend
        assertArrayEquals(decoded(latent1), result.raw, 1e-6f)
        assertEquals(ImageModes.INPAINT, result.mode)
        assertEquals(1.0, result.strength!!, 0.0)
        // the encoder ran once, on the masked image (the repainted half zeroed)
        assertEquals(1, encoderInputs.size)
        assertArrayEquals(FloatArray(48) { pixels[it] * (1f - maskLatent[it % 16]) }, encoderInputs[0], 0f)
        // the UNet took the mask and the masked latent after encoder_hidden_states
        val call = unetInputs.single()
        assertEquals(5, call.size)
        assertArrayEquals(intArrayOf(1, 1, 4, 4), call[3].shape)
        assertArrayEquals(maskLatent, (call[3] as Tensor.F32).data, 0f)
        assertArrayEquals(masked, (call[4] as Tensor.F32).data, 1e-6f)
    }

    @Test
    fun belowStrengthOneTheImageIsEncodedFirstAndNothingIsBlended() {
        val dir = bundle(edit = ::twoSteps)
        var encoderCalls = 0
        val listener = object : GenerationListener {
            override fun onCall(component: String, inputs: List<Tensor>, outputs: List<Tensor.F32>, ms: Double) {
                if (component == Manifest.IMAGE_ENCODER) encoderCalls++
            }
        }
        val result = Pipeline(Bundle.open(dir), OnnxRuntimeBackend()).use {
            it.generate(GenerationRequest("a red circle", SEED, initImage = init, mask = mask, strength = 0.5), listener)
        }
        assertEquals(2, encoderCalls)
        assertEquals(1, result.stepsRun)
        val g = TorchGenerator(SEED)
        val eps = g.normal(shape)
        val noise = g.normal(shape)
        val eps2 = g.normal(shape)
        val fresh = g.normal(shape)
        val z0 = FloatArray(48) { 0.5f * pixels[it] + TinyBundle.ENCODER_STD * eps[it] }
        // start at step 1: a_1 z0 + b_1 noise; the last step's output with its fresh noise, the kept half not blended
        val latent0 = FloatArray(48) { A1.toFloat() * z0[it] + B1.toFloat() * noise[it] }
        val latent1 = FloatArray(48) { unet(latent0, maskedLatent(eps2))[it] + FRESH.toFloat() * fresh[it] }
        assertArrayEquals(decoded(latent1), result.raw, 1e-6f)
        // a 4-channel UNet's run would have put z0 back in the kept half
        assertTrue((0 until 48).any { maskLatent[it % 16] == 0f && kotlin.math.abs(latent1[it] - z0[it]) > 1e-3f })
    }

    @Test
    fun aDeterministicEncoderDrawsNothingForTheMaskedImage() {
        val dir = bundle(posterior = ImageModes.DETERMINISTIC) { it.getJSONArray("samplers").getJSONObject(0).put("noise_coef", JSONArray(listOf(FRESH))) }
        val result = Pipeline(Bundle.open(dir), OnnxRuntimeBackend()).use { it.generate(GenerationRequest("x", SEED, initImage = init, mask = mask)) }
        val g = TorchGenerator(SEED)
        val noise = g.normal(shape)
        val fresh = g.normal(shape)
        val latent1 = FloatArray(48) { unet(noise, maskedLatent(null))[it] + FRESH.toFloat() * fresh[it] }
        assertArrayEquals(decoded(latent1), result.raw, 1e-6f)
    }

    @Test
    fun bothGuidanceRowsTakeTheMaskAndTheLowMemoryModeGivesTheSameImage() {
        val dir = bundle()
        val request = GenerationRequest("a red circle", SEED, initImage = init, mask = mask)
        val plain = Pipeline(Bundle.open(dir), OnnxRuntimeBackend()).use { it.generate(request) }
        var rows: List<IntArray> = emptyList()
        val listener = object : GenerationListener {
            override fun onCall(component: String, inputs: List<Tensor>, outputs: List<Tensor.F32>, ms: Double) {
                if (component == "unet") rows = inputs.map { it.shape }
            }
        }
        // the tiny text encoder gives zeros: the guided output is the unguided one whatever the scale
        val guided = Pipeline(Bundle.open(dir), OnnxRuntimeBackend()).use { it.generate(request.copy(guidance = 3.0), listener) }
        assertArrayEquals(plain.raw, guided.raw, 1e-6f)
        assertEquals(listOf(listOf(2, 3, 4, 4), listOf(2), listOf(2, TinyBundle.MAX_LENGTH, 1), listOf(2, 1, 4, 4), listOf(2, 3, 4, 4)), rows.map { it.toList() })
        Pipeline(Bundle.open(dir), OnnxRuntimeBackend(), lowMemory = true).use { p ->
            val loading = ArrayList<String>()
            val result = p.generate(request, object : GenerationListener {
                override fun onLoading(component: String) {
                    loading.add(component)
                }
            })
            assertArrayEquals(plain.raw, result.raw, 0f)
            assertEquals(listOf(Manifest.IMAGE_ENCODER) + Manifest.COMPONENTS, loading)
            assertTrue(p.loadedComponents.isEmpty())
        }
    }

    private companion object {
        const val SEED = 11L
        const val FRESH = 0.5
        const val A1 = 0.7
        const val B1 = 0.6
    }
}
