package com.mobilediff.engine

import org.json.JSONObject

// Run-time LoRA adapters (a bundle exported with `--runtime-lora`; docs/bundle.md, "`adapters` (optional)"): every
// component an adapter adapts takes one more input, last, `lora_weights`, a flat float32 vector of rank slots for each
// adapted linear layer; all zeros is the base model. Switching adapters repacks that vector on the host, nothing is
// reloaded. The Kotlin twin of mobilediff/runtime_lora.py (`pack`, `read_bundle_adapter`) and of
// `BundleRunner.set_adapters`.

/** One adapter of a mix: the bundle's adapter [name] at [scale] (its `up` matrices multiplied by it). */
data class AdapterChoice(val name: String, val scale: Double) {
    override fun toString(): String = "$name:$scale"
}

/**
 * One adapted linear layer's rank slots in a component's `lora_weights` vector: `down` (R x [inFeatures], row-major)
 * at [downOffset], `up` ([outFeatures] x R, row-major) at [upOffset], R the component's [AdapterSlots.rank].
 */
class SlotLayer(val module: String, val inFeatures: Int, val outFeatures: Int, val downOffset: Int, val upOffset: Int)

/** The rank slots of one component: [rank] R slots per layer, [layers] in the vector's order, [size] P floats in all. */
class AdapterSlots(val component: String, val rank: Int, val size: Int, val layers: List<SlotLayer>) {
    private val byModule = layers.associateBy { it.module }

    /** The layer of [module], or null when the slots do not adapt it. */
    fun layer(module: String): SlotLayer? = byModule[module]
}

/**
 * An adapter file of the bundle: [file] (`adapters/<name>.safetensors`, sha256-checked before it is read), its
 * [rank], the scale an app starts from ([defaultScale]) and the [components] it adapts.
 */
class AdapterFileSpec(val name: String, val file: FileRef, val rank: Int, val defaultScale: Double, val components: List<String>)

/**
 * The manifest's `adapters` record: the vector's input name ([input], "lora_weights"), the rank [slots] per component
 * and the adapter [files], in the manifest's order.
 */
class AdapterRecord(val input: String, val slots: Map<String, AdapterSlots>, val files: List<AdapterFileSpec>) {
    /** The adapters' names, in the manifest's order. */
    val names: List<String> get() = files.map { it.name }

    fun file(name: String): AdapterFileSpec? = files.firstOrNull { it.name == name }

    companion object {
        const val INPUT = "lora_weights"

        /**
         * Parse the record and check it against [components] as `mobilediff.bundle._check_adapters` does: every slotted
         * component exists and takes `lora_weights` of the slots' size as its last input; the layers' offsets tile the
         * vector (down then up, layer after layer); every file's rank fits the slots.
         */
        internal fun parse(r: JsonReader, o: JSONObject, components: Map<String, ComponentSpec>): AdapterRecord {
            val input = r.optStr(o, "input", "adapters.input") ?: INPUT
            if (input != INPUT) r.fail("adapters.input", "must be $INPUT, got ${JsonReader.describe(input)}")
            val slotsObject = r.obj(o, "slots", "adapters.slots")
            if (slotsObject.length() == 0) r.fail("adapters.slots", "is empty (a component -> rank slots record)")
            val slots = LinkedHashMap<String, AdapterSlots>()
            for (name in slotsObject.keys().asSequence().toList().sorted()) {
                val p = "adapters.slots.$name"
                val s = r.obj(slotsObject, name, p)
                val component = components[name]
                    ?: r.fail(p, "names component '$name', which the bundle does not have (it has: ${components.keys.joinToString()})")
                val rank = r.int(s, "rank", "$p.rank")
                if (rank < 1) r.fail("$p.rank", "must be >= 1, got $rank")
                var offset = 0L
                val layers = r.objects(s, "layers", "$p.layers").mapIndexed { i, l ->
                    val at = "$p.layers[$i]"
                    val layer = SlotLayer(
                        r.str(l, "module", "$at.module"), r.int(l, "in_features", "$at.in_features"), r.int(l, "out_features", "$at.out_features"),
                        r.int(l, "down_offset", "$at.down_offset"), r.int(l, "up_offset", "$at.up_offset"),
                    )
                    if (layer.inFeatures < 1 || layer.outFeatures < 1) r.fail(at, "in_features and out_features must be >= 1")
                    if (layer.downOffset.toLong() != offset || layer.upOffset.toLong() != offset + rank.toLong() * layer.inFeatures) {
                        r.fail(at, "the offsets of ${layer.module} do not follow the layout (down at $offset, up at ${offset + rank.toLong() * layer.inFeatures})")
                    }
                    offset += rank.toLong() * (layer.inFeatures + layer.outFeatures)
                    if (offset > Int.MAX_VALUE) r.fail(at, "the vector would hold more than ${Int.MAX_VALUE} values")
                    layer
                }
                layers.groupBy { it.module }.entries.firstOrNull { it.value.size > 1 }?.let { r.fail("$p.layers", "lists ${it.key} twice") }
                r.optInt(s, "size", "$p.size")?.let { if (it.toLong() != offset) r.fail("$p.size", "is $it but the layers hold $offset values") }
                val last = component.inputs.lastOrNull()
                val shape = last?.staticShape
                if (last == null || last.name != input || last.dtype != "float32" || (shape != null && !(shape.size == 1 && shape[0].toLong() == offset))) {
                    r.fail(p, "the component's last input must be $input, float32 of $offset values (it is ${last?.let { "${it.name} ${it.dtype}" } ?: "none"})")
                }
                slots[name] = AdapterSlots(name, rank, offset.toInt(), layers)
            }
            val files = r.objects(o, "files", "adapters.files").mapIndexed { i, f ->
                val at = "adapters.files[$i]"
                val name = r.str(f, "name", "$at.name")
                val path = r.str(f, "path", "$at.path")
                if (path.startsWith("/") || path.split('/').contains("..")) r.fail("$at.path", "must stay inside the bundle, got ${JsonReader.describe(path)}")
                val rank = r.int(f, "rank", "$at.rank")
                if (rank < 1) r.fail("$at.rank", "must be >= 1, got $rank")
                slots.values.firstOrNull { rank > it.rank }?.let { r.fail("$at.rank", "($name) is $rank, more than the ${it.rank} slots of ${it.component}") }
                val scale = r.optDouble(f, "default_scale", "$at.default_scale") ?: 1.0
                val adapts = if (f.has("components")) r.strings(f, "components", "$at.components") else slots.keys.toList()
                AdapterFileSpec(name, FileRef(path, r.str(f, "sha256", "$at.sha256"), f.optLong("size_bytes", -1)), rank, scale, adapts)
            }
            files.groupBy { it.name }.entries.firstOrNull { it.value.size > 1 }?.let { r.fail("adapters.files", "names two adapters '${it.key}'") }
            return AdapterRecord(input, slots, files)
        }
    }
}

