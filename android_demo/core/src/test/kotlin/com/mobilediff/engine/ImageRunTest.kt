package com.mobilediff.engine

import org.json.JSONObject
import org.junit.Assert.assertArrayEquals
import org.junit.Assert.assertEquals
import org.junit.Assert.assertSame
import org.junit.Assert.assertTrue
import org.junit.Test
import java.io.File

/**
 * The run of an image-to-image or inpainting generation: diffusers' strength rule, the start table (the manifest's
 * `starts` entry, else the table's rows from the start), and the loop with its first latent and inpainting blend,
 * against the rule written out by hand on a closed-form model (as SamplerTest does for text-to-image).
 */
class ImageRunTest {
    /** Three steps whose later rows reach back one step, with add_noise rows and (optionally) the run from step 1. */
    private fun table(starts: Map<Int, SamplerTable> = emptyMap()) = SamplerTable(
        "test", 3, initNoiseSigma = 2.0, timesteps = doubleArrayOf(900.0, 500.0, 100.0), inputScale = doubleArrayOf(0.5, 1.0, 1.0),
        latentCoef = listOf(doubleArrayOf(0.9), doubleArrayOf(0.8, 0.1), doubleArrayOf(0.7, 0.2)),
        outputCoef = listOf(doubleArrayOf(-0.3), doubleArrayOf(-0.2, 0.05), doubleArrayOf(0.4, 0.02)),
        noiseCoef = doubleArrayOf(0.0, 0.0, 0.25),
        addNoise = listOf(doubleArrayOf(0.1, 0.99), doubleArrayOf(0.5, 0.86), doubleArrayOf(0.9, 0.43)),
        starts = starts,
    )

    @Test
    fun strengthIsDiffusersRule() {
        // min(floor(steps * strength), steps)
        val cases = listOf(Triple(8, 0.6, 4), Triple(8, 0.75, 6), Triple(8, 1.0, 8), Triple(4, 0.75, 3), Triple(50, 0.3, 15),
            Triple(1, 1.0, 1), Triple(3, 0.34, 1), Triple(10, 0.999, 9))
        for ((steps, strength, k) in cases) assertEquals("$steps x $strength", k, strengthSteps(steps, strength))
        for ((steps, strength, expected) in listOf(
            Triple(8, 0.0, "strength must be in (0, 1], got 0.0"),
            Triple(8, -0.5, "strength must be in (0, 1], got -0.5"),
            Triple(8, 1.01, "strength must be in (0, 1], got 1.01"),
            Triple(8, Double.POSITIVE_INFINITY, "strength must be in (0, 1]"),
            Triple(8, 0.1, "strength 0.1 denoises no step of 8: give at least 0.125, or more steps"),
            Triple(3, 0.3, "strength 0.3 denoises no step of 3: give at least 0.333, or more steps"),
        )) {
            val message = expectThrown<IllegalArgumentException> { strengthSteps(steps, strength) }.message!!
            assertTrue("'$expected' not in: $message", message.contains(expected))
        }
    }

    @Test
    fun aSuffixKeepsTheCoefficientsWithinTheRun() {
        val s = table().suffix(1)
        assertEquals(2, s.steps)
        assertArrayEquals(doubleArrayOf(500.0, 100.0), s.timesteps, 0.0)
        // row 0 of the run cannot reach back to step 0; row 1 reaches back to the run's own row 0
        assertArrayEquals(doubleArrayOf(0.8), s.latentCoef[0], 0.0)
        assertArrayEquals(doubleArrayOf(-0.2), s.outputCoef[0], 0.0)
        assertArrayEquals(doubleArrayOf(0.7, 0.2), s.latentCoef[1], 0.0)
        assertArrayEquals(doubleArrayOf(0.0, 0.25), s.noiseCoef, 0.0)
        assertEquals(3, table().suffix(0).steps)
    }

    @Test
    fun theStartTableIsTheListedOneElseTheSuffix() {
        val listed = table().suffix(1)
        val t = table(starts = mapOf(1 to listed))
        // strength 2/3 of 3 steps: k = 2, start 1 (listed); strength 1/3: k = 1, start 2 (not listed: the rows from 2)
        val run = t.startTable(0.7)
        assertEquals(1, run.start)
        assertSame(listed, run.table)
        val fromTwo = t.startTable(0.34)
        assertEquals(2, fromTwo.start)
        assertEquals(1, fromTwo.table.steps)
        assertArrayEquals(doubleArrayOf(0.7), fromTwo.table.latentCoef[0], 0.0)
        assertEquals(0, t.startTable(1.0).start)
        assertEquals(3, t.startTable(1.0).table.steps)
    }

    /** The closed-form model: output = model input + 1. */
    private val model = { x: FloatArray, _: Double -> FloatArray(x.size) { x[it] + 1f } }

    @Test
    fun imageToImageStartsFromTheNoisedImageAtTheStartStep() {
        val z0 = floatArrayOf(1f, -2f)
        val noise = floatArrayOf(0.5f, 3f)
        val fresh = floatArrayOf(4f, -1f)
        val steps = ArrayList<Int>()
        val out = sampleImage(table(), 0.7, z0, noise, null, model, { fresh }) { i, _ -> steps.add(i) }
        // start 1 (k = 2): latent_0 = a_1 z0 + b_1 noise; then rows 1 and 2 with their coefficients inside the run
        val expected = FloatArray(2) { j ->
            val l0 = 0.5f * z0[j] + 0.86f * noise[j]
            val o0 = l0 * 1.0f + 1f
            val l1 = 0.8f * l0 + -0.2f * o0
            val o1 = l1 + 1f
            (0.7f * l1 + 0.2f * l0) + (0.4f * o1 + 0.02f * o0) + 0.25f * fresh[j]
        }
        assertArrayEquals(expected, out, 1e-6f)
        assertEquals(listOf(0, 1), steps)
    }

