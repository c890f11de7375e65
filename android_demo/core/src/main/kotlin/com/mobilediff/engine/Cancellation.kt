package com.mobilediff.engine

import java.util.concurrent.CancellationException

/**
 * A flag another thread sets to stop a generation or an import: the work checks it between steps (a runtime call
 * in progress is never interrupted) and stops with [GenerationCancelled] or [ImportCancelled].
 */
class CancelToken {
    @Volatile
    var isCancelled: Boolean = false
        private set

    fun cancel() {
        isCancelled = true
    }
}

/**
 * A generation stopped by its [CancelToken]: [completedSteps] sampler steps of [steps] had run (0 when it stopped
 * before the first step, [steps] when it stopped before decoding). No image is made.
 */
class GenerationCancelled(val completedSteps: Int, val steps: Int) :
    CancellationException(
        if (completedSteps == steps) "cancelled after all $steps steps, before decoding"
        else "cancelled after step $completedSteps of $steps",
    )

/** A bundle import stopped by its [CancelToken]; nothing of it is left in the destination. */
class ImportCancelled(val path: String) : CancellationException("import cancelled while copying $path")
