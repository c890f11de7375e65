package com.mobilediff.engine

import org.json.JSONObject
import java.io.File
import java.text.Normalizer
import java.util.Locale
import java.util.regex.Pattern

/**
 * CLIP's byte-level BPE tokenizer over a bundle's `vocab.json` + `merges.txt`, giving the ids of
 * transformers' `CLIPTokenizer(prompt, padding="max_length", max_length=L, truncation=True)`:
 *
 *  1. normalize: Unicode NFC, every whitespace run -> one space, lowercase (each character on its own);
 *  2. split into words with CLIP's pattern (contractions, letter runs, single digits, other-symbol runs),
 *     whitespace dropped; the special tokens `<|startoftext|>` / `<|endoftext|>` map to their ids directly;
 *  3. each word -> its UTF-8 bytes as GPT-2's printable byte alphabet, `</w>` appended to the last symbol,
 *     then merged pair by pair, lowest merge rank first;
 *  4. [bos] + ids truncated to L - 2 + [eos], padded with pad_id to L.
 */
class ClipTokenizer(
    private val vocab: Map<String, Int>,
    merges: List<Pair<String, String>>,
    private val spec: TokenizerSpec,
) {
    private val ranks: Map<Pair<String, String>, Int> = merges.withIndex().associate { (i, m) -> m to i }
    private val cache = HashMap<String, List<Int>>()
    private val unkId = vocab[END] ?: spec.eosId

    /** Token ids of [prompt], exactly [TokenizerSpec.maxLength] long. */
    fun encode(prompt: String): IntArray {
        val body = tokens(prompt).take(spec.maxLength - 2)
        val out = IntArray(spec.maxLength) { spec.padId }
        out[0] = spec.bosId
        body.forEachIndexed { i, id -> out[i + 1] = id }
        out[body.size + 1] = spec.eosId
        return out
    }

    /**
     * The text encoder's inputs of a format-2 bundle whose text encoder takes `attention_mask` ([Manifest.maskedText]):
     * [encode]'s ids and their padding mask ([attentionMask]), each exactly [TokenizerSpec.maxLength] long.
     */
    fun encodeWithMask(prompt: String): Pair<IntArray, IntArray> =
        encode(prompt) to attentionMask(tokens(prompt).size, spec)

    /** The number of tokens of [prompt] before truncation, BOS and EOS included. */
    fun untruncatedLength(prompt: String): Int = 2 + tokens(prompt).size

    /** The ids of [prompt] without BOS/EOS/padding. Special-token text maps to its id, as in transformers. */
    private fun tokens(prompt: String): List<Int> {
        val ids = ArrayList<Int>()
        fun text(t: String) { for (word in words(normalize(t))) ids.addAll(bpe(word)) }
        val m = SPECIAL.matcher(prompt)
        var last = 0
        while (m.find()) {
            text(prompt.substring(last, m.start()))
            ids.add(vocab[m.group()] ?: unkId)
            last = m.end()
        }
        text(prompt.substring(last))
        return ids
    }

    private fun normalize(text: String): String =
        lowercase(WHITESPACE.matcher(Normalizer.normalize(text, Normalizer.Form.NFC)).replaceAll(" "))

    /**
     * Each code point lower-cased on its own, as the tokenizers library's Lowercase normalizer does: Java's
     * String.lowercase would apply the final-sigma rule (a word-final Σ to ς, where the reference gives σ).
     */
    private fun lowercase(text: String): String {
        val out = StringBuilder(text.length)
        var i = 0
        while (i < text.length) {
            val end = i + Character.charCount(text.codePointAt(i))
            out.append(text.substring(i, end).lowercase(Locale.ROOT))
            i = end
        }
        return out.toString()
    }

    private fun words(text: String): List<String> {
        val m = WORD.matcher(text)
        val out = ArrayList<String>()
        while (m.find()) out.add(m.group())
        return out
    }

    private fun bpe(word: String): List<Int> = cache.getOrPut(word) {
        val bytes = word.toByteArray(Charsets.UTF_8)
        var symbols = bytes.map { BYTE_TO_CHAR[it.toInt() and 0xff].toString() }.toMutableList()
        symbols[symbols.size - 1] = symbols.last() + "</w>"
        while (symbols.size > 1) {
            var best = -1
            var bestRank = Int.MAX_VALUE
            for (i in 0 until symbols.size - 1) {
                val r = ranks[symbols[i] to symbols[i + 1]] ?: continue
                if (r < bestRank) { bestRank = r; best = i }
            }
            if (best < 0) break
            val (a, b) = symbols[best] to symbols[best + 1]
            val merged = ArrayList<String>(symbols.size)
            var i = 0
            while (i < symbols.size) {
                if (i < symbols.size - 1 && symbols[i] == a && symbols[i + 1] == b) {
                    merged.add(a + b); i += 2
                } else {
                    merged.add(symbols[i]); i += 1
                }
            }
            symbols = merged
        }
        symbols.map { vocab[it] ?: unkId }
    }

    companion object {
        /**
         * The caption's padding mask of a prompt of [promptTokens] ids (before truncation), as transformers'
         * `attention_mask` and `mobilediff.engine.BundleTokenizer.ids_and_mask` give it: 1 over BOS, the prompt's ids
         * that fit and EOS, 0 over the padding, whatever the padding id (an EOS or pad id spelled out in the prompt
         * is the prompt's, not padding).
         */
        fun attentionMask(promptTokens: Int, spec: TokenizerSpec): IntArray {
            val ones = minOf(promptTokens, spec.maxLength - 2) + 2
            return IntArray(spec.maxLength) { if (it < ones) 1 else 0 }
        }

        private const val START = "<|startoftext|>"
        private const val END = "<|endoftext|>"
        private val SPECIAL: Pattern = Pattern.compile(Pattern.quote(START) + "|" + Pattern.quote(END))
        /**
         * Unicode's White_Space characters, spelled out: Java's `\s` is ASCII-only and Android's regex engine does not
         * take UNICODE_CHARACTER_CLASS, while the tokenizers library splits on Unicode whitespace.
         */
        private const val WS = "\\t-\\r \\u0085\\u00A0\\u1680\\u2000-\\u200A\\u2028\\u2029\\u202F\\u205F\\u3000"
        private val WHITESPACE: Pattern = Pattern.compile("[$WS]+")
        private val WORD: Pattern = Pattern.compile("'s|'t|'re|'ve|'m|'ll|'d|[\\p{L}]+|[\\p{N}]|[^$WS\\p{L}\\p{N}]+")

        /** GPT-2's byte -> printable character map: printable Latin-1 bytes map to themselves, the rest to 256+n. */
        private val BYTE_TO_CHAR: CharArray = CharArray(256).also { table ->
            val printable = ('!'.code..'~'.code) + ('¡'.code..'¬'.code) + ('®'.code..'ÿ'.code)
            var extra = 0
            for (b in 0 until 256) table[b] = if (b in printable) b.toChar() else (256 + extra++).toChar()
        }

        /** Load the tokenizer files of [bundle] named in its manifest (`tokenizer/vocab.json`, `tokenizer/merges.txt`). */
        fun load(bundle: File, spec: TokenizerSpec): ClipTokenizer {
            fun find(name: String): File {
                val rel = spec.files.firstOrNull { it.substringAfterLast('/') == name }
                    ?: throw BundleError(Manifest.MANIFEST, "tokenizer.files does not list $name")
                return File(bundle, rel).also { if (!it.isFile) throw BundleError(rel, "tokenizer file missing") }
            }
            val vocabFile = find("vocab.json")
            val vocab = try {
                JSONObject(vocabFile.readText()).let { o -> o.keys().asSequence().associateWith { o.getInt(it) } }
            } catch (e: org.json.JSONException) {
                throw BundleError("tokenizer/vocab.json", "is not a JSON token -> id map (${e.message})", e)
            }
            val merges = find("merges.txt").readLines()
                .filter { it.isNotBlank() && !it.startsWith("#version") }
                .map { line -> line.split(' ').let { it[0] to it[1] } }
            return ClipTokenizer(vocab, merges, spec)
        }
    }
}
