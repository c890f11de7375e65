package com.mobilediff.engine

import com.mobilediff.engine.TinyBundle.component
import org.json.JSONArray
import org.json.JSONObject
import org.junit.Assert.assertEquals
import org.junit.Assert.assertFalse
import org.junit.Assert.assertTrue
import org.junit.Rule
import org.junit.Test
import org.junit.rules.TemporaryFolder
import java.io.File

/**
 * Every graph's inputs and outputs are checked against the manifest when it is loaded, before the first call
 * (mobilediff.bundle.check_graph_io): a graph of another component, a renamed input, a wrong size is one
 * BundleError naming the file, the component and the first difference. On the tiny bundle (no fixtures needed).
 */
class GraphIoTest {
    @get:Rule
    val tmp = TemporaryFolder()

    /** The BundleError that [block] throws, its message one line. */
    private fun expectError(block: () -> Unit): BundleError =
        expectBundleError(block).also { assertFalse("one line: ${it.message}", it.message!!.contains('\n')) }

    /** Writes a tiny bundle whose manifest [edit] changes; the error that loading it on ONNX Runtime gives. */
    private fun loadError(edit: (JSONObject) -> Unit): BundleError {
        val dir = TinyBundle.write(tmp.newFolder("bundle"), edit = edit)
        return expectError { TinyBundle.pipeline(dir) }
    }

    private fun spec(vararg inputs: TensorSpec) =
        ComponentSpec("unet", inputs.toList(), listOf(TensorSpec("out_sample", "float32", intArrayOf(2, 4, 8, 8), listOf("batch", "4", "8", "8"))), 2, emptyList())

    private val sample = TensorSpec("sample", "float32", intArrayOf(2, 4, 8, 8), listOf("batch", "4", "8", "8"))
    private val timestep = TensorSpec("timestep", "float32", intArrayOf(2), listOf("batch"))
    private val out = listOf(GraphTensor("out_sample", listOf(null, 4L, 8L, 8L), "float32"))

    @Test
    fun checkGivesPythonsMessages() {
        val s = spec(sample, timestep)
        checkGraphIo("unet", "unet/model.onnx", s, listOf(GraphTensor("sample", listOf(null, 4L, 8L, 8L), "float32"), GraphTensor("timestep", listOf(null), "float32")), out)
        fun message(inputs: List<GraphTensor>) = expectError { checkGraphIo("unet", "unet/model.onnx", s, inputs, out) }.message
        assertEquals(
            "unet/model.onnx: declares inputs (latent_sample) but the manifest's unet takes (sample, timestep): a graph of another component?",
            message(listOf(GraphTensor("latent_sample", listOf(null, 4L, 8L, 8L), "float32"))),
        )
        assertEquals(
            "unet/model.onnx: has 1 input but the manifest's unet takes 2 (sample, timestep): a graph of another component?",
            message(listOf(GraphTensor(null, listOf(2L, 4L, 8L, 8L), "float32"))),
        )
        assertEquals(
            "unet/model.onnx: input sample is int32 but the manifest's unet declares float32",
            message(listOf(GraphTensor("sample", listOf(null, 4L, 8L, 8L), "int32"), GraphTensor("timestep", listOf(null), "float32"))),
        )
        assertEquals(
            "unet/model.onnx: input timestep has rank 2 but the manifest's unet declares rank 1 (batch=2)",
            message(listOf(GraphTensor("sample", listOf(null, 4L, 8L, 8L), "float32"), GraphTensor("timestep", listOf(null, 1L), "float32"))),
        )
        assertEquals(
            "unet/model.onnx: input 0 (sample in the manifest) has shape (2, 4, 16, 16) but the manifest's unet declares (batch=2, 4, 8, 8)",
            message(listOf(GraphTensor(null, listOf(2L, 4L, 16L, 16L), "float32"), GraphTensor(null, listOf(2L), "float32"))),
        )
    }

    @Test
    fun tinyBundleLoadsAndGenerates() {
        val dir = TinyBundle.write(tmp.newFolder("bundle"))
        TinyBundle.pipeline(dir).use { p ->
            val r = p.generate(GenerationRequest("a red circle", 0))
            val noise = TorchGenerator(0).normal(intArrayOf(1, 3, 4, 4))
            // image = decoder(unet(noise)) = noise / 2, (H, W, 3) from (3, H, W)
            assertEquals(ImageConversion.toHwc(FloatArray(48) { noise[it] * 0.5f }, 4, 4).toList(), r.raw.toList())
        }
    }

    @Test
    fun graphOfAnotherComponentIsRefused() {
        // the unet entry names the decoder's graph, with its true sha256: only the graph check can tell
        val e = loadError { m ->
            m.component("unet").put("files", m.component("vae_decoder").getJSONArray("files"))
        }
        assertEquals("vae_decoder/model.onnx", e.file)
        assertEquals(
            "declares inputs (latent_sample) but the manifest's unet takes (sample, timestep, encoder_hidden_states): a graph of another component?",
            e.problem,
        )
    }

