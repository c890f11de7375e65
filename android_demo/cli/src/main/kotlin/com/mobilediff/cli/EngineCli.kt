package com.mobilediff.cli

import com.mobilediff.engine.AdapterMixer
import com.mobilediff.engine.Backend
import com.mobilediff.engine.Bundle
import com.mobilediff.engine.BundleError
import com.mobilediff.engine.GenerationRequest
import com.mobilediff.engine.ImageInput
import com.mobilediff.engine.Pipeline
import com.mobilediff.engine.Prompts
import com.mobilediff.verify.CheckRow
import com.mobilediff.verify.GoldenChecks
import com.mobilediff.verify.Goldens
import org.json.JSONArray
import org.json.JSONObject
import java.awt.image.BufferedImage
import java.io.File
import java.io.IOException
import java.nio.ByteBuffer
import java.nio.ByteOrder
import javax.imageio.ImageIO
import kotlin.system.exitProcess

private const val USAGE = """usage:
  engine.sh generate --bundle B --backend onnx|executorch --prompt P --seed S [--steps N] [--sampler NAME]
                     [--guidance G] [--init-image IMG.png [--mask MASK.png] [--strength S]]
                     [--lora NAME[:SCALE] ...] [--warmup 1] [--repeats 1] [--low-memory] --out IMG.png --json RESULT.json
                     (ms_total: the median of the timed repeats, after the untimed warm-up runs, loading excluded;
                     --low-memory: each component loaded when its turn comes and released after it, the runtime
                     without its arena: the same image, a lower peak, every run loads the components again;
                     --init-image: image-to-image from an 8-bit PNG at the bundle's size, --mask: inpainting where
                     the grayscale PNG is >= 128, --strength in (0, 1]: default 0.75, 1 with a mask; a bundle
                     exported with --image-modes; a bundle whose denoiser is an inpainting UNet runs only with
                     --init-image and --mask; --lora, repeatable: switch on the bundle's run-time adapter NAME at
                     SCALE (default 1), several mixed in the order given, a bundle exported with --runtime-lora)
  engine.sh check-goldens --bundle B --goldens DIR --backend onnx|executorch [--model NAME] --json ROWS.json"""

/**
 * The engine's command line on the JVM (the contract both demo apps implement; benchmarks/app_parity.py calls it):
 * `generate` writes a PNG, the raw float image and a timing record; `check-goldens` writes check rows.
 *
 * Errors follow the Python CLI's convention: bad input (a bad bundle, option or prompt, a path that cannot be
 * written) prints exactly one line `error: ...` on stderr and exits 2; a runtime that fails while running a graph
 * prints one line and exits 1, as does a failed check row.
 */
fun main(jvmArgs: Array<String>) {
    try {
        val args = rawArguments(jvmArgs)
        when (args.firstOrNull()) {
            "generate" -> generate(Options(args.drop(1), GENERATE_OPTIONS, GENERATE_FLAGS, GENERATE_LISTS))
            "check-goldens" -> checkGoldens(Options(args.drop(1), CHECK_GOLDENS_OPTIONS))
            "-h", "--help", "help" -> println(USAGE)
            null -> fail("a command is required: generate or check-goldens (--help for usage)")
            else -> fail("unknown command '${args[0]}': generate or check-goldens (--help for usage)")
        }
    } catch (e: BundleError) {
        fail("bad bundle: ${e.message}")
    } catch (e: IllegalArgumentException) {
        fail(e.message ?: e.toString())
    } catch (e: IOException) {
        fail(e.message ?: e.toString())
    } catch (e: Throwable) {
        // a runtime failing inside a call (OrtException, ExecuTorch's RuntimeException), a missing native library
        fail("${e.javaClass.simpleName}: ${e.message}", status = 1)
    }
}

/** Print `error: <message>` as one line on stderr and exit with [status] (2: bad input). */
private fun fail(message: String, status: Int = 2): Nothing {
    System.err.println("error: " + message.lineSequence().map { it.trim() }.filter { it.isNotEmpty() }.joinToString(" "))
    System.err.flush()
    exitProcess(status)
}

