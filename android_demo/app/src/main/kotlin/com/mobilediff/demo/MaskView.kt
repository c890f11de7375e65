package com.mobilediff.demo

import android.content.Context
import android.graphics.Bitmap
import android.graphics.Canvas
import android.graphics.Color
import android.graphics.Paint
import android.graphics.PorterDuff
import android.graphics.PorterDuffColorFilter
import android.graphics.RectF
import android.util.AttributeSet
import android.view.MotionEvent
import android.view.View
import com.mobilediff.engine.RgbImage

/**
 * The init image with a mask drawn over it by finger: a round brush paints the region to repaint (inpainting),
 * shown tinted red; nothing painted means image-to-image. The mask is kept at the image's own size (the bundle's),
 * with hard edges (no anti-aliasing), so every pixel is marked or not, as the engine binarizes it at 128.
 */
class MaskView(context: Context, attrs: AttributeSet? = null) : View(context, attrs) {
    /** The init image at the bundle's size, or null (the view then shows nothing and takes no strokes). */
    var image: Bitmap? = null
        private set
    private var mask: Bitmap? = null
    private var maskCanvas: Canvas? = null

    /** Whether any stroke was drawn since the image was set or the mask cleared. */
    var hasMask: Boolean = false
        private set

    /** Called on the UI thread after each stroke and when the mask is cleared. */
    var onMaskChanged: (() -> Unit)? = null

    private val imagePaint = Paint()  // no filtering: the bundle's pixels as they are
    private val overlayPaint = Paint().apply { colorFilter = PorterDuffColorFilter(OVERLAY, PorterDuff.Mode.SRC_IN) }
    private val brush = Paint().apply {
        color = Color.WHITE
        isAntiAlias = false
        style = Paint.Style.STROKE
        strokeCap = Paint.Cap.ROUND
        strokeJoin = Paint.Join.ROUND
    }
    private val dot = Paint().apply { color = Color.WHITE; isAntiAlias = false; style = Paint.Style.FILL }
    private val frame = RectF()
    private var lastX = 0f
    private var lastY = 0f

    /** Show [bitmap] (null: none) with an empty mask of its size. */
    fun setImage(bitmap: Bitmap?) {
        image = bitmap
        mask = bitmap?.let { Bitmap.createBitmap(it.width, it.height, Bitmap.Config.ARGB_8888) }
        maskCanvas = mask?.let { Canvas(it) }
        brush.strokeWidth = bitmap?.let { maxOf(1f, maxOf(it.width, it.height) / BRUSH_FRACTION) } ?: 1f
        hasMask = false
        invalidate()
    }

    fun clearMask() {
        mask?.eraseColor(Color.TRANSPARENT)
        hasMask = false
        invalidate()
        onMaskChanged?.invoke()
    }

    /**
     * The drawn mask as the engine takes it: grayscale, 255 where painted (repaint), 0 elsewhere (keep); null when
     * nothing was painted.
     */
    fun maskImage(): RgbImage? {
        val m = mask?.takeIf { hasMask } ?: return null
        val argb = IntArray(m.width * m.height)
        m.getPixels(argb, 0, m.width, 0, 0, m.width, m.height)
        val rgb = ByteArray(3 * argb.size)
        for (p in argb.indices) {
            val v: Byte = if ((argb[p] ushr 24) >= 128) -1 else 0
            rgb[3 * p] = v
            rgb[3 * p + 1] = v
            rgb[3 * p + 2] = v
        }
        return RgbImage(m.width, m.height, rgb)
    }

    override fun onMeasure(widthMeasureSpec: Int, heightMeasureSpec: Int) {
        super.onMeasure(widthMeasureSpec, heightMeasureSpec)
        val side = minOf(measuredWidth, measuredHeight).takeIf { it > 0 } ?: maxOf(measuredWidth, measuredHeight)
        setMeasuredDimension(side, side)
    }

    override fun onDraw(canvas: Canvas) {
        super.onDraw(canvas)
        val img = image ?: return
        fitFrame(img)
        canvas.drawBitmap(img, null, frame, imagePaint)
        mask?.let { canvas.drawBitmap(it, null, frame, overlayPaint) }
    }

    override fun onTouchEvent(event: MotionEvent): Boolean {
        val img = image ?: return false
        val c = maskCanvas ?: return false
        fitFrame(img)
        // view -> image pixels
        val x = (event.x - frame.left) * img.width / frame.width()
        val y = (event.y - frame.top) * img.height / frame.height()
        when (event.actionMasked) {
            MotionEvent.ACTION_DOWN -> {
                parent?.requestDisallowInterceptTouchEvent(true)  // a stroke, not a scroll of the screen
                c.drawCircle(x, y, brush.strokeWidth / 2, dot)
            }
            MotionEvent.ACTION_MOVE -> c.drawLine(lastX, lastY, x, y, brush)
            MotionEvent.ACTION_UP, MotionEvent.ACTION_CANCEL -> {
                parent?.requestDisallowInterceptTouchEvent(false)
                onMaskChanged?.invoke()
                return true
            }
            else -> return true
        }
        lastX = x
        lastY = y
        hasMask = true
        invalidate()
        return true
    }

    /** The image's rectangle in the view: as large as fits, centred, its aspect ratio kept. */
    private fun fitFrame(img: Bitmap) {
        val scale = minOf(width.toFloat() / img.width, height.toFloat() / img.height)
        val w = img.width * scale
        val h = img.height * scale
        frame.set((width - w) / 2, (height - h) / 2, (width + w) / 2, (height + h) / 2)
    }

    private companion object {
        /** The overlay colour of the painted region: half-transparent red. */
        const val OVERLAY = 0x80ff2020.toInt()

        /** The brush's width: the image's longest side divided by this. */
        const val BRUSH_FRACTION = 8f
    }
}
