package com.mobilediff.engine

import java.io.File
import java.security.MessageDigest

/**
 * A bundle folder: its [manifest] and checked access to its files. [open] reads and validates the manifest
 * only; [componentFile] and [tokenizer] check every file they hand out against its sha256 first.
 */
class Bundle private constructor(val dir: File, val manifest: Manifest) {

    /**
     * The verified file of [component] that a backend reading [target] (onnx | executorch) runs, with its external
     * data checked too. For "onnx" that is the component's ORT-format form when the manifest lists one (target "ort",
     * same precision; ONNX Runtime's mobile format, which a phone loads without parsing or optimizing the ONNX graph
     * again), else the .onnx file; [preferOrt] false always takes the .onnx. An ORT-format entry keeps its ONNX
     * graph's batch facts ([ComponentFile.dynamicBatch]): it is the same graph.
     */
    fun componentFile(component: String, target: String, precision: String? = null, preferOrt: Boolean = true): Pair<File, ComponentFile> {
        val entry = componentEntry(component, target, precision, preferOrt)
        for (ref in listOf(entry.file) + entry.externalData) verify(ref)
        return File(dir, entry.file.path) to entry
    }

    /** The manifest's entry that [componentFile] hands out, from the manifest alone (no file is read). */
    fun componentEntry(component: String, target: String, precision: String? = null, preferOrt: Boolean = true): ComponentFile {
        val spec = manifest.component(component)
        val onnxOrOther = spec.file(target, precision)
        val ort = if (target == ONNX && preferOrt) spec.files.firstOrNull { it.target == ORT && it.precision == onnxOrOther.precision } else null
        return ort?.let { ComponentFile(it.target, it.precision, it.file, it.externalData, onnxOrOther.dynamicBatch) } ?: onnxOrOther
    }

    /**
     * Bytes of the three component files a backend reading [target] loads ([componentEntry]: graph and external
     * data), as the manifest records them (the file's length on disk where it omits one). Throws [BundleError] when
     * the bundle has no such file.
     */
    fun weightBytes(target: String, precision: String? = null): Long =
        Manifest.COMPONENTS.flatMap { c -> componentEntry(c, target, precision).let { listOf(it.file) + it.externalData } }
            .sumOf { if (it.sizeBytes >= 0) it.sizeBytes else File(dir, it.path).length() }

    /** The CLIP tokenizer from the bundle's tokenizer files (each present, and sha256-checked where the manifest lists one). */
    fun tokenizer(): ClipTokenizer {
        val spec = manifest.tokenizer
        for (f in spec.files) {
            val sha = spec.fileSha256[f]
            if (sha != null) verify(FileRef(f, sha, -1)) else if (!File(dir, f).exists()) throw BundleError(f, "tokenizer file missing")
        }
        return ClipTokenizer.load(dir, spec)
    }

    /** Check that [ref] exists and matches its sha256; throws [BundleError] naming the file otherwise. */
    fun verify(ref: FileRef) {
        val f = File(dir, ref.path)
        if (!f.exists()) throw BundleError(ref.path, "bundle file missing")
        val actual = sha256(f)
        if (actual != ref.sha256) {
            throw BundleError(ref.path, "does not match its sha256 in the manifest (modified or corrupt: expected ${ref.sha256}, got $actual)")
        }
    }

    companion object {
        /** The bundle target of ONNX graphs, and of their ORT-format forms (both run by [OnnxRuntimeBackend]). */
        const val ONNX = "onnx"
        const val ORT = "ort"

        /** Read [dir]/manifest.json. Throws [BundleError] for a missing folder/manifest, bad JSON or a newer format. */
        fun open(dir: File): Bundle {
            if (!dir.isDirectory) throw BundleError(dir.path, "bundle folder not found")
            val file = File(dir, Manifest.MANIFEST)
            if (!file.isFile) throw BundleError(Manifest.MANIFEST, "missing in ${dir.path} (not a bundle, or an interrupted export)")
            return Bundle(dir, Manifest.parse(file.readText()))
        }

        /**
         * sha256 of a file's bytes, or of a folder (a .mlpackage) as Python's `mobilediff.bundle.sha256_path`:
         * over its files sorted by path components, each contributing its relative path then its bytes.
         */
        fun sha256(path: File): String {
            val md = MessageDigest.getInstance("SHA-256")
            if (path.isDirectory) {
                val files = path.walkTopDown().filter { it.isFile }.map { it.relativeTo(path).invariantSeparatorsPath }
                    .sortedWith { a, b -> compareParts(a.split('/'), b.split('/')) }.toList()
                for (rel in files) {
                    md.update(rel.toByteArray(Charsets.UTF_8))
                    digestFile(md, File(path, rel))
                }
            } else {
                digestFile(md, path)
            }
            return md.digest().joinToString("") { "%02x".format(it) }
        }

        private fun digestFile(md: MessageDigest, f: File) {
            f.inputStream().use { input ->
                val buf = ByteArray(1 shl 20)
                while (true) {
                    val n = input.read(buf)
                    if (n < 0) break
                    md.update(buf, 0, n)
                }
            }
        }

        private fun compareParts(a: List<String>, b: List<String>): Int {
            for (i in 0 until minOf(a.size, b.size)) {
                val c = a[i].compareTo(b[i])
                if (c != 0) return c
            }
            return a.size - b.size
        }
    }
}
