package org.pytorch.executorch;

/** A value passed to or returned by a method (host shim: tensors only, as the engine uses). */
public final class EValue {
  private final Tensor tensor;

  private EValue(Tensor tensor) {
    this.tensor = tensor;
  }

  public static EValue from(Tensor tensor) {
    return new EValue(tensor);
  }

  public boolean isTensor() {
    return tensor != null;
  }

  public Tensor toTensor() {
    if (tensor == null) throw new IllegalStateException("EValue is not a Tensor");
    return tensor;
  }
}
