package com.mobilediff.engine

import org.json.JSONException
import org.json.JSONObject

/**
 * The typed `manifest.json` of a bundle: every field the engine uses, nothing else (fields are only ever added,
 * so unknown ones are ignored). Parse with [Manifest.parse]; [Bundle.open] also checks the files it names.
 */
class Manifest(
    val formatVersion: Int,
    val geometry: Geometry,
    val tokenizer: TokenizerSpec,
    val components: Map<String, ComponentSpec>,
    val samplers: List<SamplerTable>,
    val guidance: Guidance,
    /** The model's role (null in bundles written before the field existed). */
    val model: ModelInfo?,
    /** The plan an app uses when the user sets nothing (see [defaultSampling]). */
    private val declaredDefault: SamplingPlan?,
) {
    /**
     * The manifest's `default_sampling`, or for bundles written before it existed: DDIM with 50 steps at the
     * guidance default (what `mobilediff generate --bundle` does without options).
     */
    val defaultSampling: SamplingPlan
        get() = declaredDefault ?: SamplingPlan("ddim", 50, guidance.defaultScale)

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
        /** The newest manifest format this engine reads; a newer one is refused, never half-read. */
        const val FORMAT_VERSION = 1
        val COMPONENTS = listOf("text_encoder", "unet", "vae_decoder")

        /** Parse manifest text. Throws [BundleError] (file "manifest.json") for any missing or malformed field. */
        fun parse(text: String): Manifest {
            val r = JsonReader(MANIFEST)
            val root = try {
                JSONObject(text)
            } catch (e: JSONException) {
                throw BundleError(MANIFEST, "is not valid JSON (${e.message})", e)
            }
            val format = root.optString("format")
            if (format != FORMAT) throw BundleError(MANIFEST, "is not a mobilediff bundle manifest (format '$format')")
            val version = r.int(root, "format_version")
            if (version > FORMAT_VERSION || version < 1) {
                throw BundleError(
                    MANIFEST,
                    "has format version $version; this engine reads versions 1..$FORMAT_VERSION (update the app to read newer bundles)",
                )
            }
            val components = r.obj(root, "components").let { c ->
                COMPONENTS.filter { c.has(it) }.associateWith { ComponentSpec.parse(r, it, r.obj(c, it, "components.$it")) }
            }
            return Manifest(
                formatVersion = version,
                geometry = Geometry.parse(r, r.obj(root, "geometry")),
                tokenizer = TokenizerSpec.parse(r, r.obj(root, "tokenizer")),
                components = components,
                samplers = r.arr(root, "samplers").objects().mapIndexed { i, t -> SamplerTable.parse(r, t, "samplers[$i]") },
                guidance = Guidance.parse(r, r.obj(root, "guidance")),
                model = root.optJSONObject("model")?.let { ModelInfo(it.optString("role", "teacher"), it.optStringOrNull("method")) },
                declaredDefault = root.optJSONObject("default_sampling")?.let { SamplingPlan.parse(r, it) },
            )
        }
    }
}

/** Image and latent sizes. Decoder input = latents / [scalingFactor] + [shiftFactor]. */
class Geometry(
    val height: Int,
    val width: Int,
    val latentChannels: Int,
    val latentHeight: Int,
    val latentWidth: Int,
    val scalingFactor: Double,
    val shiftFactor: Double,
) {
    /** (1, C, h, w): the shape of the initial noise and every latent. */
    val latentShape: IntArray get() = intArrayOf(1, latentChannels, latentHeight, latentWidth)

    companion object {
        internal fun parse(r: JsonReader, g: JSONObject) = Geometry(
            height = r.int(g, "height", "geometry.height"),
            width = r.int(g, "width", "geometry.width"),
            latentChannels = r.int(g, "latent_channels", "geometry.latent_channels"),
            latentHeight = r.int(g, "latent_height", "geometry.latent_height"),
            latentWidth = r.int(g, "latent_width", "geometry.latent_width"),
            scalingFactor = r.double(g, "scaling_factor", "geometry.scaling_factor"),
            shiftFactor = g.optDouble("shift_factor", 0.0),
        )
    }
}

/**
 * CLIP tokenizer settings: files relative to the bundle, pad every prompt to [maxLength] with [padId].
 * [fileSha256] (optional `tokenizer.file_sha256`: path -> sha256) is checked when the manifest has it.
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
        internal fun parse(r: JsonReader, t: JSONObject) = TokenizerSpec(
            fileSha256 = t.optJSONObject("file_sha256")?.let { o -> o.keys().asSequence().associateWith { o.getString(it) } } ?: emptyMap(),
            files = r.arr(t, "files", "tokenizer.files").strings(),
            maxLength = r.int(t, "max_length", "tokenizer.max_length"),
            bosId = r.int(t, "bos_id", "tokenizer.bos_id"),
            eosId = r.int(t, "eos_id", "tokenizer.eos_id"),
            padId = r.int(t, "pad_id", "tokenizer.pad_id"),
        )
    }
}

/** One input or output of a component graph, in the order the graph takes them. */
class TensorSpec(val name: String, val dtype: String)

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
            fun specs(key: String) = r.arr(c, key, "$p.$key").objects().mapIndexed { i, s ->
                TensorSpec(r.str(s, "name", "$p.$key[$i].name"), r.str(s, "dtype", "$p.$key[$i].dtype"))
            }
            fun ref(o: JSONObject, at: String) =
                FileRef(r.str(o, "path", "$at.path"), r.str(o, "sha256", "$at.sha256"), o.optLong("size_bytes", -1))
            val files = r.arr(c, "files", "$p.files").objects().mapIndexed { i, f ->
                val at = "$p.files[$i]"
                val target = r.str(f, "target", "$at.target")
                val dynamic = f.optJSONObject("export")?.optJSONArray("dynamic_dims")?.strings()?.contains("batch")
                ComponentFile(
                    target = target,
                    precision = r.str(f, "precision", "$at.precision"),
                    file = ref(f, at),
                    externalData = f.optJSONArray("external_data")?.objects()?.mapIndexed { k, e -> ref(e, "$at.external_data[$k]") }
                        ?: emptyList(),
                    // older manifests do not record it: ONNX graphs are exported with a dynamic batch, the others not
                    dynamicBatch = dynamic ?: (target == "onnx"),
                )
            }
            val batch = c.optJSONObject("dims")?.let { if (it.has("batch")) r.int(it, "batch", "$p.dims.batch") else null }
            return ComponentSpec(name, specs("inputs"), specs("outputs"), batch, files)
        }
    }
}

/** What the model is: a teacher, or a student made by [method] (progressive | lcm). */
class ModelInfo(val role: String, val method: String?)

/** A sampling plan: sampler table name, steps and guidance scale. */
data class SamplingPlan(val sampler: String, val steps: Int, val guidance: Double) {
    companion object {
        internal fun parse(r: JsonReader, o: JSONObject) = SamplingPlan(
            r.str(o, "sampler", "default_sampling.sampler"),
            r.int(o, "steps", "default_sampling.steps"),
            r.double(o, "guidance", "default_sampling.guidance"),
        )
    }
}
