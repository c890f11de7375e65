package com.mobilediff.engine

import org.json.JSONArray
import org.json.JSONObject
import org.junit.Assert.fail
import java.io.ByteArrayOutputStream
import java.io.File
import java.nio.ByteBuffer
import java.nio.ByteOrder

/**
 * A complete bundle small enough to write in a test, so that the engine's checks run without the fixtures: three
 * ONNX graphs of a few hundred bytes written here ([Onnx]), the repository's CLIP tokenizer files, one `ddim:1`
 * table, geometry 4 x 4 with a (1, 3, 4, 4) latent and an 8-token text. The graphs:
 *
 *     text_encoder  input_ids (batch, 8) int32 -> last_hidden_state (batch, 8, 1) float32, zeros
 *     unet          sample (batch, 3, 4, 4), timestep (batch), encoder_hidden_states (batch, 8, 1) -> out_sample = sample * [unetScale]
 *     vae_decoder   latent_sample (batch, 3, 4, 4) -> sample = latent_sample * [decoderScale]
 *
 * so the image is `unetScale * decoderScale * noise` (clamped). With [executorch], the bundle also lists the same three
 * functions as ExecuTorch programs (android_demo/core/src/test/resources/executorch, made by make_programs.py),
 * exported with a static batch of 1. [edit] changes the manifest after every sha256 is recorded in it.
 *
 * With [imageModes] it is an image-to-image and inpainting bundle (`export --image-modes`): the `image` record (the
 * encoder posterior [posterior]), `vae_scale_factor` 1 and the fourth graph
 *
 *     vae_encoder   sample (batch, 3, 4, 4) -> latent_mean = sample / 2, latent_std = 0.25 everywhere
 *
 * and the table's add_noise row [[ADD_NOISE_IMAGE], [ADD_NOISE_NOISE]].
 *
 * With [inpaintingUnet] as well, its denoiser is an inpainting UNet (`image.denoiser: "inpainting"`, modes `inpaint`
 * alone) whose graph takes two more inputs:
 *
 *     unet          ..., mask (batch, 1, 4, 4), masked_image_latents (batch, 3, 4, 4)
 *                   -> out_sample = sample * [unetScale] + mask * [MASK_WEIGHT] + masked_image_latents * [MASKED_WEIGHT]
 *
 * With [maskedText] it is a format-2 bundle (`tokenizer.kind` "clip-bpe") whose text encoder and denoiser take the
 * caption's padding mask, as a transformer pipeline's export declares them:
 *
 *     text_encoder  input_ids (batch, 8) int32, attention_mask (batch, 8) int32
 *                   -> last_hidden_state (batch, 8, 1) = attention_mask as float (the ids times zero)
 *     unet          sample, timestep, encoder_hidden_states (batch, 8, 1), encoder_attention_mask (batch, 8) float32
 *                   -> out_sample = sample * [unetScale] + sum(encoder_attention_mask) * [TEXT_MASK_WEIGHT]
 *                                   + sum(encoder_hidden_states) * [HIDDEN_WEIGHT], each sum over its own row
 */
object TinyBundle {
    const val MAX_LENGTH = 8

