package com.mobilediff.engine

import java.io.ByteArrayOutputStream
import java.util.zip.CRC32
import java.util.zip.DataFormatException
import java.util.zip.Inflater

/**
 * A PNG decoder for the images image-to-image starts from, in plain Kotlin over java.util.zip (the same code on
 * Android and the JVM; javax.imageio is not on Android). It reads what an init image or a mask is: 8-bit (and 1, 2,
 * 4-bit) grayscale, RGB and palette images, with or without an alpha channel, interlaced or not, and decodes them to
 * 8-bit RGB as Pillow converts them (`Image.convert("RGB")`: a gray sample g is (g, g, g), a sub-byte gray sample is
 * scaled to 0..255).
 *
 * Refused, each in one [ImageInputError] line naming the file: anything that is not a PNG, a chunk whose CRC does
 * not match, truncated or corrupt image data, 16-bit samples (which 8 bits to keep is the user's choice), and
 * transparency (an alpha channel or a `tRNS` entry that leaves any pixel less than opaque: what should show through
 * is the user's choice). Ancillary chunks (gamma, colour profile, text) are ignored, as Pillow's conversion does.
 */
object Png {
    private val SIGNATURE = byteArrayOf(-119, 80, 78, 71, 13, 10, 26, 10)

    /** The largest image decoded (pixels): far above any bundle's size, and small enough for an Int-indexed array. */
    const val MAX_PIXELS = 1 shl 26

    /**
     * Decode [bytes] (a PNG file's contents) to RGB. [label] names the file in errors (`--init-image in.png`).
     * Throws [ImageInputError] for what it refuses (see [Png]).
     */
    fun decode(bytes: ByteArray, label: String): RgbImage {
        if (bytes.size < SIGNATURE.size || !bytes.copyOf(SIGNATURE.size).contentEquals(SIGNATURE)) {
            throw ImageInputError("$label is not a PNG file (the engine reads PNG: convert JPEG and other formats first)")
        }
        var header: Header? = null
        var palette: ByteArray? = null
        var transparency: ByteArray? = null
        val data = ByteArrayOutputStream()
        var ended = false
        var at = SIGNATURE.size
        val crc = CRC32()
        while (!ended) {
            if (at + 8 > bytes.size) corrupt(label, "truncated (no IEND chunk)")
            val length = int32(bytes, at)
            val type = String(bytes, at + 4, 4, Charsets.ISO_8859_1)
            if (length < 0 || at + 12L + length > bytes.size) corrupt(label, "truncated in its $type chunk")
            crc.reset()
            crc.update(bytes, at + 4, 4 + length)
            if (crc.value.toInt() != int32(bytes, at + 8 + length)) corrupt(label, "the CRC of its $type chunk does not match")
            val body = at + 8
            if (header == null && type != "IHDR") corrupt(label, "its first chunk is $type, not IHDR")
            when (type) {
                "IHDR" -> {
                    if (header != null) corrupt(label, "it has two IHDR chunks")
                    if (length != 13) corrupt(label, "its IHDR chunk has $length bytes, not 13")
                    header = Header.read(bytes, body, label)
                }
                "PLTE" -> {
                    if (length == 0 || length % 3 != 0 || length > 768) corrupt(label, "its palette has $length bytes")
                    palette = bytes.copyOfRange(body, body + length)
                }
                "tRNS" -> transparency = bytes.copyOfRange(body, body + length)
                "IDAT" -> data.write(bytes, body, length)
                "IEND" -> ended = true
                else -> if (type[0].isUpperCase()) {
                    throw ImageInputError("$label has a critical PNG chunk '$type' this reader does not know: save it as a plain PNG")
                }
            }
            at = body + length + 4
        }
        val h = header!!
        if (h.colorType == PALETTE && palette == null) corrupt(label, "a palette image without a PLTE chunk")
        val raw = inflate(data.toByteArray(), h.rawSize(), label)
        val samples = h.unfilter(raw, label)
        return h.toRgb(samples, palette, transparency, label)
    }

