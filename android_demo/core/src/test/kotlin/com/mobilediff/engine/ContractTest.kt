package com.mobilediff.engine

import org.json.JSONArray
import org.json.JSONObject
import org.junit.Assert.assertArrayEquals
import org.junit.Assert.assertEquals
import org.junit.Assert.assertFalse
import org.junit.Assert.assertTrue
import org.junit.Test
import org.junit.runner.RunWith
import org.junit.runners.Parameterized
import java.io.File
import java.nio.file.Files

/**
 * The bundle contract's conformance cases (tests/contract/, see its README.md), read alike by Python
 * (tests/test_contract.py), Swift (ContractTests.swift) and this engine: every manifest case of `cases.json`
 * through [Bundle.open] (the role, the default plan and whether it has a table, the modes and adapters where a case
 * lists them, or the one error and the fields it names), and every prompt of `tokenizer.json` through
 * [ClipTokenizer] for each of its specs. One JUnit test per case, named after it.
 */
@RunWith(Parameterized::class)
class ContractTest(@Suppress("unused") private val name: String, private val check: () -> Unit) {
    @Test
    fun conforms() = check()

    companion object {
        /**
         * The repository holding tests/contract: the system property `mobilediff.repo` (android_demo/scripts/test.sh
         * sets it), else the first folder holding tests/contract/cases.json from the working directory upwards.
         * Missing, the test fails: the contract is part of the repository, never optional.
         */
        private val repo: File by lazy {
            System.getProperty("mobilediff.repo")?.let { File(it).absoluteFile }?.let { dir ->
                if (!File(dir, CASES).isFile) throw AssertionError("-Dmobilediff.repo=$dir holds no $CASES")
                return@lazy dir
            }
            generateSequence(File(System.getProperty("user.dir")).absoluteFile) { it.parentFile }
                .firstOrNull { File(it, CASES).isFile }
                ?: throw AssertionError("no $CASES in ${System.getProperty("user.dir")} or above (set -Dmobilediff.repo=REPO)")
        }
        private const val CONTRACT = "tests/contract"
        private const val CASES = "$CONTRACT/cases.json"

        @JvmStatic
        @Parameterized.Parameters(name = "{0}")
        fun cases(): List<Array<Any>> {
            val manifestCases = JSONObject(File(repo, CASES).readText()).getJSONArray("cases").objects()
            val tokenizer = JSONObject(File(repo, "$CONTRACT/tokenizer.json").readText())
            val specs = tokenizer.getJSONArray("specs").objects()
            assertTrue("no manifest cases in $CASES", manifestCases.isNotEmpty())
            assertTrue("no tokenizer specs in $CONTRACT/tokenizer.json", specs.isNotEmpty())
            val out = ArrayList<Array<Any>>()
            for (case in manifestCases) {
                val name = case.getString("name")
                out.add(arrayOf("manifest $name", { checkManifest(case) }))
            }
            val folder = tokenizer.getString("tokenizer")
            for (spec in specs) {
                val label = "tokenizer max_length=${spec.getInt("max_length")} pad_id=${spec.getInt("pad_id")}"
                val prompts = spec.getJSONArray("cases").objects()
                assertTrue("$label: no prompts", prompts.isNotEmpty())
                prompts.forEachIndexed { i, prompt ->
                    out.add(arrayOf("$label #$i", { checkTokenizer(folder, spec, prompt) }))
                }
            }
            return out
        }

        private fun JSONArray.objects(): List<JSONObject> = List(length()) { getJSONObject(it) }

        /** The case's manifest text: its base, `text_replace` applied to the text, then `patch` (RFC 7386). */
        private fun manifestText(case: JSONObject): String {
            var text = File(repo, "$CONTRACT/${case.getString("base")}").readText()
            case.optJSONArray("text_replace")?.let { pairs ->
                for (pair in List(pairs.length()) { pairs.getJSONArray(it) }) {
                    val (old, new) = pair.getString(0) to pair.getString(1)
                    assertTrue("text_replace: '$old' does not occur in ${case.getString("base")}", text.contains(old))
                    text = text.replace(old, new)
                }
            }
            val patch = case.optJSONObject("patch") ?: return text
            return (mergePatch(JSONObject(text), patch) as JSONObject).toString(2)
        }

        /** RFC 7386 JSON merge patch: an object merges key by key (null removes the key), anything else replaces. */
        private fun mergePatch(target: Any?, patch: Any?): Any? {
            if (patch !is JSONObject) return patch
            val out = target as? JSONObject ?: JSONObject()
            for (key in patch.keys().asSequence().toList()) {
                val value = patch.get(key)
                if (value == JSONObject.NULL) out.remove(key) else out.put(key, mergePatch(out.opt(key), value))
            }
            return out
        }

        private fun checkManifest(case: JSONObject) {
            val dir = Files.createTempDirectory("contract-").toFile()
            try {
                File(dir, Manifest.MANIFEST).writeText(manifestText(case))
                val expect = case.getJSONObject("expect")
                val mentions = expect.optJSONArray("error_mentions")
                if (mentions != null) expectError(dir, mentions) else expectPlan(dir, expect)
            } finally {
                dir.deleteRecursively()
            }
        }

        private fun expectError(dir: File, mentions: JSONArray) {
            val message = try {
                val m = Bundle.open(dir).manifest
                throw AssertionError("read without an error: role ${m.role.role}, plan ${m.defaultSampling}")
            } catch (e: BundleError) {
                // the folder is a temporary name: only what the reader says about the manifest counts
                e.message!!.replace(dir.path, "<bundle>")
            }
            assertFalse("one line: $message", message.contains('\n'))
            for (part in List(mentions.length()) { mentions.getString(it) }) assertTrue("'$part' not in: $message", message.contains(part))
        }

        private fun expectPlan(dir: File, expect: JSONObject) {
            val m = Bundle.open(dir).manifest
            assertEquals("role", expect.getString("role"), m.role.role)
            assertEquals("method", if (expect.isNull("method")) null else expect.getString("method"), m.role.method)
            val plan = expect.getJSONObject("plan")
            assertEquals(
                "plan",
                SamplingPlan(plan.getString("sampler"), plan.getInt("steps"), plan.getDouble("guidance")),
                m.defaultSampling,
            )
            val p = m.defaultSampling
            val hasTable = m.samplers.any { it.name == p.sampler && it.steps == p.steps }
            assertEquals("plan_table", expect.getBoolean("plan_table"), hasTable)
            if (hasTable) {
                assertEquals(p.steps, m.sampler(p.sampler, p.steps).steps)
            } else {
                val e = try {
                    m.sampler(p.sampler, p.steps)
                    null
                } catch (e: BundleError) {
                    e
                }
                val refusal = "no ${p.sampler} table for ${p.steps} steps"
                assertTrue("sampling without a table is refused ($refusal)", e?.problem?.contains(refusal) == true)
            }
            // optional: the modes the bundle runs (in this order) and its adapters' names (the record's order)
            expect.optJSONArray("modes")?.let { modes ->
                val supported = listOf(Manifest.MODE_TXT2IMG, ImageModes.IMG2IMG, ImageModes.INPAINT).filter { m.supports(it) }
                assertEquals("modes", List(modes.length()) { modes.getString(it) }, supported)
            }
            expect.optJSONArray("adapters")?.let { names ->
                assertEquals("adapters", List(names.length()) { names.getString(it) }, m.adapters?.names ?: emptyList<String>())
            }
        }

        private fun checkTokenizer(folder: String, spec: JSONObject, case: JSONObject) {
            val tokenizerSpec = TokenizerSpec(
                files = listOf("$folder/vocab.json", "$folder/merges.txt"),
                maxLength = spec.getInt("max_length"),
                bosId = spec.getInt("bos_id"),
                eosId = spec.getInt("eos_id"),
                padId = spec.getInt("pad_id"),
            )
            val prompt = case.getString("prompt")
            val expected = case.getJSONArray("ids").let { ids -> IntArray(ids.length()) { ids.getInt(it) } }
            val got = ClipTokenizer.load(repo, tokenizerSpec).encode(prompt)
            assertArrayEquals("prompt ${JSONObject.quote(prompt)}: got ${got.toList()}", expected, got)
        }
    }
}
