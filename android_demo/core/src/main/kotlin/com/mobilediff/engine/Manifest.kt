package com.mobilediff.engine

import org.json.JSONObject

/**
 * The typed `manifest.json` of a bundle: every field the engine uses, nothing else (fields are only ever added,
 * so unknown ones are ignored). Parse with [Manifest.parse]; [Bundle.open] also checks the files it names.
 * The rules are docs/bundle.md's, pinned down by the conformance cases in tests/contract/ (ContractTest).
 */
class Manifest(
    val formatVersion: Int,
    val geometry: Geometry,
    val tokenizer: TokenizerSpec,
    val components: Map<String, ComponentSpec>,
    val samplers: List<SamplerTable>,
    val guidance: Guidance,
    /** The manifest's `model` (null in bundles written before the field existed; see [role]). */
    val model: ModelInfo?,
    /** The manifest's `default_sampling` (see [defaultSampling]). */
    private val declaredDefault: SamplingPlan?,
    /**
     * The manifest's optional `image` record (bundles exported with `--image-modes`): image-to-image and inpainting,
     * with the component [IMAGE_ENCODER] in [components] and every sampler table's [SamplerTable.addNoise]. Null in
     * bundles without it, which run text-to-image only.
     */
    val image: ImageModes? = null,
    /**
     * The manifest's optional `adapters` record (bundles exported with `--runtime-lora`): run-time LoRA adapters, each
     * slotted component ([AdapterRecord.slots]) taking `lora_weights` as its last input ([AdapterMixer] packs it).
     * Null in bundles without it.
     */
    val adapters: AdapterRecord? = null,
) {
    /**
     * What the model is: the manifest's `model`, or for bundles written before it existed an LCM student when the
     * denoiser takes a guidance embedding, else a teacher.
     */
    val role: ModelInfo
        get() = model ?: if (guidance is Guidance.Embedding) ModelInfo(ROLE_STUDENT, "lcm") else ModelInfo(ROLE_TEACHER, null)

    /**
     * The plan an app uses when the user sets nothing: the manifest's `default_sampling`, or for bundles written
     * before it existed LCM with 4 steps for a guidance-embedding denoiser, else DDIM with 50 steps, at the guidance
     * default (what `mobilediff generate --bundle` does without options). Its table may be missing: [sampler] says so.
     */
    val defaultSampling: SamplingPlan
        get() = declaredDefault
            ?: if (guidance is Guidance.Embedding) SamplingPlan("lcm", 4, guidance.defaultScale)
            else SamplingPlan("ddim", 50, guidance.defaultScale)

    /**
     * Whether the bundle runs [mode]: [MODE_TXT2IMG] unless its denoiser is an inpainting UNet
     * ([ImageModes.inpaintingDenoiser]), [ImageModes.IMG2IMG] and [ImageModes.INPAINT] as its `image` record lists them.
     */
    fun supports(mode: String): Boolean =
        if (mode == MODE_TXT2IMG) image?.inpaintingDenoiser != true else image?.modes?.contains(mode) == true

    /**
     * Whether the text encoder takes the caption's padding mask (format 2: its inputs start with [TEXT_INPUTS],
     * `input_ids` then `attention_mask`): the mask of each prompt ([ClipTokenizer.attentionMask]) is fed to the text encoder with
     * its ids, and as float32 to the denoiser as its [UNET_TEXT_MASK] input, right after `encoder_hidden_states`, on
     * every step (classifier-free guidance: rows [unconditional, conditional], as the hidden states). Decided by the
     * text encoder declaring an `attention_mask` input, as `mobilediff.engine.bundle_tokenizer` decides it.
     */
    val maskedText: Boolean get() = isMasked(components)

    /**
     * The position of the denoiser's first input after `encoder_hidden_states`, its text mask ([maskedText]) and a
     * guidance embedding's input: where an inpainting UNet takes [INPAINTING_INPUTS].
     */
    val unetExtraInputsAt: Int
        get() = 3 + (if (maskedText) 1 else 0) + (if (guidance is Guidance.Embedding) 1 else 0)

    /** Whether the denoiser is an inpainting UNet ([ImageModes.inpaintingDenoiser]): it runs inpainting alone. */
    val inpaintingOnly: Boolean get() = image?.inpaintingDenoiser == true

    /** The components a generation may load: the three of [COMPONENTS], and [IMAGE_ENCODER] in a bundle with image modes. */
    val componentNames: List<String>
        get() = if (image != null) COMPONENTS + IMAGE_ENCODER else COMPONENTS

    fun component(name: String): ComponentSpec =
        components[name] ?: throw BundleError(MANIFEST, "has no component '$name' (it has: ${components.keys.joinToString()})")

    /** The table for [sampler] with [steps] steps; a BundleError lists the tables the bundle has. */
    fun sampler(sampler: String, steps: Int): SamplerTable =
        samplers.firstOrNull { it.name == sampler && it.steps == steps }
            ?: throw BundleError(
                MANIFEST,
                "has no $sampler table for $steps steps (it has: ${samplers.joinToString { "${it.name}:${it.steps}" }})",
            )

    companion object {
        const val MANIFEST = "manifest.json"
        const val FORMAT = "mobilediff.bundle"
        /**
         * The newest manifest format this engine reads; a newer one is refused, never half-read. Format 2 (transformer
         * bundles) adds `tokenizer.kind` and masked text inputs: this engine reads it, and runs its CLIP BPE bundles, masked
         * text inputs included ([maskedText]); other tokenizers are refused ([TokenizerSpec.requireClipBpe]).
         */
        const val FORMAT_VERSION = 2
        val COMPONENTS = listOf("text_encoder", "unet", "vae_decoder")
        /** The VAE encoder of image-to-image and inpainting: `sample` (1, 3, H, W) -> `latent_mean`, `latent_std`. */
        const val IMAGE_ENCODER = "vae_encoder"
        const val MODE_TXT2IMG = "txt2img"
        /** The inputs of a text encoder that takes the caption's padding mask ([maskedText]), in order. */
        val TEXT_INPUTS = listOf("input_ids", "attention_mask")
        /** The denoiser's input of the caption's padding mask ([maskedText]): (batch, max_length) float32. */
        const val UNET_TEXT_MASK = "encoder_attention_mask"

        private fun isMasked(components: Map<String, ComponentSpec>): Boolean =
            components["text_encoder"]?.inputs?.any { it.name == TEXT_INPUTS[1] } == true

        /** An inpainting UNet's inputs after `encoder_hidden_states` (and a text mask and a guidance embedding), in order. */
        val INPAINTING_INPUTS = listOf("mask", "masked_image_latents")
        const val ROLE_TEACHER = "teacher"
        const val ROLE_STUDENT = "student"
        val ROLES = listOf(ROLE_TEACHER, ROLE_STUDENT)

        /**
         * Parse manifest text. Throws one [BundleError] (file "manifest.json") naming the field, as the manifest
         * spells it, for any missing, mistyped or out-of-range field: a manifest is read whole or not at all.
         */
        fun parse(text: String): Manifest {
            val r = JsonReader(MANIFEST)
            val root = r.document(text)
            val format = root.opt("format")
            if (format != FORMAT) {
                throw BundleError(MANIFEST, "is not a mobilediff bundle manifest (format ${JsonReader.describe(format)})")
            }
            val version = root.opt("format_version")
            val formatVersion = JsonReader.integer(version)
            if (formatVersion == null || formatVersion < 1 || formatVersion > FORMAT_VERSION) {
                val found = if (version == null || version == JSONObject.NULL) "no format version (format_version)"
                else "format version ${JsonReader.describe(version)}"
                val newer = version is Number && version.toDouble() > FORMAT_VERSION
                val advice = if (newer) " (update the app to read newer bundles)" else ""
                throw BundleError(MANIFEST, "has $found; this engine reads versions 1..$FORMAT_VERSION$advice")
            }
            // a tokenizer this engine cannot run (format 2's unigram) is refused as such, before any field it lacks
            root.optJSONObject("tokenizer")?.let { TokenizerSpec.requireClipBpe(r, it) }
            val geometry = Geometry.parse(r, r.obj(root, "geometry"))
            val tokenizer = TokenizerSpec.parse(r, r.obj(root, "tokenizer"))
            val image = r.optObj(root, "image")?.let { ImageModes.parse(r, it) }
            // the encoder is read only where the image record says the bundle runs it
            val names = if (image != null) COMPONENTS + IMAGE_ENCODER else COMPONENTS
            val components = r.obj(root, "components").let { c ->
                if (image != null && c.opt(IMAGE_ENCODER).let { it == null || it == JSONObject.NULL }) {
                    r.fail("components.$IMAGE_ENCODER", "missing (image modes ${image.modes.joinToString()} need it)")
                }
                names.associateWith { ComponentSpec.parse(r, it, r.obj(c, it, "components.$it")) }
            }
            val adapters = r.optObj(root, "adapters")?.let { AdapterRecord.parse(r, it, components) }
            val samplers = r.objects(root, "samplers").mapIndexed { i, t -> SamplerTable.parse(r, t, "samplers[$i]") }
            if (samplers.isEmpty()) r.fail("samplers", "no sampler tables (a bundle has at least one)")
            if (image != null) {
                samplers.forEachIndexed { i, t ->
                    if (t.addNoise == null) r.fail("samplers[$i].add_noise", "missing (image modes need every table's add_noise rows)")
                }
            }
            val guidance = Guidance.parse(r, r.obj(root, "guidance"))
            val masked = isMasked(components)
            if (masked) {
                // fed by position: the ids then the mask (then a slotted component's lora_weights), and the mask as the
                // denoiser's input after the hidden states
                val text = components.getValue("text_encoder").inputs.map { it.name }
                if (text.take(2) != TEXT_INPUTS) {
                    r.fail("components.text_encoder.inputs", "a text encoder that takes the caption's padding mask takes " +
                        "${TEXT_INPUTS.joinToString(" then ")} first, not (${text.joinToString()})")
                }
                val unet = components.getValue("unet").inputs.map { it.name }
                if (unet.getOrNull(3) != UNET_TEXT_MASK) {
                    r.fail("components.unet.inputs", "the text encoder takes the caption's padding mask (attention_mask) but the " +
                        "unet takes (${unet.joinToString()}), not $UNET_TEXT_MASK as input 4")
                }
            }
            if (image?.inpaintingDenoiser == true) {
                // mask and masked_image_latents after encoder_hidden_states (and a text mask and a guidance embedding's input)
                val inputs = components.getValue("unet").inputs.map { it.name }
                val at = 3 + (if (masked) 1 else 0) + (if (guidance is Guidance.Embedding) 1 else 0)
                if (inputs.drop(at).take(2) != INPAINTING_INPUTS) {
                    r.fail("components.unet.inputs", "the manifest declares an inpainting denoiser (image.denoiser) but its unet " +
                        "takes (${inputs.joinToString()}), not ${INPAINTING_INPUTS.joinToString(" and ")} as inputs ${at + 1} and ${at + 2}")
                }
            }
            return Manifest(
                formatVersion = formatVersion,
                geometry = geometry,
                tokenizer = tokenizer,
                components = components,
                samplers = samplers,
                guidance = guidance,
                model = r.optObj(root, "model")?.let { ModelInfo.parse(r, it) },
                declaredDefault = r.optObj(root, "default_sampling")?.let { SamplingPlan.parse(r, it) },
                image = image,
                adapters = adapters,
            )
        }
    }
}

