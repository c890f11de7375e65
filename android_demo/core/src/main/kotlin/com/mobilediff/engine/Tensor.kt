package com.mobilediff.engine

/** A dense row-major tensor passed to and from a [Backend]: float32 or int32, with its [shape]. */
sealed class Tensor(val shape: IntArray) {
    val numel: Int get() = shape.fold(1) { a, b -> a * b }

    class F32(shape: IntArray, val data: FloatArray) : Tensor(shape) {
        init { require(data.size == numel) { "shape ${shape.contentToString()} needs $numel floats, got ${data.size}" } }
    }

    class I32(shape: IntArray, val data: IntArray) : Tensor(shape) {
        init { require(data.size == numel) { "shape ${shape.contentToString()} needs $numel ints, got ${data.size}" } }
    }
}
