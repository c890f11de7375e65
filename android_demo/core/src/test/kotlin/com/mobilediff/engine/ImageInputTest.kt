package com.mobilediff.engine

import org.junit.Assert.assertArrayEquals
import org.junit.Assert.assertEquals
import org.junit.Assert.assertFalse
import org.junit.Assert.assertTrue
import org.junit.Rule
import org.junit.Test
import org.junit.rules.TemporaryFolder
import java.awt.image.BufferedImage
import java.io.ByteArrayOutputStream
import java.io.File
import java.util.Random
import java.util.zip.CRC32
import java.util.zip.Deflater
import javax.imageio.IIOImage
import javax.imageio.ImageIO
import javax.imageio.ImageWriteParam

/**
 * The init image and mask readers: the PNG decoder against the JDK's PNG writer (every filter it picks, interlaced
 * and not) and hand-written files of every colour type and depth it reads, each refusal as one line naming the file,
 * and the pixel and latent-mask arithmetic of `mobilediff.image_input`.
 */
class ImageInputTest {
    @get:Rule
    val tmp = TemporaryFolder()

    /** A 4 x 4 bundle geometry with a VAE factor of 2: a (1, 4, 2, 2) latent. */
    private val geometry = Geometry(4, 4, 4, 2, 2, 0.5, 0.0, vaeScaleFactor = 2)

    private fun file(name: String, bytes: ByteArray) = File(tmp.root, name).apply { writeBytes(bytes) }

    private fun refusal(block: () -> Unit): String {
        val message = expectThrown<ImageInputError>(block).message!!
        assertFalse("one line: $message", message.contains('\n'))
        return message
    }

    private fun assertMentions(message: String, vararg parts: String) {
        for (p in parts) assertTrue("'$p' not in: $message", message.contains(p))
    }

    // ---- decoding

    @Test
    fun rgbAndGrayFromTheJdkWriterDecodeToTheirSamples() {
        val random = Random(3)
        for (interlaced in listOf(false, true)) {
            val rgb = BufferedImage(13, 9, BufferedImage.TYPE_INT_RGB)
            for (y in 0 until 9) for (x in 0 until 13) rgb.setRGB(x, y, random.nextInt() and 0xffffff)
            val decoded = Png.decode(jdkPng(rgb, interlaced), "rgb.png")
            for (y in 0 until 9) for (x in 0 until 13) {
                val p = rgb.getRGB(x, y)
                assertEquals(listOf(p shr 16 and 0xff, p shr 8 and 0xff, p and 0xff), (0 until 3).map { decoded.value(x, y, it) })
            }
            val gray = BufferedImage(7, 5, BufferedImage.TYPE_BYTE_GRAY)
            for (y in 0 until 5) for (x in 0 until 7) gray.raster.setSample(x, y, 0, random.nextInt(256))
            val g = Png.decode(jdkPng(gray, interlaced), "gray.png")
            for (y in 0 until 5) for (x in 0 until 7) {
                assertEquals(List(3) { gray.raster.getSample(x, y, 0) }, (0 until 3).map { g.value(x, y, it) })
            }
        }
    }

    @Test
    fun everyColourTypeAndDepthReadsAsPillowConvertsIt() {
        // 1, 2, 4-bit gray scale to 0..255 (x 255, 85, 17); palette indices of any depth look up the palette
        for ((depth, scale) in listOf(1 to 255, 2 to 85, 4 to 17, 8 to 1)) {
            val samples = IntArray(6) { it % (1 shl depth) }
            val img = Png.decode(TestPng.encode(3, 2, 0, depth, samples), "g$depth.png")
            assertEquals(samples.map { it * scale }, (0 until 6).map { img.value(it % 3, it / 3, 1) })
            val palette = ByteArray(3 * (1 shl depth)) { (it * 7 + 1).toByte() }
            val p = Png.decode(TestPng.encode(3, 2, 3, depth, samples, palette = palette), "p$depth.png")
            assertEquals(samples.map { palette[3 * it + 2].toInt() and 0xff }, (0 until 6).map { p.value(it % 3, it / 3, 2) })
        }
        // an alpha channel where every pixel is opaque is read (and dropped)
        val la = Png.decode(TestPng.encode(2, 1, 4, 8, intArrayOf(10, 255, 20, 255)), "la.png")
        assertEquals(listOf(10, 10, 10, 20), listOf(la.value(0, 0, 0), la.value(0, 0, 1), la.value(0, 0, 2), la.value(1, 0, 0)))
        val rgba = Png.decode(TestPng.encode(1, 1, 6, 8, intArrayOf(1, 2, 3, 255)), "rgba.png")
        assertEquals(listOf(1, 2, 3), (0 until 3).map { rgba.value(0, 0, it) })
        // a palette entry made transparent by tRNS but used by no pixel
        val unused = TestPng.encode(2, 1, 3, 8, intArrayOf(0, 0), palette = ByteArray(6), trns = byteArrayOf(-1, 0))
        assertEquals(2, Png.decode(unused, "u.png").width)
    }

