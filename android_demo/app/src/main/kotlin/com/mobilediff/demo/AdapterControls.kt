package com.mobilediff.demo

import android.view.View
import android.widget.CheckBox
import android.widget.LinearLayout
import android.widget.SeekBar
import android.widget.TextView
import com.mobilediff.engine.AdapterChoice
import com.mobilediff.engine.AdapterFileSpec

/**
 * The shown bundle's run-time LoRA adapters (`export --runtime-lora`, [com.mobilediff.engine.Manifest.adapters]) as
 * one row each in [container]: an on/off toggle with the adapter's name and a scale slider from 0 to [MAX_SCALE]
 * (0.01 steps), starting at the file's `default_scale`. [mix] is what the next generation switches on (the toggled
 * adapters in the manifest's order); the pipeline repacks its `lora_weights` inputs, nothing is reloaded. [label]
 * and [container] are hidden for a bundle without adapters. UI thread only.
 */
class AdapterControls(private val container: LinearLayout, private val label: TextView) {
    private class Row(val spec: AdapterFileSpec, val toggle: CheckBox, val slider: SeekBar, val value: TextView)

    private var rows: List<Row> = emptyList()

    /** Rows for [adapters] (every toggle off), replacing the previous bundle's. */
    fun show(adapters: List<AdapterFileSpec>) {
        container.removeAllViews()
        rows = adapters.map { spec -> row(spec).also { container.addView(it.first) }.second }
        val visibility = if (rows.isEmpty()) View.GONE else View.VISIBLE
        container.visibility = visibility
        label.visibility = visibility
    }

    /** The adapters toggled on, with their slider's scale, in the manifest's order ([] = the base model). */
    fun mix(): List<AdapterChoice> = rows.filter { it.toggle.isChecked }.map { AdapterChoice(it.spec.name, scaleOf(it.slider)) }

    private fun row(spec: AdapterFileSpec): Pair<View, Row> {
        val context = container.context
        val line = LinearLayout(context).apply { orientation = LinearLayout.HORIZONTAL }
        val toggle = CheckBox(context).apply {
            text = spec.name
            contentDescription = "Run-time adapter ${spec.name} (rank ${spec.rank}; ${spec.components.joinToString()})"
        }
        val value = TextView(context).apply { minEms = 3 }
        val slider = SeekBar(context).apply {
            max = (MAX_SCALE * STEPS_PER_UNIT).toInt()
            progress = Math.round(spec.defaultScale.coerceIn(0.0, MAX_SCALE) * STEPS_PER_UNIT).toInt()
        }
        value.text = "%.2f".format(scaleOf(slider))
        slider.setOnSeekBarChangeListener(object : SeekBar.OnSeekBarChangeListener {
            override fun onProgressChanged(bar: SeekBar?, progress: Int, fromUser: Boolean) {
                value.text = "%.2f".format(scaleOf(slider))
            }
            override fun onStartTrackingTouch(bar: SeekBar?) = Unit
            override fun onStopTrackingTouch(bar: SeekBar?) = Unit
        })
        line.addView(toggle, LinearLayout.LayoutParams(0, LinearLayout.LayoutParams.WRAP_CONTENT, 2f))
        line.addView(slider, LinearLayout.LayoutParams(0, LinearLayout.LayoutParams.WRAP_CONTENT, 3f))
        line.addView(value, LinearLayout.LayoutParams(LinearLayout.LayoutParams.WRAP_CONTENT, LinearLayout.LayoutParams.WRAP_CONTENT))
        return line to Row(spec, toggle, slider, value)
    }

    private fun scaleOf(slider: SeekBar): Double = slider.progress / STEPS_PER_UNIT

    private companion object {
        /** The slider's top scale (an adapter at more than 1.5 x is rarely what anyone wants). */
        const val MAX_SCALE = 1.5
        const val STEPS_PER_UNIT = 100.0
    }
}
