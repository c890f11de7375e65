package com.mobilediff.engine

import org.junit.Assert.assertArrayEquals
import org.junit.Assert.assertEquals
import org.junit.Assert.assertNotNull
import org.junit.Assert.assertTrue
import org.junit.Assume.assumeTrue
import org.junit.Rule
import org.junit.Test
import org.junit.rules.TemporaryFolder

/**
 * What an app drives a generation with, on a real fixture bundle (the few-step LCM student where the fixtures have
 * it): progress per step, cancellation between steps, components loaded lazily and released, the process's peak
 * memory. Every variation must give the image an eager, uncancelled pipeline gives, bit for bit.
 */
class PipelineControlTest {
    @get:Rule
    val tmp = TemporaryFolder()

    /** A fixture model with the fewest default steps (the tests run it several times). */
    private val model: String by lazy {
        Fixtures.require()
        Fixtures.textToImage.minByOrNull { Bundle.open(Fixtures.bundle(it)).manifest.defaultSampling.steps }!!
    }

    private fun pipeline(loading: Pipeline.Loading = Pipeline.Loading.EAGER) =
        Pipeline(Bundle.open(Fixtures.bundle(model)), OnnxRuntimeBackend(), loading = loading)

    private val request = GenerationRequest("a red circle at the top left on a blue background", 3)

    /** Records every listener event as a line. */
    private class Recorder(val onStepDone: (Int) -> Unit = {}) : GenerationListener {
        val events = ArrayList<String>()
        override fun onStep(step: Int, steps: Int, latent: FloatArray) {
            events.add("step ${step + 1}/$steps")
            onStepDone(step + 1)
        }
        override fun onCall(component: String, inputs: List<Tensor>, outputs: List<Tensor.F32>, ms: Double) {
            events.add("call $component")
        }
        override fun onLoading(component: String) {
            events.add("loading $component")
        }
        override fun onLoaded(component: String, ms: Double) {
            events.add("loaded $component")
        }
        fun count(prefix: String) = events.count { it.startsWith(prefix) }
    }

    @Test
    fun progressReportsEveryStep() {
        pipeline().use { p ->
            val steps = p.manifest.defaultSampling.steps
            val rec = Recorder()
            val result = p.generate(request, rec)
            assertEquals((1..steps).map { "step $it/$steps" }, rec.events.filter { it.startsWith("step") })
            // a step is reported after its UNet call
            val unetCalls = rec.events.withIndex().filter { it.value == "call unet" }.map { it.index }
            val stepEvents = rec.events.withIndex().filter { it.value.startsWith("step") }.map { it.index }
            assertEquals(steps, unetCalls.size)
            for (i in 0 until steps) assertTrue(rec.events.toString(), unetCalls[i] < stepEvents[i])
            assertEquals(0, rec.count("loading")) // eager: loaded by the constructor
            assertEquals(steps, result.plan.steps)
        }
    }

    @Test
    fun cancelAfterStepStopsThere() {
        pipeline().use { p ->
            val steps = p.manifest.defaultSampling.steps
            assumeTrue("the fixture's default plan has a single step", steps >= 2)
            val reference = p.generate(request)
            for (k in 1 until steps) {
                val token = CancelToken()
                val rec = Recorder { done -> if (done == k) token.cancel() }
                val e = expectThrown<GenerationCancelled> { p.generate(request, rec, token) }
                assertEquals(k, e.completedSteps)
                assertEquals(steps, e.steps)
                assertEquals("cancelled after step $k of $steps", e.message)
                assertEquals(k, rec.count("call unet"))
                assertEquals(0, rec.count("call vae_decoder"))
            }
            // the pipeline is unharmed: the next image is the uncancelled one
            assertArrayEquals(reference.raw, p.generate(request).raw, 0f)
        }
    }

    @Test
    fun cancelBeforeStartAndBeforeDecoding() {
        pipeline().use { p ->
            val steps = p.manifest.defaultSampling.steps
            val early = CancelToken().apply { cancel() }
            val rec = Recorder()
            val e = expectThrown<GenerationCancelled> { p.generate(request, rec, early) }
            assertEquals(0, e.completedSteps)
            assertEquals(emptyList<String>(), rec.events)
            val late = CancelToken()
            val e2 = expectThrown<GenerationCancelled> { p.generate(request, Recorder { if (it == steps) late.cancel() }, late) }
            assertEquals(steps, e2.completedSteps)
            assertEquals("cancelled after all $steps steps, before decoding", e2.message)
        }
    }

    @Test
    fun lazyLoadingInCallOrderGivesTheSameImage() {
        val eager = pipeline().use { it.generate(request) }
        pipeline(Pipeline.Loading.LAZY).use { p ->
            assertEquals(emptyList<String>(), p.loadedComponents)
            val rec = Recorder()
            val first = p.generate(request, rec)
            assertEquals(
                listOf("loading text_encoder", "loaded text_encoder", "loading unet", "loaded unet", "loading vae_decoder", "loaded vae_decoder"),
                rec.events.filter { it.startsWith("load") },
            )
            assertTrue(rec.events.indexOf("loaded text_encoder") < rec.events.indexOf("call text_encoder"))
            assertTrue(rec.events.indexOf("call text_encoder") < rec.events.indexOf("loading unet"))
            assertTrue(rec.events.lastIndexOf("call unet") < rec.events.indexOf("loading vae_decoder"))
            assertEquals(Manifest.COMPONENTS, first.loadMs.keys.toList())
            assertEquals(Manifest.COMPONENTS, p.loadedComponents)
            assertArrayEquals(eager.raw, first.raw, 0f)

            // loaded once: the second image loads nothing
            val second = Recorder()
            p.generate(request, second)
            assertEquals(0, second.count("loading"))

            // released, then loaded again on the next call
            assertEquals(Manifest.COMPONENTS, p.release())
            assertEquals(emptyList<String>(), p.loadedComponents)
            val again = Recorder()
            assertArrayEquals(eager.raw, p.generate(request, again).raw, 0f)
            assertEquals(3, again.count("loaded"))
        }
    }

