package com.mobilediff.demo

import android.app.Activity
import android.app.ActivityManager
import android.content.ActivityNotFoundException
import android.content.ComponentCallbacks2
import android.content.Context
import android.content.Intent
import android.graphics.Bitmap
import android.os.Bundle
import android.view.View
import android.widget.AdapterView
import android.widget.ArrayAdapter
import android.widget.Button
import android.widget.EditText
import android.widget.ImageView
import android.widget.LinearLayout
import android.widget.ProgressBar
import android.widget.SeekBar
import android.widget.Spinner
import android.widget.TextView
import com.mobilediff.engine.AdapterMixer
import com.mobilediff.engine.Backend
import com.mobilediff.engine.BundleError
import com.mobilediff.engine.BundleImport
import com.mobilediff.engine.BundleSource
import com.mobilediff.engine.CancelToken
import com.mobilediff.engine.GenerationCancelled
import com.mobilediff.engine.GenerationListener
import com.mobilediff.engine.GenerationRequest
import com.mobilediff.engine.GenerationResult
import com.mobilediff.engine.ImageModes
import com.mobilediff.engine.ImportCancelled
import com.mobilediff.engine.Manifest
import com.mobilediff.engine.MemoryAdvice
import com.mobilediff.engine.Pipeline
import com.mobilediff.engine.SamplingPlan
import com.mobilediff.engine.Tensor
import com.mobilediff.engine.strengthSteps
import java.io.File
import java.io.IOException
import java.text.SimpleDateFormat
import java.util.Date
import java.util.Locale
import java.util.concurrent.Executors
import com.mobilediff.engine.Bundle as MobilediffBundle

/**
 * Pick a bundle (imported from storage, packaged in the APK, or pushed by adb), a runtime this APK packages and the
 * bundle holds, a sampling plan from the manifest; type a prompt, seed and guidance (prefilled from the plan);
 * Generate with progress per step and Cancel; Save or Share the image. With a bundle exported with image modes, pick
 * an image (gallery, camera roll, files; centre-cropped and scaled to the bundle's size, [PickedImage]) to start from
 * it at the strength the slider sets (image-to-image), and paint over it ([MaskView]) what to repaint (inpainting). All engine work runs on one background
 * thread, one task at a time; the loaded pipeline is kept until another bundle or runtime is picked, loads its
 * components lazily and gives them back under memory pressure ([onTrimMemory]). A bundle whose resident peak would
 * not fit in the memory available runs in the engine's low-memory mode ([lowMemoryChoice]). Whatever the engine or a
 * runtime throws on that thread is shown in the status line ([describeFailure]), never let through to crash the app.
 */
class MainActivity : Activity() {
    private val worker = Executors.newSingleThreadExecutor()
    private lateinit var store: BundleStore

    // worker thread only (the UI thread reads `pipeline` to flag memory pressure)
    @Volatile private var pipeline: Pipeline? = null
    private var pipelineKey: Pair<File, RuntimeKind>? = null
    /** Why the current pipeline runs in low-memory mode, or null when it is resident. */
    private var lowMemoryReason: String? = null

    /** Set by [onTrimMemory] (or on a low-RAM device): pipelines release each component after use. */
    @Volatile private var memoryPressure = false
    @Volatile private var runtimes: List<RuntimeStatus> = emptyList()

    // UI thread only
    private var bundles: List<File> = emptyList()
    private var backends: List<RuntimeStatus> = emptyList()
    private var plans: List<SamplingPlan> = emptyList()
    private var job: CancelToken? = null
    private var lastImage: Pair<Bitmap, String>? = null
    /** The manifest of the bundle shown now (null: none, or one that does not read). */
    private var shown: Manifest? = null
    /** The picked image as decoded (fitted again to each bundle's size), or null. */
    private var picked: Bitmap? = null

    private lateinit var bundleSpinner: Spinner
    private lateinit var backendSpinner: Spinner
    private lateinit var planSpinner: Spinner
    private lateinit var prompt: EditText
    private lateinit var seed: EditText
    private lateinit var guidance: EditText
    private lateinit var importButton: Button
    private lateinit var generate: Button
    private lateinit var cancel: Button
    private lateinit var save: Button
    private lateinit var share: Button
    private lateinit var progress: ProgressBar
    private lateinit var image: ImageView
    private lateinit var status: TextView
    private lateinit var pickImage: Button
    private lateinit var clearMask: Button
    private lateinit var removeImage: Button
    private lateinit var strength: SeekBar
    private lateinit var strengthLabel: TextView
    private lateinit var maskView: MaskView
    private lateinit var adapterControls: AdapterControls

