package com.mobilediff.engine

import java.io.File

/**
 * What to generate. Null sampling fields take the manifest's default sampling plan.
 *
 * From an image (a bundle exported with `--image-modes`, [Manifest.image]): [initImage] alone is image-to-image,
 * with [mask] (white or >= 128: repaint, black: keep) inpainting, both at the bundle's width x height ([ImageInput]
 * reads and checks them). [strength] in (0, 1] is how much of the sampling runs over the image (`floor(steps *
 * strength)` of the plan's steps, diffusers' rule; 1: from noise); null: 0.75 for image-to-image, 1 for inpainting,
 * as `mobilediff generate` defaults it.
 */
data class GenerationRequest(
    val prompt: String,
    val seed: Long,
    val steps: Int? = null,
    val sampler: String? = null,
    val guidance: Double? = null,
    val initImage: RgbImage? = null,
    val mask: RgbImage? = null,
    val strength: Double? = null,
) {
    /** [Manifest.MODE_TXT2IMG], [ImageModes.IMG2IMG] or [ImageModes.INPAINT]. */
    val mode: String
        get() = when {
            initImage == null -> Manifest.MODE_TXT2IMG
            mask == null -> ImageModes.IMG2IMG
            else -> ImageModes.INPAINT
        }
}

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
    /** Milliseconds per component loaded during this generation (lazy loading, or a reload after a release). */
    val loadMs: Map<String, Double> = emptyMap(),
    /** The process's resident memory as the generation ended, with its peak; null where the kernel does not say. */
    val memory: MemoryUsage? = null,
    /** What ran: [Manifest.MODE_TXT2IMG], [ImageModes.IMG2IMG] or [ImageModes.INPAINT] ([GenerationRequest.mode]). */
    val mode: String = Manifest.MODE_TXT2IMG,
    /** The strength an image-to-image or inpainting run used (its default filled in); null for text-to-image. */
    val strength: Double? = null,
    /** The sampler steps that ran: the plan's, or for a run from an image the `floor(steps * strength)` of them. */
    val stepsRun: Int = plan.steps,
    /** The run-time adapters that were on ([Pipeline.setAdapters]; empty: the base model). */
    val adapters: List<AdapterChoice> = emptyList(),
)

/**
 * A [GenerationRequest] resolved against a manifest ([Pipeline.check]): the sampling [plan], its [table], and for a
 * run from an image the [strength] with its default filled in (null for text-to-image).
 */
data class CheckedRequest(val plan: SamplingPlan, val table: SamplerTable, val strength: Double?)

/** Progress and per-call reports of a generation; every method is optional. Called on the generating thread. */
interface GenerationListener {
    /** After sampler step [step] (0-based) of [steps], with the latent after the step. */
    fun onStep(step: Int, steps: Int, latent: FloatArray) {}

    /** After every component call, with its inputs, outputs (batch rows as the engine sees them) and duration. */
    fun onCall(component: String, inputs: List<Tensor>, outputs: List<Tensor.F32>, ms: Double) {}

    /** Before [component] is loaded for its next call (its first, or the first after a release). */
    fun onLoading(component: String) {}

    /** After [component] was loaded, in [ms] (its sha256 check included the first time). */
    fun onLoaded(component: String, ms: Double) {}
}

/**
 * Text -> image from a bundle alone, on one [Backend]: tokenizer, torch-compatible noise, the manifest's sampler
 * table and guidance, the three component graphs, pixel conversion. The Kotlin twin of
 * `mobilediff.engine.BundleRunner`; it loads (and sha256-checks) each component once, then generates any number
 * of images. A bundle with image modes also runs image-to-image and inpainting ([GenerationRequest.initImage]): its
 * VAE encoder ([Manifest.IMAGE_ENCODER]) is a fourth component, loaded at the first run from an image whatever the
 * [Loading] (text-to-image never needs it; the Python runner loads it so too) and released like the others.
 *
 * Memory: with [Loading.LAZY] a component is loaded on its first call (text encoder, then UNet, then decoder);
 * [release] frees every loaded component (each is loaded again, without a second sha256 check, on its next call),
 * and with [reduceMemory] each is released after its last call of a generation, so at most one component is
 * resident at a time. [lowMemory] is the low-memory mode (`mobilediff generate --bundle --low-memory`'s): lazy
 * loading and release after each part, always, with the backend's low-memory settings ([Backend.load]).
 * [GenerationResult.memory] records the process's peak resident memory.
 *
 * Run-time LoRA adapters ([Manifest.adapters]): [setAdapters] switches the mix between generations by repacking the
 * slotted components' `lora_weights` inputs (zeros: the base model, fed whenever the bundle has slots); nothing reloads.
 *
 * Not thread-safe: generate and release from one thread at a time. [reduceMemory] and the [CancelToken] passed to
 * [generate] may be set from any thread.
 */
