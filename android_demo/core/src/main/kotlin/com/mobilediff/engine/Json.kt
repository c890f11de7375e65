package com.mobilediff.engine

import org.json.JSONArray
import org.json.JSONException
import org.json.JSONObject
import org.json.JSONTokener

// Strictly typed accessors over org.json (which Android ships; the JVM build uses Debian's copy of the same
// library). org.json coerces on its own ("16" reads as an integer, null as the string "null"); these accessors take
// a value only as the type the manifest states, and every failure becomes one BundleError naming the file and the
// field as the manifest spells it (`samplers[0].init_noise_sigma`), never a bare JSONException.

internal class JsonReader(val file: String) {
    /**
     * Parse [text] as one JSON object. NaN, Infinity and -Infinity read as [NonFiniteNumber] (Python's json module
     * reads them too), so that the check on the field holding one names it; org.json alone refuses the document.
     */
    fun document(text: String): JSONObject =
        try {
            JSONObject(NonFiniteTokener(text))
        } catch (e: JSONException) {
            // org.json appends the whole input to a syntax error; the position is enough
            val message = e.message.orEmpty()
            val reason = SYNTAX_ERROR.find(message)?.groupValues?.get(1) ?: message.lineSequence().first()
            throw BundleError(file, "is not valid JSON ($reason)", e)
        }

    fun fail(path: String, problem: String): Nothing = throw BundleError(file, "field '$path': $problem")

    /** The value at [key], which must be present and not null. */
    private fun value(o: JSONObject, key: String, path: String): Any =
        when (val v = o.opt(key)) {
            null -> fail(path, "missing")
            JSONObject.NULL -> fail(path, "is null")
            else -> v
        }

    /** The value at [key], or null when it is absent or null. */
    private fun optional(o: JSONObject, key: String): Any? = o.opt(key)?.takeIf { it != JSONObject.NULL }

    fun obj(o: JSONObject, key: String, path: String = key): JSONObject = asObject(value(o, key, path), path)
    fun arr(o: JSONObject, key: String, path: String = key): JSONArray = asList(value(o, key, path), path)
    fun str(o: JSONObject, key: String, path: String = key): String = asString(value(o, key, path), path)
    fun int(o: JSONObject, key: String, path: String = key): Int = asInt(value(o, key, path), path)
    fun double(o: JSONObject, key: String, path: String = key): Double = asFinite(value(o, key, path), path)
    fun doubles(o: JSONObject, key: String, path: String = key): DoubleArray = finites(value(o, key, path), path)

    /** A list of lists of finite numbers (`latent_coef[i][k]`). */
    fun rows(o: JSONObject, key: String, path: String = key): List<DoubleArray> =
        arr(o, key, path).let { a -> List(a.length()) { i -> finites(a.get(i), "$path[$i]") } }

    /** [rows], or null when the field is absent or null. */
    fun optRows(o: JSONObject, key: String, path: String = key): List<DoubleArray>? =
        optional(o, key)?.let { v -> asList(v, path).let { a -> List(a.length()) { i -> finites(a.get(i), "$path[$i]") } } }

    fun objects(o: JSONObject, key: String, path: String = key): List<JSONObject> =
        arr(o, key, path).let { a -> List(a.length()) { i -> asObject(a.get(i), "$path[$i]") } }

    fun strings(o: JSONObject, key: String, path: String = key): List<String> =
        arr(o, key, path).let { a -> List(a.length()) { i -> asString(a.get(i), "$path[$i]") } }

    fun optObj(o: JSONObject, key: String, path: String = key): JSONObject? = optional(o, key)?.let { asObject(it, path) }
    fun optStr(o: JSONObject, key: String, path: String = key): String? = optional(o, key)?.let { asString(it, path) }
    fun optInt(o: JSONObject, key: String, path: String = key): Int? = optional(o, key)?.let { asInt(it, path) }
    fun optDouble(o: JSONObject, key: String, path: String = key): Double? =
        optional(o, key)?.let { asFinite(it, path) }
    fun optInts(o: JSONObject, key: String, path: String = key): IntArray? =
        optional(o, key)?.let { v -> asList(v, path).let { a -> IntArray(a.length()) { i -> asInt(a.get(i), "$path[$i]") } } }
    fun optDoubles(o: JSONObject, key: String, path: String = key): DoubleArray? =
        optional(o, key)?.let { finites(it, path) }

    private fun asObject(v: Any?, path: String): JSONObject = v as? JSONObject ?: fail(path, "expected an object, got ${describe(v)}")
    private fun asList(v: Any?, path: String): JSONArray = v as? JSONArray ?: fail(path, "expected a list, got ${describe(v)}")
    private fun asString(v: Any?, path: String): String = v as? String ?: fail(path, "expected a string, got ${describe(v)}")

    private fun asInt(v: Any?, path: String): Int = integer(v) ?: fail(path, "expected an integer, got ${describe(v)}")

    private fun asFinite(v: Any?, path: String): Double = when (v) {
        is NonFiniteNumber -> fail(path, "expected a finite number, got $v")
        is Number -> v.toDouble().also { if (!it.isFinite()) fail(path, "expected a finite number, got $it") }
        else -> fail(path, "expected a number, got ${describe(v)}")
    }

    private fun finites(v: Any?, path: String): DoubleArray =
        asList(v, path).let { a -> DoubleArray(a.length()) { asFinite(a.get(it), "$path[$it]") } }

    companion object {
        private val SYNTAX_ERROR = Regex("""^(.*? at character \d+) of .*""", RegexOption.DOT_MATCHES_ALL)

        /** [v] as an Int when the document wrote an integer in Int's range (org.json reads `4.0` as a Double), or null. */
        fun integer(v: Any?): Int? = when (v) {
            is Int -> v
            is Long -> if (v >= Int.MIN_VALUE && v <= Int.MAX_VALUE) v.toInt() else null
            else -> null
        }

        /** A value as an error message shows it: strings quoted, containers by kind. */
        fun describe(v: Any?): String = when (v) {
            null -> "nothing"
            JSONObject.NULL -> "null"
            is String -> JSONObject.quote(v)
            is JSONObject -> "an object"
            is JSONArray -> "a list"
            else -> v.toString()
        }
    }
}

/** A NaN or infinite number literal of the document: held apart so that only a check naming its field can refuse it. */
internal class NonFiniteNumber(val value: Double) {
    override fun toString(): String = value.toString()
}

/** org.json's tokenizer, with non-finite numbers as [NonFiniteNumber] (org.json refuses a Double NaN/Infinity in any object). */
private class NonFiniteTokener(text: String) : JSONTokener(text) {
    override fun nextValue(): Any? = when (val v = super.nextValue()) {
        is Double -> if (v.isFinite()) v else NonFiniteNumber(v)
        else -> v
    }
}

internal fun JSONArray.toInts(): IntArray = IntArray(length()) { getInt(it) }
