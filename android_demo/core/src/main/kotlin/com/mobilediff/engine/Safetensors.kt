package com.mobilediff.engine

import org.json.JSONObject
import java.io.File
import java.nio.ByteBuffer
import java.nio.ByteOrder

/**
 * A read-only safetensors file (the goldens' tensor store): an 8-byte little-endian header length, a JSON header
 * `{key: {dtype, shape, data_offsets: [begin, end]}}` (offsets from the end of the header), then raw
 * little-endian data. Supports F32, I32, I64 and U8.
 */
class Safetensors private constructor(private val file: String, private val header: JSONObject, private val data: ByteBuffer) {
    val keys: Set<String> get() = header.keys().asSequence().filter { it != "__metadata__" }.toSet()

    fun shape(key: String): IntArray = entry(key).getJSONArray("shape").toInts()

    /** The tensor [key] as float32 (F32 as is; integer types converted). */
    fun floats(key: String): FloatArray {
        val (dtype, buf) = slice(key)
        return when (dtype) {
            "F32" -> FloatArray(buf.remaining() / 4).also { buf.asFloatBuffer().get(it) }
            else -> ints(key).let { i -> FloatArray(i.size) { i[it].toFloat() } }
        }
    }

    /** The tensor [key] as int32 (I32 as is; I64 narrowed; U8 unsigned). */
    fun ints(key: String): IntArray {
        val (dtype, buf) = slice(key)
        return when (dtype) {
            "I32" -> IntArray(buf.remaining() / 4).also { buf.asIntBuffer().get(it) }
            "I64" -> LongArray(buf.remaining() / 8).also { buf.asLongBuffer().get(it) }.let { l -> IntArray(l.size) { l[it].toInt() } }
            "U8" -> IntArray(buf.remaining()) { buf.get(it).toInt() and 0xff }
            else -> throw BundleError(file, "tensor '$key' has dtype $dtype, not an integer type")
        }
    }

    private fun entry(key: String): JSONObject =
        header.optJSONObject(key) ?: throw BundleError(file, "has no tensor '$key'")

    private fun slice(key: String): Pair<String, ByteBuffer> {
        val e = entry(key)
        val offsets = e.getJSONArray("data_offsets")
        val begin = offsets.getLong(0).toInt()
        val end = offsets.getLong(1).toInt()
        val buf = data.duplicate()
        buf.position(begin).limit(end)
        return e.getString("dtype") to buf.slice().order(ByteOrder.LITTLE_ENDIAN)
    }

    companion object {
        fun read(path: File): Safetensors {
            if (!path.isFile) throw BundleError(path.path, "file missing")
            val bytes = path.readBytes()
            val order = ByteBuffer.wrap(bytes).order(ByteOrder.LITTLE_ENDIAN)
            val headerLen = order.getLong(0)
            if (headerLen < 2 || headerLen > bytes.size - 8) throw BundleError(path.path, "is not a safetensors file")
            val header = JSONObject(String(bytes, 8, headerLen.toInt(), Charsets.UTF_8))
            val data = ByteBuffer.wrap(bytes, 8 + headerLen.toInt(), bytes.size - 8 - headerLen.toInt()).slice()
            return Safetensors(path.path, header, data)
        }
    }
}
