package com.mobilediff.engine

import ai.onnxruntime.OnnxTensor
import ai.onnxruntime.OrtEnvironment
import ai.onnxruntime.OrtSession
import java.io.File
import java.nio.FloatBuffer
import java.nio.IntBuffer

/** ONNX Runtime through its Java API (`ai.onnxruntime`, the API of onnxruntime-android), CPU provider. */
class OnnxRuntimeBackend : Backend {
    override val target = "onnx"
    private val env: OrtEnvironment = OrtEnvironment.getEnvironment()

    override fun load(file: File, spec: ComponentSpec): ComponentSession {
        val options = OrtSession.SessionOptions()
        options.setSessionLogLevel(ai.onnxruntime.OrtLoggingLevel.ORT_LOGGING_LEVEL_ERROR)
        val session = try {
            env.createSession(file.path, options)
        } catch (e: ai.onnxruntime.OrtException) {
            throw BundleError(file.name, "ONNX Runtime cannot load it (${e.message})", e)
        }
        return Session(session, spec)
    }

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