/** One adapted layer of an adapter file: `down` ([rank] x in) and `up` (out x [rank]), row-major float32. */
class LoraLayer(val rank: Int, val down: FloatArray, val up: FloatArray)

/**
 * An adapter file read: component -> module -> its [LoraLayer]. [read] checks the file's bytes as safetensors before
 * taking anything from it.
 */
class AdapterWeights(val name: String, val layers: Map<String, Map<String, LoraLayer>>) {
    companion object {
        private val SIDES = listOf("down", "up")

        /**
         * Parse the adapter file [bytes] ([path]: the file as the manifest names it, for messages) against [slots]:
         * an 8-byte little-endian header length, a JSON header `{key: {dtype, shape, data_offsets: [begin, end]}}`
         * (offsets from the end of the header; an optional `__metadata__`), then the data. Every tensor must be F32,
         * named `<component>.<module>.down|up` for a layer the bundle's slots hold, shaped (r x in) / (out x r) with
         * r <= the slots' rank, its offsets inside the data and of its shape's size; each layer has both matrices.
         * Throws one [BundleError] naming [path] otherwise.
         */
        fun read(name: String, path: String, bytes: ByteArray, slots: Map<String, AdapterSlots>): AdapterWeights {
            fun bad(problem: String): Nothing = throw BundleError(path, "is not a usable adapter file: $problem")
            if (bytes.size < 8) bad("${bytes.size} bytes, shorter than a safetensors header")
            var headerLen = 0L
            for (i in 7 downTo 0) headerLen = (headerLen shl 8) or (bytes[i].toLong() and 0xff)
            if (headerLen < 2 || headerLen > bytes.size - 8L) bad("header length $headerLen does not fit the file's ${bytes.size} bytes")
            val dataStart = 8 + headerLen.toInt()
            val dataLen = bytes.size - dataStart
            val header = try {
                JSONObject(String(bytes, 8, headerLen.toInt(), Charsets.UTF_8))
            } catch (e: org.json.JSONException) {
                bad("its header is not a JSON object")
            }
            val found = LinkedHashMap<String, MutableMap<String, Pair<IntArray, FloatArray>>>()  // "<component>.<module>" -> side -> (shape, data)
            for (key in header.keys().asSequence().toList().sorted()) {
                if (key == "__metadata__") continue
                val e = header.optJSONObject(key) ?: bad("tensor '$key' has no dtype/shape/data_offsets record")
                val dtype = e.opt("dtype")
                if (dtype != "F32") bad("tensor '$key' is ${JsonReader.describe(dtype)}, not F32")
                val shapeArray = e.optJSONArray("shape")
                val shape = shapeArray?.let { a -> IntArray(a.length()) { JsonReader.integer(a.opt(it)) ?: -1 } }
                if (shape == null || shape.size != 2 || shape.any { it < 0 }) bad("tensor '$key' has shape ${shapeArray ?: "none"}, not (rows, columns)")
                val offsets = e.optJSONArray("data_offsets")
                val begin = offsets?.opt(0)?.let { (it as? Number)?.toLong() }
                val end = offsets?.opt(1)?.let { (it as? Number)?.toLong() }
                val numel = shape[0].toLong() * shape[1]
                if (offsets == null || offsets.length() != 2 || begin == null || end == null || begin < 0 || end < begin || end > dataLen) {
                    bad("tensor '$key' has data_offsets ${offsets ?: "none"} outside its $dataLen data bytes")
                }
                if (end - begin != 4 * numel) bad("tensor '$key' has data_offsets [$begin, $end] (${end - begin} bytes) but its shape needs ${4 * numel}")
                val side = key.substringAfterLast('.', "")
                val layerKey = key.substringBeforeLast('.', "")
                val component = layerKey.substringBefore('.', "")
                val module = layerKey.substringAfter('.', "")
                val slot = slots[component]?.layer(module)
                if (side !in SIDES || slot == null) {
                    bad("unknown tensor '$key' (expected <component>.<module>.down|up for a layer of the bundle's slots: " +
                        "${slots.values.joinToString { "${it.component} (${it.layers.size} layers)" }})")
                }
                val data = FloatArray(numel.toInt())
                java.nio.ByteBuffer.wrap(bytes, dataStart + begin.toInt(), (end - begin).toInt()).order(java.nio.ByteOrder.LITTLE_ENDIAN)
                    .asFloatBuffer().get(data)
                found.getOrPut(layerKey) { LinkedHashMap() }[side] = shape to data
            }
            val layers = LinkedHashMap<String, MutableMap<String, LoraLayer>>()
            for ((layerKey, pair) in found) {
                val component = layerKey.substringBefore('.')
                val module = layerKey.substringAfter('.')
                val s = slots.getValue(component)
                val slot = s.layer(module)!!
                val (downShape, down) = pair["down"] ?: bad("$layerKey lacks its down matrix")
                val (upShape, up) = pair["up"] ?: bad("$layerKey lacks its up matrix")
                val rank = downShape[0]
                if (downShape[1] != slot.inFeatures || upShape[0] != slot.outFeatures || upShape[1] != rank) {
                    bad("$layerKey has down (${downShape.joinToString(" x ")}) and up (${upShape.joinToString(" x ")}); " +
                        "the slots need (r x ${slot.inFeatures}) and (${slot.outFeatures} x r)")
                }
                if (rank > s.rank) bad("$layerKey has rank $rank, more than the ${s.rank} slots of $component")
                layers.getOrPut(component) { LinkedHashMap() }[module] = LoraLayer(rank, down, up)
            }
            if (layers.isEmpty()) bad("it holds no adapted layer")
            return AdapterWeights(name, layers)
        }

        /**
         * The `lora_weights` vector of [slots] for a mix of adapters, each its layers in this component (module ->
         * [LoraLayer]; empty for an adapter that does not adapt it) and its scale, in order (`runtime_lora.pack`):
         *
         *     vector = zeros(P); start = 0
         *     for each adapter k (r_k = the largest rank of its layers in this component, 0 for none):
         *         for each slotted layer L the adapter has:
         *             down_L[start + i, :] = down_k[i, :]          i < rank of down_k   (down_L: R x in)
         *             up_L[:, start + i]   = s_k * up_k[:, i]                           (up_L: out x R, float32 product)
         *         start += r_k
         *
         * Throws IllegalArgumentException when the mix needs more than the R slots.
         */
        fun pack(slots: AdapterSlots, mix: List<Pair<Map<String, LoraLayer>, Double>>): FloatArray {
            val used = mix.sumOf { (layers, _) -> layers.values.maxOfOrNull { it.rank } ?: 0 }
            require(used <= slots.rank) {
                "these adapters together need $used rank slots; the bundle's ${slots.component} has ${slots.rank} " +
                    "(export with a larger --lora-rank to mix them)"
            }
            val flat = FloatArray(slots.size)
            val r = slots.rank
            var start = 0
            for ((layers, scale) in mix) {
                val s = scale.toFloat()
                for (l in slots.layers) {
                    val lora = layers[l.module] ?: continue
                    val fi = l.inFeatures
                    val fo = l.outFeatures
                    // down rows start until start + k: contiguous in the row-major (R x in) block
                    System.arraycopy(lora.down, 0, flat, l.downOffset + start * fi, lora.rank * fi)
                    for (o in 0 until fo) {
                        for (i in 0 until lora.rank) flat[l.upOffset + o * r + start + i] = s * lora.up[o * lora.rank + i]
                    }
                }
                start += layers.values.maxOfOrNull { it.rank } ?: 0
            }
            return flat
        }
    }
}