    override fun onCreate(savedInstanceState: Bundle?) {
        super.onCreate(savedInstanceState)
        setContentView(R.layout.activity_main)
        bundleSpinner = findViewById(R.id.bundle) as Spinner
        backendSpinner = findViewById(R.id.backend) as Spinner
        planSpinner = findViewById(R.id.plan) as Spinner
        prompt = findViewById(R.id.prompt) as EditText
        seed = findViewById(R.id.seed) as EditText
        guidance = findViewById(R.id.guidance) as EditText
        importButton = findViewById(R.id.import_bundle) as Button
        generate = findViewById(R.id.generate) as Button
        cancel = findViewById(R.id.cancel) as Button
        save = findViewById(R.id.save) as Button
        share = findViewById(R.id.share) as Button
        progress = findViewById(R.id.progress) as ProgressBar
        image = findViewById(R.id.image) as ImageView
        status = findViewById(R.id.status) as TextView
        pickImage = findViewById(R.id.pick_image) as Button
        clearMask = findViewById(R.id.clear_mask) as Button
        removeImage = findViewById(R.id.remove_image) as Button
        strength = findViewById(R.id.strength) as SeekBar
        strengthLabel = findViewById(R.id.strength_label) as TextView
        maskView = findViewById(R.id.mask_view) as MaskView
        adapterControls = AdapterControls(findViewById(R.id.adapters) as LinearLayout, findViewById(R.id.adapters_label) as TextView)

        store = BundleStore(this)
        memoryPressure = (getSystemService(Context.ACTIVITY_SERVICE) as ActivityManager).isLowRamDevice
        prompt.setText(prefs().getString(KEY_PROMPT, null) ?: getString(R.string.default_prompt))
        bundleSpinner.onItemSelectedListener = onSelected { bundles.getOrNull(it)?.let(::showBundle) }
        backendSpinner.onItemSelectedListener = onSelected { worker.execute { closePipeline() } }
        planSpinner.onItemSelectedListener = onSelected { showStrength() }
        importButton.setOnClickListener { pickFolder() }
        generate.setOnClickListener { onGenerate() }
        cancel.setOnClickListener { onCancel() }
        save.setOnClickListener { onSave() }
        share.setOnClickListener { onShare() }
        pickImage.setOnClickListener { onPickImage() }
        clearMask.setOnClickListener { maskView.clearMask() }
        removeImage.setOnClickListener {
            picked = null
            showPicked()
        }
        maskView.onMaskChanged = { showStrength() }
        strength.setOnSeekBarChangeListener(object : SeekBar.OnSeekBarChangeListener {
            override fun onProgressChanged(bar: SeekBar?, value: Int, fromUser: Boolean) = showStrength()
            override fun onStartTrackingTouch(bar: SeekBar?) = Unit
            override fun onStopTrackingTouch(bar: SeekBar?) = Unit
        })
        showPicked()
        start()
    }

    /** Probe the packaged runtimes, copy out the packaged bundle on an APK's first run, list the bundles. */
    private fun start() {
        val token = begin("starting the runtimes…", PROGRESS_SCALE)
        worker.execute {
            var imported: String? = null
            val message = try {
                runtimes = Runtimes.probe(assets)
                val bundle = store.importPackagedIfNew(importTargets(), importProgress("the packaged bundle"), token)
                imported = bundle?.dir?.name
                bundle?.let { "Copied the packaged bundle ${it.dir.name} into app storage (every file checked)" }
            } catch (e: Throwable) {
                describeFailure(e, "packaged bundle")
            }
            runOnUiThread {
                end()
                refreshBundles(imported)
                if (message != null) status.text = message
            }
        }
    }

    override fun onDestroy() {
        job?.cancel()
        worker.execute { closePipeline() }
        worker.shutdown()
        super.onDestroy()
    }

