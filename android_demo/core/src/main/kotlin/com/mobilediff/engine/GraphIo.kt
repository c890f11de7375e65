package com.mobilediff.engine

/**
 * One input or output as a loaded graph declares it, before the first call: [name] (null where the format keeps
 * none, as an ExecuTorch program), [shape] with null for a dynamic dimension, and [dtype] as numpy names element
 * types ("float32", "int32", ...).
 */
class GraphTensor(val name: String?, val shape: List<Long?>, val dtype: String)

/**
 * Refuse a graph whose declared inputs or outputs disagree with its component's manifest entry, before the first
 * call (the Kotlin twin of `mobilediff.bundle.check_graph_io`): a graph of another component, its sha256 valid,
 * would otherwise fail inside the runtime.
 *
 * Checked in this order, the first mismatch thrown: the number and names of inputs, then of outputs (names only
 * where the graph keeps them), then for each tensor its dtype, its rank and every fixed dimension against the
 * manifest's `static_shape` (a dynamic dimension of the graph takes any size; without a `static_shape` only the
 * dtype is checked).
 *
 * @param path the graph's path in the bundle, which the [BundleError] names
 */
fun checkGraphIo(component: String, path: String, spec: ComponentSpec, inputs: List<GraphTensor>, outputs: List<GraphTensor>) {
    val what = "the manifest's $component"
    for ((kind, verb, declared, got) in listOf(
        IoSide("input", "takes", spec.inputs, inputs),
        IoSide("output", "gives", spec.outputs, outputs),
    )) {
        val named = got.all { it.name != null }
        if (got.size != declared.size || (named && got.map { it.name } != declared.map { it.name })) {
            val wanted = declared.joinToString { it.name }
            if (named) {
                throw BundleError(path, "declares ${kind}s (${got.joinToString { it.name!! }}) but $what $verb ($wanted): a graph of another component?")
            }
            val plural = if (got.size != 1) "s" else ""
            throw BundleError(path, "has ${got.size} $kind$plural but $what $verb ${declared.size} ($wanted): a graph of another component?")
        }
        for ((i, pair) in got.zip(declared).withIndex()) {
            val (g, d) = pair
            val label = if (named) "$kind ${d.name}" else "$kind $i (${d.name} in the manifest)"
            if (g.dtype != d.dtype) throw BundleError(path, "$label is ${g.dtype} but $what declares ${d.dtype}")
            val fixed = d.staticShape ?: continue
            if (g.shape.size != fixed.size) {
                throw BundleError(path, "$label has rank ${g.shape.size} but $what declares rank ${fixed.size} (${shown(d)})")
            }
            if (g.shape.zip(fixed.toList()).any { (n, s) -> n != null && n != s.toLong() }) {
                val graph = g.shape.joinToString { it?.toString() ?: "?" }
                throw BundleError(path, "$label has shape ($graph) but $what declares (${shown(d)})")
            }
        }
    }
}

private data class IoSide(val kind: String, val verb: String, val declared: List<TensorSpec>, val got: List<GraphTensor>)

/** A manifest tensor's shape as Python's check shows it: each named dimension with its exported size ("batch=2, 4"). */
private fun shown(d: TensorSpec): String {
    val fixed = d.staticShape ?: return ""
    val named = d.shape
    return fixed.indices.joinToString { i ->
        val n = named?.getOrNull(i)
        if (n == null || n == fixed[i].toString()) fixed[i].toString() else "$n=${fixed[i]}"
    }
}
