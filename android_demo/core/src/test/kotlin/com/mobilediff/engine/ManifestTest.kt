package com.mobilediff.engine

import org.json.JSONObject
import org.junit.Assert.assertArrayEquals
import org.junit.Assert.assertEquals
import org.junit.Assert.assertTrue
import org.junit.Test
import java.io.File

class ManifestTest {
    private fun fixtureManifests(): List<Pair<String, String>> {
        Fixtures.require()
        return Fixtures.models.map { it to File(Fixtures.bundle(it), "manifest.json").readText() }
    }

    @Test
    fun everyFixtureManifestParsesWithItsDefaultPlanTabulated() {
        for ((model, text) in fixtureManifests()) {
            val m = Manifest.parse(text)
            val plan = m.defaultSampling
            m.sampler(plan.sampler, plan.steps)  // throws if the default plan has no table
            // the three components, and the VAE encoder where the bundle has image modes
            assertEquals(model, m.componentNames, m.components.keys.toList())
            assertTrue(model, m.geometry.latentShape.all { it > 0 })
        }
    }

    @Test
    fun withoutModelAndDefaultSamplingTheGuidanceDecidesRoleAndPlan() {
        for ((model, text) in fixtureManifests()) {
            val o = JSONObject(text)
            o.remove("model")
            o.remove("default_sampling")
            val m = Manifest.parse(o.toString())
            // a guidance-embedding denoiser is an LCM student sampled with LCM-4, any other a teacher with DDIM-50
            val expected = if (m.guidance is Guidance.Embedding) {
                ModelInfo("student", "lcm") to SamplingPlan("lcm", 4, m.guidance.defaultScale)
            } else {
                ModelInfo("teacher", null) to SamplingPlan("ddim", 50, m.guidance.defaultScale)
            }
            assertEquals(model, expected, m.role to m.defaultSampling)
        }
    }

    @Test
    fun guidanceEmbeddingIsRecomputedAsTheManifestRecordsIt() {
        for ((model, text) in fixtureManifests()) {
            val g = Manifest.parse(text).guidance as? Guidance.Embedding ?: continue
            // the same embedding computed here, not read: float32 products as torch, so sin/cos of large arguments agree
            val computed = Guidance.Embedding(g.defaultScale, g.input, g.embeddingDim, FloatArray(0)).embedding(g.defaultScale)
            assertArrayEquals(model, g.defaultEmbedding, computed, 1e-3f)
        }
    }
}
