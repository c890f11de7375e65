package com.mobilediff.engine

import org.json.JSONArray
import org.json.JSONException
import org.json.JSONObject

// Small typed accessors over org.json (which Android ships; the JVM build uses Debian's copy of the same
// library). Every failure becomes a BundleError naming the file and the field, never a bare JSONException.

internal class JsonReader(val file: String) {
    fun <T> field(path: String, read: () -> T): T =
        try {
            read()
        } catch (e: JSONException) {
            throw BundleError(file, "field '$path': ${e.message}", e)
        }

    fun obj(o: JSONObject, key: String, path: String = key): JSONObject = field(path) { o.getJSONObject(key) }
    fun arr(o: JSONObject, key: String, path: String = key): JSONArray = field(path) { o.getJSONArray(key) }
    fun str(o: JSONObject, key: String, path: String = key): String = field(path) { o.getString(key) }
    fun int(o: JSONObject, key: String, path: String = key): Int = field(path) { o.getInt(key) }
    fun double(o: JSONObject, key: String, path: String = key): Double = field(path) { o.getDouble(key) }
    fun doubles(o: JSONObject, key: String, path: String = key): DoubleArray = arr(o, key, path).toDoubles()
}

internal fun JSONArray.toDoubles(): DoubleArray = DoubleArray(length()) { getDouble(it) }
internal fun JSONArray.toInts(): IntArray = IntArray(length()) { getInt(it) }
internal fun JSONArray.objects(): List<JSONObject> = List(length()) { getJSONObject(it) }
internal fun JSONArray.strings(): List<String> = List(length()) { getString(it) }
internal fun JSONObject.optStringOrNull(key: String): String? = if (isNull(key)) null else optString(key)
