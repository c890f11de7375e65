// Android Studio project for the demo app. The engine (core/) has no Android dependency; the app compiles its
// sources directly (app/build.gradle.kts), so there is one copy of the engine for the JVM tests and the phone.
pluginManagement {
    repositories {
        google()
        mavenCentral()
        gradlePluginPortal()
    }
}
dependencyResolutionManagement {
    repositoriesMode.set(RepositoriesMode.FAIL_ON_PROJECT_REPOS)
    repositories {
        google()
        mavenCentral()
    }
}
rootProject.name = "mobilediff-android-demo"
include(":app")