/**
 * The adapter mix of a pipeline and the `lora_weights` vector it gives each slotted component (zeros until [set]).
 * Adapter files are read once (sha256-checked first) and cached; [set] repacks the vectors only.
 */
class AdapterMixer(private val bundle: Bundle) {
    private val record: AdapterRecord? = bundle.manifest.adapters
    private val cache = HashMap<String, AdapterWeights>()
    private var vectors: Map<String, FloatArray> = record?.slots?.mapValues { FloatArray(it.value.size) } ?: emptyMap()

    /** The mix on now ([] = the base model). */
    var mix: List<AdapterChoice> = emptyList()
        private set

    /** The adapters the bundle holds, in the manifest's order (empty without an `adapters` record). */
    val available: List<AdapterFileSpec> get() = record?.files.orEmpty()

    /** The `lora_weights` vector of [component], or null when it has no slots (it takes no such input). */
    fun vector(component: String): FloatArray? = vectors[component]

    /**
     * Switch to [mix] (in order; [] = the base model). Checks the mix ([checkMix]), reads and caches each adapter file
     * not read yet, and packs every slotted component's vector; on any failure the previous mix stays on.
     * Throws IllegalArgumentException for a mix the bundle cannot run, [BundleError] for a missing, modified or
     * malformed adapter file.
     */
    fun set(mix: List<AdapterChoice>) {
        checkMix(bundle.manifest, mix)
        val record = record ?: run {
            this.mix = emptyList()
            return
        }
        val weights = mix.map { c -> cache.getOrPut(c.name) { read(record.file(c.name)!!) } }
        val packed = record.slots.mapValues { (component, s) ->
            AdapterWeights.pack(s, weights.zip(mix).map { (w, c) -> (w.layers[component] ?: emptyMap()) to c.scale })
        }
        vectors = packed
        this.mix = mix.toList()
    }

