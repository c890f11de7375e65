package com.mobilediff.engine

import com.mobilediff.engine.TinyBundle.component
import org.json.JSONArray
import org.junit.Assert.assertArrayEquals
import org.junit.Assert.assertEquals
import org.junit.Assert.assertFalse
import org.junit.Assert.assertNull
import org.junit.Assert.assertTrue
import org.junit.Assume.assumeTrue
import org.junit.Rule
import org.junit.Test
import org.junit.rules.TemporaryFolder

/**
 * Format-2 CLIP BPE bundles whose text encoder takes the caption's padding mask (`attention_mask`) and whose denoiser
 * takes it as `encoder_attention_mask` (the Python reference: `mobilediff.engine.BundleTokenizer.ids_and_mask`,
 * `BundleRunner.encode_masked` and `_unet`): the mask rule, masked-ness read from the manifest, the manifest's input
 * order checked, and the mask fed to both graphs with classifier-free guidance's rows [uncond, cond], on [TinyBundle]
 * (`maskedText`) and on every fixture bundle that declares the mask, on both runtimes.
 */
class MaskedTextTest {
    @get:Rule
    val tmp = TemporaryFolder()

    private fun spec(pad: Int, eos: Int = EOS) = TokenizerSpec(emptyList(), 8, BOS, eos, pad)

    @Test
    fun maskIsOneOverBosThePromptsIdsAndEosWhenPaddingIsEos() {
        val spec = spec(pad = EOS)
        assertArrayEquals(intArrayOf(1, 1, 1, 1, 0, 0, 0, 0), ClipTokenizer.attentionMask(2, spec))
        // the empty prompt: BOS and EOS
        assertArrayEquals(intArrayOf(1, 1, 0, 0, 0, 0, 0, 0), ClipTokenizer.attentionMask(0, spec))
        // truncated to the length: every position
        assertArrayEquals(IntArray(8) { 1 }, ClipTokenizer.attentionMask(6, spec))
        assertArrayEquals(IntArray(8) { 1 }, ClipTokenizer.attentionMask(40, spec))
    }

    @Test
    fun maskDoesNotDependOnThePaddingId() {
        for (pad in intArrayOf(0, EOS)) {
            assertArrayEquals(intArrayOf(1, 1, 1, 1, 0, 0, 0, 0), ClipTokenizer.attentionMask(2, spec(pad = pad)))
            assertArrayEquals(intArrayOf(1, 1, 0, 0, 0, 0, 0, 0), ClipTokenizer.attentionMask(0, spec(pad = pad)))
            // a prompt of three ids, one of them an EOS or pad id spelled out ("x <|endoftext|> y"): all its own
            assertArrayEquals(intArrayOf(1, 1, 1, 1, 1, 0, 0, 0), ClipTokenizer.attentionMask(3, spec(pad = pad)))
        }
    }

    @Test
    fun theBundleTokenizerGivesIdsAndMaskForBothPaddings() {
        val eosPadded = Bundle.open(TinyBundle.write(tmp.newFolder(), maskedText = true)).tokenizer()
        val (ids, mask) = eosPadded.encodeWithMask("a photo")
        assertArrayEquals(eosPadded.encode("a photo"), ids)
        assertEquals(BOS, ids[0])
        assertEquals(List(5) { EOS }, ids.drop(3))  // two tokens, EOS, EOS padding
        assertArrayEquals(intArrayOf(1, 1, 1, 1, 0, 0, 0, 0), mask)
        val bangPadded = Bundle.open(TinyBundle.write(tmp.newFolder(), maskedText = true) { it.getJSONObject("tokenizer").put("pad_id", 0) }).tokenizer()
        val (ids2, mask2) = bangPadded.encodeWithMask("a photo")
        assertEquals(listOf(EOS, 0, 0, 0, 0), ids2.drop(3))
        assertArrayEquals(intArrayOf(1, 1, 1, 1, 0, 0, 0, 0), mask2)
        assertArrayEquals(IntArray(8) { 1 }, bangPadded.encodeWithMask("circle ".repeat(20)).second)
    }

    @Test
    fun maskedNessIsReadFromTheTextEncodersInputs() {
        val format1 = Bundle.open(TinyBundle.write(tmp.newFolder())).manifest
        assertFalse(format1.maskedText)
        val format2Unmasked = Bundle.open(TinyBundle.write(tmp.newFolder()) { m ->
            m.put("format_version", 2)
            m.getJSONObject("tokenizer").put("kind", "clip-bpe")
        }).manifest
        assertEquals(2, format2Unmasked.formatVersion)
        assertFalse(format2Unmasked.maskedText)
        val masked = Bundle.open(TinyBundle.write(tmp.newFolder(), maskedText = true)).manifest
        assertEquals(2, masked.formatVersion)
        assertTrue(masked.maskedText)
        // the input's name decides, not the format version
        val renamed = Bundle.open(TinyBundle.write(tmp.newFolder(), maskedText = true) { m ->
            m.component("text_encoder").getJSONArray("inputs").getJSONObject(1).put("name", "token_mask")
            m.component("unet").getJSONArray("inputs").remove(3)
        }).manifest
        assertFalse(renamed.maskedText)
    }

