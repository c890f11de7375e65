package com.mobilediff.engine

import org.junit.Assert.assertEquals
import org.junit.Test

/**
 * The runtime versions the engine's tests run on, printed for the records beside their results (test.sh passes the
 * pinned versions): ONNX Runtime's native library reports its own; the ExecuTorch host library's version is the
 * executorch wheel's (`mobilediff.executorch.runtime`), beside the phone package's.
 */
class RuntimeVersionTest {
    @Test
    fun onnxRuntimeIsThePhonesVersion() {
        val version = OnnxRuntimeBackend().runtimeVersion
        val classes = ai.onnxruntime.OrtEnvironment::class.java.protectionDomain?.codeSource?.location?.path?.substringAfterLast('/')
        println("runtime onnx: ONNX Runtime $version (native library), ai.onnxruntime classes from $classes")
        System.getProperty("mobilediff.onnxruntime.expected")?.let { assertEquals("the ONNX Runtime the tests run on", it, version) }
    }

    @Test
    fun executorchVersionsAreRecorded() {
        println("runtime executorch: host library executorch ${ExecuTorchBackend().runtimeVersion ?: "(not named)"} (the wheel's, under the JVM shim); " +
            "phone package ${System.getProperty("mobilediff.executorch.phone") ?: "(not named)"}")
    }
}