    @Test
    fun inpaintingBlendsTheKnownRegionAfterEveryStep() {
        val z0 = floatArrayOf(1f, -2f, 0.25f, 8f)  // (1, 2 channels, 1, 2): the mask broadcasts over channels
        val noise = floatArrayOf(0.5f, 3f, -1f, 2f)
        val mask = floatArrayOf(1f, 0f)  // repaint the first latent pixel, keep the second
        val seen = ArrayList<FloatArray>()
        val out = sampleImage(table(), 0.7, z0, noise, mask, model, { FloatArray(4) }) { _, x -> seen.add(x.copyOf()) }
        // after run step 0 the kept pixel is z0 noised to step 2 (add_noise[2]); after the last step, z0 itself
        for (c in 0 until 2) {
            val kept = c * 2 + 1
            assertEquals(0.9f * z0[kept] + 0.43f * noise[kept], seen[0][kept], 1e-6f)
            assertEquals(z0[kept], seen[1][kept], 0f)
            assertEquals(z0[kept], out[kept], 0f)
        }
        // the repainted pixels follow image-to-image's run
        val free = sampleImage(table(), 0.7, z0, noise, null, model, { FloatArray(4) })
        assertEquals(free[0], out[0], 1e-6f)
        assertEquals(free[2], out[2], 1e-6f)
    }

    @Test
    fun inpaintingAtStrengthOneStartsFromNoiseAlone() {
        val z0 = floatArrayOf(1f, -2f)
        val noise = floatArrayOf(0.5f, 3f)
        val inputs = ArrayList<FloatArray>()
        sampleImage(table(), 1.0, z0, noise, floatArrayOf(1f, 1f), { x, t -> if (t == 900.0) inputs.add(x); model(x, t) }, { FloatArray(2) })
        // the first model input is input_scale[0] * init_noise_sigma * noise
        assertArrayEquals(floatArrayOf(0.5f * 2f * 0.5f, 0.5f * 2f * 3f), inputs.single(), 0f)
        // image-to-image at strength 1 starts from a_0 z0 + b_0 noise instead
        val img2img = ArrayList<FloatArray>()
        sampleImage(table(), 1.0, z0, noise, null, { x, t -> if (t == 900.0) img2img.add(x); model(x, t) }, { FloatArray(2) })
        assertArrayEquals(floatArrayOf(0.5f * (0.1f * 1f + 0.99f * 0.5f), 0.5f * (0.1f * -2f + 0.99f * 3f)), img2img.single(), 1e-6f)
    }

    @Test
    fun aTableWithoutImageRowsIsRefused() {
        val plain = SamplerTable("ddim", 1, 1.0, doubleArrayOf(1.0), doubleArrayOf(1.0), listOf(doubleArrayOf(0.0)), listOf(doubleArrayOf(1.0)), doubleArrayOf(0.0))
        val e = expectThrown<IllegalArgumentException> { sampleImage(plain, 1.0, FloatArray(1), FloatArray(1), null, model, { FloatArray(1) }) }
        assertTrue(e.message!!, e.message!!.contains("--image-modes"))
    }

    @Test
    fun fixtureTablesStartWhereTheirManifestSays() {
        Fixtures.require()
        var checked = 0
        for (model in Fixtures.models) {
            val m = Bundle.open(Fixtures.bundle(model)).manifest
            val image = m.image ?: continue
            assertTrue(model, image.modes.isNotEmpty())
            assertTrue(model, m.componentNames.contains(Manifest.IMAGE_ENCODER))
            val json = JSONObject(File(Fixtures.bundle(model), "manifest.json").readText()).getJSONArray("samplers")
            for ((i, t) in m.samplers.withIndex()) {
                assertEquals("$model ${t.name}:${t.steps}", t.steps, t.addNoise!!.size)
                val starts = json.getJSONObject(i).optJSONObject("starts") ?: JSONObject()
                assertEquals(starts.keys().asSequence().map { it.toInt() }.toSet(), t.starts.keys)
                for (k in 1..t.steps) {
                    // a strength between k / steps and (k + 1) / steps runs k steps
                    val run = t.startTable(if (k == t.steps) 1.0 else (k + 0.5) / t.steps)
                    val j = t.steps - k
                    assertEquals(j, run.start)
                    assertEquals(k, run.table.steps)
                    val expected = starts.optJSONObject(j.toString())
                    if (expected != null) {
                        // the listed table, as the manifest writes it
                        val coef = expected.getJSONArray("latent_coef")
                        for (r in 0 until k) assertEquals(coef.getJSONArray(r).getDouble(0), run.table.latentCoef[r][0], 0.0)
                    } else {
                        assertArrayEquals(t.timesteps.copyOfRange(j, t.steps), run.table.timesteps, 0.0)
                    }
                }
                checked++
            }
        }
        assertTrue("no fixture bundle has image modes", checked > 0)
    }
}
