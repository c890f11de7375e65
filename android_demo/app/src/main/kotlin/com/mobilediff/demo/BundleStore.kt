package com.mobilediff.demo

import android.content.Context
import java.io.File

/**
 * Where the app looks for bundles: `<external app files>/bundles/<name>/manifest.json` (push one with
 * `adb push my_bundle /sdcard/Android/data/com.mobilediff.demo/files/bundles/`), and the same under internal storage.
 */
class BundleStore(context: Context) {
    val folders: List<File> = listOfNotNull(context.getExternalFilesDir("bundles"), File(context.filesDir, "bundles"))

    /** Every folder holding a manifest.json, by name. */
    fun list(): List<File> =
        folders.flatMap { dir -> dir.listFiles()?.filter { File(it, "manifest.json").isFile }.orEmpty() }.sortedBy { it.name }
}
