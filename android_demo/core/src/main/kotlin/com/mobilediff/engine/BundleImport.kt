package com.mobilediff.engine

import org.json.JSONObject
import java.io.File
import java.io.FileNotFoundException
import java.io.InputStream

/**
 * A folder tree a bundle is imported from: on Android the storage access framework's document tree or the APK's
 * assets, on the JVM a folder ([FolderSource]). Paths are relative to the tree's root and '/'-separated.
 */
interface BundleSource {
    /** The tree's own name (the picked folder's), the imported bundle's name when its manifest names no model. */
    val name: String

    /** The bytes of the file at [path]; throws FileNotFoundException when there is none. */
    fun open(path: String): InputStream

    /** The names of the entries of the folder at [path], or null when [path] is not a folder. */
    fun list(path: String): List<String>?

    /** The size of the file at [path] in bytes, or -1 when the source cannot say without reading it. */
    fun size(path: String): Long = -1
}

/** A bundle folder on a file system. */
class FolderSource(private val root: File) : BundleSource {
    override val name: String get() = root.absoluteFile.name

    override fun open(path: String): InputStream = File(root, path).let {
        if (!it.isFile) throw FileNotFoundException(path)
        it.inputStream()
    }

    override fun list(path: String): List<String>? = File(root, path).takeIf { it.isDirectory }?.list()?.sorted()

    override fun size(path: String): Long = File(root, path).let { if (it.isFile) it.length() else -1 }
}

/**
 * Copy a bundle from a [BundleSource] into an app's own storage, then check every copied file against the sha256
 * its manifest gives ([Bundle.verify], the check a pipeline makes on load). Only what the manifest names is copied:
 * `manifest.json`, the tokenizer files and the component files (with their external data) of the targets asked for.
 * The copy is written beside the destination and renamed into place once checked: a failed, refused or cancelled
 * import leaves nothing, and an earlier import of the same name stays until the new one is complete.
 */
object BundleImport {
    enum class Phase { COPY, VERIFY }

    /** Reports [doneBytes] of [totalBytes] (the manifest's sizes) done in [phase], while at [path]. */
    fun interface Progress {
        fun onProgress(phase: Phase, path: String, doneBytes: Long, totalBytes: Long)
    }

    /**
     * Import the bundle at [source]'s root into `<into>/<name>`, name from the manifest's `model.name` (and its
     * quantization recipe), else the source's name, reduced to letters, digits, '.', '_' and '-'.
     * [targets]: the component files to copy (e.g. onnx, ort); null copies every target the manifest lists.
     * Throws [BundleError] for a bad manifest, a file it names that the source lacks, a path outside the bundle,
     * a copied file whose sha256 differs, or a target with no files for some component; [ImportCancelled] when
     * [cancel] was set; IOException when the copy cannot be written.
     */
    fun import(
        source: BundleSource,
        into: File,
        targets: Set<String>? = null,
        progress: Progress? = null,
        cancel: CancelToken? = null,
    ): Bundle {
        if (!into.mkdirs() && !into.isDirectory) throw java.io.IOException("cannot create the folder $into")
        // one import at a time per folder: a hidden name the app's bundle list skips
        val partial = File(into, ".import.partial")
        partial.deleteRecursively()
        try {
            copy(source, Manifest.MANIFEST, partial, cancel)
            val manifestText = File(partial, Manifest.MANIFEST).readText()
            val manifest = Manifest.parse(manifestText)
            val refs = files(manifest, targets)
            val total = refs.sumOf { r -> r.sizeBytes.takeIf { it >= 0 } ?: source.size(r.path).coerceAtLeast(0) }
            var done = 0L
            for (ref in refs) {
                copy(source, ref.path, partial, cancel) { n ->
                    done += n
                    progress?.onProgress(Phase.COPY, ref.path, done, total)
                }
            }
            val copied = Bundle.open(partial)
            done = 0L
            for (ref in refs) {
                if (cancel?.isCancelled == true) throw ImportCancelled(ref.path)
                progress?.onProgress(Phase.VERIFY, ref.path, done, total)
                if (ref.sha256.isNotEmpty()) copied.verify(ref)
                done += ref.sizeBytes.coerceAtLeast(0)
            }
            progress?.onProgress(Phase.VERIFY, Manifest.MANIFEST, total, total)
            val destination = File(into, folderName(manifestText, source.name))
            replace(partial, destination)
            return Bundle.open(destination)
        } catch (e: Throwable) {
            partial.deleteRecursively()
            throw e
        }
    }