    fun write(
        dir: File,
        unetScale: Float = 0.5f,
        decoderScale: Float = 1f,
        executorch: Boolean = false,
        imageModes: Boolean = false,
        posterior: String = ImageModes.GAUSSIAN,
        inpaintingUnet: Boolean = false,
        maskedText: Boolean = false,
        edit: (JSONObject) -> Unit = {},
    ): File {
        require(!inpaintingUnet || (imageModes && !executorch)) { "an inpainting UNet is an ONNX bundle with image modes" }
        require(!maskedText || (!executorch && !imageModes)) { "a masked-text bundle is an ONNX text-to-image bundle" }
        dir.mkdirs()
        val tokenizer = File(repo, "mobilediff/assets/default_model/tokenizer")
        val tokenizerFiles = listOf("vocab.json", "merges.txt").map { name ->
            File(tokenizer, name).copyTo(File(dir, "tokenizer/$name"), overwrite = true)
            "tokenizer/$name"
        }
        val graphs = linkedMapOf(
            "text_encoder" to Onnx.model(
                inputs = listOf(Onnx.Io("input_ids", Onnx.INT32, listOf("batch", MAX_LENGTH))),
                outputs = listOf(Onnx.Io("last_hidden_state", Onnx.FLOAT, listOf("batch", MAX_LENGTH, 1))),
                nodes = listOf(
                    Onnx.Node("Cast", listOf("input_ids"), listOf("ids"), intAttributes = mapOf("to" to Onnx.FLOAT.toLong())),
                    Onnx.Node("Mul", listOf("ids", "zero"), listOf("zeros")),
                    Onnx.Node("Unsqueeze", listOf("zeros", "axes"), listOf("last_hidden_state")),
                ),
                floats = mapOf("zero" to 0f),
                int64Vectors = mapOf("axes" to longArrayOf(2)),
            ),
            "unet" to Onnx.model(
                inputs = listOf(
                    Onnx.Io("sample", Onnx.FLOAT, listOf("batch", 3, 4, 4)),
                    Onnx.Io("timestep", Onnx.FLOAT, listOf("batch")),
                    Onnx.Io("encoder_hidden_states", Onnx.FLOAT, listOf("batch", MAX_LENGTH, 1)),
                ),
                outputs = listOf(Onnx.Io("out_sample", Onnx.FLOAT, listOf("batch", 3, 4, 4))),
                nodes = listOf(Onnx.Node("Mul", listOf("sample", "scale"), listOf("out_sample"))),
                floats = mapOf("scale" to unetScale),
            ),
            "vae_decoder" to Onnx.model(
                inputs = listOf(Onnx.Io("latent_sample", Onnx.FLOAT, listOf("batch", 3, 4, 4))),
                outputs = listOf(Onnx.Io("sample", Onnx.FLOAT, listOf("batch", 3, 4, 4))),
                nodes = listOf(Onnx.Node("Mul", listOf("latent_sample", "scale"), listOf("sample"))),
                floats = mapOf("scale" to decoderScale),
            ),
        )
        if (inpaintingUnet) {
            graphs["unet"] = Onnx.model(
                inputs = listOf(
                    Onnx.Io("sample", Onnx.FLOAT, listOf("batch", 3, 4, 4)),
                    Onnx.Io("timestep", Onnx.FLOAT, listOf("batch")),
                    Onnx.Io("encoder_hidden_states", Onnx.FLOAT, listOf("batch", MAX_LENGTH, 1)),
                    Onnx.Io("mask", Onnx.FLOAT, listOf("batch", 1, 4, 4)),
                    Onnx.Io("masked_image_latents", Onnx.FLOAT, listOf("batch", 3, 4, 4)),
                ),
                outputs = listOf(Onnx.Io("out_sample", Onnx.FLOAT, listOf("batch", 3, 4, 4))),
                nodes = listOf(
                    Onnx.Node("Mul", listOf("sample", "scale"), listOf("scaled")),
                    Onnx.Node("Mul", listOf("mask", "mask_weight"), listOf("weighted_mask")),
                    Onnx.Node("Mul", listOf("masked_image_latents", "masked_weight"), listOf("weighted_masked")),
                    Onnx.Node("Add", listOf("scaled", "weighted_mask"), listOf("with_mask")),
                    Onnx.Node("Add", listOf("with_mask", "weighted_masked"), listOf("out_sample")),
                ),
                floats = mapOf("scale" to unetScale, "mask_weight" to MASK_WEIGHT, "masked_weight" to MASKED_WEIGHT),
            )
        }
        if (maskedText) {
            graphs["text_encoder"] = Onnx.model(
                inputs = listOf(
                    Onnx.Io("input_ids", Onnx.INT32, listOf("batch", MAX_LENGTH)),
                    Onnx.Io("attention_mask", Onnx.INT32, listOf("batch", MAX_LENGTH)),
                ),
                outputs = listOf(Onnx.Io("last_hidden_state", Onnx.FLOAT, listOf("batch", MAX_LENGTH, 1))),
                nodes = listOf(
                    Onnx.Node("Cast", listOf("input_ids"), listOf("ids"), intAttributes = mapOf("to" to Onnx.FLOAT.toLong())),
                    Onnx.Node("Mul", listOf("ids", "zero"), listOf("zeros")),
                    Onnx.Node("Cast", listOf("attention_mask"), listOf("mask"), intAttributes = mapOf("to" to Onnx.FLOAT.toLong())),
                    Onnx.Node("Add", listOf("mask", "zeros"), listOf("features")),
                    Onnx.Node("Unsqueeze", listOf("features", "axes"), listOf("last_hidden_state")),
                ),
                floats = mapOf("zero" to 0f),
                int64Vectors = mapOf("axes" to longArrayOf(2)),
            )
            graphs["unet"] = Onnx.model(
                inputs = listOf(
                    Onnx.Io("sample", Onnx.FLOAT, listOf("batch", 3, 4, 4)),
                    Onnx.Io("timestep", Onnx.FLOAT, listOf("batch")),
                    Onnx.Io("encoder_hidden_states", Onnx.FLOAT, listOf("batch", MAX_LENGTH, 1)),
                    Onnx.Io("encoder_attention_mask", Onnx.FLOAT, listOf("batch", MAX_LENGTH)),
                ),
                outputs = listOf(Onnx.Io("out_sample", Onnx.FLOAT, listOf("batch", 3, 4, 4))),
                nodes = listOf(
                    Onnx.Node("Mul", listOf("sample", "scale"), listOf("scaled")),
                    // (batch, 8) -> (batch, 1) -> (batch, 1, 1, 1)
                    Onnx.Node("ReduceSum", listOf("encoder_attention_mask", "axis1"), listOf("mask_sum")),
                    Onnx.Node("Unsqueeze", listOf("mask_sum", "axes23"), listOf("mask_sum4")),
                    Onnx.Node("Mul", listOf("mask_sum4", "mask_weight"), listOf("weighted_mask")),
                    // (batch, 8, 1) -> (batch, 1, 1) -> (batch, 1, 1, 1)
                    Onnx.Node("ReduceSum", listOf("encoder_hidden_states", "axis1"), listOf("hidden_sum")),
                    Onnx.Node("Unsqueeze", listOf("hidden_sum", "axes3"), listOf("hidden_sum4")),
                    Onnx.Node("Mul", listOf("hidden_sum4", "hidden_weight"), listOf("weighted_hidden")),
                    Onnx.Node("Add", listOf("scaled", "weighted_mask"), listOf("with_mask")),
                    Onnx.Node("Add", listOf("with_mask", "weighted_hidden"), listOf("out_sample")),
                ),
                floats = mapOf("scale" to unetScale, "mask_weight" to TEXT_MASK_WEIGHT, "hidden_weight" to HIDDEN_WEIGHT),
                int64Vectors = mapOf("axis1" to longArrayOf(1), "axes23" to longArrayOf(2, 3), "axes3" to longArrayOf(3)),
            )
        }
        if (imageModes) {
            graphs[Manifest.IMAGE_ENCODER] = Onnx.model(
                inputs = listOf(Onnx.Io("sample", Onnx.FLOAT, listOf("batch", 3, 4, 4))),
                outputs = listOf(Onnx.Io("latent_mean", Onnx.FLOAT, listOf("batch", 3, 4, 4)), Onnx.Io("latent_std", Onnx.FLOAT, listOf("batch", 3, 4, 4))),
                nodes = listOf(
                    Onnx.Node("Mul", listOf("sample", "half"), listOf("latent_mean")),
                    Onnx.Node("Mul", listOf("sample", "zero"), listOf("zeros")),
                    Onnx.Node("Add", listOf("zeros", "quarter"), listOf("latent_std")),
                ),
                floats = mapOf("half" to 0.5f, "zero" to 0f, "quarter" to ENCODER_STD),
            )
        }
        fun fileEntry(target: String, path: String, dynamic: Boolean): JSONObject {
            val f = File(dir, path)
            return JSONObject().put("target", target).put("precision", "fp32").put("path", path)
                .put("sha256", Bundle.sha256(f)).put("size_bytes", f.length()).put("external_data", JSONArray())
                .put("export", JSONObject().put("dynamic_dims", JSONArray(if (dynamic) listOf("batch") else listOf())))
        }
        fun io(name: String, dtype: String, vararg dims: Int) = JSONObject().put("name", name).put("dtype", dtype)
            .put("shape", JSONArray(listOf<Any>("batch") + dims.drop(1))).put("static_shape", JSONArray(dims.toList()))
        val ios = mapOf(
            "text_encoder" to (listOf(io("input_ids", "int32", 1, MAX_LENGTH)) +
                (if (maskedText) listOf(io("attention_mask", "int32", 1, MAX_LENGTH)) else emptyList())
                to listOf(io("last_hidden_state", "float32", 1, MAX_LENGTH, 1))),
            "unet" to (listOf(io("sample", "float32", 1, 3, 4, 4), io("timestep", "float32", 1), io("encoder_hidden_states", "float32", 1, MAX_LENGTH, 1)) +
                (if (maskedText) listOf(io("encoder_attention_mask", "float32", 1, MAX_LENGTH)) else emptyList()) +
                (if (inpaintingUnet) listOf(io("mask", "float32", 1, 1, 4, 4), io("masked_image_latents", "float32", 1, 3, 4, 4)) else emptyList())
                to listOf(io("out_sample", "float32", 1, 3, 4, 4))),
            "vae_decoder" to (listOf(io("latent_sample", "float32", 1, 3, 4, 4)) to listOf(io("sample", "float32", 1, 3, 4, 4))),
            Manifest.IMAGE_ENCODER to (listOf(io("sample", "float32", 1, 3, 4, 4))
                to listOf(io("latent_mean", "float32", 1, 3, 4, 4), io("latent_std", "float32", 1, 3, 4, 4))),
        )
        val components = JSONObject()
        for ((name, graph) in graphs) {
            val path = "$name/model.onnx"
            File(dir, path).apply { parentFile.mkdirs() }.writeBytes(graph)
            val files = JSONArray().put(fileEntry("onnx", path, dynamic = true))
            if (executorch) {
                val pte = "${name}_executorch_fp32.pte"
                File(programs, "$name.pte").copyTo(File(dir, pte), overwrite = true)
                files.put(fileEntry("executorch", pte, dynamic = false))
            }
            val (inputs, outputs) = ios.getValue(name)
            components.put(name, JSONObject().put("inputs", JSONArray(inputs)).put("outputs", JSONArray(outputs))
                .put("dims", JSONObject().put("batch", 1)).put("files", files))
        }
        val manifest = JSONObject()
            .put("format", Manifest.FORMAT).put("format_version", 1)
            .put("geometry", JSONObject().put("height", 4).put("width", 4).put("latent_channels", 3)
                .put("latent_height", 4).put("latent_width", 4).put("scaling_factor", 1.0).put("shift_factor", 0.0))
            .put("tokenizer", JSONObject().put("files", JSONArray(tokenizerFiles)).put("max_length", MAX_LENGTH)
                .put("bos_id", 49406).put("eos_id", 49407).put("pad_id", 49407)
                .put("file_sha256", JSONObject().apply { for (f in tokenizerFiles) put(f, Bundle.sha256(File(dir, f))) }))
            .put("components", components)
            .put("samplers", JSONArray().put(JSONObject().put("name", "ddim").put("steps", 1).put("init_noise_sigma", 1.0)
                .put("timesteps", JSONArray(listOf(999.0))).put("input_scale", JSONArray(listOf(1.0)))
                .put("latent_coef", JSONArray().put(JSONArray(listOf(0.0)))).put("output_coef", JSONArray().put(JSONArray(listOf(1.0))))
                .put("noise_coef", JSONArray(listOf(0.0)))))
            .put("guidance", JSONObject().put("type", "classifier_free").put("default_scale", 1.0))
            .put("model", JSONObject().put("role", "teacher"))
            .put("default_sampling", JSONObject().put("sampler", "ddim").put("steps", 1).put("guidance", 1.0))
        if (imageModes) {
            manifest.getJSONObject("geometry").put("vae_scale_factor", 1)
            manifest.put("image", JSONObject().put("modes", JSONArray(ImageModes.MODES)).put("encoder_posterior", posterior))
            if (inpaintingUnet) {
                manifest.getJSONObject("image").put("modes", JSONArray(listOf(ImageModes.INPAINT))).put("denoiser", ImageModes.INPAINTING)
            }
            manifest.getJSONArray("samplers").getJSONObject(0)
                .put("add_noise", JSONArray().put(JSONArray(listOf(ADD_NOISE_IMAGE, ADD_NOISE_NOISE))))
                .put("starts", JSONObject())
        }
        if (maskedText) {
            manifest.put("format_version", 2)
            manifest.getJSONObject("tokenizer").put("kind", TokenizerSpec.KIND_CLIP_BPE)
        }
        edit(manifest)
        File(dir, Manifest.MANIFEST).writeText(manifest.toString(2))
        return dir
    }

