package com.mobilediff.engine

import com.mobilediff.verify.Goldens
import org.junit.Assert.assertArrayEquals
import org.junit.Assert.assertEquals
import org.junit.Assert.assertTrue
import org.junit.Test

class ClipTokenizerTest {
    @Test
    fun idsEqualTransformersOnTheGoldenPrompts() {
        Fixtures.require()
        for (model in Fixtures.withGoldens) {
            val bundle = Bundle.open(Fixtures.bundle(model))
            val tokenizer = bundle.tokenizer()
            val goldens = Goldens.load(Fixtures.goldens(model))
            assertTrue("$model: no tokenizer goldens", goldens.tokenizer.isNotEmpty())
            for (case in goldens.tokenizer) {
                assertArrayEquals("$model: '${case.prompt}'", case.ids, tokenizer.encode(case.prompt))
            }
        }
    }

    @Test
    fun padsTruncatesAndFramesWithBosEos() {
        Fixtures.require()
        val bundle = Bundle.open(Fixtures.bundle(Fixtures.models.first()))
        val spec = bundle.manifest.tokenizer
        val tokenizer = bundle.tokenizer()
        val empty = tokenizer.encode("")
        assertEquals(spec.maxLength, empty.size)
        assertEquals(spec.bosId, empty[0])
        assertEquals(spec.eosId, empty[1])
        assertTrue(empty.drop(2).all { it == spec.padId })
        val long = tokenizer.encode("circle ".repeat(100))
        assertEquals(spec.maxLength, long.size)
        assertEquals(spec.eosId, long.last())
        assertTrue(tokenizer.untruncatedLength("circle ".repeat(100)) > spec.maxLength)
    }
}
