package com.mobilediff.engine

import java.io.File
import java.io.IOException
import java.io.RandomAccessFile
import java.nio.ByteBuffer
import java.nio.ByteOrder
import java.nio.channels.FileChannel

/**
 * The inputs and outputs an ExecuTorch program's method declares, read from the program itself (a `.pte` is a
 * FlatBuffer of executorch's `schema/program.fbs`, file identifier `ET12`): what the runtime's `MethodMeta` reports.
 * The engine reads them here because the `org.pytorch.executorch` API of the executorch-android AAR reports a
 * method's name and backends only, no tensor metadata.
 *
 * A program keeps no tensor names: every [GraphTensor.name] is null, so [checkGraphIo] checks the count, dtype and
 * sizes of each input and output but not their names. Every size is fixed, as Python's check reads them.
 */
object ExecuTorchProgram {
    /** The inputs and outputs of [method] in [file]; [path] (the file in the bundle) is what a [BundleError] names. */
    fun methodIo(file: File, path: String, method: String = "forward"): Pair<List<GraphTensor>, List<GraphTensor>> {
        val buf = try {
            // the program's FlatBuffer comes first; the data segments after it are never touched
            RandomAccessFile(file, "r").use { it.channel.map(FileChannel.MapMode.READ_ONLY, 0, minOf(it.length(), Int.MAX_VALUE.toLong())) }
        } catch (e: IOException) {
            throw BundleError(path, "cannot be read (${e.message})", e)
        }
        buf.order(ByteOrder.LITTLE_ENDIAN)
        try {
            val id = ByteArray(4).also { if (buf.limit() >= 8) { buf.position(4); buf.get(it) } }
            if (!String(id, Charsets.US_ASCII).startsWith("ET")) throw BundleError(path, "is not an ExecuTorch program (no ET file identifier)")
            val fb = FlatBuffer(buf)
            val program = fb.root()
            val plans = fb.tables(program, PROGRAM_EXECUTION_PLAN)
            val names = plans.map { fb.string(it, PLAN_NAME) }
            val plan = plans.getOrNull(names.indexOf(method))
                ?: throw BundleError(path, "has no method '$method' (it has: ${names.joinToString().ifEmpty { "none" }})")
            val values = fb.tables(plan, PLAN_VALUES)
            fun tensors(field: Int) = fb.ints(plan, field).map { index ->
                val value = values.getOrNull(index) ?: throw BundleError(path, "is not a valid ExecuTorch program (value $index out of range)")
                tensor(fb, value)
            }
            return tensors(PLAN_INPUTS) to tensors(PLAN_OUTPUTS)
        } catch (e: IndexOutOfBoundsException) {
            throw BundleError(path, "is not a valid ExecuTorch program (truncated or corrupt)", e)
        } catch (e: IllegalArgumentException) {
            throw BundleError(path, "is not a valid ExecuTorch program (truncated or corrupt)", e)
        }
    }

    /** One EValue of a plan: a tensor as (sizes, dtype); any other kind of value as a dtype naming its kind. */
    private fun tensor(fb: FlatBuffer, value: Int): GraphTensor {
        val kind = fb.byte(value, EVALUE_TYPE)
        if (kind != KERNEL_TYPE_TENSOR) return GraphTensor(null, emptyList(), KERNEL_TYPES.getOrElse(kind) { "value type $kind" })
        val t = fb.table(value, EVALUE_VAL) ?: return GraphTensor(null, emptyList(), "no value")
        val code = fb.byte(t, TENSOR_SCALAR_TYPE)
        return GraphTensor(null, fb.ints(t, TENSOR_SIZES).map { it.toLong() }, SCALAR_TYPES[code] ?: "scalar type $code")
    }

    // field indices in program.fbs
    private const val PROGRAM_EXECUTION_PLAN = 1
    private const val PLAN_NAME = 0
    private const val PLAN_VALUES = 2
    private const val PLAN_INPUTS = 3
    private const val PLAN_OUTPUTS = 4
    private const val EVALUE_TYPE = 0  // the union's type field
    private const val EVALUE_VAL = 1
    private const val TENSOR_SCALAR_TYPE = 0
    private const val TENSOR_SIZES = 2
    private const val KERNEL_TYPE_TENSOR = 5

    /** KernelTypes union members by type id (0 is no value). */
    private val KERNEL_TYPES = listOf("none", "null", "int", "bool", "double", "tensor", "string", "int list",
        "double list", "bool list", "tensor list", "optional tensor list")

    /** executorch's ScalarType codes as numpy names (as mobilediff/targets/executorch.py names them). */
    private val SCALAR_TYPES = mapOf(0 to "uint8", 1 to "int8", 2 to "int16", 3 to "int32", 4 to "int64", 5 to "float16",
        6 to "float32", 7 to "float64", 11 to "bool", 15 to "bfloat16")

    /** Read-only access to the tables, vectors and scalars of a little-endian FlatBuffer. */
    private class FlatBuffer(private val buf: ByteBuffer) {
        fun root(): Int = deref(0)

        /** The absolute position of field [field] of the table at [table], or null when absent. */
        private fun field(table: Int, field: Int): Int? {
            val vtable = table - buf.getInt(table)
            val vsize = buf.getShort(vtable).toInt() and 0xffff
            val entry = 4 + 2 * field
            if (entry >= vsize) return null
            val offset = buf.getShort(vtable + entry).toInt() and 0xffff
            return if (offset == 0) null else table + offset
        }

        private fun deref(at: Int): Int = at + buf.getInt(at)

        fun byte(table: Int, field: Int): Int = field(table, field)?.let { buf.get(it).toInt() and 0xff } ?: 0

        fun table(table: Int, field: Int): Int? = field(table, field)?.let(::deref)

        private fun vector(table: Int, field: Int): Pair<Int, Int> {
            val at = field(table, field) ?: return 0 to 0
            val v = deref(at)
            val n = buf.getInt(v)
            require(n >= 0 && v + 4 + 4L * n <= buf.limit()) { "vector out of range" }
            return n to v + 4
        }

        fun tables(table: Int, field: Int): List<Int> {
            val (n, start) = vector(table, field)
            return List(n) { deref(start + 4 * it) }
        }

        fun ints(table: Int, field: Int): List<Int> {
            val (n, start) = vector(table, field)
            return List(n) { buf.getInt(start + 4 * it) }
        }

        fun string(table: Int, field: Int): String {
            val at = field(table, field) ?: return ""
            val s = deref(at)
            val n = buf.getInt(s)
            require(n >= 0 && s + 4L + n <= buf.limit()) { "string out of range" }
            val bytes = ByteArray(n)
            buf.duplicate().apply { position(s + 4) }.get(bytes)
            return String(bytes, Charsets.UTF_8)
        }
    }
}
