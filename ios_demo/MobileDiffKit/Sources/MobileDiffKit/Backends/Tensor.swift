/// A dense, row-major tensor passed between the engine and a backend.
public struct Tensor: Sendable, Equatable {
    public enum Storage: Sendable, Equatable {
        case float32([Float])
        case int32([Int32])
    }

    public var shape: [Int]
    public var storage: Storage

    public init(shape: [Int], floats: [Float]) {
        precondition(shape.reduce(1, *) == floats.count, "shape \(shape) does not hold \(floats.count) elements")
        self.shape = shape
        self.storage = .float32(floats)
    }

    public init(shape: [Int], ints: [Int32]) {
        precondition(shape.reduce(1, *) == ints.count, "shape \(shape) does not hold \(ints.count) elements")
        self.shape = shape
        self.storage = .int32(ints)
    }

    public var count: Int { shape.reduce(1, *) }

    /// The elements as Float (int32 elements converted).
    public var floats: [Float] {
        switch storage {
        case .float32(let values): return values
        case .int32(let values): return values.map(Float.init)
        }
    }
}