    /**
     * Memory pressure: the pipeline gives its components back as soon as the running generation is done with each
     * (and for every later image), then everything loaded is released. Leaving the screen (UI_HIDDEN) releases
     * without changing how later images run. Android 14 no longer sends the RUNNING_* levels to apps; the
     * background levels still come.
     */
    override fun onTrimMemory(level: Int) {
        super.onTrimMemory(level)
        if (level < ComponentCallbacks2.TRIM_MEMORY_RUNNING_LOW) return
        if (level != ComponentCallbacks2.TRIM_MEMORY_UI_HIDDEN) {
            memoryPressure = true
            pipeline?.reduceMemory = true
        }
        worker.execute {
            val released = try {
                pipeline?.release().orEmpty()
            } catch (e: Throwable) {
                listOf("(failed: ${e.javaClass.simpleName}: ${e.message})")
            }
            if (released.isNotEmpty()) runOnUiThread { status.append("\nreleased ${released.joinToString()} (memory trim level $level)") }
        }
    }

    override fun onLowMemory() {
        super.onLowMemory()
        onTrimMemory(ComponentCallbacks2.TRIM_MEMORY_COMPLETE)
    }

    // ---- bundles

    private fun refreshBundles(select: String? = null) {
        bundles = store.list()
        bundleSpinner.adapter = ArrayAdapter(this, android.R.layout.simple_spinner_dropdown_item, bundles.map { it.name })
        val at = bundles.indexOfFirst { it.name == select }
        if (at >= 0) bundleSpinner.setSelection(at)
        if (bundles.isEmpty()) {
            status.text = getString(R.string.no_bundles, store.folders.last().path)
            showPlans(null)
            adapterControls.show(emptyList())
            shown = null
            showPicked()
        }
    }

    /** Read the picked bundle's manifest: offer the runtimes that can run it and its plans, prefill the default. */
    private fun showBundle(dir: File) {
        worker.execute {
            closePipeline()
            val result = try {
                MobilediffBundle.open(dir).manifest
            } catch (e: Throwable) {
                describeFailure(e, "manifest reader")
            }
            runOnUiThread {
                when (result) {
                    is Manifest -> {
                        showPlans(result)
                        adapterControls.show(result.adapters?.files.orEmpty())
                        status.text = summary(dir, result)
                    }
                    else -> {
                        showPlans(null)
                        adapterControls.show(emptyList())
                        status.text = result.toString()
                    }
                }
                shown = result as? Manifest
                showPicked()
            }
        }
    }

    /** Fill the runtime and plan lists from [manifest] (empty for none): the default plan first, its guidance typed in. */
    private fun showPlans(manifest: Manifest?) {
        backends = if (manifest == null) emptyList() else runtimes.filter { it.usable && it.kind.runs(manifest) }
        backendSpinner.adapter = ArrayAdapter(this, android.R.layout.simple_spinner_dropdown_item, backends.map { it.toString() })
        val default = manifest?.defaultSampling
        plans = manifest?.samplers.orEmpty().map { SamplingPlan(it.name, it.steps, default!!.guidance) }
            .sortedWith(compareBy({ it.sampler != default?.sampler || it.steps != default.steps }, { it.sampler }, { it.steps }))
        planSpinner.adapter = ArrayAdapter(
            this,
            android.R.layout.simple_spinner_dropdown_item,
            plans.map { "${it.sampler} · ${it.steps} steps" + if (it.sampler == default?.sampler && it.steps == default.steps) " (default)" else "" },
        )
        guidance.setText(default?.guidance?.toString() ?: "")
    }

    private fun summary(dir: File, m: Manifest): String = buildString {
        val plan = m.defaultSampling
        append("${dir.name}: ${m.role.role}${m.role.method?.let { " ($it)" } ?: ""}, ${m.geometry.width}x${m.geometry.height}, ")
        append("default ${plan.sampler} ${plan.steps} steps, guidance ${plan.guidance}")
        if (m.samplers.none { it.name == plan.sampler && it.steps == plan.steps }) append("\nthe default plan's table is not in the bundle")
        append("\n" + when {
            m.inpaintingOnly -> "an inpainting UNet: inpainting only (pick an image and paint what to repaint; no text-to-image)"
            else -> m.image?.let { "from an image: ${it.modes.joinToString()}" } ?: "text-to-image only (exported without --image-modes)"
        })
        m.adapters?.let { a -> append("\nrun-time adapters: ${a.names.joinToString()} (switch them below; no reload)") }
        if (backends.isEmpty()) {
            val holds = m.components.values.flatMap { c -> c.files.map { it.target } }.distinct().sorted()
            append("\nThis app runs none of this bundle's targets (${holds.joinToString()}). Runtimes here: ")
            append(runtimes.joinToString("; ").ifEmpty { "none" })
        }
        runtimes.filter { !it.usable }.forEach { append("\n$it") }
    }

