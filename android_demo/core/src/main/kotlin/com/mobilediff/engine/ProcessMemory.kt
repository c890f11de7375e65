package com.mobilediff.engine

import java.io.File

/**
 * The process's resident memory, in bytes: [rssBytes] now (VmRSS) and [peakRssBytes] the high-water mark (VmHWM).
 * The peak counts since [peakSince]. Resident memory covers what the runtimes allocate natively (weights,
 * arenas), which the Java heap does not.
 */
data class MemoryUsage(val rssBytes: Long, val peakRssBytes: Long, val peakSince: PeakSince) {
    /** Where the peak counts from: [words] for people, [scope] for records (the engine CLI's `peak_memory_scope`). */
    enum class PeakSince(val words: String, val scope: String) {
        PROCESS_START("since the process started", "process"),
        LAST_RESET("since the last peak reset", "last_reset"),
        /** Reset by [Pipeline.generate] as it started ([Pipeline.peakPerGeneration]): this generation's own peak. */
        GENERATION_START("this generation", "generation"),
    }

    override fun toString(): String = "peak %.1f MiB (%s), now %.1f MiB".format(peakRssBytes / MIB, peakSince.words, rssBytes / MIB)

    private companion object {
        const val MIB = 1024.0 * 1024.0
    }
}

/**
 * Resident memory from the kernel's `/proc/self/status` (Linux, so Android too). Where that file does not exist
 * (macOS, Windows) [read] gives null: nothing is estimated.
 */
object ProcessMemory {
    private val status = File("/proc/self/status")
    private val clearRefs = File("/proc/self/clear_refs")

    /** Whether the last [resetPeak] in this process succeeded (then [read]'s peak counts from it). */
    @Volatile
    private var resetDone = false

    /** Now and peak, or null where the kernel does not report them. */
    fun read(): MemoryUsage? {
        val text = try {
            status.readText()
        } catch (e: Exception) {
            return null
        }
        return parse(text, if (resetDone) MemoryUsage.PeakSince.LAST_RESET else MemoryUsage.PeakSince.PROCESS_START)
    }

    /**
     * Start a new peak at the current resident size: writes "5" to `/proc/self/clear_refs` (Linux >= 4.0), which
     * resets only the high-water mark (the other values clear page bits; 5 does not). Process-wide: anything else
     * in the process reading VmHWM sees the reset too. Returns false where the kernel or a security policy refuses
     * (then [read]'s peak still counts from the process's start).
     */
    fun resetPeak(): Boolean {
        val ok = try {
            clearRefs.writeText("5")
            true
        } catch (e: Exception) {
            false
        }
        if (ok) resetDone = true
        return ok
    }

    /** VmRSS and VmHWM of a `/proc/<pid>/status` text ("VmHWM:    123456 kB"), or null if either is missing. */
    fun parse(text: String, peakSince: MemoryUsage.PeakSince = MemoryUsage.PeakSince.PROCESS_START): MemoryUsage? {
        fun kib(key: String): Long? = text.lineSequence().firstOrNull { it.startsWith("$key:") }
            ?.substringAfter(':')?.trim()?.removeSuffix("kB")?.trim()?.toLongOrNull()
        val rss = kib("VmRSS") ?: return null
        val hwm = kib("VmHWM") ?: return null
        return MemoryUsage(rss * 1024, hwm * 1024, peakSince)
    }
}
