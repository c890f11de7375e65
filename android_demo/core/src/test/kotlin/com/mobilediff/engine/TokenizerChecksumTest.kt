package com.mobilediff.engine

import org.junit.Assert.assertEquals
import org.junit.Assert.assertTrue
import org.junit.Rule
import org.junit.Test
import org.junit.rules.TemporaryFolder
import java.io.File

/** Every file of a bundle is checked against its sha256 before it is read, the tokenizer's included (tiny bundle). */
class TokenizerChecksumTest {
    @get:Rule
    val tmp = TemporaryFolder()

    @Test
    fun modifiedTokenizerFileIsRefused() {
        val dir = TinyBundle.write(tmp.newFolder("bundle"))
        File(dir, "tokenizer/merges.txt").appendText("a b\n")
        val e = expectBundleError { TinyBundle.pipeline(dir) }
        assertEquals("tokenizer/merges.txt", e.file)
        assertTrue(e.problem, e.problem.startsWith("does not match its sha256 in the manifest"))
    }

    @Test
    fun missingTokenizerFileIsNamed() {
        val dir = TinyBundle.write(tmp.newFolder("bundle"))
        File(dir, "tokenizer/vocab.json").delete()
        val e = expectBundleError { Bundle.open(dir).tokenizer() }
        assertEquals("tokenizer/vocab.json", e.file)
        assertTrue(e.problem, e.problem.contains("missing"))
    }

    @Test
    fun modifiedGraphIsRefusedBeforeTheRuntime() {
        val dir = TinyBundle.write(tmp.newFolder("bundle"))
        File(dir, "unet/model.onnx").appendBytes(byteArrayOf(0))
        val e = expectBundleError { TinyBundle.pipeline(dir) }
        assertEquals("unet/model.onnx", e.file)
        assertTrue(e.problem, e.problem.contains("sha256"))
    }

    @Test
    fun aManifestWithoutTokenizerChecksumsStillRequiresTheFiles() {
        val dir = TinyBundle.write(tmp.newFolder("bundle")) { m -> m.getJSONObject("tokenizer").remove("file_sha256") }
        Bundle.open(dir).tokenizer()
        File(dir, "tokenizer/merges.txt").delete()
        assertEquals("tokenizer/merges.txt", expectBundleError { Bundle.open(dir).tokenizer() }.file)
    }
}
