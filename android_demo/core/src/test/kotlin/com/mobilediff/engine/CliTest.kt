package com.mobilediff.engine

import com.mobilediff.engine.TinyBundle.component
import org.junit.Assert.assertEquals
import org.junit.Assert.assertTrue
import org.junit.Rule
import org.junit.Test
import org.junit.rules.TemporaryFolder
import java.io.File
import java.util.concurrent.TimeUnit

/**
 * The engine's command line (android_demo/cli, what engine.sh runs) keeps the Python CLI's convention: bad input (a bad
 * bundle, option or prompt) is exactly one line `error: ...` on stderr and exit code 2; nothing else reaches stderr,
 * ExecuTorch's own log lines included. Runs the CLI in a child JVM on the tiny bundle.
 */
class CliTest {
    @get:Rule
    val tmp = TemporaryFolder()

    private class Run(val status: Int, val stdout: String, val stderr: String)

    /** The CLI with [args]; a `$'...'` argument is passed through bash, so it can hold bytes no Java string can. */
    private fun cli(vararg args: String): Run {
        val java = File(System.getProperty("java.home"), "bin/java").path
        val command = listOf(java, "-cp", System.getProperty("java.class.path"),
            "-Djava.library.path=${System.getProperty("java.library.path")}",
            "-Donnxruntime.native.path=${System.getProperty("onnxruntime.native.path") ?: ""}",
            "com.mobilediff.cli.EngineCliKt") + args
        val script = command.joinToString(" ") { if (it.startsWith("$'")) it else "'" + it.replace("'", "'\\''") + "'" }
        val p = ProcessBuilder("bash", "-c", "exec $script").start()
        val out = p.inputStream.bufferedReader().readText()
        val err = p.errorStream.bufferedReader().readText()
        assertTrue("the CLI did not finish", p.waitFor(120, TimeUnit.SECONDS))
        return Run(p.exitValue(), out, err)
    }

    private fun assertBadInput(run: Run, vararg mentions: String) {
        val lines = run.stderr.lines().filter { it.isNotEmpty() }
        assertEquals("exit status (stderr: ${run.stderr})", 2, run.status)
        assertEquals("one line on stderr: ${run.stderr}", 1, lines.size)
        assertTrue(lines[0], lines[0].startsWith("error: "))
        for (m in mentions) assertTrue("'$m' not in: ${lines[0]}", lines[0].contains(m))
    }

    private fun generate(bundle: File, prompt: String = "a red circle", backend: String = "onnx", vararg more: String) =
        cli("generate", "--bundle", bundle.path, "--backend", backend, "--prompt", prompt, "--seed", "0",
            "--out", File(tmp.root, "out.png").path, "--json", File(tmp.root, "out.json").path, *more)

    @Test
    fun generatesOnTheTinyBundle() {
        val run = generate(TinyBundle.write(tmp.newFolder("bundle")), prompt = "café\tau lait")
        assertEquals(run.stderr, 0, run.status)
        assertEquals("", run.stderr.trim())
        assertTrue(File(tmp.root, "out.png").isFile)
    }

    @Test
    fun lowMemoryGivesTheSameImageAndSaysSo() {
        val bundle = TinyBundle.write(tmp.newFolder("bundle"))
        val records = listOf(false, true).map { low ->
            val json = File(tmp.root, "low_$low.json")
            val more = listOf("--warmup", "0") + if (low) listOf("--low-memory") else emptyList()
            val run = cli("generate", "--bundle", bundle.path, "--backend", "onnx", "--prompt", "a red circle", "--seed", "0",
                "--out", File(tmp.root, "low_$low.png").path, "--json", json.path, *more.toTypedArray())
            assertEquals(run.stderr, 0, run.status)
            org.json.JSONObject(json.readText())
        }
        assertEquals(listOf(false, true), records.map { it.getBoolean("low_memory") })
        for (r in records) {
            assertEquals("process", r.getString("peak_memory_scope"))
            assertTrue(r.toString(), r.getLong("peak_rss_bytes") > 0)
            assertEquals(Manifest.COMPONENTS.toSet(), r.getJSONObject("load_ms").keys().asSequence().toSet())
        }
        val (resident, low) = records.map { File(it.getString("image_raw")).readBytes() }
        assertTrue("the low-memory image is the resident one, byte for byte", resident.contentEquals(low))
        // a switch takes no value: what follows it is the next option
        assertBadInput(generate(bundle, "x", "onnx", "--low-memory", "1"), "error: unknown option '1'")
    }