    private fun inflate(compressed: ByteArray, size: Long, label: String): ByteArray {
        if (size > Int.MAX_VALUE) corrupt(label, "too large")
        val out = ByteArray(size.toInt())
        val inflater = Inflater()
        try {
            inflater.setInput(compressed)
            var n = 0
            while (n < out.size) {
                val got = inflater.inflate(out, n, out.size - n)
                if (got == 0 && (inflater.finished() || inflater.needsInput() || inflater.needsDictionary())) break
                n += got
            }
            if (n < out.size) corrupt(label, "its image data is truncated ($n of ${out.size} bytes)")
        } catch (e: DataFormatException) {
            corrupt(label, "its image data does not inflate (${e.message})")
        } finally {
            inflater.end()
        }
        return out
    }

    private fun int32(b: ByteArray, at: Int): Int =
        ((b[at].toInt() and 0xff) shl 24) or ((b[at + 1].toInt() and 0xff) shl 16) or
            ((b[at + 2].toInt() and 0xff) shl 8) or (b[at + 3].toInt() and 0xff)

    internal fun corrupt(label: String, why: String): Nothing = throw ImageInputError("$label is corrupt: $why")

    private const val GRAY = 0
    private const val RGB = 2
    private const val PALETTE = 3
    private const val GRAY_ALPHA = 4
    private const val RGBA = 6

    /** Adam7's passes: (x start, y start, x step, y step). */
    private val ADAM7 = listOf(
        intArrayOf(0, 0, 8, 8), intArrayOf(4, 0, 8, 8), intArrayOf(0, 4, 4, 8), intArrayOf(2, 0, 4, 4),
        intArrayOf(0, 2, 2, 4), intArrayOf(1, 0, 2, 2), intArrayOf(0, 1, 1, 2),
    )

    private class Header(val width: Int, val height: Int, val bitDepth: Int, val colorType: Int, val interlaced: Boolean) {
        val channels: Int = when (colorType) {
            GRAY, PALETTE -> 1
            GRAY_ALPHA -> 2
            RGB -> 3
            else -> 4
        }

        /** Bytes per complete pixel for the filters (at least 1). */
        val filterBytes: Int = maxOf(1, channels * bitDepth / 8)

        private fun rowBytes(w: Int): Long = (w.toLong() * channels * bitDepth + 7) / 8

        /** The passes as (x0, y0, dx, dy, pass width, pass height); one pass covering the image when not interlaced. */
        val passes: List<IntArray> = (if (interlaced) ADAM7 else listOf(intArrayOf(0, 0, 1, 1))).map { (x0, y0, dx, dy) ->
            intArrayOf(x0, y0, dx, dy, if (width > x0) (width - x0 + dx - 1) / dx else 0, if (height > y0) (height - y0 + dy - 1) / dy else 0)
        }

        /** The inflated size: per pass, per row, one filter byte and the row's bytes (an empty pass has none). */
        fun rawSize(): Long = passes.sumOf { p -> if (p[4] == 0 || p[5] == 0) 0L else p[5] * (1 + rowBytes(p[4])) }

        /** Undo the scanline filters and gather the passes: one sample per channel per pixel, row-major, 0..2^depth-1. */
        fun unfilter(raw: ByteArray, label: String): IntArray {
            val samples = IntArray(width * height * channels)
            var at = 0
            for (p in passes) {
                val (x0, y0, dx, dy) = p
                val pw = p[4]
                val ph = p[5]
                if (pw == 0 || ph == 0) continue
                val stride = rowBytes(pw).toInt()
                var previous = ByteArray(stride)
                for (row in 0 until ph) {
                    val filter = raw[at].toInt() and 0xff
                    val line = raw.copyOfRange(at + 1, at + 1 + stride)
                    at += 1 + stride
                    defilter(filter, line, previous, label)
                    val y = y0 + row * dy
                    for (col in 0 until pw) {
                        val x = x0 + col * dx
                        for (c in 0 until channels) samples[(y * width + x) * channels + c] = sample(line, col * channels + c)
                    }
                    previous = line
                }
            }
            return samples
        }

        private fun defilter(filter: Int, line: ByteArray, previous: ByteArray, label: String) {
            val bpp = filterBytes
            for (i in line.indices) {
                val a = if (i >= bpp) line[i - bpp].toInt() and 0xff else 0
                val b = previous[i].toInt() and 0xff
                val c = if (i >= bpp) previous[i - bpp].toInt() and 0xff else 0
                val add = when (filter) {
                    0 -> 0
                    1 -> a
                    2 -> b
                    3 -> (a + b) ushr 1
                    4 -> paeth(a, b, c)
                    else -> corrupt(label, "a scanline has filter type $filter (PNG has 0..4)")
                }
                line[i] = (line[i] + add).toByte()
            }
        }

