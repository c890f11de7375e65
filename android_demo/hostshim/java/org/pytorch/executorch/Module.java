package org.pytorch.executorch;

/**
 * A loaded ExecuTorch program (host shim of {@code org.pytorch.executorch.Module}).
 *
 * <p>On Android the executorch-android AAR provides this class; on the JVM this shim offers the same
 * {@code load} / {@code forward} / {@code execute} / {@code destroy} surface over {@code libexecutorch_jni.so},
 * a JNI library built by setup-toolchain.sh against the executorch wheel's {@code libexecutorch.so} (with the
 * XNNPACK backend and optimized kernels linked in), so the engine's ExecuTorch backend runs unchanged here.
 */
public final class Module {
  static {
    System.loadLibrary("executorch_jni");
  }

  private long handle;

  private Module(long handle) {
    this.handle = handle;
  }

  /** Load the program at {@code modelPath} (a .pte file). Throws RuntimeException with ExecuTorch's error code. */
  public static Module load(String modelPath) {
    return new Module(nativeLoad(modelPath));
  }

  /** Run the "forward" method. */
  public EValue[] forward(EValue... inputs) {
    return execute("forward", inputs);
  }

  /** Run method {@code methodName} on tensor inputs; returns its tensor outputs. */
  public synchronized EValue[] execute(String methodName, EValue... inputs) {
    if (handle == 0) throw new IllegalStateException("Module was destroyed");
    Object[] data = new Object[inputs.length];
    long[][] shapes = new long[inputs.length][];
    int[] dtypes = new int[inputs.length];
    for (int i = 0; i < inputs.length; i++) {
      Tensor t = inputs[i].toTensor();
      data[i] = t.data();
      shapes[i] = t.shape();
      dtypes[i] = t.dtype().jniCode;
    }
    Object[] raw = nativeExecute(handle, methodName, data, shapes, dtypes);
    EValue[] out = new EValue[raw.length / 2];
    for (int i = 0; i < out.length; i++) {
      Object values = raw[2 * i];
      long[] shape = (long[]) raw[2 * i + 1];
      Tensor t;
      if (values instanceof float[]) t = Tensor.fromBlob((float[]) values, shape);
      else if (values instanceof int[]) t = Tensor.fromBlob((int[]) values, shape);
      else t = Tensor.fromBlob((long[]) values, shape);
      out[i] = EValue.from(t);
    }
    return out;
  }

  /** Free the native program. The module cannot be used afterwards. */
  public synchronized void destroy() {
    if (handle != 0) {
      nativeDestroy(handle);
      handle = 0;
    }
  }

  private static native long nativeLoad(String path);

  private static native Object[] nativeExecute(
      long handle, String method, Object[] data, long[][] shapes, int[] dtypes);

  private static native void nativeDestroy(long handle);
}
