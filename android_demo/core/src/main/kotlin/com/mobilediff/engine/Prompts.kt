package com.mobilediff.engine

/**
 * The prompt rule of `mobilediff.sampling.check_prompt`, with its messages: a prompt is valid UTF-8 text, and holds
 * no control character other than tab, newline and carriage return (which the tokenizer reads as spaces). An escape
 * sequence or a NUL pasted into a prompt is a mistake, and stripping it would be a silent edit; invalid bytes are
 * refused, never replaced (a replaced prompt would silently be another prompt).
 */
object Prompts {
    /** The control characters a prompt may hold. */
    const val ALLOWED_CONTROLS = "\t\n\r"

    /**
     * Throws IllegalArgumentException, one line naming [label], for a prompt with an unpaired surrogate (no UTF-8
     * encodes it: "not valid UTF-8 (character U+D800 at N)", N its byte offset) or a control character (category Cc)
     * other than [ALLOWED_CONTROLS] ("at character N", N its code point index).
     */
    fun check(prompt: String, label: String = "prompt") {
        for ((i, c) in prompt.withIndex()) {
            val paired = if (Character.isHighSurrogate(c)) i + 1 < prompt.length && Character.isLowSurrogate(prompt[i + 1])
            else Character.isLowSurrogate(c) && i > 0 && Character.isHighSurrogate(prompt[i - 1])
            if (Character.isSurrogate(c) && !paired) {
                val at = prompt.substring(0, i).toByteArray(Charsets.UTF_8).size
                throw IllegalArgumentException("$label is not valid UTF-8 (character U+%04X at $at)".format(c.code))
            }
        }
        var i = 0
        var index = 0  // in code points, as Python counts characters
        while (i < prompt.length) {
            val cp = prompt.codePointAt(i)
            if (Character.getType(cp) == Character.CONTROL.toInt() && cp.toChar() !in ALLOWED_CONTROLS) {
                throw IllegalArgumentException(
                    "$label has a control character (U+%04X at character $index): only tab, newline and carriage return are allowed".format(cp),
                )
            }
            i += Character.charCount(cp)
            index++
        }
    }

    /**
     * [bytes] as text when they are valid UTF-8; else IllegalArgumentException naming [label] and the first byte that
     * starts no valid sequence ("not valid UTF-8 (byte 0xff at 3)", as Python's decoder reports it). Overlong forms,
     * encoded surrogates and code points above U+10FFFF are invalid, as in Python.
     */
    fun decodeUtf8(bytes: ByteArray, label: String = "prompt"): String {
        val bad = firstInvalidUtf8(bytes)
        if (bad >= 0) throw IllegalArgumentException("$label is not valid UTF-8 (byte 0x%02x at $bad)".format(bytes[bad].toInt() and 0xff))
        return String(bytes, Charsets.UTF_8)
    }

    /** The offset of the first byte that starts no valid UTF-8 sequence, or -1 when all of [bytes] is valid. */
    fun firstInvalidUtf8(bytes: ByteArray): Int {
        var i = 0
        while (i < bytes.size) {
            val b = bytes[i].toInt() and 0xff
            // the sequence length and the range of its second byte (the first continuation byte)
            val (n, lo, hi) = when (b) {
                in 0x00..0x7f -> Triple(1, 0, 0)
                in 0xc2..0xdf -> Triple(2, 0x80, 0xbf)
                0xe0 -> Triple(3, 0xa0, 0xbf)
                in 0xe1..0xec, 0xee, 0xef -> Triple(3, 0x80, 0xbf)
                0xed -> Triple(3, 0x80, 0x9f)
                0xf0 -> Triple(4, 0x90, 0xbf)
                in 0xf1..0xf3 -> Triple(4, 0x80, 0xbf)
                0xf4 -> Triple(4, 0x80, 0x8f)
                else -> return i
            }
            if (i + n > bytes.size) return i
            for (k in 1 until n) {
                val c = bytes[i + k].toInt() and 0xff
                val ok = if (k == 1) c in lo..hi else c in 0x80..0xbf
                if (!ok) return i
            }
            i += n
        }
        return -1
    }
}
