package com.mobilediff.engine

import org.junit.Assert.assertEquals
import org.junit.Rule
import org.junit.Test
import org.junit.rules.TemporaryFolder

/** The prompt rule of mobilediff.sampling.check_prompt, with Python's messages (expected strings from Python). */
class PromptTest {
    @get:Rule
    val tmp = TemporaryFolder()

    private fun refusal(block: () -> Unit): String = expectThrown<IllegalArgumentException>(block).message!!

    @Test
    fun controlCharactersAreRefusedButTabNewlineAndReturn() {
        Prompts.check("tab\tnl\nr\r ok")
        Prompts.check("😀 café ¿qué? \u00a0 \u2028")
        val tail = ": only tab, newline and carriage return are allowed"
        assertEquals("prompt has a control character (U+001B at character 1)$tail", refusal { Prompts.check("a\u001bb") })
        assertEquals("prompt has a control character (U+007F at character 1)$tail", refusal { Prompts.check("x\u007fy") })
        assertEquals("prompt has a control character (U+0085 at character 0)$tail", refusal { Prompts.check("\u0085z") })
        assertEquals("prompt has a control character (U+0000 at character 2)$tail", refusal { Prompts.check("e\u0301\u0000") })
        // characters are code points, as Python counts them
        assertEquals("--prompt has a control character (U+0001 at character 1)$tail", refusal { Prompts.check("😀\u0001", "--prompt") })
    }

    @Test
    fun unpairedSurrogatesAreNotUtf8() {
        assertEquals("prompt is not valid UTF-8 (character U+D800 at 2)", refusal { Prompts.check("ab\ud800c") })
        assertEquals("prompt is not valid UTF-8 (character U+DFFF at 2)", refusal { Prompts.check("é\udfffx") })
    }

    @Test
    fun invalidUtf8BytesAreRefusedAsPythonReportsThem() {
        val cases = mapOf(
            "ab\\xffcd" to "byte 0xff at 2",
            "\\xe2\\x82" to "byte 0xe2 at 0",
            "\\xe2(\\xa1" to "byte 0xe2 at 0",
            "ok \\xc0\\xaf" to "byte 0xc0 at 3",
            "\\xed\\xa0\\x80x" to "byte 0xed at 0",
            "\\xf4\\x90\\x80\\x80" to "byte 0xf4 at 0",
            "caf\\xc3\\xa9 \\xf0\\x9f\\x98\\x80\\xf8" to "byte 0xf8 at 10",
            "\\xf0\\x9f\\x98" to "byte 0xf0 at 0",
        )
        for ((escaped, where) in cases) {
            assertEquals(escaped, "prompt is not valid UTF-8 ($where)", refusal { Prompts.decodeUtf8(bytes(escaped)) })
        }
        assertEquals("café 😀", Prompts.decodeUtf8(bytes("caf\\xc3\\xa9 \\xf0\\x9f\\x98\\x80")))
    }

    /** Python's bytes literal syntax, \xNN escapes only. */
    private fun bytes(escaped: String): ByteArray {
        val out = java.io.ByteArrayOutputStream()
        var i = 0
        while (i < escaped.length) {
            if (escaped.startsWith("\\x", i)) {
                out.write(escaped.substring(i + 2, i + 4).toInt(16)); i += 4
            } else {
                out.write(escaped[i].code); i++
            }
        }
        return out.toByteArray()
    }

    @Test
    fun pipelineRefusesABadPromptBeforeAnyWork() {
        TinyBundle.pipeline(TinyBundle.write(tmp.newFolder("bundle"))).use { p ->
            assertEquals(
                "prompt has a control character (U+001B at character 3): only tab, newline and carriage return are allowed",
                refusal { p.generate(GenerationRequest("red\u001b[0m circle", 0)) },
            )
            p.generate(GenerationRequest("red\tcircle\n", 0))
            assertEquals("guidance must be a finite number >= 0, got NaN", refusal { p.generate(GenerationRequest("x", 0, guidance = Double.NaN)) })
        }
    }
}