/**
 * Image and latent sizes. Decoder input = latents / [scalingFactor] + [shiftFactor]. [vaeScaleFactor]: image pixels
 * per latent pixel (the manifest's `vae_scale_factor`; [height] / [latentHeight] where a manifest omits it).
 */
class Geometry(
    val height: Int,
    val width: Int,
    val latentChannels: Int,
    val latentHeight: Int,
    val latentWidth: Int,
    val scalingFactor: Double,
    val shiftFactor: Double,
    val vaeScaleFactor: Int = if (latentHeight > 0) height / latentHeight else 1,
) {
    /** (1, C, h, w): the shape of the initial noise and every latent. */
    val latentShape: IntArray get() = intArrayOf(1, latentChannels, latentHeight, latentWidth)

    /** (1, 3, H, W): the shape of an image the VAE encoder takes. */
    val imageShape: IntArray get() = intArrayOf(1, 3, height, width)

    companion object {
        internal fun parse(r: JsonReader, g: JSONObject): Geometry {
            val height = r.int(g, "height", "geometry.height")
            val latentHeight = r.int(g, "latent_height", "geometry.latent_height")
            return Geometry(
                height = height,
                width = r.int(g, "width", "geometry.width"),
                latentChannels = r.int(g, "latent_channels", "geometry.latent_channels"),
                latentHeight = latentHeight,
                latentWidth = r.int(g, "latent_width", "geometry.latent_width"),
                scalingFactor = r.double(g, "scaling_factor", "geometry.scaling_factor"),
                shiftFactor = r.optDouble(g, "shift_factor", "geometry.shift_factor") ?: 0.0,
                vaeScaleFactor = r.optInt(g, "vae_scale_factor", "geometry.vae_scale_factor")
                    ?.also { if (it < 1) r.fail("geometry.vae_scale_factor", "must be >= 1, got $it") }
                    ?: if (latentHeight > 0) height / latentHeight else 1,
            )
        }
    }
}

