package com.mobilediff.engine

import java.io.File

/**
 * A runtime that runs the bundle's component graphs: [OnnxRuntimeBackend] (`ai.onnxruntime`) or
 * [ExecuTorchBackend] (`org.pytorch.executorch`). The same code runs on Android (the runtimes' AARs) and on
 * the JVM (ONNX Runtime's Java API and the ExecuTorch host shim, see android_demo/README.md).
 */
interface Backend {
    /** The bundle target this backend reads: "onnx" (and its "ort" forms) or "executorch". */
    val target: String

    /**
     * The version of the runtime library this backend runs on, as the runtime reports it, for records beside results
     * (ONNX Runtime: its native library's version). ExecuTorch's Java API reports none: null, unless the system
     * property `mobilediff.executorch.runtime` names it (the JVM's test scripts set it to the host library's).
     */
    val runtimeVersion: String?

    /**
     * Load one component graph; [spec] gives its inputs and outputs in graph order. The graph's own inputs and
     * outputs are checked against [spec] before it is returned ([checkGraphIo]): a mismatch is a [BundleError]
     * naming [path] (the file as the manifest names it), as is a file the runtime cannot load. [lowMemory]: the
     * runtime's settings of the low-memory mode ([Pipeline]'s `lowMemory`; ONNX Runtime: no CPU arena, no memory
     * pattern, weights outside any arena), which change what is held, never the outputs.
     */
    fun load(file: File, spec: ComponentSpec, path: String = file.name, lowMemory: Boolean = false): ComponentSession

    companion object {
        /** The backend for a target name. */
        fun forTarget(target: String): Backend = when (target) {
            "onnx" -> OnnxRuntimeBackend()
            "executorch" -> ExecuTorchBackend()
            else -> throw IllegalArgumentException("unknown backend '$target'; choose onnx or executorch")
        }
    }
}

/** One loaded component graph. */
interface ComponentSession : AutoCloseable {
    /** Run on [inputs] (in the graph's input order); returns the outputs in the graph's output order. */
    fun run(inputs: List<Tensor>): List<Tensor.F32>
}
