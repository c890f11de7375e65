package com.mobilediff.engine

import java.io.File
import java.io.IOException

/** An 8-bit RGB image, row-major, 3 bytes a pixel: an init image or a mask as the engine takes it. */
class RgbImage(val width: Int, val height: Int, val rgb: ByteArray) {
    init {
        require(width > 0 && height > 0 && rgb.size == 3 * width * height) { "an RGB image of ${width}x$height needs ${3L * width * height} bytes, got ${rgb.size}" }
    }

    /** Channel [c] (0 red, 1 green, 2 blue) of pixel ([x], [y]), 0..255. */
    fun value(x: Int, y: Int, c: Int): Int = rgb[3 * (y * width + x) + c].toInt() and 0xff
}

/**
 * An init image or mask the engine refuses: one line naming the image (a file, or what the app calls it) and the
 * problem. An IllegalArgumentException, so the CLI reports it as bad input and the app as a request it cannot run.
 */
class ImageInputError(message: String) : IllegalArgumentException(message)

/**
 * The images image-to-image and inpainting start from, read and checked as `mobilediff.image_input` does (the
 * Python CLI's `--init-image` and `--mask`), in the tensors the pipeline takes:
 *
 *     pixels    = x / 127.5 - 1                  (1, 3, H, W) float32: RGB at the bundle's size, never resized here
 *     mask      = pixel (y * f, x * f) >= 128    (1, 1, h, w) of 0 (keep) and 1 (repaint), f the VAE factor
 *
 * An init image is 8-bit RGB, grayscale or palette, fully opaque, exactly the bundle's width x height. A mask is
 * the same, grayscale (every pixel's channels equal), marking at least one pixel, and at least one of the latent's.
 * Every refusal is one [ImageInputError] line.
 */
object ImageInput {
    /** [file] as an init image for [geometry]; [label] names it in errors (the CLI: `--init-image FILE`). */
    fun readInitImage(file: File, geometry: Geometry, label: String = file.path): RgbImage =
        read(file, label).also { checkSize(it, geometry, label) }

    /** [file] as a mask for [geometry], checked as [latentMask] checks it; [label] names it in errors. */
    fun readMask(file: File, geometry: Geometry, label: String = file.path): RgbImage =
        read(file, label).also { latentMask(it, geometry, label) }

    /** A PNG file decoded to RGB ([Png.decode]); a missing or unreadable file is an [ImageInputError] too. */
    fun read(file: File, label: String = file.path): RgbImage {
        if (!file.isFile) throw ImageInputError("$label: no such file")
        val bytes = try {
            file.readBytes()
        } catch (e: IOException) {
            throw ImageInputError("$label cannot be read (${e.message})")
        }
        return Png.decode(bytes, label)
    }

    /**
     * Packed ARGB pixels (an Android Bitmap's getPixels) as RGB. Refuses any pixel that is not fully opaque, as
     * [Png] refuses a transparent file.
     */
    fun fromArgb(argb: IntArray, width: Int, height: Int, label: String): RgbImage {
        require(argb.size == width * height) { "$label: ${argb.size} pixels for ${width}x$height" }
        val transparent = argb.count { (it ushr 24) != 0xff }
        if (transparent > 0) throw ImageInputError("$label has transparent pixels ($transparent): flatten it onto a background first")
        val rgb = ByteArray(3 * argb.size)
        for (p in argb.indices) {
            rgb[3 * p] = (argb[p] shr 16).toByte()
            rgb[3 * p + 1] = (argb[p] shr 8).toByte()
            rgb[3 * p + 2] = argb[p].toByte()
        }
        return RgbImage(width, height, rgb)
    }

    /** Refuse an image that is not the bundle's width x height, saying both sizes. */
    fun checkSize(image: RgbImage, geometry: Geometry, label: String) {
        if (image.width != geometry.width || image.height != geometry.height) {
            throw ImageInputError(
                "$label is ${image.width}x${image.height} pixels, the model generates ${geometry.width}x${geometry.height}: " +
                    "resize or crop it to that size",
            )
        }
    }

    /** (1, 3, H, W) float32 in [-1, 1]: `x / 127.5 - 1` of every channel (diffusers' `x / 255 * 2 - 1`, as Python computes it). */
    fun pixels(image: RgbImage): FloatArray {
        val plane = image.width * image.height
        return FloatArray(3 * plane) { i ->
            val c = i / plane
            val p = i % plane
            (image.rgb[3 * p + c].toInt() and 0xff).toFloat() / 127.5f - 1f
        }
    }

    /**
     * The latent mask of [mask] for [geometry]: (1, 1, latentHeight, latentWidth) of 1 (repaint) where the pixel at
     * (y * f, x * f) is >= 128, else 0. Throws [ImageInputError] for another size, a mask in colour (which channel
     * marks the region?), one that marks nothing, or one whose marked pixels all fall between the latent's samples.
     */
    fun latentMask(mask: RgbImage, geometry: Geometry, label: String): FloatArray {
        checkSize(mask, geometry, label)
        val colour = (0 until mask.width * mask.height).any { p ->
            mask.rgb[3 * p] != mask.rgb[3 * p + 1] || mask.rgb[3 * p + 1] != mask.rgb[3 * p + 2]
        }
        if (colour) throw ImageInputError("$label is in colour: a mask is grayscale (white or >= 128: repaint, black: keep)")
        if ((0 until mask.width * mask.height).none { (mask.rgb[3 * it].toInt() and 0xff) >= THRESHOLD }) {
            throw ImageInputError("$label marks nothing to repaint (no pixel >= $THRESHOLD): leave the mask out for image-to-image")
        }
        val f = geometry.vaeScaleFactor
        val h = geometry.latentHeight
        val w = geometry.latentWidth
        val latent = FloatArray(h * w) { i ->
            val y = (i / w) * f
            val x = (i % w) * f
            if (y < mask.height && x < mask.width && mask.value(x, y, 0) >= THRESHOLD) 1f else 0f
        }
        if (latent.none { it != 0f }) {
            throw ImageInputError(
                "$label: its marked region misses every latent pixel (the model repaints ${f}x$f-pixel cells sampled at " +
                    "their top-left pixel): mark a larger region",
            )
        }
        return latent
    }

    /** A mask pixel at or above this value is repainted (diffusers binarizes its [0, 1] mask at 0.5). */
    const val THRESHOLD = 128
}