    @Test
    fun whatTheDecoderRefusesIsOneLineNamingTheFile() {
        val good = TestPng.encode(2, 2, 2, 8, IntArray(12) { it * 20 })
        val cases = listOf(
            "GIF89a and more".toByteArray() to listOf("x.png is not a PNG file"),
            good.copyOf(good.size - 20) to listOf("x.png is corrupt"),
            good.copyOf().also { it[it.size - 20] = (it[it.size - 20] + 1).toByte() } to listOf("x.png is corrupt", "CRC"),
            TestPng.encode(2, 2, 0, 16, IntArray(4) { 1000 * it }) to listOf("x.png is a 16-bit PNG", "8-bit"),
            TestPng.encode(2, 1, 6, 8, intArrayOf(1, 2, 3, 255, 4, 5, 6, 254)) to listOf("x.png has transparent pixels (1)", "flatten"),
            TestPng.encode(2, 1, 4, 8, intArrayOf(1, 0, 2, 0)) to listOf("x.png has transparent pixels (2)"),
            TestPng.encode(2, 1, 3, 8, intArrayOf(0, 1), palette = ByteArray(6), trns = byteArrayOf(-1, 0)) to listOf("transparent pixels (1)"),
            TestPng.encode(2, 1, 0, 8, intArrayOf(5, 9), trns = byteArrayOf(0, 9)) to listOf("transparent pixels (1)"),
            TestPng.encode(2, 1, 3, 8, intArrayOf(0, 2), palette = ByteArray(6)) to listOf("x.png is corrupt", "palette entry 2 of 2"),
            TestPng.encode(2, 1, 3, 8, intArrayOf(0, 1)) to listOf("x.png is corrupt", "PLTE"),
            TestPng.encode(2, 1, 2, 8, IntArray(6), extra = "ZzZz" to ByteArray(0)) to listOf("critical PNG chunk 'ZzZz'"),
            TestPng.encode(2, 1, 2, 8, IntArray(6), filter = 7) to listOf("x.png is corrupt", "filter type 7"),
        )
        for ((bytes, mentions) in cases) assertMentions(refusal { Png.decode(bytes, "x.png") }, *mentions.toTypedArray())
    }

    // ---- files, sizes and masks

    private fun rgbFile(name: String, w: Int, h: Int, value: (Int, Int, Int) -> Int) =
        file(name, TestPng.encode(w, h, 2, 8, IntArray(3 * w * h) { i -> value((i / 3) % w, (i / 3) / w, i % 3) }))

    private fun grayFile(name: String, w: Int, h: Int, value: (Int, Int) -> Int) =
        file(name, TestPng.encode(w, h, 0, 8, IntArray(w * h) { value(it % w, it / w) }))

    @Test
    fun anInitImageIsReadAtTheBundlesSizeOnly() {
        val ok = rgbFile("init.png", 4, 4) { x, y, c -> 16 * y + 4 * x + c }
        val image = ImageInput.readInitImage(ok, geometry, "--init-image init.png")
        // x / 127.5 - 1 in float32, channel planes
        val pixels = ImageInput.pixels(image)
        assertEquals(48, pixels.size)
        assertEquals(0f / 127.5f - 1f, pixels[0], 0f)
        assertEquals(((16 * 3 + 4 * 3 + 2).toFloat() / 127.5f) - 1f, pixels[2 * 16 + 15], 0f)
        assertArrayEquals(floatArrayOf(-1f, 1f), ImageInput.pixels(RgbImage(1, 1, byteArrayOf(0, -1, 0))).copyOf(2), 0f)
        val wrong = rgbFile("wide.png", 6, 4) { _, _, _ -> 0 }
        assertMentions(refusal { ImageInput.readInitImage(wrong, geometry, "--init-image wide.png") },
            "--init-image wide.png is 6x4 pixels, the model generates 4x4", "resize or crop")
        assertMentions(refusal { ImageInput.readInitImage(File(tmp.root, "none.png"), geometry, "--init-image none.png") },
            "--init-image none.png: no such file")
    }

    @Test
    fun aMaskIsBinarizedAt128AndSampledAtTheLatentsPixels() {
        // latent pixel (x, y) reads the mask at (2x, 2y): only (0, 0), (2, 0), (0, 2), (2, 2) count
        val mask = grayFile("mask.png", 4, 4) { x, y -> if (x == 2 && y == 0) 128 else if (x == 0 && y == 2) 127 else if (x == 1) 255 else 0 }
        val image = ImageInput.readMask(mask, geometry, "--mask mask.png")
        assertArrayEquals(floatArrayOf(0f, 1f, 0f, 0f), ImageInput.latentMask(image, geometry, "--mask mask.png"), 0f)
        // an RGB file whose channels are equal is a grayscale mask
        val rgbGray = rgbFile("rgbgray.png", 4, 4) { x, _, _ -> if (x == 0) 200 else 0 }
        assertArrayEquals(floatArrayOf(1f, 0f, 1f, 0f), ImageInput.latentMask(ImageInput.read(rgbGray), geometry, "m"), 0f)
    }

