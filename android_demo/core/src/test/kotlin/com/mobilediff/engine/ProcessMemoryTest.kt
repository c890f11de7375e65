package com.mobilediff.engine

import org.junit.Assert.assertEquals
import org.junit.Assert.assertNull
import org.junit.Assert.assertTrue
import org.junit.Assume.assumeTrue
import org.junit.Test
import java.nio.ByteBuffer

/** Resident memory from /proc/self/status: parsing, and (on Linux) a peak that follows a real allocation. */
class ProcessMemoryTest {
    @Test
    fun parsesStatus() {
        val text = "Name:\tjava\nVmPeak:\t 9000000 kB\nVmHWM:\t  204800 kB\nVmRSS:\t  102400 kB\nThreads:\t12\n"
        val m = ProcessMemory.parse(text)!!
        assertEquals(100L * 1024 * 1024, m.rssBytes)
        assertEquals(200L * 1024 * 1024, m.peakRssBytes)
        assertEquals(MemoryUsage.PeakSince.PROCESS_START, m.peakSince)
        assertEquals("peak 200.0 MiB (since the process started), now 100.0 MiB", m.toString())
        assertNull(ProcessMemory.parse("Name:\tjava\nVmRSS:\t1 kB\n"))
    }

    @Test
    fun peakFollowsAnAllocation() {
        val before = ProcessMemory.read()
        assumeTrue("no /proc/self/status on this system", before != null)
        assertTrue("$before", before!!.peakRssBytes >= before.rssBytes && before.rssBytes > 0)
        assumeTrue("the kernel refuses /proc/self/clear_refs here", ProcessMemory.resetPeak())
        val reset = ProcessMemory.read()!!
        assertEquals(MemoryUsage.PeakSince.LAST_RESET, reset.peakSince)
        val size = 64 shl 20
        val block = ByteBuffer.allocateDirect(size)
        for (i in 0 until size step 4096) block.put(i, 1) // touch every page: resident
        val after = ProcessMemory.read()!!
        assertTrue("before $reset, after $after", after.peakRssBytes >= reset.rssBytes + size * 9L / 10)
        assertEquals(1, block.get(size - 4096).toInt())
    }
}
