package com.mobilediff.engine

/** What to generate. Null fields take the manifest's default sampling plan. */
data class GenerationRequest(
    val prompt: String,
    val seed: Long,
    val steps: Int? = null,
    val sampler: String? = null,
    val guidance: Double? = null,
)

/** A generated image with what it took. */
class GenerationResult(
    val width: Int,
    val height: Int,
    /** Packed ARGB pixels, row-major (Bitmap.setPixels order). */
    val argb: IntArray,
    /** (H, W, 3) float32 image in [-1, 1] before rounding to bytes. */
    val raw: FloatArray,
    val plan: SamplingPlan,
    /** Milliseconds per component (text_encoder, unet, vae_decoder), summed over calls. */
    val componentMs: Map<String, Double>,
    /** Milliseconds of the whole generation (tokenizer to pixels; model loading not included). */
    val totalMs: Double,
)

/** Progress and per-call reports of a generation; every method is optional. Called on the generating thread. */
interface GenerationListener {
    /** After sampler step [step] (0-based) of [steps], with the latent after the step. */
    fun onStep(step: Int, steps: Int, latent: FloatArray) {}

    /** After every component call, with its inputs, outputs (batch rows as the engine sees them) and duration. */
    fun onCall(component: String, inputs: List<Tensor>, outputs: List<Tensor.F32>, ms: Double) {}
}

/**
 * Text -> image from a bundle alone, on one [Backend]: tokenizer, torch-compatible noise, the manifest's sampler
 * table and guidance, the three component graphs, pixel conversion. The Kotlin twin of
 * `mobilediff.runtimes.BundleRunner`; it loads (and sha256-checks) the components once, then generates any
 * number of images. Not thread-safe: generate from one thread at a time.
 */
class Pipeline(val bundle: Bundle, val backend: Backend, precision: String? = null) : AutoCloseable {
    val manifest: Manifest = bundle.manifest
    private val tokenizer: ClipTokenizer = bundle.tokenizer()
    private val components: Map<String, Component>
    private var uncondText: FloatArray? = null

    /** Milliseconds spent checking and loading each component graph. */
    val loadMs: Map<String, Double>

    init {
        val load = Timings()
        val loaded = LinkedHashMap<String, Component>()
        try {
            for (name in Manifest.COMPONENTS) {
                val spec = manifest.component(name)
                val (file, entry) = bundle.componentFile(name, backend.target, precision)
                val session = load.measure(name) { backend.load(file, spec, entry.file.path) }
                loaded[name] = Component(name, entry.file.path, session, if (entry.dynamicBatch) null else spec.batch)
            }
        } catch (e: Throwable) {
            loaded.values.forEach { it.close() }
            throw e
        }
        components = loaded
        loadMs = load.perComponent
    }

    /**
     * Generate one image. Throws IllegalArgumentException for bad options or a prompt [Prompts.check] refuses,
     * [BundleError] for a missing table or a component that gives non-finite values (never an image made of them).
     */
    fun generate(request: GenerationRequest, listener: GenerationListener? = null): GenerationResult {
        val plan = manifest.defaultSampling.let {
            SamplingPlan(request.sampler ?: it.sampler, request.steps ?: it.steps, request.guidance ?: it.guidance)
        }
        require(plan.steps >= 1) { "steps must be >= 1, got ${plan.steps}" }
        require(plan.guidance.isFinite() && plan.guidance >= 0) { "guidance must be a finite number >= 0, got ${plan.guidance}" }
        Prompts.check(request.prompt)
        val table = manifest.sampler(plan.sampler, plan.steps)
        val timings = Timings()
        val start = System.nanoTime()
        val geo = manifest.geometry
        val shape = geo.latentShape

        val generator = TorchGenerator(request.seed)
        val noise = generator.normal(shape)
        val denoise = guidedDenoiser(request.prompt, plan.guidance, shape, timings, listener)
        val latent = sample(table, noise, denoise, { generator.normal(shape) }) { i, x -> listener?.onStep(i, table.steps, x) }
        // every denoiser output was finite: only the table's arithmetic can have left float32's range
        requireFinite(null, latent, "the final latent (sampler ${table.name}:${table.steps})")

        // decoder input = latent / scaling_factor + shift_factor (a float32 division, as Python)
        val sf = geo.scalingFactor.toFloat()
        val shift = geo.shiftFactor.toFloat()
        val z = FloatArray(latent.size) { latent[it] / sf + shift }
        requireFinite(null, z, "the decoder's input (final latent / geometry.scaling_factor + geometry.shift_factor)")
        val decoded = call("vae_decoder", listOf(Tensor.F32(shape, z)), timings, listener)[0].data
        requireFinite("vae_decoder", decoded, "the decoded image")
        val argb = ImageConversion.toArgb(decoded, geo.height, geo.width)
        val raw = ImageConversion.toHwc(decoded, geo.height, geo.width)
        val totalMs = (System.nanoTime() - start) / 1e6
        return GenerationResult(geo.width, geo.height, argb, raw, plan, timings.perComponent, totalMs)
    }