/**
 * The command line's arguments as the bytes it was given, decoded as UTF-8, where Linux shows them
 * (/proc/self/cmdline; [jvmArgs] otherwise). The JVM decodes arguments with the locale's charset and replaces what
 * it cannot decode: a prompt with invalid UTF-8 would silently become another prompt, and under the C locale every
 * non-ASCII character would. Invalid UTF-8 in `--prompt` is refused as Python refuses it.
 */
private fun rawArguments(jvmArgs: Array<String>): List<String> {
    val raw = try {
        splitNul(File("/proc/self/cmdline").readBytes())
    } catch (e: IOException) {
        return jvmArgs.toList()
    }
    // the program's arguments are the last entries, after the main class
    if (raw.size <= jvmArgs.size || String(raw[raw.size - jvmArgs.size - 1], Charsets.UTF_8) != MAIN_CLASS) return jvmArgs.toList()
    val tail = raw.takeLast(jvmArgs.size)
    return tail.mapIndexed { i, bytes ->
        if (i > 0 && String(tail[i - 1], Charsets.UTF_8) == "--prompt") Prompts.decodeUtf8(bytes, "--prompt") else String(bytes, Charsets.UTF_8)
    }
}

private val GENERATE_OPTIONS =
    setOf("bundle", "backend", "prompt", "seed", "steps", "sampler", "guidance", "init-image", "mask", "strength", "warmup",
        "repeats", "out", "json")
private val GENERATE_FLAGS = setOf("low-memory")
private val GENERATE_LISTS = setOf("lora")
private val CHECK_GOLDENS_OPTIONS = setOf("bundle", "goldens", "backend", "model", "json")

private const val MAIN_CLASS = "com.mobilediff.cli.EngineCliKt"

private fun splitNul(bytes: ByteArray): List<ByteArray> {
    val out = ArrayList<ByteArray>()
    var start = 0
    for (i in bytes.indices) {
        if (bytes[i] == 0.toByte()) {
            out.add(bytes.copyOfRange(start, i))
            start = i + 1
        }
    }
    if (start < bytes.size) out.add(bytes.copyOfRange(start, bytes.size))
    return out
}

/**
 * `--name value` pairs, each name one of [allowed] (the last value wins) or of [lists] (repeatable, every value kept in
 * order), and `--name` switches, each one of [flags].
 */
private class Options(
    args: List<String>,
    allowed: Set<String>,
    private val flags: Set<String> = emptySet(),
    private val lists: Set<String> = emptySet(),
) {
    private val values = HashMap<String, String>()
    private val repeated = HashMap<String, MutableList<String>>()
    private val set = HashSet<String>()

    init {
        var i = 0
        while (i < args.size) {
            val name = args[i].removePrefix("--")
            require(args[i].startsWith("--") && (name in allowed || name in flags || name in lists)) {
                "unknown option '${args[i]}' (allowed: ${(allowed + flags + lists).sorted().joinToString(" ") { "--$it" }})"
            }
            if (name in flags) {
                set.add(name)
                i += 1
                continue
            }
            require(i + 1 < args.size) { "${args[i]} needs a value (--help for usage)" }
            if (name in lists) repeated.getOrPut(name) { ArrayList() }.add(args[i + 1]) else values[name] = args[i + 1]
            i += 2
        }
    }

    fun flag(name: String): Boolean = name in set

    /** Every value of a repeatable option, in the order given. */
    fun list(name: String): List<String> = repeated[name].orEmpty()

    fun required(name: String): String = values[name] ?: throw IllegalArgumentException("--$name is required (--help for usage)")
    fun optional(name: String): String? = values[name]
    fun int(name: String): Int? = values[name]?.let { it.toIntOrNull() ?: throw IllegalArgumentException("--$name must be an integer, got '$it'") }
    fun double(name: String): Double? = values[name]?.let { it.toDoubleOrNull() ?: throw IllegalArgumentException("--$name must be a number, got '$it'") }
}

