package com.mobilediff.demo

import android.graphics.Bitmap
import com.mobilediff.engine.GenerationResult

/** The engine's packed ARGB pixels as a Bitmap (the engine itself has no Android dependency). */
fun GenerationResult.toBitmap(): Bitmap = Bitmap.createBitmap(argb, width, height, Bitmap.Config.ARGB_8888)