    /** Bundle targets worth copying in: those of the runtimes this APK packages (all when it does not say). */
    private fun importTargets(): Set<String>? =
        if (Runtimes.packaged(assets) == null) null else runtimes.flatMap { it.kind.targets }.toSet().ifEmpty { null }

    private fun pickFolder() {
        try {
            startActivityForResult(Intent(Intent.ACTION_OPEN_DOCUMENT_TREE), REQUEST_TREE)
        } catch (e: ActivityNotFoundException) {
            status.text = "This device has no folder picker (storage access framework): copy bundles with adb instead"
        }
    }

    override fun onActivityResult(requestCode: Int, resultCode: Int, data: Intent?) {
        super.onActivityResult(requestCode, resultCode, data)
        val uri = data?.data
        if (resultCode != RESULT_OK || uri == null) return
        when (requestCode) {
            REQUEST_TREE -> runImport(DocumentTreeSource(contentResolver, uri))
            REQUEST_IMAGE -> loadPicked(uri)
        }
    }

    private fun runImport(source: BundleSource) {
        val token = begin("importing…", PROGRESS_SCALE)
        worker.execute {
            var name: String? = null
            val message = try {
                closePipeline() // an import may replace the folder of the bundle loaded now
                val bundle = store.import(source, importTargets(), importProgress(source.name), token)
                name = bundle.dir.name
                "Imported ${bundle.dir.name}: every file checked against the manifest's sha256"
            } catch (e: Throwable) {
                describeFailure(e, "import")
            }
            runOnUiThread {
                end()
                refreshBundles(name)
                status.text = message
            }
        }
    }

    /** Import progress as the progress bar (per mille of the bytes) and the status line, posted when it moves. */
    private fun importProgress(what: String): BundleImport.Progress {
        var shown = -1L
        return BundleImport.Progress { phase, path, done, total ->
            val permille = if (total > 0) (done * PROGRESS_SCALE / total).coerceAtMost(PROGRESS_SCALE.toLong()) else 0L
            if (permille != shown) {
                shown = permille
                val verb = if (phase == BundleImport.Phase.COPY) "copying" else "checking"
                val text = "$what: $verb $path (%.1f / %.1f MB)".format(done / 1e6, total / 1e6)
                runOnUiThread {
                    progress.progress = permille.toInt()
                    status.text = text
                }
            }
        }
    }

    // ---- the image to start from

    /** The system's image picker: gallery and camera roll apps, and files. */
    private fun onPickImage() {
        val intent = Intent(Intent.ACTION_GET_CONTENT).setType("image/*").addCategory(Intent.CATEGORY_OPENABLE)
        try {
            startActivityForResult(Intent.createChooser(intent, getString(R.string.pick_image)), REQUEST_IMAGE)
        } catch (e: ActivityNotFoundException) {
            status.text = "This device has no app to pick an image with"
        }
    }

    /** Decode the picked image on the worker thread, then fit it to the shown bundle. */
    private fun loadPicked(uri: android.net.Uri) {
        worker.execute {
            val bitmap = try {
                PickedImage.decode(contentResolver, uri)
            } catch (e: Throwable) {
                val message = describeFailure(e, "image picker")
                runOnUiThread { status.text = message }
                return@execute
            }
            runOnUiThread {
                picked = bitmap
                showPicked()
                status.text = "Picked a ${bitmap.width}x${bitmap.height} image" + (shown?.geometry?.let { g ->
                    if (bitmap.width == g.width && bitmap.height == g.height) "" else ", centre-cropped and scaled to ${g.width}x${g.height}"
                } ?: "")
            }
        }
    }

    /**
     * The image controls for the shown bundle: the picked image fitted to its size in the mask view (a new, empty
     * mask), picking offered where the bundle runs image-to-image.
     */
    private fun showPicked() {
        val m = shown
        val canImage = m?.supports(ImageModes.IMG2IMG) == true || m?.supports(ImageModes.INPAINT) == true
        val source = picked.takeIf { canImage }
        val fitted = source?.let { s -> m!!.geometry.let { g -> if (s.width == g.width && s.height == g.height) s else PickedImage.fit(s, g.width, g.height) } }
        if (fitted !== maskView.image) maskView.setImage(fitted)
        maskView.visibility = if (fitted != null) View.VISIBLE else View.GONE
        pickImage.isEnabled = canImage && job == null
        clearMask.isEnabled = fitted != null && job == null && m?.supports(ImageModes.INPAINT) == true
        removeImage.isEnabled = picked != null && job == null
        strength.isEnabled = fitted != null && job == null
        showStrength()
    }