        private fun paeth(a: Int, b: Int, c: Int): Int {
            val p = a + b - c
            val pa = Math.abs(p - a)
            val pb = Math.abs(p - b)
            val pc = Math.abs(p - c)
            return if (pa <= pb && pa <= pc) a else if (pb <= pc) b else c
        }

        /** The [index]-th sample of an unfiltered row. */
        private fun sample(line: ByteArray, index: Int): Int {
            if (bitDepth == 8) return line[index].toInt() and 0xff
            val bit = index * bitDepth
            val byte = line[bit / 8].toInt() and 0xff
            return (byte ushr (8 - bitDepth - bit % 8)) and ((1 shl bitDepth) - 1)
        }

        fun toRgb(samples: IntArray, palette: ByteArray?, trns: ByteArray?, label: String): RgbImage {
            val n = width * height
            val rgb = ByteArray(3 * n)
            var transparent = 0
            val maxGray = (1 shl bitDepth) - 1
            when (colorType) {
                GRAY, GRAY_ALPHA -> {
                    val key = if (colorType == GRAY && trns != null && trns.size >= 2) ((trns[0].toInt() and 0xff) shl 8) or (trns[1].toInt() and 0xff) else -1
                    for (p in 0 until n) {
                        val g = samples[p * channels]
                        if (colorType == GRAY_ALPHA && samples[p * 2 + 1] < 255) transparent++
                        if (g == key) transparent++
                        val v = (g * 255 / maxGray).toByte()
                        rgb[3 * p] = v; rgb[3 * p + 1] = v; rgb[3 * p + 2] = v
                    }
                }
                RGB, RGBA -> {
                    val key = if (colorType == RGB && trns != null && trns.size >= 6) IntArray(3) { ((trns[2 * it].toInt() and 0xff) shl 8) or (trns[2 * it + 1].toInt() and 0xff) } else null
                    for (p in 0 until n) {
                        val s = p * channels
                        if (colorType == RGBA && samples[s + 3] < 255) transparent++
                        if (key != null && samples[s] == key[0] && samples[s + 1] == key[1] && samples[s + 2] == key[2]) transparent++
                        for (c in 0 until 3) rgb[3 * p + c] = samples[s + c].toByte()
                    }
                }
                else -> {
                    val entries = palette!!.size / 3
                    for (p in 0 until n) {
                        val i = samples[p]
                        if (i >= entries) corrupt(label, "a pixel uses palette entry $i of $entries")
                        if (trns != null && i < trns.size && (trns[i].toInt() and 0xff) < 255) transparent++
                        for (c in 0 until 3) rgb[3 * p + c] = palette[3 * i + c]
                    }
                }
            }
            if (transparent > 0) throw ImageInputError("$label has transparent pixels ($transparent): flatten it onto a background first")
            return RgbImage(width, height, rgb)
        }

        companion object {
            private val DEPTHS = mapOf(GRAY to setOf(1, 2, 4, 8, 16), RGB to setOf(8, 16), PALETTE to setOf(1, 2, 4, 8),
                GRAY_ALPHA to setOf(8, 16), RGBA to setOf(8, 16))

            fun read(b: ByteArray, at: Int, label: String): Header {
                val width = int32(b, at)
                val height = int32(b, at + 4)
                val depth = b[at + 8].toInt() and 0xff
                val type = b[at + 9].toInt() and 0xff
                val compression = b[at + 10].toInt()
                val filter = b[at + 11].toInt()
                val interlace = b[at + 12].toInt()
                if (width <= 0 || height <= 0) corrupt(label, "its size is ${width}x$height")
                val depths = DEPTHS[type] ?: corrupt(label, "unknown colour type $type")
                if (depth !in depths) corrupt(label, "colour type $type cannot have $depth-bit samples")
                if (compression != 0 || filter != 0 || interlace !in 0..1) corrupt(label, "unknown compression, filter or interlace method")
                if (depth == 16) {
                    throw ImageInputError("$label is a 16-bit PNG: give 8-bit RGB or grayscale (convert 16-bit images first)")
                }
                if (width.toLong() * height > MAX_PIXELS) {
                    throw ImageInputError("$label is ${width}x$height pixels: too large to read (the largest is $MAX_PIXELS pixels)")
                }
                return Header(width, height, depth, type, interlace == 1)
            }
        }
    }
}
