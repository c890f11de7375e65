package org.pytorch.executorch;

/**
 * Element types of {@link Tensor} (host shim: the subset of the executorch-android enum the engine uses).
 * {@code jniCode} is ExecuTorch's {@code ScalarType} value.
 */
public enum DType {
  INT32(3),
  INT64(4),
  FLOAT(6);

  final int jniCode;

  DType(int jniCode) {
    this.jniCode = jniCode;
  }

  static DType fromJniCode(int code) {
    for (DType d : values()) {
      if (d.jniCode == code) return d;
    }
    throw new IllegalArgumentException("ExecuTorch scalar type " + code + " is not supported by the host shim");
  }
}