    /** The tiny encoder's posterior std, and the add_noise row of the image-modes table. */
    const val ENCODER_STD = 0.25f
    const val ADD_NOISE_IMAGE = 0.8
    const val ADD_NOISE_NOISE = 0.6

    /** The inpainting UNet's weights of its mask and masked-image-latent inputs. */
    const val MASK_WEIGHT = 0.125f
    const val MASKED_WEIGHT = 0.25f

    /** The masked-text denoiser's weights of its mask's sum and its hidden states' sum ([write]'s `maskedText`). */
    const val TEXT_MASK_WEIGHT = 0.0625f
    const val HIDDEN_WEIGHT = 0.03125f

    /** A pipeline on the bundle in [dir], on ONNX Runtime unless another [backend] is given. */
    fun pipeline(dir: File, backend: Backend = OnnxRuntimeBackend()): Pipeline = Pipeline(Bundle.open(dir), backend)

    /** The manifest object of [component] (for [write]'s edit). */
    fun JSONObject.component(component: String): JSONObject = getJSONObject("components").getJSONObject(component)

    /** The repository: the system property `mobilediff.repo` (test.sh sets it), else the first folder above holding tests/contract. */
    val repo: File by lazy {
        System.getProperty("mobilediff.repo")?.let { File(it).absoluteFile }
            ?: generateSequence(File(System.getProperty("user.dir")).absoluteFile) { it.parentFile }
                .first { File(it, "tests/contract/cases.json").isFile }
    }