/**
 * CLIP tokenizer settings: files relative to the bundle, pad every prompt to [maxLength] with [padId].
 * [fileSha256] (optional `tokenizer.file_sha256`: path -> sha256) is checked when the manifest has it.
 * The manifest's `tokenizer.kind` (format 2) is absent or [KIND_CLIP_BPE] in every bundle this engine reads. Where the
 * text encoder takes `attention_mask` ([Manifest.maskedText]), each prompt's mask follows [ClipTokenizer.attentionMask].
 */
class TokenizerSpec(
    val files: List<String>,
    val maxLength: Int,
    val bosId: Int,
    val eosId: Int,
    val padId: Int,
    val fileSha256: Map<String, String> = emptyMap(),
) {
    companion object {
        /** The tokenizer of every format-1 bundle (`tokenizer.kind` absent): CLIP BPE of vocab.json + merges.txt. */
        const val KIND_CLIP_BPE = "clip-bpe"

        /**
         * Refuses, in one line naming it, a `tokenizer.kind` other than [KIND_CLIP_BPE] (format 2's "unigram", T5's
         * SentencePiece tokenizer without bos_id, whose bundles run in mobilediff's Python engine only).
         */
        internal fun requireClipBpe(r: JsonReader, t: JSONObject) {
            val kind = r.optStr(t, "kind", "tokenizer.kind") ?: return
            if (kind != KIND_CLIP_BPE) {
                throw BundleError(
                    Manifest.MANIFEST,
                    "tokenizer.kind ${JSONObject.quote(kind)} is not supported by this app: it runs CLIP BPE bundles " +
                        "(bundles of other tokenizers run in mobilediff's Python engine only)",
                )
            }
        }

        internal fun parse(r: JsonReader, t: JSONObject) = TokenizerSpec(
            fileSha256 = r.optObj(t, "file_sha256", "tokenizer.file_sha256")?.let { o ->
                o.keys().asSequence().associateWith { r.str(o, it, "tokenizer.file_sha256.$it") }
            } ?: emptyMap(),
            files = r.strings(t, "files", "tokenizer.files"),
            maxLength = r.int(t, "max_length", "tokenizer.max_length"),
            bosId = r.int(t, "bos_id", "tokenizer.bos_id"),
            eosId = r.int(t, "eos_id", "tokenizer.eos_id"),
            padId = r.int(t, "pad_id", "tokenizer.pad_id"),
        )
    }
}

