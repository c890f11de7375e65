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
            assertEquals(model, 3, m.components.size)
            assertTrue(model, m.geometry.latentShape.all { it > 0 })
        }
    }

    @Test
    fun withoutDefaultSamplingTheFallbackIsDdim50AtTheGuidanceDefault() {
        val (_, text) = fixtureManifests().first()
        val o = JSONObject(text)
        o.remove("default_sampling")
        val m = Manifest.parse(o.toString())
        assertEquals(SamplingPlan("ddim", 50, m.guidance.defaultScale), m.defaultSampling)
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
