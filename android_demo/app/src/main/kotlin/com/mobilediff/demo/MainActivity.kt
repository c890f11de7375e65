package com.mobilediff.demo

import android.app.Activity
import android.os.Bundle
import android.widget.AdapterView
import android.widget.ArrayAdapter
import android.widget.Button
import android.widget.EditText
import android.widget.ImageView
import android.widget.Spinner
import android.widget.TextView
import com.mobilediff.engine.Backend
import com.mobilediff.engine.BundleError
import com.mobilediff.engine.GenerationListener
import com.mobilediff.engine.GenerationRequest
import com.mobilediff.engine.GenerationResult
import com.mobilediff.engine.Pipeline
import java.io.File
import java.util.concurrent.Executors
import com.mobilediff.engine.Bundle as MobilediffBundle

/**
 * Pick a bundle from app storage, type a prompt and seed (steps default to the manifest's plan), Generate: the
 * image and the milliseconds per component. All engine work runs on one background thread; the loaded pipeline
 * is kept until another bundle or backend is picked. Whatever the engine or a runtime throws on that thread is
 * shown in the status line ([describeFailure]), never let through to crash the app.
 */
class MainActivity : Activity() {
    private val worker = Executors.newSingleThreadExecutor()
    private var pipeline: Pipeline? = null
    private var bundles: List<File> = emptyList()

    private lateinit var bundleSpinner: Spinner
    private lateinit var backendSpinner: Spinner
    private lateinit var prompt: EditText
    private lateinit var seed: EditText
    private lateinit var steps: EditText
    private lateinit var generate: Button
    private lateinit var image: ImageView
    private lateinit var status: TextView

    override fun onCreate(savedInstanceState: Bundle?) {
        super.onCreate(savedInstanceState)
        setContentView(R.layout.activity_main)
        bundleSpinner = findViewById(R.id.bundle) as Spinner
        backendSpinner = findViewById(R.id.backend) as Spinner
        prompt = findViewById(R.id.prompt) as EditText
        seed = findViewById(R.id.seed) as EditText
        steps = findViewById(R.id.steps) as EditText
        generate = findViewById(R.id.generate) as Button
        image = findViewById(R.id.image) as ImageView
        status = findViewById(R.id.status) as TextView

        backendSpinner.adapter = ArrayAdapter(this, android.R.layout.simple_spinner_dropdown_item, listOf("onnx", "executorch"))
        val store = BundleStore(this)
        bundles = store.list()
        bundleSpinner.adapter = ArrayAdapter(this, android.R.layout.simple_spinner_dropdown_item, bundles.map { it.name })
        if (bundles.isEmpty()) status.text = getString(R.string.no_bundles, store.folders.first().path)
        bundleSpinner.onItemSelectedListener = object : AdapterView.OnItemSelectedListener {
            override fun onItemSelected(parent: AdapterView<*>?, view: android.view.View?, position: Int, id: Long) {
                unload()
                bundles.getOrNull(position)?.let(::showPlan)
            }
            override fun onNothingSelected(parent: AdapterView<*>?) = Unit
        }
        backendSpinner.onItemSelectedListener = object : AdapterView.OnItemSelectedListener {
            override fun onItemSelected(parent: AdapterView<*>?, view: android.view.View?, position: Int, id: Long) = unload()
            override fun onNothingSelected(parent: AdapterView<*>?) = Unit
        }
        generate.setOnClickListener { onGenerate() }
    }

    override fun onDestroy() {
        unload()
        worker.shutdown()
        super.onDestroy()
    }

    private fun unload() {
        val old = pipeline ?: return
        pipeline = null
        worker.execute {
            try {
                old.close()
            } catch (e: Throwable) {
                val message = describeFailure(e, "runtime")
                runOnUiThread { status.text = message }
            }
        }
    }

    /** Read the picked bundle's manifest: fill in its default steps, or say what is wrong with it. */
    private fun showPlan(dir: File) {
        worker.execute {
            val text = try {
                val m = MobilediffBundle.open(dir).manifest
                val plan = m.defaultSampling
                runOnUiThread { steps.setText(plan.steps.toString()) }
                "${dir.name}: ${m.role.role}, default ${plan.sampler} ${plan.steps} steps, guidance ${plan.guidance}"
            } catch (e: Throwable) {
                describeFailure(e, "manifest reader")
            }
            runOnUiThread { status.text = text }
        }
    }

    private fun onGenerate() {
        val dir = bundles.getOrNull(bundleSpinner.selectedItemPosition) ?: return
        val backend = backendSpinner.selectedItem as String
        val seedText = seed.text.toString().trim()
        val stepsText = steps.text.toString().trim()
        val seedValue = if (seedText.isEmpty()) 0L else seedText.toLongOrNull()
        val stepsValue = stepsText.toIntOrNull()
        if (seedValue == null || (stepsText.isNotEmpty() && stepsValue == null)) {
            status.text = if (seedValue == null) "Cannot generate: seed must be an integer, got '$seedText'"
            else "Cannot generate: steps must be an integer, got '$stepsText'"
            return
        }
        val request = GenerationRequest(prompt = prompt.text.toString(), seed = seedValue, steps = stepsValue)
        generate.isEnabled = false
        status.text = "loading ${dir.name} ($backend)…"
        worker.execute {
            val message = try {
                val p = pipeline ?: Pipeline(MobilediffBundle.open(dir), Backend.forTarget(backend)).also { pipeline = it }
                val result = p.generate(request, object : GenerationListener {
                    override fun onStep(step: Int, steps: Int, latent: FloatArray) {
                        runOnUiThread { status.text = "step ${step + 1} / $steps" }
                    }
                })
                val bitmap = result.toBitmap()
                runOnUiThread { image.setImageBitmap(bitmap) }
                describe(result)
            } catch (e: Throwable) {
                describeFailure(e, backend)
            }
            runOnUiThread {
                status.text = message
                generate.isEnabled = true
            }
        }
    }

    /**
     * What went wrong, as the status line shows it: a bad bundle names the file and the problem; a bad option or
     * prompt says why; a runtime whose native library or classes are missing from this build says so; anything else
     * (a runtime failing inside a call, memory) by its type and message.
     */
    private fun describeFailure(e: Throwable, backend: String): String = when (e) {
        is BundleError -> "Bad bundle: ${e.file}: ${e.problem}"
        is IllegalArgumentException -> "Cannot generate: ${e.message}"
        is UnsatisfiedLinkError -> "The $backend runtime's native library is missing from this build (${e.message})"
        is NoClassDefFoundError, is ExceptionInInitializerError ->
            "The $backend runtime cannot start in this build (${e.javaClass.simpleName}: ${e.message ?: e.cause?.message})"
        is OutOfMemoryError -> "Out of memory running the $backend runtime: try a smaller bundle"
        else -> "Generation failed: ${e.javaClass.simpleName}: ${e.message}"
    }

    private fun describe(r: GenerationResult): String = buildString {
        append("${r.plan.sampler} ${r.plan.steps} steps, guidance ${r.plan.guidance}\n")
        for ((component, ms) in r.componentMs) append("%-13s %8.1f ms\n".format(component, ms))
        append("%-13s %8.1f ms".format("total", r.totalMs))
    }
}
