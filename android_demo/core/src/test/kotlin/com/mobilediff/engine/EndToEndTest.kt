package com.mobilediff.engine

import com.mobilediff.verify.Comparison
import org.junit.Assert.assertNotNull
import org.junit.Assert.assertTrue
import org.junit.Test

/**
 * Text to image on the JVM through the real runtimes against Python's `mobilediff generate --bundle` at the same
 * seed: every fixture model that runs text-to-image (default DDIM-50 + CFG, progressive 4-step, LCM, and the format-2
 * "dit" transformer whose text encoder and denoiser take the caption's padding mask), seeds 0 and 1, default plan,
 * ONNX Runtime and (where the bundle has it) ExecuTorch. Bar: image PSNR >= 40 dB.
 */
class EndToEndTest {
    private fun check(backendName: String) {
        Fixtures.require()
        var ran = 0
        for (model in Fixtures.textToImage) {  // an inpainting UNet's bundle has no text-to-image references
            if (backendName !in Fixtures.backends(model)) continue
            val bundle = Bundle.open(Fixtures.bundle(model))
            Pipeline(bundle, Backend.forTarget(backendName)).use { pipeline ->
                // what ran: the runtime's version and the graphs' file form (.ort where the bundle has it, on ONNX Runtime)
                val runtime = "${pipeline.backend.runtimeVersion ?: "?"}, ." + bundle.componentFile("unet", backendName).first.extension
                for (seed in listOf(0L, 1L)) {
                    val ref = Fixtures.referenceImage(model, backendName, seed)
                    assertNotNull("$model: no $backendName reference for seed $seed", ref)
                    val prompt = Fixtures.referenceRecord(model, backendName, seed)?.optString("prompt")?.ifEmpty { null } ?: PROMPT
                    val result = pipeline.generate(GenerationRequest(prompt, seed))
                    val c = Comparison.of(result.raw, ref!!)
                    println("end_to_end $backendName ($runtime) $model seed $seed (${result.plan}): psnr ${c.psnrDb ?: "inf"} dB, " +
                        "max abs ${c.maxAbsError}, ${"%.0f".format(result.totalMs)} ms")
                    assertTrue("$model seed $seed on $backendName: ${c.psnrDb} dB", c.within(minPsnr = 40.0))
                    ran++
                }
            }
        }
        assertTrue("no fixture model has $backendName files", ran > 0)
    }

    @Test
    fun onnxRuntimeMatchesPython() = check("onnx")

    @Test
    fun executorchMatchesPython() = check("executorch")

    companion object {
        /** The prompt of a reference image whose record does not name one. */
        val PROMPT: String = System.getProperty("mobilediff.prompt") ?: "a red circle at the top left on a blue background"
    }
}
