package com.mobilediff.engine

import org.json.JSONObject
import org.junit.Assert.assertEquals
import org.junit.Assert.assertFalse
import org.junit.Assert.assertTrue
import org.junit.Rule
import org.junit.Test
import org.junit.rules.TemporaryFolder

/**
 * Format 2 (transformer bundles): this engine reads format versions 1..2 and runs CLIP BPE bundles only. A
 * `tokenizer.kind` other than "clip-bpe" (format 2's "unigram", which has no bos_id) is refused in one line naming
 * it, before any complaint about the fields it lacks; "clip-bpe" reads as a bundle without the field. On [TinyBundle]:
 * no fixtures needed.
 */
class TokenizerKindTest {
    @get:Rule
    val tmp = TemporaryFolder()

    private fun bundle(edit: (JSONObject) -> Unit) = TinyBundle.write(tmp.newFolder(), edit = edit)

    /** A format-2 manifest of a unigram tokenizer, as mobilediff's Python side writes one for a transformer bundle. */
    private fun unigram(m: JSONObject) {
        m.put("format_version", 2)
        m.getJSONObject("tokenizer").put("kind", "unigram").put("bos_id", JSONObject.NULL)
            .put("files", listOf("tokenizer/tokenizer.json"))
    }

    @Test
    fun aUnigramTokenizerIsRefusedInOneLineNamingIt() {
        val dir = bundle(::unigram)
        val e = expectBundleError { Bundle.open(dir) }
        assertEquals(Manifest.MANIFEST, e.file)
        val message = e.message!!
        assertFalse("one line: $message", message.contains('\n'))
        assertTrue(message, message.contains("tokenizer.kind \"unigram\" is not supported by this app"))
        assertTrue(message, message.contains("CLIP BPE"))
        // refused for its kind, not for the bos_id a unigram tokenizer does not have
        assertFalse(message, message.contains("bos_id"))
    }

    @Test
    fun aUnigramTokenizerIsRefusedBeforeAnyOtherField() {
        // the kind is checked first: a transformer bundle is named for what it is, whatever else it holds
        val text = JSONObject(java.io.File(TinyBundle.repo, "tests/contract/teacher.json").readText())
            .also(::unigram).also { it.remove("geometry") }.toString()
        val e = expectBundleError { Manifest.parse(text) }
        assertTrue(e.problem, e.problem.contains("unigram"))
    }

    @Test
    fun anyOtherKindAndAMistypedKindAreRefused() {
        val other = expectBundleError { Bundle.open(bundle { it.getJSONObject("tokenizer").put("kind", "wordpiece") }) }
        assertTrue(other.problem, other.problem.contains("tokenizer.kind \"wordpiece\""))
        val mistyped = expectBundleError { Bundle.open(bundle { it.getJSONObject("tokenizer").put("kind", 5) }) }
        assertTrue(mistyped.problem, mistyped.problem.contains("tokenizer.kind") && mistyped.problem.contains("expected a string"))
    }

    @Test
    fun formatTwoWithAClipTokenizerReadsAsFormatOne() {
        for (kind in listOf<Any>("clip-bpe", JSONObject.NULL)) {
            val dir = bundle { m ->
                m.put("format_version", 2)
                m.getJSONObject("tokenizer").put("kind", kind)
            }
            val bundle = Bundle.open(dir)
            assertEquals(2, bundle.manifest.formatVersion)
            assertEquals(49406, bundle.manifest.tokenizer.bosId)
            val ids = bundle.tokenizer().encode("a photo")
            assertEquals(TinyBundle.MAX_LENGTH, ids.size)
            assertEquals(49406, ids.first())
        }
    }

    @Test
    fun aNewerFormatThanTwoIsStillRefused() {
        val e = expectBundleError { Bundle.open(bundle { it.put("format_version", 3) }) }
        assertEquals(Manifest.MANIFEST, e.file)
        assertTrue(e.problem, e.problem.contains("format version 3") && e.problem.contains("1..2"))
        assertFalse(e.message!!.contains('\n'))
    }
}
