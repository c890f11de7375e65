package com.mobilediff.engine

import org.pytorch.executorch.EValue
import org.pytorch.executorch.Module
import java.io.File
import org.pytorch.executorch.Tensor as EtTensor

/**
 * ExecuTorch through `org.pytorch.executorch.Module`: the executorch-android AAR on a phone, the host shim
 * (android_demo/hostshim, built by setup-toolchain.sh over the executorch wheel) on the JVM.
 *
 * The program's inputs and outputs are checked against the manifest before the runtime opens it, from the
 * program's own declaration ([ExecuTorchProgram]: the Module API exposes no tensor metadata). A program keeps no
 * tensor names, so the check covers the count, dtype and sizes of every input and output, not their names.
 */
class ExecuTorchBackend : Backend {
    override val target = "executorch"
    override val runtimeVersion: String? get() = System.getProperty("mobilediff.executorch.runtime")

    /** [lowMemory] changes nothing: the Module maps the program file, with no arena of its own to give up. */
    override fun load(file: File, spec: ComponentSpec, path: String, lowMemory: Boolean): ComponentSession {
        val (inputs, outputs) = ExecuTorchProgram.methodIo(file, path)
        checkGraphIo(spec.name, path, spec, inputs, outputs)
        val module = try {
            Module.load(file.path)
        } catch (e: RuntimeException) {
            throw BundleError(path, "ExecuTorch cannot load it (${e.message})", e)
        }
        return Session(module, spec)
    }

    private class Session(private val module: Module, private val spec: ComponentSpec) : ComponentSession {
        override fun run(inputs: List<Tensor>): List<Tensor.F32> {
            require(inputs.size == spec.inputs.size) { "${spec.name} takes ${spec.inputs.size} inputs, got ${inputs.size}" }
            val values = inputs.map { t ->
                val shape = LongArray(t.shape.size) { t.shape[it].toLong() }
                EValue.from(
                    when (t) {
                        is Tensor.F32 -> EtTensor.fromBlob(t.data, shape)
                        is Tensor.I32 -> EtTensor.fromBlob(t.data, shape)
                    },
                )
            }
            return module.forward(*values.toTypedArray()).take(spec.outputs.size).map { v ->
                val t = v.toTensor()
                Tensor.F32(t.shape().map { it.toInt() }.toIntArray(), t.getDataAsFloatArray())
            }
        }

        override fun close() = module.destroy()
    }
}