    private fun read(spec: AdapterFileSpec): AdapterWeights {
        bundle.verify(spec.file)
        val bytes = java.io.File(bundle.dir, spec.file.path).readBytes()
        return AdapterWeights.read(spec.name, spec.file.path, bytes, record!!.slots)
    }

    companion object {
        /**
         * Refuse, in one line (IllegalArgumentException), a mix [manifest]'s bundle cannot run, from the manifest
         * alone: a non-finite scale, a name given twice, adapters on a bundle without any, a name it does not hold.
         * (The rank slots a mix needs are known once its files are read: [set] checks them.)
         */
        fun checkMix(manifest: Manifest, mix: List<AdapterChoice>) {
            for ((i, c) in mix.withIndex()) {
                require(c.scale.isFinite()) { "adapter ${c.name}: the scale must be a finite number, got ${c.scale}" }
                require(mix.subList(0, i).none { it.name == c.name }) { "adapter ${c.name} is given twice" }
            }
            if (mix.isEmpty()) return
            val record = manifest.adapters
                ?: throw IllegalArgumentException(
                    "this bundle holds no run-time adapters (export it with --runtime-lora to switch adapters at run time)",
                )
            for (c in mix) {
                require(record.file(c.name) != null) {
                    "the bundle holds no run-time adapter named '${c.name}' (it holds: ${record.names.joinToString().ifEmpty { "none" }})"
                }
            }
        }

        /**
         * `NAME[:SCALE]` (the CLI's `--lora`; the scale after the last ':', default 1) -> an [AdapterChoice]. Throws
         * IllegalArgumentException for a scale that is not a number.
         */
        fun parseChoice(text: String): AdapterChoice {
            val at = text.lastIndexOf(':')
            if (at < 0) return AdapterChoice(text, 1.0)
            val tail = text.substring(at + 1)
            val scale = when (tail.trim().lowercase()) {
                "inf", "+inf", "infinity" -> Double.POSITIVE_INFINITY
                "-inf", "-infinity" -> Double.NEGATIVE_INFINITY
                "nan" -> Double.NaN
                else -> tail.trim().takeIf { NUMBER.matches(it) }?.toDoubleOrNull()
            } ?: throw IllegalArgumentException("--lora $text: the scale after ':' must be a number, got '$tail'")
            return AdapterChoice(text.substring(0, at), scale)
        }

        private val NUMBER = Regex("""[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?""")
    }
}
