package com.mobilediff.engine

/**
 * A bundle the engine cannot use: [file] is the path (relative to the bundle when inside it) and [problem]
 * says what is wrong with it, e.g. `BundleError("unet_onnx_fp32.onnx", "does not match its sha256 ...")`.
 * The app shows [message]; tests assert on [file] and [problem].
 */
class BundleError(val file: String, val problem: String, cause: Throwable? = null) :
    Exception("$file: $problem", cause)
