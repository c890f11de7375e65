package com.mobilediff.engine

import org.junit.Assert.assertEquals
import org.junit.Assert.assertTrue
import org.junit.Rule
import org.junit.Test
import org.junit.rules.TemporaryFolder

/**
 * A NaN or infinity appearing at run time is an error naming where it came from, never an all-black image: a graph's
 * output names that graph, the engine's own arithmetic on the manifest's numbers names the manifest (tiny bundle).
 */
class NonFiniteTest {
    @get:Rule
    val tmp = TemporaryFolder()

    /** The BundleError of generating an image from the bundle in [dir]. */
    private fun generate(dir: java.io.File): BundleError =
        expectBundleError { TinyBundle.pipeline(dir).use { it.generate(GenerationRequest("a red circle", 0)) } }

    @Test
    fun denoiserNaNIsNamed() {
        val e = generate(TinyBundle.write(tmp.newFolder("bundle"), unetScale = Float.NaN))
        assertEquals("unet/model.onnx", e.file)
        assertTrue(e.problem, e.problem.startsWith("unet gave non-finite values: its output at timestep 999.0 holds NaN at index 0 (48 of 48"))
    }

    @Test
    fun decoderInfinityIsNamed() {
        val e = generate(TinyBundle.write(tmp.newFolder("bundle"), decoderScale = Float.POSITIVE_INFINITY))
        assertEquals("vae_decoder/model.onnx", e.file)
        assertTrue(e.problem, e.problem.startsWith("vae_decoder gave non-finite values: the decoded image holds "))
        assertTrue(e.problem, e.problem.endsWith("no image is made of them"))
    }

    @Test
    fun latentScalingOverflowNamesTheManifest() {
        // the denoiser's outputs are finite (noise * 1e10); the table's coefficient takes the sum past float32's range
        val e = generate(TinyBundle.write(tmp.newFolder("bundle"), unetScale = 1e10f) { m -> m.getJSONObject("geometry").put("scaling_factor", 1e-44) })
        assertEquals(Manifest.MANIFEST, e.file)
        assertTrue(e.problem, e.problem.startsWith("the decoder's input (final latent / geometry.scaling_factor + geometry.shift_factor) holds "))
    }

    @Test
    fun samplerTableOverflowNamesTheManifest() {
        // the denoiser's outputs are finite (noise * 1e10); the table's coefficient takes the sum past float32's range
        val e = generate(TinyBundle.write(tmp.newFolder("bundle"), unetScale = 1e10f) { m ->
            m.getJSONArray("samplers").getJSONObject(0).put("output_coef", org.json.JSONArray().put(org.json.JSONArray(listOf(3e38))))
        })
        assertEquals(Manifest.MANIFEST, e.file)
        assertTrue(e.problem, e.problem.startsWith("the final latent (sampler ddim:1) holds "))
    }
}