    @Test
    fun whatAMaskMustBeIsSaidInOneLine() {
        val cases = listOf(
            rgbFile("colour.png", 4, 4) { _, _, c -> if (c == 0) 255 else 0 } to listOf("--mask colour.png is in colour", "grayscale"),
            grayFile("black.png", 4, 4) { _, _ -> 127 } to listOf("--mask black.png marks nothing to repaint (no pixel >= 128)"),
            grayFile("between.png", 4, 4) { x, y -> if (x == 1 && y == 1) 255 else 0 } to
                listOf("--mask between.png: its marked region misses every latent pixel", "2x2-pixel cells"),
            grayFile("small.png", 2, 2) { _, _ -> 255 } to listOf("--mask small.png is 2x2 pixels, the model generates 4x4"),
        )
        for ((f, mentions) in cases) assertMentions(refusal { ImageInput.readMask(f, geometry, "--mask ${f.name}") }, *mentions.toTypedArray())
    }

    @Test
    fun anAndroidBitmapsPixelsAreOpaqueRgb() {
        val image = ImageInput.fromArgb(intArrayOf(0xff102030.toInt(), 0xffffffff.toInt()), 2, 1, "the picked image")
        assertEquals(listOf(0x10, 0x20, 0x30, 0xff), listOf(image.value(0, 0, 0), image.value(0, 0, 1), image.value(0, 0, 2), image.value(1, 0, 0)))
        assertMentions(refusal { ImageInput.fromArgb(intArrayOf(0x80102030.toInt(), 0), 2, 1, "the picked image") },
            "the picked image has transparent pixels (2)")
    }

    /** The JDK's PNG encoding of [image] (Adam7-interlaced when [interlaced]). */
    private fun jdkPng(image: BufferedImage, interlaced: Boolean): ByteArray {
        val out = ByteArrayOutputStream()
        val writer = ImageIO.getImageWritersByFormatName("png").next()
        ImageIO.createImageOutputStream(out).use { stream ->
            writer.output = stream
            val param = writer.defaultWriteParam
            if (interlaced) param.progressiveMode = ImageWriteParam.MODE_DEFAULT
            writer.write(null, IIOImage(image, null, null), param)
        }
        writer.dispose()
        val bytes = out.toByteArray()
        assertEquals("interlace method", if (interlaced) 1 else 0, bytes[28].toInt())
        return bytes
    }
}

/** PNG files written by hand (filter [filter] on every row, not interlaced), with what a test needs to break. */
object TestPng {
    fun encode(
        width: Int,
        height: Int,
        colorType: Int,
        depth: Int,
        samples: IntArray,
        palette: ByteArray? = null,
        trns: ByteArray? = null,
        filter: Int = 0,
        extra: Pair<String, ByteArray>? = null,
    ): ByteArray {
        val channels = mapOf(0 to 1, 2 to 3, 3 to 1, 4 to 2, 6 to 4).getValue(colorType)
        val raw = ByteArrayOutputStream()
        for (y in 0 until height) {
            raw.write(filter)
            val bits = ArrayList<Int>()
            for (i in 0 until width * channels) {
                val v = samples[y * width * channels + i]
                if (depth == 16) {
                    bits.add(v shr 8 and 0xff); bits.add(v and 0xff)
                } else {
                    for (b in depth - 1 downTo 0) bits.add(v shr b and 1)
                }
            }
            if (depth == 16) bits.forEach { raw.write(it) } else {
                while (bits.size % 8 != 0) bits.add(0)
                for (k in bits.indices step 8) raw.write((0 until 8).fold(0) { acc, b -> (acc shl 1) or bits[k + b] })
            }
        }
        val deflater = Deflater()
        deflater.setInput(raw.toByteArray())
        deflater.finish()
        val compressed = ByteArrayOutputStream()
        val buf = ByteArray(4096)
        while (!deflater.finished()) compressed.write(buf, 0, deflater.deflate(buf))
        val out = ByteArrayOutputStream()
        out.write(byteArrayOf(-119, 80, 78, 71, 13, 10, 26, 10))
        val header = ByteArrayOutputStream().apply {
            int32(this, width); int32(this, height); write(depth); write(colorType); write(0); write(0); write(0)
        }
        chunk(out, "IHDR", header.toByteArray())
        palette?.let { chunk(out, "PLTE", it) }
        trns?.let { chunk(out, "tRNS", it) }
        extra?.let { chunk(out, it.first, it.second) }
        chunk(out, "IDAT", compressed.toByteArray())
        chunk(out, "IEND", ByteArray(0))
        return out.toByteArray()
    }

    private fun int32(out: ByteArrayOutputStream, v: Int) {
        for (s in listOf(24, 16, 8, 0)) out.write(v shr s and 0xff)
    }

    private fun chunk(out: ByteArrayOutputStream, type: String, data: ByteArray) {
        int32(out, data.size)
        val typed = type.toByteArray(Charsets.ISO_8859_1) + data
        out.write(typed)
        val crc = CRC32().apply { update(typed) }
        int32(out, crc.value.toInt())
    }
}