private fun generate(o: Options) {
    val out = File(o.required("out"))
    require(out.name.endsWith(".png")) { "--out must be a .png file, got $out" }
    val json = File(o.required("json"))
    val seed = o.required("seed").toLongOrNull() ?: throw IllegalArgumentException("--seed must be an integer")
    val prompt = o.required("prompt").also { Prompts.check(it, "--prompt") }
    val initImage = o.optional("init-image")
    val maskFile = o.optional("mask")
    require(maskFile == null || initImage != null) { "--mask needs --init-image: a mask marks what to repaint of an image" }
    require(o.optional("strength") == null || initImage != null) { "--strength needs --init-image: the strength is how far the image is noised" }
    val bundle = Bundle.open(File(o.required("bundle")))
    val geometry = bundle.manifest.geometry
    // the images and every option checked before any component loads
    val request = GenerationRequest(
        prompt, seed, o.int("steps"), o.optional("sampler"), o.double("guidance"),
        initImage = initImage?.let { ImageInput.readInitImage(File(it), geometry, "--init-image $it") },
        mask = maskFile?.let { ImageInput.readMask(File(it), geometry, "--mask $it") },
        strength = o.double("strength"),
    )
    Pipeline.check(bundle.manifest, request)
    val adapters = o.list("lora").map { AdapterMixer.parseChoice(it) }
    AdapterMixer.checkMix(bundle.manifest, adapters)
    val lowMemory = o.flag("low-memory")
    // the adapters' files are read and their rank slots checked before any component loads
    Pipeline(bundle, Backend.forTarget(o.required("backend")), lowMemory = lowMemory, adapters = adapters).use { pipeline ->
        val warmup = o.int("warmup") ?: 1
        val repeats = o.int("repeats") ?: 1
        require(warmup >= 0 && repeats >= 1) { "--warmup must be >= 0 and --repeats >= 1" }
        repeat(warmup) { pipeline.generate(request) } // the first calls of a session include one-off allocations
        val runs = List(repeats) { pipeline.generate(request) }
        val r = runs.sortedBy { it.totalMs }[repeats / 2] // the median run (every run gives the same image)
        val image = BufferedImage(r.width, r.height, BufferedImage.TYPE_INT_RGB)
        image.setRGB(0, 0, r.width, r.height, r.argb, 0, r.width)
        // through our own stream: ImageIO given a File prints the stack trace of a failed open itself
        atomicWrite(out) { f -> f.outputStream().use { ImageIO.write(image, "png", it) } }
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
            // txt2img | img2img | inpaint; strength null for text-to-image; steps_run: the steps the strength left
            .put("mode", r.mode).put("strength", r.strength ?: JSONObject.NULL).put("steps_run", r.stepsRun)
            .put("init_image", initImage?.let { File(it).absolutePath } ?: JSONObject.NULL)
            .put("mask", maskFile?.let { File(it).absolutePath } ?: JSONObject.NULL)
            .put("image_raw", raw.absolutePath).put("image_raw_shape", JSONArray(listOf(r.height, r.width, 3)))
            .put("backend", pipeline.backend.target).put("warmup_runs", warmup).put("repeats", repeats)
            .put("runtime_version", pipeline.backend.runtimeVersion)
            .put("ms_total_runs", JSONArray(runs.map { it.totalMs }))
            .put("low_memory", lowMemory)
            // the run-time adapters on, [[name, scale], ...] in mix order (empty: the base model)
            .put("adapters", JSONArray(r.adapters.map { JSONArray(listOf(it.name, it.scale)) }))
            // the process's resident peak (VmHWM) over loading, warm-up and every run; absent where not reported
            .put("peak_rss_bytes", runs.last().memory?.peakRssBytes)
            // "process" here: the peak counts from the JVM's start (the pipeline never resets it)
            .put("peak_memory_scope", runs.last().memory?.peakSince?.scope)
        atomicWrite(json) { it.writeText(record.toString(2)) }
        val from = (if (r.strength == null) "" else ", ${r.mode} at strength ${r.strength}: ${r.stepsRun} steps") +
            (if (r.adapters.isEmpty()) "" else ", adapters ${r.adapters.joinToString(" + ")}")
        println("wrote $out (${r.plan.sampler}-${r.plan.steps}, guidance ${r.plan.guidance}$from, ${"%.1f".format(r.totalMs)} ms)")
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
    val folder = target.absoluteFile.parentFile
    if (!folder.mkdirs() && !folder.isDirectory) throw IOException("$target: cannot create the folder $folder")
    val tmp = File(folder, ".${target.name}.partial")
    write(tmp)
    if (!tmp.renameTo(target)) throw IOException("could not rename $tmp to $target")
}
