package com.mobilediff.engine

/**
 * Whether to run a bundle in [Pipeline]'s low-memory mode, from the bytes of its weights and the memory the device
 * has available. A resident pipeline holds the three components and the runtime's working memory at once: its peak
 * measured about [RESIDENT_PEAK_PER_WEIGHT] times the weights it loaded (benchmarks/results/app_memory.md: the
 * SD-1.5 int8 512 px bundle, 1240 MiB of weights, peaked at 3873 MiB in this engine on the JVM, 3.1x). The
 * low-memory mode is advised when that estimate does not fit in the memory available.
 */
object MemoryAdvice {
    /** A resident generation's peak resident memory per byte of weights loaded (measured, rounded). */
    const val RESIDENT_PEAK_PER_WEIGHT = 3.0

    /** The resident mode's estimated peak for [weightBytes] of weights ([Bundle.weightBytes]). */
    fun residentPeakBytes(weightBytes: Long): Long = (weightBytes * RESIDENT_PEAK_PER_WEIGHT).toLong()

    /** True when [residentPeakBytes] of [weightBytes] exceeds [availableBytes] (e.g. ActivityManager.MemoryInfo.availMem). */
    fun lowMemoryAdvised(weightBytes: Long, availableBytes: Long): Boolean {
        require(weightBytes >= 0 && availableBytes >= 0) { "bytes must be >= 0, got weights $weightBytes, available $availableBytes" }
        return residentPeakBytes(weightBytes) > availableBytes
    }
}
