package com.mobilediff.demo

import android.content.ContentResolver
import android.content.res.AssetManager
import android.net.Uri
import android.provider.DocumentsContract
import android.provider.DocumentsContract.Document
import com.mobilediff.engine.BundleSource
import java.io.FileNotFoundException
import java.io.IOException
import java.io.InputStream

/**
 * A folder the user picked with the storage access framework (ACTION_OPEN_DOCUMENT_TREE): paths are resolved by
 * display name, one folder listing per folder (cached), from the tree's root document.
 */
class DocumentTreeSource(private val resolver: ContentResolver, private val tree: Uri) : BundleSource {
    private class Entry(val id: String, val mime: String, val size: Long)

    private val rootId: String = DocumentsContract.getTreeDocumentId(tree)
    private val listings = HashMap<String, Map<String, Entry>>()

    override val name: String by lazy {
        resolver.query(DocumentsContract.buildDocumentUriUsingTree(tree, rootId), arrayOf(Document.COLUMN_DISPLAY_NAME), null, null, null)
            ?.use { c -> if (c.moveToFirst()) c.getString(0) else null } ?: "bundle"
    }

    /** The children of the folder document [id], by display name. */
    private fun children(id: String): Map<String, Entry> = listings.getOrPut(id) {
        val columns = arrayOf(Document.COLUMN_DOCUMENT_ID, Document.COLUMN_DISPLAY_NAME, Document.COLUMN_MIME_TYPE, Document.COLUMN_SIZE)
        val out = HashMap<String, Entry>()
        val cursor = resolver.query(DocumentsContract.buildChildDocumentsUriUsingTree(tree, id), columns, null, null, null)
            ?: throw IOException("the document provider cannot list the folder ${name}")
        cursor.use { c ->
            while (c.moveToNext()) {
                out[c.getString(1)] = Entry(c.getString(0), c.getString(2) ?: "", if (c.isNull(3)) -1 else c.getLong(3))
            }
        }
        out
    }

    /** The entry at [path], or null when there is none. */
    private fun resolve(path: String): Entry? {
        var entry = Entry(rootId, Document.MIME_TYPE_DIR, -1)
        for (part in path.split('/')) {
            if (entry.mime != Document.MIME_TYPE_DIR) return null
            entry = children(entry.id)[part] ?: return null
        }
        return entry
    }

    override fun open(path: String): InputStream {
        val e = resolve(path)?.takeIf { it.mime != Document.MIME_TYPE_DIR } ?: throw FileNotFoundException(path)
        return resolver.openInputStream(DocumentsContract.buildDocumentUriUsingTree(tree, e.id)) ?: throw FileNotFoundException(path)
    }

    override fun list(path: String): List<String>? =
        resolve(path)?.takeIf { it.mime == Document.MIME_TYPE_DIR }?.let { children(it.id).keys.sorted() }

    override fun size(path: String): Long = resolve(path)?.size ?: -1
}

/** A bundle packaged in the APK under `assets/<root>/` (build-apk.sh, MOBILEDIFF_APK_BUNDLE). */
class AssetSource(private val assets: AssetManager, private val root: String = ROOT) : BundleSource {
    override val name: String get() = root

    override fun open(path: String): InputStream = assets.open("$root/$path")

    /** AssetManager lists a file as an empty folder: an empty listing is read as a file. */
    override fun list(path: String): List<String>? = assets.list("$root/$path")?.toList()?.takeIf { it.isNotEmpty() }?.sorted()

    /** Known for an asset stored uncompressed; -1 for a compressed one. */
    override fun size(path: String): Long = try {
        assets.openFd("$root/$path").use { it.length }
    } catch (e: IOException) {
        -1
    }

    companion object {
        const val ROOT = "bundle"

        /** Whether the APK holds a bundle. */
        fun present(assets: AssetManager): Boolean = assets.list(ROOT)?.contains("manifest.json") == true
    }
}