    /**
     * The files an import copies for [targets] (null: all), in manifest order: the tokenizer files (sha256 empty where
     * the manifest lists none), then each component's files and their external data (the VAE encoder's too, in a
     * bundle with image modes). A component of [Manifest.COMPONENTS] without a file of any of [targets] is a
     * [BundleError]: the imported bundle could not run. An encoder without one is left out: the bundle runs
     * text-to-image, and a run from an image names what is missing.
     */
    fun files(manifest: Manifest, targets: Set<String>? = null): List<FileRef> {
        val refs = ArrayList<FileRef>()
        for (f in manifest.tokenizer.files) refs.add(FileRef(f, manifest.tokenizer.fileSha256[f] ?: "", -1))
        for (name in manifest.componentNames) {
            val spec = manifest.component(name)
            val chosen = spec.files.filter { targets == null || it.target in targets }
            if (chosen.isEmpty() && name == Manifest.IMAGE_ENCODER) continue
            if (chosen.isEmpty()) {
                throw BundleError(
                    Manifest.MANIFEST,
                    "has no ${targets!!.sorted().joinToString("/")} file for $name " +
                        "(it has: ${spec.files.joinToString { "${it.target}/${it.precision}" }.ifEmpty { "none" }})",
                )
            }
            for (f in chosen) refs.addAll(listOf(f.file) + f.externalData)
        }
        for (r in refs) checkInside(r.path)
        return refs.distinctBy { it.path }
    }

    /** The imported folder's name for a bundle with [manifestText], else [fallback]. */
    fun folderName(manifestText: String, fallback: String): String {
        val root = try {
            JSONObject(manifestText)
        } catch (e: Exception) {
            null
        }
        val model = root?.optJSONObject("model")?.optString("name")?.takeIf { it.isNotBlank() }
        val recipe = root?.optJSONObject("quantization")?.optString("recipe")?.takeIf { it.isNotBlank() && it != "null" }
        val name = listOfNotNull(model ?: fallback, recipe).joinToString("-")
        return name.replace(Regex("[^A-Za-z0-9._-]"), "-").trim('.', '-').ifEmpty { "bundle" }
    }

    /** A manifest path must stay inside the bundle: relative, no "..", no empty parts. */
    private fun checkInside(path: String) {
        val parts = path.split('/')
        if (path.startsWith("/") || path.contains('\\') || parts.any { it.isEmpty() || it == "." || it == ".." }) {
            throw BundleError(path, "is not a path inside the bundle (the manifest may only name files in its folder)")
        }
    }

    /**
     * Copy [path] (a file, or a folder such as a .mlpackage, recursively) from [source] into [root], checking [cancel]
     * between chunks and telling [counted] each chunk's bytes.
     */
    private fun copy(source: BundleSource, path: String, root: File, cancel: CancelToken?, counted: (Int) -> Unit = {}) {
        val children = source.list(path)
        if (children != null && children.isNotEmpty()) {
            for (child in children) copy(source, "$path/$child", root, cancel, counted)
            return
        }
        val target = File(root, path)
        target.parentFile?.let { if (!it.mkdirs() && !it.isDirectory) throw java.io.IOException("cannot create the folder $it") }
        val input = try {
            source.open(path)
        } catch (e: FileNotFoundException) {
            throw BundleError(path, "bundle file missing in ${source.name}")
        }
        input.use { inp ->
            target.outputStream().use { out ->
                val buffer = ByteArray(1 shl 20)
                while (true) {
                    if (cancel?.isCancelled == true) throw ImportCancelled(path)
                    val n = inp.read(buffer)
                    if (n < 0) break
                    out.write(buffer, 0, n)
                    counted(n)
                }
            }
        }
    }

    /** Put [fresh] at [destination], replacing what is there only once [fresh] is complete. */
    private fun replace(fresh: File, destination: File) {
        val old = File(destination.parentFile, ".${destination.name}.old")
        old.deleteRecursively()
        if (destination.exists() && !destination.renameTo(old)) throw java.io.IOException("cannot move $destination aside")
        if (!fresh.renameTo(destination)) {
            old.renameTo(destination)
            throw java.io.IOException("cannot rename $fresh to $destination")
        }
        old.deleteRecursively()
    }
}