    @Test
    fun badBundlesAreOneLine() {
        assertBadInput(generate(File(tmp.root, "missing")), "bad bundle: ", "bundle folder not found")
        val swapped = TinyBundle.write(tmp.newFolder("swapped")) { m ->
            m.component("unet").put("files", m.component("vae_decoder").getJSONArray("files"))
        }
        assertBadInput(generate(swapped), "vae_decoder/model.onnx: declares inputs (latent_sample) but the manifest's unet takes")
        val nan = TinyBundle.write(tmp.newFolder("nan"), unetScale = Float.NaN)
        assertBadInput(generate(nan), "unet/model.onnx: unet gave non-finite values")
    }

    @Test
    fun badPromptsAreOneLine() {
        val bundle = TinyBundle.write(tmp.newFolder("bundle"))
        assertBadInput(generate(bundle, prompt = "red\u001b[0m"), "error: --prompt has a control character (U+001B at character 3)")
        assertBadInput(generate(bundle, prompt = "$'a\\xffb'"), "error: --prompt is not valid UTF-8 (byte 0xff at 1)")
    }

    @Test
    fun badArgumentsAreOneLine() {
        val bundle = TinyBundle.write(tmp.newFolder("bundle"))
        assertBadInput(cli(), "error: a command is required")
        assertBadInput(cli("render"), "error: unknown command 'render'")
        assertBadInput(generate(bundle, "x", "onnx", "--stpes", "4"), "error: unknown option '--stpes'")
        assertBadInput(generate(bundle, "x", "onnx", "--steps", "four"), "error: --steps must be an integer, got 'four'")
        assertBadInput(generate(bundle, "x", "onnx", "--steps"), "error: --steps needs a value")
        assertBadInput(generate(bundle, "x", "tflite"), "error: unknown backend 'tflite'")
        assertBadInput(generate(bundle, "x", "onnx", "--steps", "7"), "error: bad bundle: manifest.json: has no ddim table for 7 steps")
        assertEquals(0, cli("--help").status)
        // an output path that cannot be written (/proc takes no new files)
        assertBadInput(cli("generate", "--bundle", bundle.path, "--backend", "onnx", "--prompt", "x", "--seed", "0",
            "--out", "/proc/mobilediff/x.png", "--json", File(tmp.root, "x.json").path), "error: /proc/mobilediff/x.png: cannot create the folder")
    }

    @Test
    fun badAdapterSelectionsAreOneLine() {
        val tiny = TinyBundle.write(tmp.newFolder("bundle"))
        assertBadInput(generate(tiny, "x", "onnx", "--lora", "any"), "error: this bundle holds no run-time adapters", "--runtime-lora")
        assertBadInput(generate(tiny, "x", "onnx", "--lora", "any:lots"), "error: --lora any:lots: the scale after ':' must be a number, got 'lots'")
        assertBadInput(generate(tiny, "x", "onnx", "--lora", "any:inf"), "error: adapter any: the scale must be a finite number")
        assertBadInput(generate(tiny, "x", "onnx", "--lora", "a", "--lora", "a:0.5"), "error: adapter a is given twice")
        // a bundle with adapters: an unknown name lists the ones it holds (refused before any component loads)
        val model = Fixtures.models.firstOrNull { Bundle.open(Fixtures.bundle(it)).manifest.adapters != null } ?: return
        val names = Bundle.open(Fixtures.bundle(model)).manifest.adapters!!.names
        assertBadInput(generate(Fixtures.bundle(model), "x", "onnx", "--lora", "no-such:0.5"),
            "error: the bundle holds no run-time adapter named 'no-such' (it holds: ${names.joinToString()})")
    }