    /** The slider's strength in (0, 1] (0.01 steps; the slider's 0 reads as 0.01). */
    private fun strengthValue(): Double = maxOf(1, strength.progress) / 100.0

    private fun showStrength() {
        val plan = plans.getOrNull(planSpinner.selectedItemPosition)
        val s = strengthValue()
        val steps = plan?.let { p -> try { "${strengthSteps(p.steps, s)} of ${p.steps} steps" } catch (e: IllegalArgumentException) { "no step of ${p.steps}" } }
        val inpaintingOnly = shown?.inpaintingOnly == true
        val mode = when {
            maskView.image == null -> if (inpaintingOnly) "inpainting only: pick an image" else "no image: text-to-image"
            maskView.hasMask -> "inpainting the painted region"
            else -> if (inpaintingOnly) "inpainting only: paint what to repaint" else "image-to-image (paint to inpaint)"
        }
        strengthLabel.text = getString(R.string.strength_label, "%.2f".format(s), listOfNotNull(steps, mode).joinToString(", "))
        generate.isEnabled = job == null && canGenerate()
    }

    /**
     * Whether the shown bundle runs what the controls ask: a bundle whose denoiser is an inpainting UNet
     * ([Manifest.inpaintingOnly]) runs inpainting alone, so text-to-image and image-to-image stay off until an image
     * is picked and a region painted.
     */
    private fun canGenerate(): Boolean = shown?.inpaintingOnly != true || (maskView.image != null && maskView.hasMask)

    // ---- generation

    private fun onGenerate() {
        val dir = bundles.getOrNull(bundleSpinner.selectedItemPosition) ?: return
        val runtime = backends.getOrNull(backendSpinner.selectedItemPosition)
        val plan = plans.getOrNull(planSpinner.selectedItemPosition)
        if (runtime == null || plan == null) {
            status.text = "Cannot generate: " + if (runtime == null) "no runtime of this app runs this bundle" else "the bundle has no sampler table"
            return
        }
        val seedText = seed.text.toString().trim()
        val guidanceText = guidance.text.toString().trim()
        val seedValue = if (seedText.isEmpty()) 0L else seedText.toLongOrNull()
        val guidanceValue = guidanceText.toDoubleOrNull()
        if (seedValue == null || (guidanceText.isNotEmpty() && guidanceValue == null)) {
            status.text = if (seedValue == null) "Cannot generate: seed must be an integer, got '$seedText'"
            else "Cannot generate: guidance must be a number, got '$guidanceText'"
            return
        }
        if (!canGenerate()) {
            status.text = "Cannot generate: this bundle's denoiser is an inpainting UNet: it runs inpainting only (pick an image and paint what to repaint)"
            return
        }
        val text = prompt.text.toString()
        prefs().edit().putString(KEY_PROMPT, text).apply()
        val init = maskView.image
        // the adapters toggled on, applied to this generation: the pipeline repacks its lora_weights, reloads nothing
        val adapters = adapterControls.mix()
        val request = try {
            GenerationRequest(
                text, seedValue, plan.steps, plan.sampler, guidanceValue,
                initImage = init?.let { PickedImage.rgb(it) },
                mask = if (init != null) maskView.maskImage() else null,
                strength = if (init != null) strengthValue() else null,
            ).also { r ->
                // bad options (and adapter mixes) in one line, before anything loads
                shown?.let { Pipeline.check(it, r) }
                shown?.let { AdapterMixer.checkMix(it, adapters) }
            }
        } catch (e: Exception) {
            status.text = describeFailure(e, "request")
            return
        }
        val name = imageName(dir.name, seedValue, request.mode)
        val stepsRun = request.strength?.let { strengthSteps(plan.steps, it) } ?: plan.steps
        // progress units: the image encoded (from an image), the prompt encoded, each step, the image decoded
        val encoded = if (init != null) 1 else 0
        val token = begin("loading ${dir.name} (${runtime.kind.label})…", encoded + stepsRun + 2)
        worker.execute {
            val message = try {
                val p = pipelineFor(dir, runtime.kind)
                if (p.adapters != adapters) p.setAdapters(adapters)
                val result = p.generate(request, Progress(stepsRun, encoded), token)
                val bitmap = result.toBitmap()
                runOnUiThread {
                    image.setImageBitmap(bitmap)
                    lastImage = bitmap to name
                }
                describe(result, runtime, p)
            } catch (e: Throwable) {
                describeFailure(e, runtime.kind.label)
            }
            runOnUiThread {
                end()
                status.text = message
            }
        }
    }

