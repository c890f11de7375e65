package com.mobilediff.cli

import com.mobilediff.engine.Backend
import com.mobilediff.engine.Bundle
import com.mobilediff.engine.BundleError
import com.mobilediff.engine.GenerationRequest
import com.mobilediff.engine.Pipeline
import com.mobilediff.verify.CheckRow
import com.mobilediff.verify.GoldenChecks
import com.mobilediff.verify.Goldens
import org.json.JSONArray
import org.json.JSONObject
import java.awt.image.BufferedImage
import java.io.File
import java.nio.ByteBuffer
import java.nio.ByteOrder
import javax.imageio.ImageIO
import kotlin.system.exitProcess

private const val USAGE = """usage:
  engine.sh generate --bundle B --backend onnx|executorch --prompt P --seed S [--steps N] [--sampler NAME]
                     [--guidance G] [--warmup 1] [--repeats 1] --out IMG.png --json RESULT.json
                     (ms_total: the median of the timed repeats, after the untimed warm-up runs)
  engine.sh check-goldens --bundle B --goldens DIR --backend onnx|executorch [--model NAME] --json ROWS.json"""

/**
 * The engine's command line on the JVM (the contract both demo apps implement; benchmarks/app_parity.py calls it):
 * `generate` writes a PNG, the raw float image and a timing record; `check-goldens` writes check rows.
 * A bad bundle or option prints one line and exits 2.
 */
fun main(args: Array<String>) {
    try {
        when (args.firstOrNull()) {
            "generate" -> generate(Options(args.drop(1)))
            "check-goldens" -> checkGoldens(Options(args.drop(1)))
            else -> fail(USAGE)
        }
    } catch (e: BundleError) {
        fail("error: bad bundle: ${e.message}")
    } catch (e: IllegalArgumentException) {
        fail("error: ${e.message}")
    }
}

private fun fail(message: String): Nothing {
    System.err.println(message)
    exitProcess(2)
}

/** `--name value` pairs. */
private class Options(args: List<String>) {
    private val values = HashMap<String, String>()

    init {
        require(args.size % 2 == 0) { "options come in '--name value' pairs\n$USAGE" }
        for (i in args.indices step 2) {
            require(args[i].startsWith("--")) { "unexpected argument '${args[i]}'\n$USAGE" }
            values[args[i].removePrefix("--")] = args[i + 1]
        }
    }

    fun required(name: String): String = values[name] ?: throw IllegalArgumentException("--$name is required\n$USAGE")
    fun optional(name: String): String? = values[name]
    fun int(name: String): Int? = values[name]?.let { it.toIntOrNull() ?: throw IllegalArgumentException("--$name must be an integer, got '$it'") }
    fun double(name: String): Double? = values[name]?.let { it.toDoubleOrNull() ?: throw IllegalArgumentException("--$name must be a number, got '$it'") }
}

private fun generate(o: Options) {
    val out = File(o.required("out"))
    require(out.name.endsWith(".png")) { "--out must be a .png file, got $out" }
    val json = File(o.required("json"))
    val seed = o.required("seed").toLongOrNull() ?: throw IllegalArgumentException("--seed must be an integer")
    val bundle = Bundle.open(File(o.required("bundle")))
    Pipeline(bundle, Backend.forTarget(o.required("backend"))).use { pipeline ->
        val request = GenerationRequest(o.required("prompt"), seed, o.int("steps"), o.optional("sampler"), o.double("guidance"))
        val warmup = o.int("warmup") ?: 1
        val repeats = o.int("repeats") ?: 1
        require(warmup >= 0 && repeats >= 1) { "--warmup must be >= 0 and --repeats >= 1" }
        repeat(warmup) { pipeline.generate(request) } // the first calls of a session include one-off allocations
        val runs = List(repeats) { pipeline.generate(request) }
        val r = runs.sortedBy { it.totalMs }[repeats / 2] // the median run (every run gives the same image)
        val image = BufferedImage(r.width, r.height, BufferedImage.TYPE_INT_RGB)
        image.setRGB(0, 0, r.width, r.height, r.argb, 0, r.width)
        atomicWrite(out) { ImageIO.write(image, "png", it) }
        val raw = File(out.path.removeSuffix(".png") + ".f32")
        atomicWrite(raw) { f ->
            val buf = ByteBuffer.allocate(4 * r.raw.size).order(ByteOrder.LITTLE_ENDIAN)
            buf.asFloatBuffer().put(r.raw)
            f.writeBytes(buf.array())
        }
        val record = JSONObject()
            .put("ms_total", r.totalMs)
            .put("ms", JSONObject(r.componentMs as Map<*, *>))
            .put("load_ms", JSONObject(pipeline.loadMs as Map<*, *>))
            .put("steps", r.plan.steps).put("sampler", r.plan.sampler).put("guidance", r.plan.guidance)
            .put("image_raw", raw.absolutePath).put("image_raw_shape", JSONArray(listOf(r.height, r.width, 3)))
            .put("backend", pipeline.backend.target).put("warmup_runs", warmup).put("repeats", repeats)
            .put("ms_total_runs", JSONArray(runs.map { it.totalMs }))
        atomicWrite(json) { it.writeText(record.toString(2)) }
        println("wrote $out (${r.plan.sampler}-${r.plan.steps}, guidance ${r.plan.guidance}, ${"%.1f".format(r.totalMs)} ms)")
    }
}

private fun checkGoldens(o: Options) {
    val bundleDir = File(o.required("bundle"))
    val goldens = Goldens.load(File(o.required("goldens")))
    val model = o.optional("model") ?: bundleDir.absoluteFile.let { if (it.name == "bundle") it.parentFile.name else it.name }
    val bundle = Bundle.open(bundleDir)
    goldens.bundleManifestSha256?.let { expected ->
        val actual = Bundle.sha256(File(bundleDir, "manifest.json"))
        if (actual != expected) throw BundleError("manifest.json", "is not the manifest these goldens were made from (regenerate them)")
    }
    val checks = GoldenChecks(goldens, model)
    val rows = ArrayList<CheckRow>()
    Pipeline(bundle, Backend.forTarget(o.required("backend"))).use { pipeline ->
        rows.add(checks.tokenizer(pipeline))
        rows.addAll(checks.noise())
        rows.addAll(checks.samplerReplay(bundle.manifest))
        rows.addAll(checks.sampler(pipeline))
    }
    atomicWrite(File(o.required("json"))) { f -> f.writeText(JSONArray(rows.map { it.toJson() }).toString(2)) }
    for (r in rows) println("${if (r.passed) "PASS" else "FAIL"} ${r.check} ${r.backend} ${r.model} seed=${r.seed} max_abs=${r.maxAbsError} psnr=${r.psnrDb ?: "inf"}  ${r.detail}")
    if (rows.any { !it.passed }) exitProcess(1)
}

/** Write through a temporary file in the same folder, then rename: readers never see a partial file. */
private fun atomicWrite(target: File, write: (File) -> Unit) {
    target.absoluteFile.parentFile.mkdirs()
    val tmp = File(target.absoluteFile.parentFile, ".${target.name}.partial")
    write(tmp)
    if (!tmp.renameTo(target)) throw IllegalStateException("could not rename $tmp to $target")
}
