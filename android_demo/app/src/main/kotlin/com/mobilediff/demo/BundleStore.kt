package com.mobilediff.demo

import android.content.Context
import com.mobilediff.engine.Bundle
import com.mobilediff.engine.BundleImport
import com.mobilediff.engine.BundleSource
import com.mobilediff.engine.CancelToken
import java.io.File

/**
 * Where the app keeps bundles: imported ones (a folder picked from storage, the one packaged in the APK) in
 * `<app files>/bundles/<name>/`, and ones pushed by hand in `<external app files>/bundles/<name>/`
 * (`adb push my_bundle /sdcard/Android/data/com.mobilediff.demo/files/bundles/`).
 */
class BundleStore(private val context: Context) {
    /** Where imports go. */
    val imports: File = File(context.filesDir, "bundles")
    val folders: List<File> = listOfNotNull(imports, context.getExternalFilesDir("bundles"))

    /** Every folder holding a manifest.json, by name (an import in progress or being replaced is hidden). */
    fun list(): List<File> = folders.flatMap { dir ->
        dir.listFiles()?.filter { !it.name.startsWith(".") && File(it, "manifest.json").isFile }.orEmpty()
    }.sortedBy { it.name }

    /**
     * Copy a bundle from [source] into [imports] and check it ([BundleImport.import]): only the files of [targets]
     * (null: every target). Call off the UI thread.
     */
    fun import(source: BundleSource, targets: Set<String>?, progress: BundleImport.Progress, cancel: CancelToken): Bundle =
        BundleImport.import(source, imports, targets, progress, cancel)

    /**
     * The bundle packaged in the APK, copied out once per installed APK (runtimes need files, not assets): null
     * when the APK holds none or this APK's copy is already there.
     */
    fun importPackagedIfNew(targets: Set<String>?, progress: BundleImport.Progress, cancel: CancelToken): Bundle? {
        if (!AssetSource.present(context.assets)) return null
        @Suppress("DEPRECATION")
        val installed = context.packageManager.getPackageInfo(context.packageName, 0).lastUpdateTime
        val prefs = context.getSharedPreferences(PREFS, Context.MODE_PRIVATE)
        val copied = prefs.getString(KEY_PACKAGED_NAME, null)?.let { File(imports, it).isDirectory } == true
        if (copied && prefs.getString(KEY_PACKAGED, null) == "$installed") return null
        val bundle = import(AssetSource(context.assets), targets, progress, cancel)
        prefs.edit().putString(KEY_PACKAGED, "$installed").putString(KEY_PACKAGED_NAME, bundle.dir.name).apply()
        return bundle
    }

    private companion object {
        const val PREFS = "bundles"
        const val KEY_PACKAGED = "packaged_bundle_apk"
        const val KEY_PACKAGED_NAME = "packaged_bundle_name"
    }
}