    @Test
    fun aMaskedBundleWhoseInputsAreOutOfOrderIsRefusedNamingTheField() {
        val swapped = expectBundleError {
            Bundle.open(TinyBundle.write(tmp.newFolder(), maskedText = true) { m ->
                val inputs = m.component("text_encoder").getJSONArray("inputs")
                m.component("text_encoder").put("inputs", JSONArray().put(inputs.get(1)).put(inputs.get(0)))
            })
        }
        assertTrue(swapped.problem, swapped.problem.contains("components.text_encoder.inputs") && swapped.problem.contains("input_ids then attention_mask"))
        val noUnetMask = expectBundleError {
            Bundle.open(TinyBundle.write(tmp.newFolder(), maskedText = true) { m -> m.component("unet").getJSONArray("inputs").remove(3) })
        }
        assertEquals(Manifest.MANIFEST, noUnetMask.file)
        assertTrue(noUnetMask.problem, noUnetMask.problem.contains("components.unet.inputs") && noUnetMask.problem.contains("encoder_attention_mask as input 4"))
        assertFalse(noUnetMask.message!!.contains('\n'))
    }

    @Test
    fun aFormatOneBundleFeedsTheIdsAlone() {
        TinyBundle.pipeline(TinyBundle.write(tmp.newFolder())).use { p ->
            assertNull(p.textInputs("a photo").second)
            val calls = Calls()
            p.generate(GenerationRequest("a photo", 0, guidance = 2.0), calls)
            assertEquals(listOf(1, 1), calls.of("text_encoder").map { it.size })
            assertTrue(calls.of("unet").all { it.size == 3 })
        }
    }

    @Test
    fun theMaskIsFedToTheTextEncoderAndToTheDenoiserInGuidanceRowOrder() {
        val prompt = "a photo"
        TinyBundle.pipeline(TinyBundle.write(tmp.newFolder(), unetScale = 0f, maskedText = true)).use { p ->
            val (ids, mask) = p.textInputs(prompt)
            val uncondMask = p.textInputs("").second!!
            assertArrayEquals(intArrayOf(1, 1, 0, 0, 0, 0, 0, 0), uncondMask)
            val calls = Calls()
            val latent = FloatArray(48).also { out ->
                p.generate(GenerationRequest(prompt, 0, guidance = SCALE), object : GenerationListener by calls {
                    override fun onStep(step: Int, steps: Int, latent: FloatArray) { latent.copyInto(out) }
                })
            }
            // the text encoder: [ids, mask] as int32, for the prompt and for the unconditional prompt ""
            val text = calls.of("text_encoder")
            assertEquals(2, text.size)
            for (inputs in text) {
                assertEquals(2, inputs.size)
                assertArrayEquals(intArrayOf(1, 8), inputs[1].shape)
            }
            assertArrayEquals(ids, (text[0][0] as Tensor.I32).data)
            assertArrayEquals(mask, (text[0][1] as Tensor.I32).data)
            assertArrayEquals(uncondMask, (text[1][1] as Tensor.I32).data)
            // the tiny encoder echoes the mask: the graph received it
            val features = calls.outputsOf("text_encoder")
            assertArrayEquals(FloatArray(8) { mask!![it].toFloat() }, features[0], 0f)
            assertArrayEquals(FloatArray(8) { uncondMask[it].toFloat() }, features[1], 0f)
            // the denoiser: input 4 is the mask as float32, rows [uncond, cond], as the hidden states' rows
            val unet = calls.of("unet").single()
            assertEquals(4, unet.size)
            val fedMask = unet[3] as Tensor.F32
            assertArrayEquals(intArrayOf(2, 8), fedMask.shape)
            assertArrayEquals(FloatArray(16) { i -> (if (i < 8) uncondMask[i] else mask!![i - 8]).toFloat() }, fedMask.data, 0f)
            assertArrayEquals(fedMask.data, (unet[2] as Tensor.F32).data, 0f)
            // the guided output through the graph: uncond + scale * (cond - uncond) of each row's sums
            val nU = uncondMask.sum().toFloat()
            val nC = mask!!.sum().toFloat()
            val perRow = { n: Float -> n * TinyBundle.TEXT_MASK_WEIGHT + n * TinyBundle.HIDDEN_WEIGHT }
            val expected = perRow(nU) + SCALE.toFloat() * (perRow(nC) - perRow(nU))
            val swapped = perRow(nC) + SCALE.toFloat() * (perRow(nU) - perRow(nC))
            assertTrue("the row order must show in the image", kotlin.math.abs(expected - swapped) > 0.1f)
            for (v in latent) assertEquals(expected, v, 1e-6f)
        }
    }

