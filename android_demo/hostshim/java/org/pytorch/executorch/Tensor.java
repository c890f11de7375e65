package org.pytorch.executorch;

import java.util.Arrays;

/**
 * A dense tensor (host shim of {@code org.pytorch.executorch.Tensor}: same factory and accessor names as the
 * executorch-android AAR, backed by Java arrays instead of direct buffers).
 */
public final class Tensor {
  private final DType dtype;
  private final long[] shape;
  private final float[] floats;
  private final int[] ints;
  private final long[] longs;

  private Tensor(DType dtype, long[] shape, float[] floats, int[] ints, long[] longs) {
    long n = numel(shape);
    int have = floats != null ? floats.length : ints != null ? ints.length : longs.length;
    if (n != have) {
      throw new IllegalArgumentException(
          "shape " + Arrays.toString(shape) + " holds " + n + " elements but the data has " + have);
    }
    this.dtype = dtype;
    this.shape = shape.clone();
    this.floats = floats;
    this.ints = ints;
    this.longs = longs;
  }

  /** A float32 tensor over {@code data} (not copied) with {@code shape}. */
  public static Tensor fromBlob(float[] data, long[] shape) {
    return new Tensor(DType.FLOAT, shape, data, null, null);
  }

  /** An int32 tensor over {@code data} (not copied) with {@code shape}. */
  public static Tensor fromBlob(int[] data, long[] shape) {
    return new Tensor(DType.INT32, shape, null, data, null);
  }

  /** An int64 tensor over {@code data} (not copied) with {@code shape}. */
  public static Tensor fromBlob(long[] data, long[] shape) {
    return new Tensor(DType.INT64, shape, null, null, data);
  }

  public static long numel(long[] shape) {
    long n = 1;
    for (long d : shape) n *= d;
    return n;
  }

  public long numel() {
    return numel(shape);
  }

  public long[] shape() {
    return shape.clone();
  }

  public DType dtype() {
    return dtype;
  }

  public float[] getDataAsFloatArray() {
    if (floats == null) throw new IllegalStateException("Tensor of type " + dtype + " is not FLOAT");
    return floats;
  }

  public int[] getDataAsIntArray() {
    if (ints == null) throw new IllegalStateException("Tensor of type " + dtype + " is not INT32");
    return ints;
  }

  public long[] getDataAsLongArray() {
    if (longs == null) throw new IllegalStateException("Tensor of type " + dtype + " is not INT64");
    return longs;
  }

  /** The backing array (float[], int[] or long[]): what the JNI side reads. */
  Object data() {
    return floats != null ? floats : ints != null ? ints : longs;
  }
}
