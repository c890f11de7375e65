package com.mobilediff.engine

/**
 * Wall-clock milliseconds per component (summed over its calls), measured around each runtime call only,
 * so the engine's own work (tokenizer, noise, sampler arithmetic) shows as [totalMs] minus their sum.
 */
class Timings {
    private val ms = LinkedHashMap<String, Double>()
    private val calls = LinkedHashMap<String, Int>()

    /** Run [block], adding its duration to [component]. */
    fun <T> measure(component: String, block: () -> T): T {
        val start = System.nanoTime()
        try {
            return block()
        } finally {
            add(component, (System.nanoTime() - start) / 1e6)
        }
    }

    fun add(component: String, millis: Double) {
        ms[component] = (ms[component] ?: 0.0) + millis
        calls[component] = (calls[component] ?: 0) + 1
    }

    /** Milliseconds per component, in first-call order. */
    val perComponent: Map<String, Double> get() = LinkedHashMap(ms)

    /** Number of calls per component. */
    val callCounts: Map<String, Int> get() = LinkedHashMap(calls)
}