class Pipeline(
    val bundle: Bundle,
    val backend: Backend,
    private val precision: String? = null,
    /**
     * Low-memory mode: each component is loaded when its turn comes in a generation (text encoder -> the prompts'
     * features -> released; UNet -> every step -> released; decoder -> the image -> released) with the backend's
     * low-memory settings, so the process holds one component at a time and the runtime keeps no arena between
     * calls. Each is released after its part whatever [reduceMemory] says, so every image loads the three again
     * (without a second sha256 check). The same image as the resident mode, bit for bit. [loading] must be
     * [Loading.LAZY] (its default here).
     */
    val lowMemory: Boolean = false,
    loading: Loading = if (lowMemory) Loading.LAZY else Loading.EAGER,
    /**
     * The run-time adapters on from the start ([setAdapters]), checked (their files read) before any component loads.
     */
    adapters: List<AdapterChoice> = emptyList(),
) : AutoCloseable {
    enum class Loading {
        /** The constructor checks and loads every component: a bad file fails before any generation. */
        EAGER,

        /** Each component is checked and loaded on its first call; the constructor checks only the manifest. */
        LAZY,
    }

    val manifest: Manifest = bundle.manifest
    private val tokenizer: ClipTokenizer = bundle.tokenizer()
    private val components: Map<String, Component>
    private var uncondText: EncodedText? = null
    private val lastLoadMs = LinkedHashMap<String, Double>()
    private val mixer = AdapterMixer(bundle)

    /**
     * Release each component after its last call of a generation (text encoder after the prompt, UNet after the
     * last step, decoder after decoding): the peak holds the largest component instead of all three, at the cost
     * of loading each again for the next image. Set it under memory pressure; read as each component finishes.
     */
    @Volatile
    var reduceMemory: Boolean = false

    /**
     * Start a new peak-memory mark as each generation starts ([ProcessMemory.resetPeak], process-wide), so
     * [GenerationResult.memory] holds that generation's own peak; off, the peak counts from the process's start.
     */
    var peakPerGeneration: Boolean = false

    /** The run-time adapters the bundle holds ([Manifest.adapters]; empty for a bundle without them), in its order. */
    val availableAdapters: List<AdapterFileSpec> get() = mixer.available

    /** The adapter mix on now ([setAdapters]; empty: the base model). */
    val adapters: List<AdapterChoice> get() = mixer.mix

    /**
     * Switch the run-time adapters for the next generations: [mix] of the bundle's adapters ([AdapterChoice]: name and
     * scale), in order, filling consecutive rank slots ([] = the base model). Repacks each slotted component's
     * `lora_weights` input; no component is reloaded (each adapter file is read, sha256-checked, once). Throws
     * IllegalArgumentException for a non-finite scale, a name given twice or not held, a bundle without adapters or a
     * mix needing more rank slots than the bundle has; [BundleError] for a bad adapter file. On failure the previous
     * mix stays on. Not during a generation (from the generating thread, or with none running).
     */
    fun setAdapters(mix: List<AdapterChoice>) {
        mixer.set(mix)
        uncondText = null  // the unconditional prompt's features depend on the text encoder's adapters
    }

    /** Milliseconds of each component's most recent check and load. */
    val loadMs: Map<String, Double> get() = LinkedHashMap(lastLoadMs)

    /** The components loaded right now (text_encoder, unet, vae_decoder order). */
    val loadedComponents: List<String> get() = components.values.filter { it.isLoaded }.map { it.name }

    init {
        require(!(lowMemory && loading == Loading.EAGER)) {
            "a low-memory pipeline loads each component when its turn comes: Loading.EAGER contradicts it"
        }
        val declared = LinkedHashMap<String, Component>()
        for (name in Manifest.COMPONENTS) {
            val spec = manifest.component(name)
            // the manifest's entry for this backend: a bundle without one fails here, whatever the loading
            declared[name] = Component(name, spec, spec.file(backend.target, precision))
        }
        // the encoder of image modes: declared where the bundle has a file for this backend (else a run from an
        // image is refused, naming what the bundle has), loaded at its first call
        manifest.components[Manifest.IMAGE_ENCODER]?.let { spec ->
            spec.files.firstOrNull { it.target == backend.target && (precision == null || it.precision == precision) }
                ?.let { declared[spec.name] = Component(spec.name, spec, it) }
        }
        components = declared
        if (manifest.inpaintingOnly) {
            // fed by position after encoder_hidden_states (and a text mask and a guidance embedding), as the Python runner feeds them
            val names = manifest.component("unet").inputs.map { it.name }
            val at = manifest.unetExtraInputsAt
            if (names.drop(at).take(2) != UNET_IMAGE_INPUTS) {
                throw BundleError(
                    Manifest.MANIFEST,
                    "declares an inpainting denoiser (image.denoiser) but its unet takes (${names.joinToString()}), " +
                        "not ${UNET_IMAGE_INPUTS.joinToString(" and ")} as inputs ${at + 1} and ${at + 2}",
                )
            }
        }
        mixer.set(adapters)  // every adapter file checked before anything is loaded
        if (loading == Loading.EAGER) {
            try {
                for (name in Manifest.COMPONENTS) components.getValue(name).session(null, null)
            } catch (e: Throwable) {
                close()
                throw e
            }
        }
    }

    /**
     * Generate one image. Throws IllegalArgumentException for bad options or a prompt [Prompts.check] refuses (an
     * init image or mask [ImageInput] refuses: [ImageInputError]; a run from an image in a bundle without image
     * modes), [BundleError] for a missing table or a component that gives non-finite values (never an image made of
     * them), [GenerationCancelled] when [cancel] was set (checked before the first component, after every sampler
     * step and before decoding; a runtime call in progress runs to its end).
     *
     * From an image ([GenerationRequest.initImage]), the seed's generator draws in the contract's order (docs/bundle.md,
     * `image`): eps for a gaussian encoder posterior, the noise, for inpainting with a gaussian posterior one more
     * latent-shaped draw that nothing uses (diffusers' masked-image encoding takes it), then the sampler's fresh noise.
     *
     * An inpainting UNet ([Manifest.inpaintingOnly], `image.denoiser: "inpainting"`) runs inpainting alone ([check]
     * refuses the rest in one line) by diffusers' 9-channel rules: eps is drawn and the image encoded only where the
     * run starts from it (strength < 1); the second draw (eps2) samples the masked image's latent, `masked =
     * pixels * (1 - pixel mask)` (the latent mask repeated f x f) through the VAE encoder; every UNet call takes the
     * latent mask and that latent after `encoder_hidden_states` (both rows of classifier-free guidance the same), and
     * no blend follows a step.
     */
    fun generate(request: GenerationRequest, listener: GenerationListener? = null, cancel: CancelToken? = null): GenerationResult {
        val (plan, table, strength) = check(manifest, request)
        val image = request.initImage?.let { ImageInput.pixels(it) }
        val mask = request.mask?.let { ImageInput.latentMask(it, manifest.geometry, "the mask") }
        val run = strength?.let { table.startTable(it) }
        val stepsRun = run?.table?.steps ?: table.steps
        fun checkCancel(completed: Int) {
            if (cancel?.isCancelled == true) throw GenerationCancelled(completed, stepsRun)
        }
        checkCancel(0)
        val peakReset = peakPerGeneration && ProcessMemory.resetPeak()
        val timings = Timings()
        val loads = Timings()
        val start = System.nanoTime()
        val geo = manifest.geometry
        val shape = geo.latentShape

        val generator = TorchGenerator(request.seed)
        val gaussian = manifest.image?.gaussian == true
        // an inpainting UNet encodes the image only when the run starts from it (strength < 1), as diffusers does
        val inpaintingUnet = manifest.inpaintingOnly
        val z0 = image?.takeIf { !inpaintingUnet || strength!! < 1.0 }
            ?.let { encodeImage(it, if (gaussian) generator.normal(shape) else null, timings, loads, listener) }
        if (z0 != null && !inpaintingUnet) releaseIfReducing(Manifest.IMAGE_ENCODER)
        val noise = generator.normal(shape)
        // diffusers' masked-image encoding draws one (a 4-channel UNet does not use its latent)
        val eps2 = if (mask != null && gaussian) generator.normal(shape) else null
        // an inpainting UNet's extra inputs: the latent mask (1, 1, h, w) and the masked image's latent (1, C, h, w)
        val unetImageInputs = if (!inpaintingUnet) emptyList() else {
            val masked = encodeImage(maskedPixels(image!!, mask!!), eps2, timings, loads, listener)
            releaseIfReducing(Manifest.IMAGE_ENCODER)
            listOf(Tensor.F32(intArrayOf(1, 1, geo.latentHeight, geo.latentWidth), mask), Tensor.F32(shape, masked))
        }
        checkCancel(0)
        val denoise = guidedDenoiser(request.prompt, plan.guidance, shape, unetImageInputs, timings, loads, listener)
        releaseIfReducing("text_encoder")
        checkCancel(0)
        val onStep = { i: Int, x: FloatArray ->
            listener?.onStep(i, stepsRun, x)
            checkCancel(i + 1)
        }
        val fresh = { generator.normal(shape) }
        val latent = if (strength == null) sample(table, noise, denoise, fresh, onStep = onStep)
        else sampleImage(table, strength, z0, noise, mask, denoise, fresh, blend = !inpaintingUnet, onStep = onStep)
        releaseIfReducing("unet")
        // every denoiser output was finite: only the table's arithmetic can have left float32's range
        requireFinite(null, latent, "the final latent (sampler ${table.name}:${table.steps})")

        // decoder input = latent / scaling_factor + shift_factor (a float32 division, as Python)
        val sf = geo.scalingFactor.toFloat()
        val shift = geo.shiftFactor.toFloat()
        val z = FloatArray(latent.size) { latent[it] / sf + shift }
        requireFinite(null, z, "the decoder's input (final latent / geometry.scaling_factor + geometry.shift_factor)")
        val decoded = call("vae_decoder", listOf(Tensor.F32(shape, z)), timings, loads, listener)[0].data
        releaseIfReducing("vae_decoder")
        requireFinite("vae_decoder", decoded, "the decoded image")
        val argb = ImageConversion.toArgb(decoded, geo.height, geo.width)
        val raw = ImageConversion.toHwc(decoded, geo.height, geo.width)
        // loading is part of the wall time here; totalMs keeps to the generation itself, as an eager pipeline's
        val totalMs = (System.nanoTime() - start) / 1e6 - loads.perComponent.values.sum()
        val memory = ProcessMemory.read()?.let { if (peakReset) it.copy(peakSince = MemoryUsage.PeakSince.GENERATION_START) else it }
        return GenerationResult(
            geo.width, geo.height, argb, raw, plan, timings.perComponent, totalMs, loads.perComponent, memory,
            request.mode, strength, stepsRun, mixer.mix,
        )
    }

    /**
     * The clean latent of [pixels] ((1, 3, H, W) in [-1, 1]): the VAE encoder's posterior (mean, std), then
     * `z0 = (mean + std * eps - shift_factor) * scaling_factor` in float32 as Python computes it (the mean alone
     * for a deterministic posterior, [eps] null).
     */
    private fun encodeImage(pixels: FloatArray, eps: FloatArray?, timings: Timings, loads: Timings, listener: GenerationListener?): FloatArray {
        val out = call(Manifest.IMAGE_ENCODER, listOf(Tensor.F32(manifest.geometry.imageShape, pixels)), timings, loads, listener)
        val mean = out[0].data
        requireFinite(Manifest.IMAGE_ENCODER, mean, "its latent mean")
        val latentSize = manifest.geometry.latentShape.fold(1) { a, b -> a * b }
        if (mean.size != latentSize) {
            throw BundleError(components.getValue(Manifest.IMAGE_ENCODER).path, "its latent mean has ${mean.size} values, the latent ${latentSize}")
        }
        val z = if (eps == null) mean else {
            val std = out.getOrNull(1)?.data
                ?: throw BundleError(components.getValue(Manifest.IMAGE_ENCODER).path, "gives no latent_std (a gaussian posterior needs it)")
            requireFinite(Manifest.IMAGE_ENCODER, std, "its latent std")
            FloatArray(mean.size) { mean[it] + std[it] * eps[it] }
        }
        val shift = manifest.geometry.shiftFactor.toFloat()
        val sf = manifest.geometry.scalingFactor.toFloat()
        return FloatArray(z.size) { (z[it] - shift) * sf }
    }

    /**
     * The masked image of an inpainting UNet: [pixels] ((1, 3, H, W) in [-1, 1]) times `1 - pixel mask`, the pixel
     * mask the latent [mask] ((1, 1, h, w), 1 = repaint) repeated f x f (nearest), in float32 as Python computes it.
     */
    private fun maskedPixels(pixels: FloatArray, mask: FloatArray): FloatArray {
        val geo = manifest.geometry
        val f = geo.vaeScaleFactor
        val plane = geo.height * geo.width
        return FloatArray(pixels.size) { i ->
            val p = i % plane
            val y = minOf(p / geo.width / f, geo.latentHeight - 1)
            val x = minOf(p % geo.width / f, geo.latentWidth - 1)
            pixels[i] * (1f - mask[y * geo.latentWidth + x])
        }
    }

    /**
     * Free every loaded component's runtime session; the next call of each loads it again (its file is not hashed
     * again: it was checked on its first load). Returns the released components' names. Not during a generation:
     * from the generating thread, or with none running (set [reduceMemory] to shed memory mid-generation).
     */
    fun release(): List<String> {
        val released = components.values.filter { it.isLoaded }
        var failure: Throwable? = null
        for (c in released) {
            try {
                c.release()
            } catch (e: Throwable) {
                if (failure == null) failure = e
            }
        }
        failure?.let { throw it }
        return released.map { it.name }
    }

    private fun releaseIfReducing(name: String) {
        if (reduceMemory || lowMemory) components.getValue(name).release()
    }

    /**
     * The denoiser as the sampler sees it, (model input, timestep) -> guided output, for [prompt] at guidance [scale]:
     * classifier-free guidance runs the UNet on rows [uncond, cond] and returns uncond + scale * (cond - uncond)
     * (float32, as Python), only when scale > 1; a guidance embedding is one more UNet input. A bundle whose text
     * encoder takes the caption's padding mask ([Manifest.maskedText]) feeds the denoiser that mask as float32 right
     * after `encoder_hidden_states`, its rows in the hidden states' order ([uncond, cond] under guidance: the
     * unconditional prompt's own mask first). [imageInputs] (an inpainting UNet's mask and masked image latent, one
     * row each; empty for any other UNet) follow, stacked for every row.
     */
    private fun guidedDenoiser(
        prompt: String,
        scale: Double,
        latentShape: IntArray,
        imageInputs: List<Tensor.F32>,
        timings: Timings,
        loads: Timings,
        listener: GenerationListener?,
    ): (FloatArray, Double) -> FloatArray {
        val encoded = encode(prompt, timings, loads, listener)
        var text = encoded.features.data  // (1, L, D)
        var textMask = encoded.mask  // L values, or null
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
                    val uncond = uncondText ?: encode(guidance.unconditionalPrompt, timings, loads, listener).also { uncondText = it }
                    text = uncond.features.data + text
                    textMask = textMask?.let { uncond.mask!! + it }
                }
            }
        }
        val rows = if (cfg) 2 else 1
        val textTensor = Tensor.F32(intArrayOf(rows, encoded.features.shape[1], encoded.features.shape[2]), text)
        val maskTensor = textMask?.let { Tensor.F32(intArrayOf(rows, it.size / rows), it) }
        val sampleShape = intArrayOf(rows) + latentShape.copyOfRange(1, latentShape.size)
        val w = scale.toFloat()
        val rowInputs = imageInputs.map { e ->
            if (rows == 1) e else Tensor.F32(intArrayOf(rows) + e.shape.copyOfRange(1, e.shape.size), e.data + e.data)
        }
        return { x, t ->
            val inputs = mutableListOf<Tensor>(
                Tensor.F32(sampleShape, if (cfg) x + x else x),
                Tensor.F32(intArrayOf(rows), FloatArray(rows) { t.toFloat() }),
                textTensor,
            )
            maskTensor?.let { inputs.add(it) }
            extra?.let { inputs.add(it) }
            inputs.addAll(rowInputs)
            val out = call("unet", inputs, timings, loads, listener)[0].data
            requireFinite("unet", out, "its output at timestep $t")
            if (cfg) FloatArray(x.size) { j -> out[j] + w * (out[x.size + j] - out[j]) } else out
        }
    }

    /**
     * The text encoder's features of [prompt], (1, L, D), and for a bundle whose text encoder takes the caption's
     * padding mask ([Manifest.maskedText]) that mask as float32, L values (fed to the text encoder as int32 after the
     * ids).
     */
    private fun encode(prompt: String, timings: Timings, loads: Timings, listener: GenerationListener?): EncodedText {
        val (ids, mask) = textInputs(prompt)
        val inputs = listOf(Tensor.I32(intArrayOf(1, ids.size), ids)) + listOfNotNull(mask?.let { Tensor.I32(intArrayOf(1, it.size), it) })
        val features = call("text_encoder", inputs, timings, loads, listener)[0]
            .also { requireFinite("text_encoder", it.data, "its output") }
        return EncodedText(features, mask?.let { m -> FloatArray(m.size) { m[it].toFloat() } })
    }

    /** A prompt's text features (1, L, D) and its padding mask as float32 (L values; null: the bundle feeds none). */
    private class EncodedText(val features: Tensor.F32, val mask: FloatArray?)

    private fun call(name: String, inputs: List<Tensor>, timings: Timings, loads: Timings, listener: GenerationListener?): List<Tensor.F32> {
        val component = components[name] ?: throw BundleError(Manifest.MANIFEST, "has no ${backend.target} file for $name " +
            "(it has: ${manifest.component(name).files.joinToString { "${it.target}/${it.precision}" }.ifEmpty { "none" }})")
        component.session(loads, listener)
        // a slotted component's last input: the adapter mix's vector (zeros: the base model)
        val fed = mixer.vector(name)?.let { inputs + Tensor.F32(intArrayOf(it.size), it) } ?: inputs
        val start = System.nanoTime()
        val out = component.run(fed)
        val ms = (System.nanoTime() - start) / 1e6
        timings.add(name, ms)
        listener?.onCall(name, fed, out, ms)
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

    companion object {
        /**
         * What [request] runs on [manifest] — the plan, its table, and for a run from an image the strength with its
         * default filled in — checked before any component loads: the same IllegalArgumentException ([ImageInputError]
         * for the images) or [BundleError] that [generate] throws. The CLI calls it before it loads the pipeline.
         */
        fun check(manifest: Manifest, request: GenerationRequest): CheckedRequest {
            val plan = manifest.defaultSampling.let {
                SamplingPlan(request.sampler ?: it.sampler, request.steps ?: it.steps, request.guidance ?: it.guidance)
            }
            require(plan.steps >= 1) { "steps must be >= 1, got ${plan.steps}" }
            require(plan.guidance.isFinite() && plan.guidance >= 0) { "guidance must be a finite number >= 0, got ${plan.guidance}" }
            Prompts.check(request.prompt)
            val table = manifest.sampler(plan.sampler, plan.steps)
            val init = request.initImage
            require(init != null || request.mask == null) { "a mask needs the image it masks (an init image)" }
            val mode = request.mode
            if (manifest.inpaintingOnly && mode != ImageModes.INPAINT) throw IllegalArgumentException(INPAINTING_ONLY)
            if (init == null) {
                require(request.strength == null) { "a strength needs an init image: it is how far the image is noised" }
                return CheckedRequest(plan, table, null)
            }
            require(manifest.supports(mode)) {
                "this bundle was exported without image modes" + (manifest.image?.let { " for $mode (it runs ${it.modes.joinToString()})" } ?: "") +
                    ": export it again with --image-modes for ${if (mode == ImageModes.INPAINT) "inpainting" else "image-to-image"}"
            }
            val strength = request.strength ?: if (mode == ImageModes.INPAINT) 1.0 else DEFAULT_IMG2IMG_STRENGTH
            strengthSteps(table.steps, strength)
            ImageInput.checkSize(init, manifest.geometry, "the init image")
            request.mask?.let { ImageInput.latentMask(it, manifest.geometry, "the mask") }
            return CheckedRequest(plan, table, strength)
        }

        /** An inpainting UNet's inputs after `encoder_hidden_states` (docs/bundle.md, "An inpainting UNet"). */
        val UNET_IMAGE_INPUTS = listOf("mask", "masked_image_latents")

        /** The one-line refusal of text-to-image or image-to-image on a bundle whose denoiser is an inpainting UNet. */
        const val INPAINTING_ONLY =
            "this bundle's denoiser is an inpainting UNet: it runs inpainting only (an init image and a mask)"

        /** The strength of an image-to-image run that does not give one (`mobilediff generate`'s default). */
        const val DEFAULT_IMG2IMG_STRENGTH = 0.75
    }

    /** The CLIP token ids the engine feeds the text encoder for [prompt]. */
    fun tokenize(prompt: String): IntArray = tokenizer.encode(prompt)

    /**
     * What the engine feeds the text encoder for [prompt]: its ids, and its padding mask ([ClipTokenizer.attentionMask])
     * where the text encoder takes one ([Manifest.maskedText]), else null.
     */
    fun textInputs(prompt: String): Pair<IntArray, IntArray?> =
        if (manifest.maskedText) tokenizer.encodeWithMask(prompt) else tokenizer.encode(prompt) to null

    /** Release every loaded component (the pipeline cannot generate after this). */
    override fun close() {
        release()
    }

    /**
     * One component graph, loaded on demand: the manifest's [declared] entry until the first load, which checks the
     * file's sha256 ([Bundle.componentFile]) and keeps the file it gave for later reloads. A graph exported for a
     * static batch ([staticBatch] rows) gets its inputs padded with copies of their last row and its outputs cut
     * back, as the Python runner does.
     */
    private inner class Component(val name: String, val spec: ComponentSpec, private val declared: ComponentFile) {
        private var checked: Pair<File, ComponentFile>? = null
        private var session: ComponentSession? = null

        val isLoaded: Boolean get() = session != null
        val path: String get() = (checked?.second ?: declared).file.path
        val staticBatch: Int? get() = if ((checked?.second ?: declared).dynamicBatch) null else spec.batch

        /** The loaded session, loading it first if needed (the time goes to [loads] and the listener). */
        fun session(loads: Timings?, listener: GenerationListener?): ComponentSession {
            session?.let { return it }
            listener?.onLoading(name)
            val start = System.nanoTime()
            val (file, entry) = checked ?: bundle.componentFile(name, backend.target, precision).also { checked = it }
            val loaded = backend.load(file, spec, entry.file.path, lowMemory)
            val ms = (System.nanoTime() - start) / 1e6
            session = loaded
            lastLoadMs[name] = ms
            loads?.add(name, ms)
            listener?.onLoaded(name, ms)
            return loaded
        }

        fun run(inputs: List<Tensor>): List<Tensor.F32> {
            val session = session(null, null)
            val rows = inputs[0].shape[0]
            val need = staticBatch ?: return session.run(inputs)
            if (need == rows) return session.run(inputs)
            require(rows < need) { "$name batch $rows exceeds the exported static batch $need" }
            // the batch inputs padded; a trailing lora_weights vector (no batch dimension) as it is
            val batched = if (mixer.vector(name) != null) inputs.size - 1 else inputs.size
            val padded = inputs.mapIndexed { i, t -> if (i < batched) padRows(t, need) else t }
            return session.run(padded).map { o ->
                val per = o.numel / o.shape[0]
                Tensor.F32(intArrayOf(rows) + o.shape.copyOfRange(1, o.shape.size), o.data.copyOf(rows * per))
            }
        }

        fun release() {
            val s = session ?: return
            session = null
            s.close()
        }

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