/**
 * One input or output of a component graph, in the order the graph takes them: [shape] as the manifest writes it
 * (sizes and named dimensions such as "batch"), [staticShape] the sizes the graph was exported with (null in a
 * manifest without `static_shape`).
 */
class TensorSpec(val name: String, val dtype: String, val staticShape: IntArray? = null, val shape: List<String>? = null)

/** A file of the bundle with its checksum; [path] is relative to the bundle folder. */
class FileRef(val path: String, val sha256: String, val sizeBytes: Long)

/** One exported file of a component for a runtime ([target]: onnx | executorch | coreml) and precision. */
class ComponentFile(
    val target: String,
    val precision: String,
    val file: FileRef,
    val externalData: List<FileRef>,
    /** True when the graph takes any batch size; false when it was exported for [ComponentSpec.batch] rows only. */
    val dynamicBatch: Boolean,
)

/** A component (text_encoder, unet, vae_decoder): its I/O in graph order, static batch and files. */
class ComponentSpec(
    val name: String,
    val inputs: List<TensorSpec>,
    val outputs: List<TensorSpec>,
    /** The batch the graphs were exported with (the CFG batch 2 for a guided UNet), or null. */
    val batch: Int?,
    val files: List<ComponentFile>,
) {
    /** The file for [target] (and [precision], if given); BundleError lists what the bundle has. */
    fun file(target: String, precision: String? = null): ComponentFile =
        files.firstOrNull { it.target == target && (precision == null || it.precision == precision) }
            ?: throw BundleError(
                Manifest.MANIFEST,
                "has no $target${precision?.let { "/$it" } ?: ""} file for $name " +
                    "(it has: ${files.joinToString { "${it.target}/${it.precision}" }.ifEmpty { "none" }})",
            )

    companion object {
        internal fun parse(r: JsonReader, name: String, c: JSONObject): ComponentSpec {
            val p = "components.$name"
            fun specs(key: String) = r.objects(c, key, "$p.$key").mapIndexed { i, s ->
                val at = "$p.$key[$i]"
                TensorSpec(
                    name = r.str(s, "name", "$at.name"),
                    dtype = r.str(s, "dtype", "$at.dtype"),
                    staticShape = r.optInts(s, "static_shape", "$at.static_shape"),
                    // only shown in messages: each entry a size or a dimension's name
                    shape = s.optJSONArray("shape")?.let { a -> List(a.length()) { a.opt(it).toString() } },
                )
            }
            fun ref(o: JSONObject, at: String) =
                FileRef(r.str(o, "path", "$at.path"), r.str(o, "sha256", "$at.sha256"), o.optLong("size_bytes", -1))
            val files = r.objects(c, "files", "$p.files").mapIndexed { i, f ->
                val at = "$p.files[$i]"
                val target = r.str(f, "target", "$at.target")
                val dynamic = f.optJSONObject("export")?.optJSONArray("dynamic_dims")
                    ?.let { d -> List(d.length()) { d.opt(it) }.contains("batch") }
                ComponentFile(
                    target = target,
                    precision = r.str(f, "precision", "$at.precision"),
                    file = ref(f, at),
                    externalData = if (f.isNull("external_data")) {
                        emptyList()
                    } else {
                        r.objects(f, "external_data", "$at.external_data").mapIndexed { k, e -> ref(e, "$at.external_data[$k]") }
                    },
                    // older manifests do not record it: ONNX graphs are exported with a dynamic batch, the others not
                    dynamicBatch = dynamic ?: (target == "onnx"),
                )
            }
            val batch = r.optObj(c, "dims", "$p.dims")
                ?.let { if (it.isNull("batch")) null else r.int(it, "batch", "$p.dims.batch") }
            return ComponentSpec(name, specs("inputs"), specs("outputs"), batch, files)
        }
    }
}

