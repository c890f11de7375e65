package com.mobilediff.demo

import android.content.res.AssetManager
import com.mobilediff.engine.Backend
import com.mobilediff.engine.Manifest
import org.json.JSONObject
import java.io.FileNotFoundException

/**
 * A runtime the app can run bundles on: its [runtime] name as `assets/runtimes.json` spells it, the engine's
 * [backend] target, the bundle [targets] it reads (ONNX Runtime takes a component's `ort` file or its `onnx` one).
 */
enum class RuntimeKind(val runtime: String, val backend: String, val targets: Set<String>, val label: String) {
    ONNXRUNTIME("onnxruntime", "onnx", setOf("onnx", "ort"), "ONNX Runtime"),
    EXECUTORCH("executorch", "executorch", setOf("executorch"), "ExecuTorch"),
    ;

    /** Whether [manifest] has a file this runtime reads for every component. */
    fun runs(manifest: Manifest): Boolean = Manifest.COMPONENTS.all { c -> manifest.component(c).files.any { it.target in targets } }

    companion object {
        fun named(runtime: String): RuntimeKind? = values().firstOrNull { it.runtime == runtime }
    }
}

/** A runtime and whether it starts in this process: [failure] is null when it does, else one line saying why not. */
class RuntimeStatus(val kind: RuntimeKind, val version: String?, val failure: String?) {
    val usable: Boolean get() = failure == null

    override fun toString(): String = "${kind.label}${version?.let { " $it" } ?: ""}" + (failure?.let { ": $it" } ?: "")
}

/**
 * What this APK can run: the runtimes `assets/runtimes.json` lists (written by build-apk.sh, e.g.
 * `{"runtimes": [{"name": "onnxruntime", "version": "1.29.0"}]}`), each probed by starting it once. A build without
 * that file (the Gradle project) probes every runtime the engine knows. Probing catches every Throwable: a missing
 * native library (UnsatisfiedLinkError) or class (NoClassDefFoundError) becomes a line, never a crash.
 */
object Runtimes {
    const val ASSET = "runtimes.json"

    /** The runtimes the APK packages (name, version), or null when it has no runtimes.json. Unknown names are skipped. */
    fun packaged(assets: AssetManager): List<Pair<RuntimeKind, String?>>? {
        val text = try {
            assets.open(ASSET).use { it.readBytes().toString(Charsets.UTF_8) }
        } catch (e: FileNotFoundException) {
            return null
        }
        val list = JSONObject(text).getJSONArray("runtimes")
        return (0 until list.length()).mapNotNull { i ->
            val o = list.getJSONObject(i)
            RuntimeKind.named(o.getString("name"))?.let { it to o.optString("version").ifEmpty { null } }
        }
    }

    /** Every packaged runtime (every known one without runtimes.json), probed. Call off the UI thread: it loads native code. */
    fun probe(assets: AssetManager): List<RuntimeStatus> {
        val packaged = try {
            packaged(assets)
        } catch (e: Exception) {
            return listOf(RuntimeStatus(RuntimeKind.ONNXRUNTIME, null, "cannot read assets/$ASSET: ${e.message}"))
        } ?: RuntimeKind.values().map { it to null }
        return packaged.map { (kind, version) -> RuntimeStatus(kind, version, start(kind)) }
    }

    /** Start [kind] once (load its classes and native libraries): null when it starts, else why not. */
    private fun start(kind: RuntimeKind): String? = try {
        Backend.forTarget(kind.backend) // ONNX Runtime opens its environment here, loading its native libraries
        // ExecuTorch's Module loads its native library as its class initialises
        if (kind == RuntimeKind.EXECUTORCH) Class.forName("org.pytorch.executorch.Module", true, Runtimes::class.java.classLoader)
        null
    } catch (e: Throwable) {
        val cause = generateSequence(e) { it.cause }.last()
        when (cause) {
            is UnsatisfiedLinkError -> "native library missing from this build (${cause.message})"
            is ClassNotFoundException, is NoClassDefFoundError -> "classes missing from this build (${cause.message})"
            else -> "cannot start (${cause.javaClass.simpleName}: ${cause.message})"
        }.lineSequence().first()
    }
}