    @Test
    fun renamedInputIsRefused() {
        val e = loadError { m ->
            m.component("vae_decoder").getJSONArray("inputs").getJSONObject(0).put("name", "latents")
        }
        assertEquals("vae_decoder/model.onnx", e.file)
        assertTrue(e.problem, e.problem.startsWith("declares inputs (latent_sample) but the manifest's vae_decoder takes (latents)"))
    }

    @Test
    fun wrongLatentSizeIsRefused() {
        val e = loadError { m ->
            m.component("unet").getJSONArray("inputs").getJSONObject(0)
                .put("shape", JSONArray(listOf<Any>("batch", 3, 8, 8))).put("static_shape", JSONArray(listOf(1, 3, 8, 8)))
        }
        assertEquals("unet/model.onnx", e.file)
        assertEquals("input sample has shape (?, 3, 4, 4) but the manifest's unet declares (batch=1, 3, 8, 8)", e.problem)
    }

    @Test
    fun wrongDtypeIsRefused() {
        val e = loadError { m ->
            m.component("text_encoder").getJSONArray("inputs").getJSONObject(0).put("dtype", "float32")
        }
        assertEquals("text_encoder/model.onnx", e.file)
        assertEquals("input input_ids is int32 but the manifest's text_encoder declares float32", e.problem)
    }

    @Test
    fun unreadableGraphIsOneLine() {
        val e = loadError { m ->
            val f = File(tmp.root, "bundle/unet/model.onnx")
            f.writeBytes(ByteArray(64) { 1 })
            m.component("unet").getJSONArray("files").getJSONObject(0).put("sha256", Bundle.sha256(f))
        }
        assertEquals("unet/model.onnx", e.file)
        assertTrue(e.problem, e.problem.startsWith("ONNX Runtime cannot load it"))
    }

    // --- ExecuTorch: the program's declared inputs and outputs (no names), read from the .pte itself ---

    @Test
    fun executorchProgramIoIsRead() {
        val (inputs, outputs) = ExecuTorchProgram.methodIo(File(TinyBundle.programs, "unet.pte"), "unet.pte")
        assertEquals(listOf(listOf(1L, 3L, 4L, 4L), listOf(1L), listOf(1L, 8L, 1L)), inputs.map { it.shape })
        assertEquals(listOf("float32", "float32", "float32"), inputs.map { it.dtype })
        assertTrue(inputs.all { it.name == null })
        assertEquals(listOf(listOf(1L, 3L, 4L, 4L)), outputs.map { it.shape })
        val (ids, _) = ExecuTorchProgram.methodIo(File(TinyBundle.programs, "text_encoder.pte"), "text_encoder.pte")
        assertEquals("int32", ids.single().dtype)
        val e = expectError { ExecuTorchProgram.methodIo(File(TinyBundle.programs, "unet.pte"), "unet.pte", method = "backward") }
        assertEquals("has no method 'backward' (it has: forward)", e.problem)
    }

    @Test
    fun notAnExecutorchProgramIsNamed() {
        val f = tmp.newFile("model.pte").apply { writeText("not a program") }
        assertEquals("is not an ExecuTorch program (no ET file identifier)", expectError { ExecuTorchProgram.methodIo(f, "x.pte") }.problem)
        val truncated = tmp.newFile("cut.pte").apply { writeBytes(File(TinyBundle.programs, "unet.pte").readBytes().copyOf(40)) }
        assertTrue(expectError { ExecuTorchProgram.methodIo(truncated, "cut.pte") }.problem.contains("not a valid ExecuTorch program"))
    }

    @Test
    fun executorchGraphOfAnotherComponentIsRefusedBeforeTheRuntime() {
        val dir = TinyBundle.write(tmp.newFolder("bundle"), executorch = true) { m ->
            m.component("text_encoder").put("files", m.component("vae_decoder").getJSONArray("files"))
        }
        val e = expectError { TinyBundle.pipeline(dir, ExecuTorchBackend()) }
        assertEquals("vae_decoder_executorch_fp32.pte", e.file)
        assertEquals("input 0 (input_ids in the manifest) is float32 but the manifest's text_encoder declares int32", e.problem)
        val sized = TinyBundle.write(tmp.newFolder("sized"), executorch = true) { m ->
            m.component("unet").getJSONArray("outputs").getJSONObject(0)
                .put("shape", JSONArray(listOf<Any>("batch", 4, 4, 4))).put("static_shape", JSONArray(listOf(1, 4, 4, 4)))
        }
        assertEquals(
            "output 0 (out_sample in the manifest) has shape (1, 3, 4, 4) but the manifest's unet declares (batch=1, 4, 4, 4)",
            expectError { TinyBundle.pipeline(sized, ExecuTorchBackend()) }.problem,
        )
    }

    @Test
    fun executorchTinyBundleMatchesOnnx() {
        val dir = TinyBundle.write(tmp.newFolder("bundle"), executorch = true)
        val request = GenerationRequest("a red circle", 3)
        val onnx = TinyBundle.pipeline(dir).use { it.generate(request) }
        val et = TinyBundle.pipeline(dir, ExecuTorchBackend()).use { it.generate(request) }
        assertEquals(onnx.raw.toList(), et.raw.toList())
    }
}
