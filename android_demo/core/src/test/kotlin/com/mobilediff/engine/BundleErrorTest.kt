package com.mobilediff.engine

import org.junit.Assert.assertEquals
import org.junit.Assert.assertTrue
import org.junit.Rule
import org.junit.Test
import org.junit.rules.TemporaryFolder
import java.io.File

/** A broken bundle gives a BundleError naming the file and the problem, before any runtime is touched. */
class BundleErrorTest {
    @get:Rule
    val tmp = TemporaryFolder()

    /** A copy of a fixture bundle's manifest and tokenizer, with the component files linked in. */
    private fun copyBundle(): File {
        Fixtures.require()
        val src = Fixtures.bundle(Fixtures.models.first())
        val dst = tmp.newFolder("bundle")
        src.walkTopDown().filter { it.isFile }.forEach { f ->
            val target = File(dst, f.relativeTo(src).path)
            target.parentFile.mkdirs()
            if (f.length() < 4_000_000) f.copyTo(target) else java.nio.file.Files.createSymbolicLink(target.toPath(), f.absoluteFile.toPath())
        }
        return dst
    }

    @Test
    fun missingComponentFileIsNamed() {
        val dir = copyBundle()
        val bundle = Bundle.open(dir)
        val path = bundle.manifest.component("unet").file("onnx").file.path
        File(dir, path).delete()
        val e = expectBundleError { bundle.componentFile("unet", "onnx", preferOrt = false) }
        assertEquals(path, e.file)
        assertTrue(e.problem, e.problem.contains("missing"))
    }

    @Test
    fun sha256MismatchIsNamed() {
        val dir = copyBundle()
        val bundle = Bundle.open(dir)
        // the file the ONNX Runtime backend loads: the ORT-format form where the bundle has one
        val path = bundle.manifest.component("vae_decoder").files.let { files ->
            (files.firstOrNull { it.target == Bundle.ORT } ?: files.first { it.target == Bundle.ONNX }).file.path
        }
        val f = File(dir, path)
        f.delete()
        f.writeBytes(ByteArray(16) { 7 })
        val e = expectBundleError { Pipeline(bundle, OnnxRuntimeBackend()) }
        assertEquals(path, e.file)
        assertTrue(e.problem, e.problem.contains("sha256"))
    }

    @Test
    fun missingTokenizerFileIsNamed() {
        val dir = copyBundle()
        File(dir, "tokenizer/merges.txt").delete()
        val e = expectBundleError { Bundle.open(dir).tokenizer() }
        assertEquals("tokenizer/merges.txt", e.file)
    }

    @Test
    fun newerManifestIsRefused() {
        val dir = copyBundle()
        val manifest = File(dir, "manifest.json")
        manifest.writeText(manifest.readText().replaceFirst(Regex("\"format_version\"\\s*:\\s*\\d+"), "\"format_version\": 3"))
        val e = expectBundleError { Bundle.open(dir) }
        assertEquals("manifest.json", e.file)
        assertTrue(e.problem, e.problem.contains("format version 3"))
    }

    @Test
    fun missingManifestAndMissingTableAreNamed() {
        val dir = copyBundle()
        File(dir, "manifest.json").delete()
        assertEquals("manifest.json", expectBundleError { Bundle.open(dir) }.file)
        val manifest = Bundle.open(Fixtures.bundle(Fixtures.models.first())).manifest
        assertTrue(expectBundleError { manifest.sampler("ddim", 7) }.problem.contains("no ddim table for 7 steps"))
    }
}
