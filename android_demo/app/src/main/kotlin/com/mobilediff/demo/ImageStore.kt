package com.mobilediff.demo

import android.content.ClipData
import android.content.ContentValues
import android.content.Context
import android.content.Intent
import android.graphics.Bitmap
import android.os.Build
import android.os.Environment
import android.provider.MediaStore
import java.io.File
import java.io.IOException
import java.io.OutputStream

/** Saving and sharing a generated image as PNG. Call [save] and [shareIntent] off the UI thread (they encode). */
object ImageStore {
    private const val FOLDER = "mobilediff"
    /** How many shared files the cache keeps (a receiving app may still be reading an earlier one). */
    private const val SHARED_KEPT = 5

    /**
     * Save [bitmap] as [name] (a .png file name): into the shared Pictures/mobilediff collection through MediaStore
     * on Android 10+ (no permission needed), into the app's own Pictures folder below that. Returns where it went.
     */
    fun save(context: Context, bitmap: Bitmap, name: String): String =
        if (Build.VERSION.SDK_INT >= 29) saveToMediaStore(context, bitmap, name) else saveToAppPictures(context, bitmap, name)

    private fun saveToMediaStore(context: Context, bitmap: Bitmap, name: String): String {
        val resolver = context.contentResolver
        val values = ContentValues().apply {
            put(MediaStore.MediaColumns.DISPLAY_NAME, name)
            put(MediaStore.MediaColumns.MIME_TYPE, ImageProvider.MIME)
            // API 29 columns, named by value: the app compiles against API 23
            put("relative_path", "${Environment.DIRECTORY_PICTURES}/$FOLDER")
            put("is_pending", 1)
        }
        val uri = resolver.insert(MediaStore.Images.Media.EXTERNAL_CONTENT_URI, values)
            ?: throw IOException("the media store refused a new image")
        try {
            val out = resolver.openOutputStream(uri) ?: throw IOException("cannot write $uri")
            out.use { png(bitmap, it) }
            resolver.update(uri, ContentValues().apply { put("is_pending", 0) }, null, null)
        } catch (e: Exception) {
            resolver.delete(uri, null, null)
            throw e
        }
        return "${Environment.DIRECTORY_PICTURES}/$FOLDER/$name"
    }

    private fun saveToAppPictures(context: Context, bitmap: Bitmap, name: String): String {
        val dir = context.getExternalFilesDir(Environment.DIRECTORY_PICTURES) ?: File(context.filesDir, Environment.DIRECTORY_PICTURES)
        if (!dir.mkdirs() && !dir.isDirectory) throw IOException("cannot create $dir")
        val file = File(dir, name)
        val partial = File(dir, ".$name.partial")
        partial.outputStream().use { png(bitmap, it) }
        if (!partial.renameTo(file)) throw IOException("cannot write $file")
        return file.path
    }

    /** An ACTION_SEND chooser for [bitmap] as [name], readable by the chosen app through [ImageProvider]. */
    fun shareIntent(context: Context, bitmap: Bitmap, name: String, title: CharSequence): Intent {
        val dir = ImageProvider.folder(context)
        if (!dir.mkdirs() && !dir.isDirectory) throw IOException("cannot create $dir")
        dir.listFiles()?.sortedByDescending { it.lastModified() }?.drop(SHARED_KEPT - 1)?.forEach { it.delete() }
        val file = File(dir, name)
        file.outputStream().use { png(bitmap, it) }
        val uri = ImageProvider.uri(file)
        val send = Intent(Intent.ACTION_SEND)
            .setType(ImageProvider.MIME)
            .putExtra(Intent.EXTRA_STREAM, uri)
            .addFlags(Intent.FLAG_GRANT_READ_URI_PERMISSION)
        send.clipData = ClipData.newUri(context.contentResolver, name, uri)
        return Intent.createChooser(send, title).addFlags(Intent.FLAG_GRANT_READ_URI_PERMISSION)
    }

    private fun png(bitmap: Bitmap, out: OutputStream) {
        if (!bitmap.compress(Bitmap.CompressFormat.PNG, 100, out)) throw IOException("PNG encoding failed")
    }
}