    @Test
    fun reduceMemoryReleasesEachComponentAfterItsLastCall() {
        val eager = pipeline().use { it.generate(request) }
        pipeline(Pipeline.Loading.LAZY).use { p ->
            p.reduceMemory = true
            for (round in 1..2) {
                val rec = Recorder()
                val result = p.generate(request, rec)
                assertArrayEquals(eager.raw, result.raw, 0f)
                assertEquals(emptyList<String>(), p.loadedComponents)
                // each component loaded once per image, the previous one already released
                assertEquals(3, rec.count("loaded"))
                assertTrue(rec.events.indexOf("loading unet") > rec.events.lastIndexOf("call text_encoder"))
            }
        }
    }

    @Test
    fun lowMemoryLoadsOneComponentAtATimeAndGivesTheResidentImage() {
        Fixtures.require()
        // the default model (DDIM-50 with classifier-free guidance: two text encoder calls) where the fixtures have it
        val name = if ("default" in Fixtures.models) "default" else model
        val bundle = Bundle.open(Fixtures.bundle(name))
        val resident = Pipeline(bundle, OnnxRuntimeBackend()).use { it.generate(request) }
        Pipeline(bundle, OnnxRuntimeBackend(), lowMemory = true).use { p ->
            assertEquals(emptyList<String>(), p.loadedComponents)
            for (round in 1..2) {
                // what is loaded as each component finishes loading: that component alone
                val residentAtLoad = ArrayList<List<String>>()
                val rec = object : GenerationListener {
                    val events = ArrayList<String>()
                    override fun onLoaded(component: String, ms: Double) {
                        residentAtLoad.add(p.loadedComponents)
                        events.add("loaded $component")
                    }
                    override fun onCall(component: String, inputs: List<Tensor>, outputs: List<Tensor.F32>, ms: Double) {
                        events.add("call $component")
                    }
                }
                val result = p.generate(request, rec)
                assertArrayEquals("$name round $round: the resident image, bit for bit", resident.raw, result.raw, 0f)
                assertEquals(Manifest.COMPONENTS.map { listOf(it) }, residentAtLoad)
                assertEquals(Manifest.COMPONENTS, result.loadMs.keys.toList())
                // the text encoder's calls, then the UNet's, then the decoder's, each loaded once before its first call
                val runs = rec.events.filterIndexed { i, e -> i == 0 || e != rec.events[i - 1] }
                assertEquals(
                    listOf("loaded text_encoder", "call text_encoder", "loaded unet", "call unet", "loaded vae_decoder", "call vae_decoder"),
                    runs,
                )
                assertEquals(emptyList<String>(), p.loadedComponents)
            }
        }
        val e = expectThrown<IllegalArgumentException> { Pipeline(bundle, OnnxRuntimeBackend(), lowMemory = true, loading = Pipeline.Loading.EAGER) }
        assertTrue(e.message!!, e.message!!.contains("Loading.EAGER"))
    }

    @Test
    fun lazyPipelineNamesABadFileWhenItLoads() {
        val dir = TinyBundle.write(tmp.newFolder("bundle"))
        java.io.File(dir, "vae_decoder/model.onnx").appendBytes(byteArrayOf(0))
        Pipeline(Bundle.open(dir), OnnxRuntimeBackend(), loading = Pipeline.Loading.LAZY).use { p ->
            val rec = Recorder()
            val e = expectBundleError { p.generate(GenerationRequest("a red circle", 0), rec) }
            assertEquals("vae_decoder/model.onnx", e.file)
            assertTrue(e.problem, e.problem.startsWith("does not match its sha256"))
            assertEquals(1, rec.count("call unet"))
            assertEquals(listOf("text_encoder", "unet"), p.loadedComponents)
        }
        // the constructor still refuses a target the bundle has no files for, loading nothing
        val e = expectBundleError { Pipeline(Bundle.open(dir), ExecuTorchBackend(), loading = Pipeline.Loading.LAZY) }
        assertEquals(Manifest.MANIFEST, e.file)
        assertTrue(e.problem, e.problem.startsWith("has no executorch file for text_encoder"))
    }

    @Test
    fun peakMemoryIsRecorded() {
        assumeTrue("no /proc/self/status on this system", ProcessMemory.read() != null)
        pipeline(Pipeline.Loading.LAZY).use { p ->
            val whole = p.generate(request).memory
            assertNotNull(whole)
            assertTrue("$whole", whole!!.peakRssBytes >= whole.rssBytes && whole.rssBytes > 0)
            p.peakPerGeneration = true
            val own = p.generate(request).memory!!
            println("peak_memory $model (onnx): $own")
            if (own.peakSince == MemoryUsage.PeakSince.GENERATION_START) {
                assertTrue("$own", own.peakRssBytes >= own.rssBytes)
            } else {
                // the kernel refused the reset: the peak still counts from the process's start
                assertEquals(MemoryUsage.PeakSince.PROCESS_START, own.peakSince)
            }
        }
    }
}
