package com.mobilediff.engine

import org.junit.Assert.assertArrayEquals
import org.junit.Assert.assertEquals
import org.junit.Assert.assertFalse
import org.junit.Assert.assertTrue
import org.junit.Rule
import org.junit.Test
import org.junit.rules.TemporaryFolder
import java.io.File

/**
 * Importing a bundle into app storage (the app's storage-access-framework and packaged-asset paths, here from a
 * folder): only what the manifest names for the asked targets is copied, every copied file is sha256-checked, and
 * a refused or cancelled import leaves nothing behind.
 */
class BundleImportTest {
    @get:Rule
    val tmp = TemporaryFolder()

    /** Everything under [dir], as relative paths. */
    private fun tree(dir: File): List<String> =
        dir.walkTopDown().filter { it.isFile }.map { it.relativeTo(dir).invariantSeparatorsPath }.sorted().toList()

    @Test
    fun copiesWhatTheManifestNamesForTheTargets() {
        val source = TinyBundle.write(tmp.newFolder("source"), executorch = true) { m ->
            m.put("model", m.getJSONObject("model").put("name", "tiny:test model"))
        }
        File(source, "notes/README.txt").apply { parentFile.mkdirs() }.writeText("not part of the bundle")
        val into = tmp.newFolder("bundles")
        val events = ArrayList<Pair<BundleImport.Phase, Long>>()
        var total = -1L
        val bundle = BundleImport.import(FolderSource(source), into, setOf("onnx"), { phase, _, done, all ->
            events.add(phase to done)
            total = all
        })
        assertEquals(File(into, "tiny-test-model"), bundle.dir)
        assertEquals(listOf("tiny-test-model"), into.list()!!.toList())
        assertEquals(
            listOf("manifest.json", "text_encoder/model.onnx", "tokenizer/merges.txt", "tokenizer/vocab.json", "unet/model.onnx", "vae_decoder/model.onnx"),
            tree(bundle.dir),
        )
        // progress: copying then checking, never backwards, ending at the total
        val copy = events.filter { it.first == BundleImport.Phase.COPY }.map { it.second }
        val verify = events.filter { it.first == BundleImport.Phase.VERIFY }.map { it.second }
        assertTrue(copy.isNotEmpty() && verify.isNotEmpty())
        assertEquals(copy, copy.sorted())
        assertEquals(verify, verify.sorted())
        assertEquals(total, verify.last())
        assertTrue(events.indexOfFirst { it.first == BundleImport.Phase.VERIFY } > events.indexOfLast { it.first == BundleImport.Phase.COPY })
        // the copy generates what the source does
        val request = GenerationRequest("a red circle", 5)
        val fromSource = TinyBundle.pipeline(source).use { it.generate(request) }
        TinyBundle.pipeline(bundle.dir).use { assertArrayEquals(fromSource.raw, it.generate(request).raw, 0f) }
    }

    @Test
    fun everyTargetWhenNoneIsAsked() {
        val source = TinyBundle.write(tmp.newFolder("source"), executorch = true)
        val bundle = BundleImport.import(FolderSource(source), tmp.newFolder("bundles"))
        assertEquals("source", bundle.dir.name) // no model name: the source folder's
        assertTrue(tree(bundle.dir).containsAll(listOf("unet/model.onnx", "unet_executorch_fp32.pte")))
    }

    @Test
    fun aCorruptFileLeavesNothing() {
        val source = TinyBundle.write(tmp.newFolder("source"))
        File(source, "unet/model.onnx").appendBytes(byteArrayOf(1))
        val into = tmp.newFolder("bundles")
        val e = expectBundleError { BundleImport.import(FolderSource(source), into, setOf("onnx")) }
        assertEquals("unet/model.onnx", e.file)
        assertTrue(e.problem, e.problem.startsWith("does not match its sha256 in the manifest"))
        assertEquals(emptyList<String>(), into.list()!!.toList())
    }

    @Test
    fun aMissingFileOrTargetIsNamed() {
        val source = TinyBundle.write(tmp.newFolder("source"))
        val into = tmp.newFolder("bundles")
        val noTarget = expectBundleError { BundleImport.import(FolderSource(source), into, setOf("executorch")) }
        assertEquals(Manifest.MANIFEST, noTarget.file)
        assertEquals("has no executorch file for text_encoder (it has: onnx/fp32)", noTarget.problem)
        File(source, "vae_decoder/model.onnx").delete()
        val missing = expectBundleError { BundleImport.import(FolderSource(source), into, setOf("onnx")) }
        assertEquals("vae_decoder/model.onnx", missing.file)
        assertEquals("bundle file missing in source", missing.problem)
        val notABundle = expectBundleError { BundleImport.import(FolderSource(tmp.newFolder("empty")), into) }
        assertEquals(Manifest.MANIFEST, notABundle.file)
        assertEquals(emptyList<String>(), into.list()!!.toList())
    }

    @Test
    fun aPathOutsideTheBundleIsRefused() {
        val source = TinyBundle.write(tmp.newFolder("source")) { m ->
            m.getJSONObject("components").getJSONObject("unet").getJSONArray("files").getJSONObject(0).put("path", "../escape.onnx")
        }
        val into = tmp.newFolder("bundles")
        val e = expectBundleError { BundleImport.import(FolderSource(source), into) }
        assertEquals("../escape.onnx", e.file)
        assertFalse(File(into.parentFile, "escape.onnx").exists())
        assertEquals(emptyList<String>(), into.list()!!.toList())
    }

    @Test
    fun cancelledImportLeavesTheEarlierOne() {
        val source = TinyBundle.write(tmp.newFolder("source"))
        val into = tmp.newFolder("bundles")
        val first = BundleImport.import(FolderSource(source), into)
        val before = tree(first.dir)
        val token = CancelToken()
        expectThrown<ImportCancelled> {
            BundleImport.import(FolderSource(source), into, null, { phase, _, _, _ -> if (phase == BundleImport.Phase.COPY) token.cancel() }, token)
        }
        assertEquals(listOf("source"), into.list()!!.toList())
        assertEquals(before, tree(first.dir))
        // a complete import of the same bundle replaces it
        File(first.dir, "stale.txt").writeText("from the earlier import")
        BundleImport.import(FolderSource(source), into)
        assertFalse(File(first.dir, "stale.txt").exists())
        assertEquals(listOf("source"), into.list()!!.toList())
    }

    @Test
    fun importsTheFixtureBundleForOnnxRuntime() {
        Fixtures.require()
        val model = Fixtures.models.first()
        val into = tmp.newFolder("bundles")
        val bundle = BundleImport.import(FolderSource(Fixtures.bundle(model)), into, setOf("onnx", "ort"))
        assertTrue(tree(bundle.dir).none { it.endsWith(".pte") })
        val manifest = bundle.manifest
        for (ref in BundleImport.files(manifest, setOf("onnx", "ort"))) bundle.verify(ref.takeIf { it.sha256.isNotEmpty() } ?: continue)
        assertEquals(Bundle.sha256(File(Fixtures.bundle(model), Manifest.MANIFEST)), Bundle.sha256(File(bundle.dir, Manifest.MANIFEST)))
    }
}