    /** The committed ExecuTorch programs of [write]'s `executorch` files. */
    val programs: File get() = File(repo, "android_demo/core/src/test/resources/executorch")
}

/** Runs [block] and returns the [T] it throws (any other exception passes through); the test fails when it throws none. */
inline fun <reified T : Throwable> expectThrown(block: () -> Unit): T {
    try {
        block()
    } catch (e: Throwable) {
        if (e is T) return e
        throw e
    }
    val name = T::class.java.simpleName
    fail("expected ${if (name.first() in "AEIOU") "an" else "a"} $name")
    throw AssertionError()
}

/** The BundleError that [block] throws ([expectThrown]). */
fun expectBundleError(block: () -> Unit): BundleError = expectThrown(block)

/**
 * ONNX models written as protobuf by hand, enough for the tests' graphs: typed inputs and outputs (a dimension is a
 * size or a named dynamic dimension), nodes with integer attributes, float scalar and int64 vector initializers.
 * Field numbers are onnx.proto's.
 */
object Onnx {
    const val FLOAT = 1
    const val INT32 = 6
    const val INT64 = 7

    /** A graph input or output: [dims] holds an Int per fixed dimension, a String per named one. */
    class Io(val name: String, val elemType: Int, val dims: List<Any>)

    class Node(val op: String, val inputs: List<String>, val outputs: List<String>, val intAttributes: Map<String, Long> = emptyMap())