    @Test
    fun generatesFromAnImageAndRecordsModeAndStrength() {
        val bundle = TinyBundle.write(tmp.newFolder("bundle"), imageModes = true)
        val init = File(tmp.root, "init.png").apply { writeBytes(TestPng.encode(4, 4, 2, 8, IntArray(48) { it * 5 })) }
        val mask = File(tmp.root, "mask.png").apply { writeBytes(TestPng.encode(4, 4, 0, 8, IntArray(16) { if (it % 4 < 2) 255 else 0 })) }
        for ((more, mode) in listOf(
            listOf("--init-image", init.path, "--strength", "1") to "img2img",
            listOf("--init-image", init.path, "--mask", mask.path) to "inpaint",
        )) {
            val run = generate(bundle, "a red circle", "onnx", *more.toTypedArray())
            assertEquals(run.stderr, 0, run.status)
            val r = org.json.JSONObject(File(tmp.root, "out.json").readText())
            assertEquals(mode, r.getString("mode"))
            assertEquals(1.0, r.getDouble("strength"), 0.0)
            assertEquals(1, r.getInt("steps_run"))
            assertEquals(Manifest.COMPONENTS.toSet() + Manifest.IMAGE_ENCODER, r.getJSONObject("ms").keys().asSequence().toSet())
        }
        val plain = generate(bundle)
        assertEquals(plain.stderr, 0, plain.status)
        val r = org.json.JSONObject(File(tmp.root, "out.json").readText())
        assertEquals("txt2img", r.getString("mode"))
        assertTrue(r.isNull("strength"))
    }

    @Test
    fun badImageInputsAreOneLine() {
        val bundle = TinyBundle.write(tmp.newFolder("bundle"), imageModes = true)
        val init = File(tmp.root, "init.png").apply { writeBytes(TestPng.encode(4, 4, 2, 8, IntArray(48))) }
        val wide = File(tmp.root, "wide.png").apply { writeBytes(TestPng.encode(5, 4, 2, 8, IntArray(60))) }
        val black = File(tmp.root, "black.png").apply { writeBytes(TestPng.encode(4, 4, 0, 8, IntArray(16))) }
        val jpeg = File(tmp.root, "photo.png").apply { writeBytes(byteArrayOf(-1, -40, -1, -32) + ByteArray(64)) }
        assertBadInput(generate(bundle, "x", "onnx", "--mask", black.path), "error: --mask needs --init-image")
        assertBadInput(generate(bundle, "x", "onnx", "--strength", "0.5"), "error: --strength needs --init-image")
        assertBadInput(generate(bundle, "x", "onnx", "--init-image", wide.path, "--strength", "1"),
            "error: --init-image ${wide.path} is 5x4 pixels, the model generates 4x4")
        assertBadInput(generate(bundle, "x", "onnx", "--init-image", jpeg.path), "error: --init-image ${jpeg.path} is not a PNG file")
        assertBadInput(generate(bundle, "x", "onnx", "--init-image", File(tmp.root, "none.png").path), "none.png: no such file")
        assertBadInput(generate(bundle, "x", "onnx", "--init-image", init.path, "--mask", black.path), "error: --mask ${black.path} marks nothing to repaint")
        assertBadInput(generate(bundle, "x", "onnx", "--init-image", init.path, "--strength", "1.5"), "error: strength must be in (0, 1], got 1.5")
        assertBadInput(generate(bundle, "x", "onnx", "--init-image", init.path, "--strength", "0.5"), "error: strength 0.5 denoises no step of 1")
        val textOnly = TinyBundle.write(tmp.newFolder("text"))
        assertBadInput(generate(textOnly, "x", "onnx", "--init-image", init.path), "exported without image modes", "--image-modes")
    }

    @Test
    fun executorchErrorsAreOneLineWithoutRuntimeLogs() {
        // a program of another component: refused from its declaration, before ExecuTorch opens it
        val swapped = TinyBundle.write(tmp.newFolder("swapped"), executorch = true) { m ->
            m.component("text_encoder").put("files", m.component("unet").getJSONArray("files"))
        }
        assertBadInput(generate(swapped, backend = "executorch"), "unet_executorch_fp32.pte: has 3 inputs but the manifest's text_encoder takes 1")
        // a program ExecuTorch itself refuses (its inputs and outputs are right, an operator is unknown): what
        // ExecuTorch logs becomes part of the one error line
        val unknownOp = TinyBundle.write(tmp.newFolder("unknown_op"), executorch = true) { m ->
            val entry = m.component("vae_decoder").getJSONArray("files").getJSONObject(1)
            val f = File(tmp.root, "unknown_op/" + entry.getString("path"))
            val text = String(f.readBytes(), Charsets.ISO_8859_1)
            assertTrue(text.contains("aten::mul"))
            f.writeBytes(text.replace("aten::mul", "aten::mux").toByteArray(Charsets.ISO_8859_1))
            entry.put("sha256", Bundle.sha256(f))
        }
        val run = generate(unknownOp, backend = "executorch")
        assertBadInput(run, "vae_decoder_executorch_fp32.pte: ExecuTorch cannot load it", "aten::mux")
        assertTrue(run.stderr, !run.stderr.contains("executorch:"))
    }
}
