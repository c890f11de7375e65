plugins {
    id("com.android.application")
    id("org.jetbrains.kotlin.android")
}

// Runtime versions: use the versions the bundle was exported with (its manifest's `versions.onnxruntime` and
// `versions.executorch`): a .pte needs an ExecuTorch runtime that reads its program version. ONNX Runtime is the
// version the offline APK packages and the JVM tests run (mobilediff.runtimes: onnxruntime-mobile).
val onnxruntimeVersion = "1.29.0"
val executorchVersion = "1.5.1"

android {
    namespace = "com.mobilediff.demo"
    compileSdk = 34

    defaultConfig {
        applicationId = "com.mobilediff.demo"
        minSdk = 26
        targetSdk = 34
        versionCode = 1
        versionName = "0.1"
    }

    sourceSets["main"].apply {
        manifest.srcFile("src/main/AndroidManifest.xml")
        // the app's own sources and the pure-Kotlin engine (the same files the JVM tests run)
        java.srcDirs("src/main/kotlin", "../core/src/main/kotlin")
        res.srcDirs("src/main/res")
    }

    buildTypes {
        release {
            isMinifyEnabled = false
        }
    }
    compileOptions {
        sourceCompatibility = JavaVersion.VERSION_17
        targetCompatibility = JavaVersion.VERSION_17
    }
    kotlinOptions {
        jvmTarget = "17"
    }
}

dependencies {
    implementation("com.microsoft.onnxruntime:onnxruntime-android:$onnxruntimeVersion")
    implementation("org.pytorch:executorch-android:$executorchVersion")
    // org.json ships with Android; nothing else is needed
}
