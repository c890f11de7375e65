package com.mobilediff.demo

import android.content.ContentProvider
import android.content.ContentValues
import android.content.Context
import android.database.Cursor
import android.database.MatrixCursor
import android.net.Uri
import android.os.ParcelFileDescriptor
import android.provider.OpenableColumns
import java.io.File
import java.io.FileNotFoundException

/**
 * Serves the images the app shares, read-only, as `content://com.mobilediff.demo.images/<name>.png` from
 * `<cache>/shared/` (the platform has no FileProvider without AndroidX). Not exported: a receiving app reads a
 * file only through the read grant of the share intent. Names are plain file names: no folders, nothing else.
 */
class ImageProvider : ContentProvider() {
    override fun onCreate(): Boolean = true

    private fun file(uri: Uri): File {
        val name = uri.pathSegments.singleOrNull()?.takeIf { NAME.matches(it) } ?: throw FileNotFoundException("$uri")
        val file = File(folder(context!!), name)
        if (!file.isFile) throw FileNotFoundException("$uri")
        return file
    }

    override fun openFile(uri: Uri, mode: String): ParcelFileDescriptor {
        if (mode != "r") throw SecurityException("$uri is read-only")
        return ParcelFileDescriptor.open(file(uri), ParcelFileDescriptor.MODE_READ_ONLY)
    }

    override fun getType(uri: Uri): String = MIME

    /** The columns a receiving app asks for a shared file: its name and size. */
    override fun query(uri: Uri, projection: Array<String>?, selection: String?, selectionArgs: Array<String>?, sortOrder: String?): Cursor {
        val f = file(uri)
        val columns = (projection ?: arrayOf(OpenableColumns.DISPLAY_NAME, OpenableColumns.SIZE))
            .filter { it == OpenableColumns.DISPLAY_NAME || it == OpenableColumns.SIZE }.toTypedArray()
        return MatrixCursor(columns, 1).apply {
            addRow(columns.map { if (it == OpenableColumns.DISPLAY_NAME) f.name else f.length() })
        }
    }

    override fun insert(uri: Uri, values: ContentValues?): Uri = throw UnsupportedOperationException("read-only")
    override fun update(uri: Uri, values: ContentValues?, selection: String?, selectionArgs: Array<String>?): Int =
        throw UnsupportedOperationException("read-only")
    override fun delete(uri: Uri, selection: String?, selectionArgs: Array<String>?): Int = throw UnsupportedOperationException("read-only")

    companion object {
        const val AUTHORITY = "com.mobilediff.demo.images"
        const val MIME = "image/png"
        private val NAME = Regex("[A-Za-z0-9._-]+\\.png")

        fun folder(context: Context): File = File(context.cacheDir, "shared")

        fun uri(file: File): Uri = Uri.Builder().scheme("content").authority(AUTHORITY).appendPath(file.name).build()
    }
}