    @Test
    fun withoutGuidanceOneRowOfMaskIsFed() {
        TinyBundle.pipeline(TinyBundle.write(tmp.newFolder(), unetScale = 0f, maskedText = true)).use { p ->
            val calls = Calls()
            p.generate(GenerationRequest("a photo", 0, guidance = 1.0), calls)
            assertEquals(1, calls.of("text_encoder").size)
            val fedMask = calls.of("unet").single()[3] as Tensor.F32
            assertArrayEquals(intArrayOf(1, 8), fedMask.shape)
            assertArrayEquals(FloatArray(8) { p.textInputs("a photo").second!![it].toFloat() }, fedMask.data, 0f)
        }
    }

    /**
     * Every fixture bundle whose text encoder declares `attention_mask` (the "dit" fixture: a PixArt transformer with a
     * CLIP text encoder), on each runtime it has: the text encoder gets [ids, mask] of the prompt and of "", and every
     * denoiser call the float mask rows [uncond, cond] at input 4. The images against Python's run in EndToEndTest.
     */
    @Test
    fun fixtureBundlesThatDeclareTheMaskAreFedIt() {
        Fixtures.require()
        val masked = Fixtures.models.filter { Bundle.open(Fixtures.bundle(it)).manifest.maskedText }
        assumeTrue("no fixture bundle declares attention_mask", masked.isNotEmpty())
        for (model in masked) {
            val bundle = Bundle.open(Fixtures.bundle(model))
            val m = bundle.manifest
            assertEquals(model, 2, m.formatVersion)
            assertEquals(model, Manifest.TEXT_INPUTS, m.component("text_encoder").inputs.map { it.name })
            assertEquals(model, Manifest.UNET_TEXT_MASK, m.component("unet").inputs[3].name)
            val prompt = Fixtures.referenceRecord(model, "onnx", 0)?.optString("prompt")?.ifEmpty { null } ?: EndToEndTest.PROMPT
            val plan = m.defaultSampling
            val steps = m.samplers.filter { it.name == plan.sampler }.minOf { it.steps }
            for (backend in Fixtures.backends(model)) {
                Pipeline(bundle, Backend.forTarget(backend)).use { p ->
                    val (ids, mask) = p.textInputs(prompt)
                    val uncond = p.textInputs(m.guidance.let { (it as Guidance.ClassifierFree).unconditionalPrompt }).second!!
                    assertTrue("$model: the prompt's mask has padding", mask!!.contains(0) && mask.first() == 1)
                    val calls = Calls()
                    p.generate(GenerationRequest(prompt, 0, steps = steps, guidance = maxOf(plan.guidance, 2.0)), calls)
                    val text = calls.of("text_encoder")
                    assertEquals("$model $backend", 2, text.size)
                    assertArrayEquals(ids, (text[0][0] as Tensor.I32).data)
                    assertArrayEquals(mask, (text[0][1] as Tensor.I32).data)
                    assertArrayEquals(uncond, (text[1][1] as Tensor.I32).data)
                    val rows = FloatArray(2 * mask.size) { i -> (if (i < mask.size) uncond[i] else mask[i - mask.size]).toFloat() }
                    val unet = calls.of("unet")
                    assertEquals("$model $backend", steps, unet.size)
                    for (inputs in unet) assertArrayEquals("$model $backend", rows, (inputs[3] as Tensor.F32).data, 0f)
                    println("masked_text $backend $model: mask ${mask.sum()} of ${mask.size} (uncond ${uncond.sum()}), $steps unet calls fed [uncond, cond]")
                }
            }
        }
    }

    /** Every component call in call order: its inputs, and its first output's values. */
    private class Calls : GenerationListener {
        private val calls = ArrayList<Triple<String, List<Tensor>, FloatArray>>()

        fun of(component: String) = calls.filter { it.first == component }.map { it.second }

        fun outputsOf(component: String) = calls.filter { it.first == component }.map { it.third }

        override fun onCall(component: String, inputs: List<Tensor>, outputs: List<Tensor.F32>, ms: Double) {
            calls.add(Triple(component, inputs, outputs[0].data.copyOf()))
        }
    }

    companion object {
        const val BOS = 49406
        const val EOS = 49407
        const val SCALE = 3.0
    }
}