    /**
     * Generation progress: the bar in units of [encoded] (1 when the run starts from an image) + [steps] + 2, the
     * status line naming what runs.
     */
    private inner class Progress(private val steps: Int, private val encoded: Int) : GenerationListener {
        override fun onLoading(component: String) = post(null, "loading $component…")

        override fun onCall(component: String, inputs: List<Tensor>, outputs: List<Tensor.F32>, ms: Double) = when (component) {
            Manifest.IMAGE_ENCODER -> post(1, "image encoded")
            "text_encoder" -> post(encoded + 1, "prompt encoded")
            "vae_decoder" -> post(encoded + steps + 2, "decoded")
            else -> Unit
        }

        override fun onStep(step: Int, steps: Int, latent: FloatArray) = post(encoded + step + 2, "step ${step + 1} / $steps")

        private fun post(value: Int?, text: String) = runOnUiThread {
            if (value != null) progress.progress = value
            status.text = text
        }
    }

    /** The pipeline for [dir] on [kind], made (components loaded lazily) when either changed. Worker thread. */
    private fun pipelineFor(dir: File, kind: RuntimeKind): Pipeline {
        val key = dir to kind
        pipeline?.takeIf { pipelineKey == key }?.let { return it }
        closePipeline()
        val bundle = MobilediffBundle.open(dir)
        val reason = lowMemoryChoice(bundle, kind)
        return Pipeline(bundle, Backend.forTarget(kind.backend), lowMemory = reason != null, loading = Pipeline.Loading.LAZY).also {
            it.reduceMemory = memoryPressure
            it.peakPerGeneration = true
            pipeline = it
            pipelineKey = key
            lowMemoryReason = reason
        }
    }

    /**
     * Why [bundle] should run on [kind] in the engine's low-memory mode (one component loaded at a time, the
     * runtime without its arena), or null for the resident mode: a low-RAM device or memory pressure seen earlier,
     * or a resident peak estimated from the weights ([MemoryAdvice]) above the memory available now
     * (ActivityManager.MemoryInfo.availMem). Worker thread.
     */
    private fun lowMemoryChoice(bundle: MobilediffBundle, kind: RuntimeKind): String? {
        if (memoryPressure) return "memory pressure or a low-RAM device"
        val info = ActivityManager.MemoryInfo()
        (getSystemService(Context.ACTIVITY_SERVICE) as ActivityManager).getMemoryInfo(info)
        val weights = bundle.weightBytes(kind.backend)
        if (!MemoryAdvice.lowMemoryAdvised(weights, info.availMem)) return null
        return "weights %.0f MB, resident peak ~%.0f MB > %.0f MB available".format(
            weights / 1e6, MemoryAdvice.residentPeakBytes(weights) / 1e6, info.availMem / 1e6,
        )
    }

    /** Worker thread. */
    private fun closePipeline() {
        val old = pipeline ?: return
        pipeline = null
        pipelineKey = null
        lowMemoryReason = null
        try {
            old.close()
        } catch (e: Throwable) {
            val message = describeFailure(e, "runtime")
            runOnUiThread { status.text = message }
        }
    }

    private fun onCancel() {
        job?.cancel()
        cancel.isEnabled = false
        status.append("\ncancelling after the current step…")
    }

    // ---- the image

    private fun onSave() {
        val (bitmap, name) = lastImage ?: return
        worker.execute {
            val message = try {
                "Saved ${ImageStore.save(this, bitmap, name)}"
            } catch (e: Throwable) {
                "Cannot save the image: ${e.javaClass.simpleName}: ${e.message}"
            }
            runOnUiThread { status.text = message }
        }
    }

    private fun onShare() {
        val (bitmap, name) = lastImage ?: return
        worker.execute {
            val intent = try {
                ImageStore.shareIntent(this, bitmap, name, getString(R.string.share_title))
            } catch (e: Throwable) {
                runOnUiThread { status.text = "Cannot share the image: ${e.javaClass.simpleName}: ${e.message}" }
                return@execute
            }
            runOnUiThread {
                try {
                    startActivity(intent)
                } catch (e: ActivityNotFoundException) {
                    status.text = "No app here takes an image to share"
                }
            }
        }
    }