    /**
     * The denoiser as the sampler sees it, (model input, timestep) -> guided output, for [prompt] at guidance [scale]:
     * classifier-free guidance runs the UNet on rows [uncond, cond] and returns uncond + scale * (cond - uncond)
     * (float32, as Python), only when scale > 1; a guidance embedding is one more UNet input.
     */
    private fun guidedDenoiser(
        prompt: String,
        scale: Double,
        latentShape: IntArray,
        timings: Timings,
        listener: GenerationListener?,
    ): (FloatArray, Double) -> FloatArray {
        val encoded = encode(prompt, timings, listener)  // (1, L, D)
        var text = encoded.data
        var extra: Tensor.F32? = null
        var cfg = false
        when (val guidance = manifest.guidance) {
            is Guidance.Embedding -> extra = Tensor.F32(intArrayOf(1, guidance.embeddingDim), guidance.embedding(scale))
            is Guidance.ClassifierFree -> {
                cfg = scale > 1.0
                if (cfg && components.getValue("unet").staticBatch == 1) {
                    throw IllegalArgumentException(
                        "this bundle's denoiser was exported without a classifier-free-guidance batch: generate with guidance 1",
                    )
                }
                if (cfg) {
                    val uncond = uncondText ?: encode(guidance.unconditionalPrompt, timings, listener).data.also { uncondText = it }
                    text = uncond + text
                }
            }
        }
        val rows = if (cfg) 2 else 1
        val textTensor = Tensor.F32(intArrayOf(rows, encoded.shape[1], encoded.shape[2]), text)
        val sampleShape = intArrayOf(rows) + latentShape.copyOfRange(1, latentShape.size)
        val w = scale.toFloat()
        return { x, t ->
            val inputs = mutableListOf<Tensor>(
                Tensor.F32(sampleShape, if (cfg) x + x else x),
                Tensor.F32(intArrayOf(rows), FloatArray(rows) { t.toFloat() }),
                textTensor,
            )
            extra?.let { inputs.add(it) }
            val out = call("unet", inputs, timings, listener)[0].data
            requireFinite("unet", out, "its output at timestep $t")
            if (cfg) FloatArray(x.size) { j -> out[j] + w * (out[x.size + j] - out[j]) } else out
        }
    }

    /** The text encoder's features of [prompt]: (1, L, D). */
    private fun encode(prompt: String, timings: Timings, listener: GenerationListener?): Tensor.F32 {
        val ids = tokenizer.encode(prompt)
        return call("text_encoder", listOf(Tensor.I32(intArrayOf(1, ids.size), ids)), timings, listener)[0]
            .also { requireFinite("text_encoder", it.data, "its output") }
    }

    private fun call(name: String, inputs: List<Tensor>, timings: Timings, listener: GenerationListener?): List<Tensor.F32> {
        val start = System.nanoTime()
        val out = components.getValue(name).run(inputs)
        val ms = (System.nanoTime() - start) / 1e6
        timings.add(name, ms)
        listener?.onCall(name, inputs, out, ms)
        return out
    }

    /**
     * One pass over [values]: a NaN or infinity is a [BundleError], never an image. It names [component]'s graph
     * when the values are that graph's output (a graph overflowing, e.g. in float16), else the manifest (its sampler
     * table or latent scaling taking the engine's own float32 arithmetic out of range).
     */
    private fun requireFinite(component: String?, values: FloatArray, what: String) {
        val at = values.indexOfFirst { !it.isFinite() }
        if (at < 0) return
        val bad = values.count { !it.isFinite() }
        val where = "$what holds ${values[at]} at index $at ($bad of ${values.size} values not finite)"
        if (component == null) throw BundleError(Manifest.MANIFEST, "$where: the manifest's numbers overflow float32; no image is made of them")
        throw BundleError(components.getValue(component).path, "$component gave non-finite values: $where; no image is made of them")
    }

    /** The CLIP token ids the engine feeds the text encoder for [prompt]. */
    fun tokenize(prompt: String): IntArray = tokenizer.encode(prompt)

    override fun close() = components.values.forEach { it.close() }

    /**
     * A loaded graph; a graph exported for a static batch ([staticBatch] rows) gets its inputs padded with copies of
     * their last row and its outputs cut back, as the Python runner does.
     */
    private class Component(val name: String, val path: String, val session: ComponentSession, val staticBatch: Int?) : AutoCloseable {
        fun run(inputs: List<Tensor>): List<Tensor.F32> {
            val rows = inputs[0].shape[0]
            val need = staticBatch ?: return session.run(inputs)
            if (need == rows) return session.run(inputs)
            require(rows < need) { "$name batch $rows exceeds the exported static batch $need" }
            val padded = inputs.map { padRows(it, need) }
            return session.run(padded).map { o ->
                val per = o.numel / o.shape[0]
                Tensor.F32(intArrayOf(rows) + o.shape.copyOfRange(1, o.shape.size), o.data.copyOf(rows * per))
            }
        }

        override fun close() = session.close()

        private fun padRows(t: Tensor, need: Int): Tensor {
            val rows = t.shape[0]
            val per = t.numel / rows
            val shape = intArrayOf(need) + t.shape.copyOfRange(1, t.shape.size)
            return when (t) {
                is Tensor.F32 -> Tensor.F32(shape, FloatArray(need * per) { i -> t.data[minOf(i / per, rows - 1) * per + i % per] })
                is Tensor.I32 -> Tensor.I32(shape, IntArray(need * per) { i -> t.data[minOf(i / per, rows - 1) * per + i % per] })
            }
        }
    }
}