/**
 * What the model is: a [role] of [Manifest.ROLES] (teacher, student), and for a student the [method] that made it
 * (progressive, lcm, slim, or one from a newer mobilediff: informational).
 */
data class ModelInfo(val role: String, val method: String?) {
    companion object {
        internal fun parse(r: JsonReader, o: JSONObject): ModelInfo {
            val role = r.str(o, "role", "model.role")
            if (role !in Manifest.ROLES) {
                r.fail("model.role", "unknown role ${JsonReader.describe(role)} (known: ${Manifest.ROLES.joinToString()})")
            }
            return ModelInfo(role, r.optStr(o, "method", "model.method"))
        }
    }
}

/** A sampling plan: sampler table name, steps (>= 1) and guidance scale (>= 0). */
data class SamplingPlan(val sampler: String, val steps: Int, val guidance: Double) {
    companion object {
        internal fun parse(r: JsonReader, o: JSONObject): SamplingPlan {
            val plan = SamplingPlan(
                r.str(o, "sampler", "default_sampling.sampler"),
                r.int(o, "steps", "default_sampling.steps"),
                r.double(o, "guidance", "default_sampling.guidance"),
            )
            if (plan.steps < 1) r.fail("default_sampling.steps", "must be >= 1, got ${plan.steps}")
            if (plan.guidance < 0) r.fail("default_sampling.guidance", "must be >= 0, got ${plan.guidance}")
            return plan
        }
    }
}