    private fun imageName(bundle: String, seed: Long, mode: String): String {
        val time = SimpleDateFormat("yyyyMMdd-HHmmss", Locale.US).format(Date())
        val from = if (mode == Manifest.MODE_TXT2IMG) "" else "_$mode"
        return "mobilediff_${bundle}${from}_seed${seed}_$time.png".replace(Regex("[^A-Za-z0-9._-]"), "-")
    }

    // ---- state and messages

    /** Start a cancellable task: buttons to their busy state, the bar at 0 of [max]. */
    private fun begin(text: String, max: Int): CancelToken {
        val token = CancelToken()
        job = token
        generate.isEnabled = false
        importButton.isEnabled = false
        save.isEnabled = false
        share.isEnabled = false
        cancel.isEnabled = true
        showPicked()
        progress.max = max
        progress.progress = 0
        status.text = text
        return token
    }

    private fun end() {
        job = null
        generate.isEnabled = canGenerate()
        importButton.isEnabled = true
        cancel.isEnabled = false
        save.isEnabled = lastImage != null
        share.isEnabled = lastImage != null
        showPicked()
    }

    /**
     * What went wrong, as the status line shows it: a cancelled task says where it stopped; a bad bundle names the
     * file and the problem; a bad option or prompt says why; a runtime whose native library or classes are missing
     * from this build says so; anything else (a runtime failing inside a call, storage, memory) by its type and message.
     */
    private fun describeFailure(e: Throwable, what: String): String = when (e) {
        is GenerationCancelled -> "Cancelled: ${e.message}; no image"
        is ImportCancelled -> "Import cancelled: nothing of it was kept"
        is BundleError -> "Bad bundle: ${e.file}: ${e.problem}"
        is IllegalArgumentException -> "Cannot generate: ${e.message}"
        is UnsatisfiedLinkError -> "The $what runtime's native library is missing from this build (${e.message})"
        is NoClassDefFoundError, is ExceptionInInitializerError ->
            "The $what runtime cannot start in this build (${e.javaClass.simpleName}: ${e.message ?: e.cause?.message})"
        is OutOfMemoryError -> "Out of memory running the $what runtime: try a smaller bundle"
        is IOException -> "Storage failed ($what): ${e.message}"
        else -> "$what failed: ${e.javaClass.simpleName}: ${e.message}"
    }

    private fun describe(r: GenerationResult, runtime: RuntimeStatus, p: Pipeline): String = buildString {
        append("${r.plan.sampler} ${r.plan.steps} steps, guidance ${r.plan.guidance} on $runtime\n")
        r.strength?.let { append("${r.mode} at strength $it: ${r.stepsRun} of ${r.plan.steps} steps\n") }
        if (r.adapters.isNotEmpty()) append("adapters: ${r.adapters.joinToString(" + ") { "%s x %.2f".format(it.name, it.scale) }}\n")
        for ((component, ms) in r.componentMs) append("%-13s %8.1f ms\n".format(component, ms))
        append("%-13s %8.1f ms".format("total", r.totalMs))
        if (r.loadMs.isNotEmpty()) append("\nloaded " + r.loadMs.entries.joinToString { (c, ms) -> "%s %.0f ms".format(c, ms) })
        r.memory?.let { append("\nmemory: $it") }
        val reason = lowMemoryReason
        if (p.lowMemory) append("\nlow-memory mode: one component loaded at a time ($reason)")
        else if (p.reduceMemory) append("\ncomponents released after use (memory pressure)")
    }

    private fun prefs() = getSharedPreferences(PREFS, Context.MODE_PRIVATE)

    private fun onSelected(action: (Int) -> Unit) = object : AdapterView.OnItemSelectedListener {
        override fun onItemSelected(parent: AdapterView<*>?, view: View?, position: Int, id: Long) = action(position)
        override fun onNothingSelected(parent: AdapterView<*>?) = Unit
    }

    private companion object {
        const val REQUEST_TREE = 1
        const val REQUEST_IMAGE = 2
        const val PROGRESS_SCALE = 1000
        const val PREFS = "demo"
        const val KEY_PROMPT = "prompt"
    }
}
