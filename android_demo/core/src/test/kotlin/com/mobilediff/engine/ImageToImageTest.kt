package com.mobilediff.engine

import com.mobilediff.verify.Comparison
import org.junit.Assert.assertEquals
import org.junit.Assert.assertTrue
import org.junit.Test
import java.io.File

/**
 * Image-to-image and inpainting on the JVM through the real runtimes against Python's `BundleRunner.generate` with
 * the same init image, mask, strength, plan and seed: every image reference of the fixtures (index.json rows with a
 * `mode`), each on its row's runtime (ONNX Runtime; ExecuTorch where the fixtures were made with it), the images
 * read from the fixture's PNG files as `engine.sh generate --init-image --mask` reads them. Bar: image PSNR >= 40 dB
 * (as EndToEndTest).
 */
class ImageToImageTest {
    private fun check(lowMemory: Boolean) {
        Fixtures.require()
        var ran = 0
        for (model in Fixtures.models) {
            val refs = Fixtures.imageReferences(model)
            if (refs.isEmpty()) continue
            val bundle = Bundle.open(Fixtures.bundle(model))
            val geometry = bundle.manifest.geometry
            for ((runtime, rows) in refs.groupBy { it.getString("runtime") }) Pipeline(bundle, Backend.forTarget(runtime), lowMemory = lowMemory).use { p ->
                for (ref in rows) {
                    val folder = File(Fixtures.root, model)
                    val request = GenerationRequest(
                        ref.getString("prompt"), ref.getLong("seed"), ref.getInt("steps"), ref.getString("sampler"), ref.getDouble("guidance"),
                        initImage = ImageInput.readInitImage(File(folder, ref.getString("init_image")), geometry),
                        mask = if (ref.isNull("mask")) null else ImageInput.readMask(File(folder, ref.getString("mask")), geometry),
                        strength = ref.getDouble("strength"),
                    )
                    val result = p.generate(request)
                    assertEquals(ref.getString("mode"), result.mode)
                    val raw = Safetensors.read(File(folder, ref.getString("raw"))).floats("image")
                    val c = Comparison.of(result.raw, raw)
                    val what = "$runtime $model ${ref.getString("mode")} ${ref.getString("sampler")}:${ref.getInt("steps")} strength ${ref.getDouble("strength")} seed ${ref.getLong("seed")}"
                    println("image_to_image${if (lowMemory) " (low memory)" else ""} $what: ${result.stepsRun} steps, psnr ${c.psnrDb ?: "inf"} dB, max abs ${c.maxAbsError}")
                    assertTrue("$what: ${c.psnrDb} dB", c.within(minPsnr = 40.0))
                    ran++
                }
            }
        }
        assertTrue("the fixtures have no image-to-image references (python -m mobilediff.fixtures writes them)", ran > 0)
    }

    @Test
    fun onnxRuntimeMatchesPython() = check(lowMemory = false)

    @Test
    fun lowMemoryMatchesPython() = check(lowMemory = true)
}
