package com.mobilediff.engine

import org.junit.Assert.assertEquals
import org.junit.Assert.assertFalse
import org.junit.Assert.assertTrue
import org.junit.Rule
import org.junit.Test
import org.junit.rules.TemporaryFolder
import java.io.File

/** The app's choice of the low-memory mode: the weights a backend loads, and the resident peak estimated from them. */
class MemoryAdviceTest {
    @get:Rule
    val tmp = TemporaryFolder()

    @Test
    fun weightBytesAreTheFilesTheBackendLoads() {
        val dir = TinyBundle.write(tmp.newFolder("bundle"), executorch = true)
        val onnx = Manifest.COMPONENTS.sumOf { File(dir, "$it/model.onnx").length() }
        val pte = Manifest.COMPONENTS.sumOf { File(dir, "${it}_executorch_fp32.pte").length() }
        val bundle = Bundle.open(dir)
        assertEquals(onnx, bundle.weightBytes("onnx"))
        assertEquals(pte, bundle.weightBytes("executorch"))
        val e = expectBundleError { Bundle.open(TinyBundle.write(tmp.newFolder("onnx-only"))).weightBytes("executorch") }
        assertTrue(e.problem, e.problem.startsWith("has no executorch file for text_encoder"))
    }

    @Test
    fun lowMemoryIsAdvisedWhenTheResidentPeakDoesNotFit() {
        val mib = 1L shl 20
        assertEquals(3000 * mib, MemoryAdvice.residentPeakBytes(1000 * mib))
        assertFalse(MemoryAdvice.lowMemoryAdvised(1000 * mib, 3000 * mib))
        assertTrue(MemoryAdvice.lowMemoryAdvised(1000 * mib, 3000 * mib - 1))
        assertFalse(MemoryAdvice.lowMemoryAdvised(0, 0))
        expectThrown<IllegalArgumentException> { MemoryAdvice.lowMemoryAdvised(-1, 0) }
    }
}
