package com.mobilediff.demo

import android.content.ContentResolver
import android.graphics.Bitmap
import android.graphics.BitmapFactory
import android.graphics.Canvas
import android.graphics.Paint
import android.graphics.Rect
import android.net.Uri
import com.mobilediff.engine.ImageInput
import com.mobilediff.engine.RgbImage
import java.io.IOException

/**
 * An image the user picked (gallery, camera roll, files) as image-to-image starts from it. The engine takes the
 * bundle's exact size and never resizes; the app does it here, visibly: the picked image is centre-cropped to the
 * bundle's aspect ratio and scaled to its width x height, and the result is what the mask is drawn on and what
 * the engine encodes. Call [decode] off the UI thread.
 */
object PickedImage {
    /** The longest side kept of a picked image (enough for any bundle; a 12 MP photo is sampled down on decode). */
    private const val MAX_SIDE = 1024

    /**
     * [uri] decoded by the platform (JPEG, PNG, WebP, ...), sampled down by a power of two while its longest side
     * stays at least [MAX_SIDE]. Throws IOException when the provider gives no data or it is not an image.
     */
    fun decode(resolver: ContentResolver, uri: Uri): Bitmap {
        val bounds = BitmapFactory.Options().apply { inJustDecodeBounds = true }
        open(resolver, uri).use { BitmapFactory.decodeStream(it, null, bounds) }
        if (bounds.outWidth <= 0 || bounds.outHeight <= 0) throw IOException("the picked file is not an image this device decodes")
        var sample = 1
        while (maxOf(bounds.outWidth, bounds.outHeight) / (sample * 2) >= MAX_SIDE) sample *= 2
        val options = BitmapFactory.Options().apply {
            inSampleSize = sample
            inPreferredConfig = Bitmap.Config.ARGB_8888
        }
        return open(resolver, uri).use { BitmapFactory.decodeStream(it, null, options) }
            ?: throw IOException("the picked image could not be decoded")
    }

    /** [source] centre-cropped to the aspect ratio of [width] x [height] and scaled (filtered) to exactly that size. */
    fun fit(source: Bitmap, width: Int, height: Int): Bitmap {
        val sw = source.width
        val sh = source.height
        // the largest centred rectangle of the target's aspect ratio
        val crop = if (sw.toLong() * height > sh.toLong() * width) {
            val w = (sh.toLong() * width / height).toInt().coerceAtLeast(1)
            Rect((sw - w) / 2, 0, (sw - w) / 2 + w, sh)
        } else {
            val h = (sw.toLong() * height / width).toInt().coerceAtLeast(1)
            Rect(0, (sh - h) / 2, sw, (sh - h) / 2 + h)
        }
        val out = Bitmap.createBitmap(width, height, Bitmap.Config.ARGB_8888)
        Canvas(out).drawBitmap(source, crop, Rect(0, 0, width, height), Paint(Paint.FILTER_BITMAP_FLAG))
        return out
    }

    /** The engine's init image of [bitmap] (at the bundle's size, from [fit]); refuses transparent pixels in one line. */
    fun rgb(bitmap: Bitmap): RgbImage {
        val argb = IntArray(bitmap.width * bitmap.height)
        bitmap.getPixels(argb, 0, bitmap.width, 0, 0, bitmap.width, bitmap.height)
        return ImageInput.fromArgb(argb, bitmap.width, bitmap.height, "the picked image")
    }

    private fun open(resolver: ContentResolver, uri: Uri) =
        resolver.openInputStream(uri) ?: throw IOException("the picker's provider gives no data for $uri")
}