    fun model(
        inputs: List<Io>,
        outputs: List<Io>,
        nodes: List<Node>,
        floats: Map<String, Float> = emptyMap(),
        int64Vectors: Map<String, LongArray> = emptyMap(),
        opset: Long = 13,
    ): ByteArray = Pb().apply {
        int(1, 8) // ir_version
        str(2, "mobilediff-tests") // producer_name
        msg(7) { // graph
            for ((i, n) in nodes.withIndex()) msg(1) {
                n.inputs.forEach { str(1, it) }
                n.outputs.forEach { str(2, it) }
                str(3, "${n.op}_$i")
                str(4, n.op)
                for ((name, value) in n.intAttributes) msg(5) { str(1, name); int(3, value); int(20, 2) } // type INT
            }
            str(2, "tiny")
            for ((name, value) in floats) msg(5) {
                int(2, FLOAT.toLong())
                str(8, name)
                bytes(9, ByteBuffer.allocate(4).order(ByteOrder.LITTLE_ENDIAN).putFloat(value).array())
            }
            for ((name, values) in int64Vectors) msg(5) {
                int(1, values.size.toLong())
                int(2, INT64.toLong())
                str(8, name)
                bytes(9, ByteBuffer.allocate(8 * values.size).order(ByteOrder.LITTLE_ENDIAN).apply { values.forEach { putLong(it) } }.array())
            }
            inputs.forEach { valueInfo(11, it) }
            outputs.forEach { valueInfo(12, it) }
        }
        msg(8) { int(2, opset) } // opset_import (default domain)
    }.bytes()

    private fun Pb.valueInfo(field: Int, io: Io) = msg(field) {
        str(1, io.name)
        msg(2) { // TypeProto
            msg(1) { // tensor_type
                int(1, io.elemType.toLong())
                msg(2) { for (d in io.dims) msg(1) { if (d is Int) int(1, d.toLong()) else str(2, d.toString()) } }
            }
        }
    }

    /** Protobuf's wire format: varints and length-delimited fields. */
    private class Pb {
        private val out = ByteArrayOutputStream()

        fun bytes(): ByteArray = out.toByteArray()

        private fun varint(value: Long) {
            var v = value
            while (v and 0x7fL.inv() != 0L) {
                out.write(((v and 0x7f) or 0x80).toInt())
                v = v ushr 7
            }
            out.write(v.toInt())
        }

        fun int(field: Int, value: Long) {
            varint((field shl 3).toLong())
            varint(value)
        }

        fun bytes(field: Int, value: ByteArray) {
            varint(((field shl 3) or 2).toLong())
            varint(value.size.toLong())
            out.write(value)
        }

        fun str(field: Int, value: String) = bytes(field, value.toByteArray(Charsets.UTF_8))

        fun msg(field: Int, body: Pb.() -> Unit) = bytes(field, Pb().apply(body).bytes())
    }
}
