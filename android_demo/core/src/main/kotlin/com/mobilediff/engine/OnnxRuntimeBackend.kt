package com.mobilediff.engine

import ai.onnxruntime.NodeInfo
import ai.onnxruntime.OnnxTensor
import ai.onnxruntime.OrtEnvironment
import ai.onnxruntime.OrtException
import ai.onnxruntime.OrtLoggingLevel
import ai.onnxruntime.OrtSession
import ai.onnxruntime.TensorInfo
import java.io.File
import java.nio.FloatBuffer
import java.nio.IntBuffer

/**
 * ONNX Runtime through its Java API (`ai.onnxruntime`, the API of onnxruntime-android), CPU provider. Loads a
 * component's ORT-format file (`.ort`, what [Bundle.componentFile] hands out when the bundle has one) or its `.onnx`.
 */
class OnnxRuntimeBackend : Backend {
    override val target = Bundle.ONNX
    private val env: OrtEnvironment = OrtEnvironment.getEnvironment()

    /** The version the loaded native library reports ("1.29.0"). */
    override val runtimeVersion: String get() = env.version

    /**
     * [lowMemory]: the session runs without ONNX Runtime's CPU arena (which keeps every block it grew to, e.g. a
     * 512 px UNet's attention activations, after a run) and without its memory pattern (one pre-planned block for all
     * of a run's activations), and allocates the weights outside any arena, so closing the session gives them all
     * back: the settings of Python's `generate --bundle --low-memory` (`mobilediff.targets.LOW_MEMORY`).
     */
    override fun load(file: File, spec: ComponentSpec, path: String, lowMemory: Boolean): ComponentSession {
        val options = OrtSession.SessionOptions()
        // a graph ONNX Runtime refuses is reported by the exception alone
        options.setSessionLogLevel(OrtLoggingLevel.ORT_LOGGING_LEVEL_FATAL)
        // said outright rather than left to the file name: an ORT-format graph is never parsed as ONNX
        if (file.name.endsWith(".$ORT_EXTENSION")) options.addConfigEntry("session.load_model_format", "ORT")
        if (lowMemory) {
            options.setCPUArenaAllocator(false)
            options.setMemoryPatternOptimization(false)
            options.addConfigEntry(INITIALIZERS_OUTSIDE_ARENA, "1")
        }
        val session = try {
            env.createSession(file.path, options)
        } catch (e: OrtException) {
            throw BundleError(path, "ONNX Runtime cannot load it (${oneLine(e.message)})", e)
        }
        try {
            checkGraphIo(spec.name, path, spec, graphTensors(session.inputInfo), graphTensors(session.outputInfo))
        } catch (e: Exception) {
            session.close()
            throw e
        }
        return Session(session, spec)
    }

    /** The inputs or outputs a session declares, in graph order; a symbolic or unknown dimension is null. */
    private fun graphTensors(info: Map<String, NodeInfo>): List<GraphTensor> = info.map { (name, node) ->
        when (val v = node.info) {
            is TensorInfo -> GraphTensor(name, v.shape.map { d -> d.takeIf { it >= 0 } }, dtypeName(v.onnxType))
            else -> GraphTensor(name, emptyList(), v.toString().substringBefore('(').ifEmpty { "not a tensor" })
        }
    }

    /** ONNX's element type as numpy names it ("float32", "int64", ...). */
    private fun dtypeName(type: TensorInfo.OnnxTensorType): String =
        when (val t = type.name.removePrefix("ONNX_TENSOR_ELEMENT_DATA_TYPE_").lowercase()) {
            "float" -> "float32"
            "double" -> "float64"
            else -> t
        }

    companion object {
        const val ORT_EXTENSION = "ort"

        /** The session config key that allocates a graph's weights with the device allocator, not the arena. */
        const val INITIALIZERS_OUTSIDE_ARENA = "session.use_device_allocator_for_initializers"
    }

    private fun oneLine(message: String?): String = message.orEmpty().lineSequence().map { it.trim() }.filter { it.isNotEmpty() }.joinToString(" ")

    private inner class Session(private val session: OrtSession, private val spec: ComponentSpec) : ComponentSession {
        override fun run(inputs: List<Tensor>): List<Tensor.F32> {
            require(inputs.size == spec.inputs.size) { "${spec.name} takes ${spec.inputs.size} inputs, got ${inputs.size}" }
            val feed = LinkedHashMap<String, OnnxTensor>()
            try {
                for ((s, t) in spec.inputs.zip(inputs)) {
                    val shape = LongArray(t.shape.size) { t.shape[it].toLong() }
                    feed[s.name] = when (t) {
                        is Tensor.F32 -> OnnxTensor.createTensor(env, FloatBuffer.wrap(t.data), shape)
                        is Tensor.I32 -> OnnxTensor.createTensor(env, IntBuffer.wrap(t.data), shape)
                    }
                }
                session.run(feed, spec.outputs.map { it.name }.toSet()).use { result ->
                    val byName = result.associate { it.key to it.value }
                    return spec.outputs.map { o ->
                        val tensor = byName[o.name] as? OnnxTensor ?: throw IllegalStateException("${spec.name}: no output ${o.name}")
                        val buffer = tensor.floatBuffer
                        val data = FloatArray(buffer.remaining()).also { buffer.get(it) }
                        Tensor.F32(tensor.info.shape.map { it.toInt() }.toIntArray(), data)
                    }
                }
            } finally {
                feed.values.forEach { it.close() }
            }
        }

        override fun close() = session.close()
    }
}
