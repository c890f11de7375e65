package com.mobilediff.engine

import com.mobilediff.verify.GoldenChecks
import com.mobilediff.verify.Goldens
import org.junit.Assert.assertEquals
import org.junit.Assert.assertTrue
import org.junit.Test

/** The sampler loop against the goldens: replayed on recorded model outputs, and driven by the real ONNX graphs. */
class SamplerTest {
    @Test
    fun replayOfRecordedModelOutputsReproducesEveryLatent() {
        Fixtures.require()
        for (model in Fixtures.withGoldens) {
            val goldens = Goldens.load(Fixtures.goldens(model))
            assertTrue("$model: no plans in the goldens", goldens.plans.isNotEmpty())
            for (row in GoldenChecks(goldens, model).samplerReplay(Bundle.open(Fixtures.bundle(model)).manifest)) {
                assertTrue("$model: ${row.detail}: max abs ${row.maxAbsError}", row.passed)
            }
        }
    }

    @Test
    fun realOnnxGraphsReproduceEveryLatent() {
        Fixtures.require()
        for (model in Fixtures.withGoldens) {
            val goldens = Goldens.load(Fixtures.goldens(model))
            Pipeline(Bundle.open(Fixtures.bundle(model)), OnnxRuntimeBackend()).use { pipeline ->
                for (row in GoldenChecks(goldens, model).sampler(pipeline)) {
                    println("sampler $model ${row.detail.substringBefore(';')} seed ${row.seed}: psnr ${row.psnrDb ?: "inf"} dB, max abs ${row.maxAbsError}")
                    assertTrue("$model: ${row.detail}: ${row.psnrDb} dB", row.passed)
                }
            }
        }
    }

    @Test
    fun tableArithmeticFollowsTheUpdateRule() {
        // two steps with a multistep term and fresh noise, against the rule written out by hand
        val table = SamplerTable(
            "test", 2, initNoiseSigma = 2.0, timesteps = doubleArrayOf(900.0, 400.0), inputScale = doubleArrayOf(0.5, 1.0),
            latentCoef = listOf(doubleArrayOf(0.9), doubleArrayOf(0.8, 0.1)),
            outputCoef = listOf(doubleArrayOf(-0.3), doubleArrayOf(-0.2, 0.05)),
            noiseCoef = doubleArrayOf(0.0, 0.25),
        )
        val seen = ArrayList<Pair<Float, Double>>()
        val out = sample(table, floatArrayOf(1f), { x, t -> seen.add(x[0] to t); floatArrayOf(x[0] + 1f) }, { floatArrayOf(4f) })
        val l0 = 2f
        val o0 = l0 * 0.5f + 1f
        val l1 = 0.9f * l0 + -0.3f * o0
        val o1 = l1 + 1f
        val l2 = (0.8f * l1 + 0.1f * l0) + (-0.2f * o1 + 0.05f * o0) + 0.25f * 4f
        assertEquals(listOf(l0 * 0.5f to 900.0, l1 to 400.0), seen)
        assertEquals(l2, out[0], 0f)
    }
}