/**
 * The manifest's `image` record: the image modes a bundle runs ([IMG2IMG], [INPAINT]), its encoder's posterior
 * ([GAUSSIAN]: the clean latent samples it with one latent-shaped draw of the seed's generator; [DETERMINISTIC]: the
 * mean alone, no draw) and its [denoiser] ([STANDARD]: the UNet denoises the latent alone; [INPAINTING]: an inpainting
 * UNet that also takes `mask` and `masked_image_latents` after `encoder_hidden_states` and runs [INPAINT] alone, no
 * text-to-image). The rules are docs/bundle.md's, section "`image` (optional)".
 */
class ImageModes(val modes: List<String>, val encoderPosterior: String, val denoiser: String = STANDARD) {
    val gaussian: Boolean get() = encoderPosterior == GAUSSIAN

    /** An inpainting UNet (9 channels for SD): inpainting only, fed the mask and the masked image's latent, no blend. */
    val inpaintingDenoiser: Boolean get() = denoiser == INPAINTING

    companion object {
        const val IMG2IMG = "img2img"
        const val INPAINT = "inpaint"
        val MODES = listOf(IMG2IMG, INPAINT)
        const val GAUSSIAN = "gaussian"
        const val DETERMINISTIC = "deterministic"
        val POSTERIORS = listOf(GAUSSIAN, DETERMINISTIC)
        const val STANDARD = "standard"
        const val INPAINTING = "inpainting"
        val DENOISERS = listOf(STANDARD, INPAINTING)

        internal fun parse(r: JsonReader, o: JSONObject): ImageModes {
            val modes = r.strings(o, "modes", "image.modes")
            if (modes.isEmpty()) r.fail("image.modes", "is empty (known: ${MODES.joinToString()})")
            modes.firstOrNull { it !in MODES }?.let { r.fail("image.modes", "unknown mode ${JsonReader.describe(it)} (known: ${MODES.joinToString()})") }
            val posterior = r.str(o, "encoder_posterior", "image.encoder_posterior")
            if (posterior !in POSTERIORS) {
                r.fail("image.encoder_posterior", "unknown posterior ${JsonReader.describe(posterior)} (known: ${POSTERIORS.joinToString()})")
            }
            val denoiser = r.optStr(o, "denoiser", "image.denoiser") ?: STANDARD
            if (denoiser !in DENOISERS) {
                r.fail("image.denoiser", "unknown denoiser ${JsonReader.describe(denoiser)} (known: ${DENOISERS.joinToString()})")
            }
            if (denoiser == INPAINTING && modes != listOf(INPAINT)) {
                r.fail("image.modes", "an inpainting denoiser runs the inpaint mode alone, not ${modes.joinToString()}")
            }
            return ImageModes(modes, posterior, denoiser)
        }
    }
}
