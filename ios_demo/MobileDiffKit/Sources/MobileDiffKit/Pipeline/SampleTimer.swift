import Foundation

/// Wall-clock time per component (text encoder, each denoiser call, decoder), summed over a generation.
public struct SampleTimer: Sendable {
    /// Milliseconds per component name.
    public private(set) var milliseconds: [String: Double] = [:]
    /// Calls per component name.
    public private(set) var calls: [String: Int] = [:]

    public init() {}

    /// Runs `body`, adding its duration to `component`.
    public mutating func time<T>(_ component: String, _ body: () throws -> T) rethrows -> T {
        let start = DispatchTime.now().uptimeNanoseconds
        defer {
            let elapsed = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e6
            milliseconds[component, default: 0] += elapsed
            calls[component, default: 0] += 1
        }
        return try body()
    }

    public var totalMilliseconds: Double { milliseconds.values.reduce(0, +) }
}
