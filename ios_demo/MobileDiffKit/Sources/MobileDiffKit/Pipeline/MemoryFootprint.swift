import Foundation
#if canImport(Darwin)
import Darwin
#endif

/// The process's memory as the platform accounts it, for the app's display and the generation record.
///
/// | platform | `current`                                   | `peak`                                              |
/// |----------|---------------------------------------------|-----------------------------------------------------|
/// | Apple    | `task_info(TASK_VM_INFO).phys_footprint`: what Xcode's memory gauge shows and the system's memory limit counts | the largest `current` the caller sampled (`MemoryFootprint.Tracker`) |
/// | Linux    | `VmRSS` of /proc/self/status                | `VmHWM` of /proc/self/status (the kernel's high-water mark, reset by `resetPeak`) |
public enum MemoryFootprint {
    /// The process's footprint now, in bytes; nil where it cannot be read.
    public static func current() -> UInt64? {
        #if canImport(Darwin)
        var info = task_vm_info_data_t()
        var count = mach_msg_type_number_t(MemoryLayout<task_vm_info_data_t>.size / MemoryLayout<natural_t>.size)
        let status = withUnsafeMutablePointer(to: &info) {
            $0.withMemoryRebound(to: integer_t.self, capacity: Int(count)) {
                task_info(mach_task_self_, task_flavor_t(TASK_VM_INFO), $0, &count)
            }
        }
        return status == KERN_SUCCESS ? UInt64(info.phys_footprint) : nil
        #else
        return procStatus("VmRSS")
        #endif
    }

    /// The kernel's record of the process's peak resident memory since start or the last `resetPeak()` (Linux);
    /// nil where the platform keeps none the process can reset (Apple: sample `current()` instead).
    public static func kernelPeak() -> UInt64? {
        #if canImport(Darwin)
        return nil
        #else
        return procStatus("VmHWM")
        #endif
    }

    /// Starts a new peak: on Linux, writing 5 to /proc/self/clear_refs resets VmHWM to the current RSS
    /// (process-wide). Returns whether the kernel's peak was reset.
    @discardableResult
    public static func resetPeak() -> Bool {
        #if canImport(Darwin)
        return false
        #else
        guard let handle = FileHandle(forWritingAtPath: "/proc/self/clear_refs") else { return false }
        defer { try? handle.close() }
        do { try handle.write(contentsOf: Data("5".utf8)) } catch { return false }
        resets.withLock { $0 = true }
        return true
        #endif
    }

    /// Whether `resetPeak()` ever succeeded in this process (then the kernel's peak no longer counts from its start).
    public static var wasReset: Bool { resets.withLock { $0 } }
    private static let resets = LockedFlag()

    private final class LockedFlag: @unchecked Sendable {
        private let lock = NSLock()
        private var value = false
        func withLock<T>(_ body: (inout Bool) -> T) -> T {
            lock.lock()
            defer { lock.unlock() }
            return body(&value)
        }
    }

    /// A field of /proc/self/status in bytes ("VmHWM:   123456 kB").
    static func procStatus(_ field: String) -> UInt64? {
        guard let text = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8) else { return nil }
        for line in text.split(separator: "\n") where line.hasPrefix(field + ":") {
            let parts = line.split(whereSeparator: { $0 == " " || $0 == "\t" })
            guard parts.count >= 2, let kilobytes = UInt64(parts[1]) else { return nil }
            return kilobytes * 1024
        }
        return nil
    }

    /// The peak over one piece of work: the kernel's high-water mark where the platform keeps a resettable one,
    /// else the largest of the samples taken (at every stage and sampler step of a generation). Without a reset
    /// (`resetPeak` false) the kernel's mark counts from the process's start (`scope` "process"), or from the last
    /// reset where one was made ("last_reset").
    public struct Tracker: Sendable {
        public private(set) var sampledPeak: UInt64 = 0
        private let kernelReset: Bool
        private let sinceProcessStart: Bool
        private let earlierReset: Bool

        /// Starts tracking (resets the kernel's peak where possible, unless `resetPeak` is false) and takes the
        /// first sample.
        public init(resetPeak: Bool = true) {
            kernelReset = resetPeak && MemoryFootprint.resetPeak()
            sinceProcessStart = !resetPeak && MemoryFootprint.kernelPeak() != nil
            earlierReset = MemoryFootprint.wasReset
            sample()
        }

        public mutating func sample() {
            if let now = MemoryFootprint.current() { sampledPeak = max(sampledPeak, now) }
        }

        /// The peak so far in bytes (0 if nothing could be read).
        public var peak: UInt64 {
            if kernelReset || sinceProcessStart, let kernel = MemoryFootprint.kernelPeak() { return max(kernel, sampledPeak) }
            return sampledPeak
        }

        /// What `peak` covers, for records: "process" (the kernel's mark since the process started), "last_reset"
        /// (since an earlier reset) or "generation" (since the tracker started: the kernel's mark after its reset,
        /// or the samples).
        public var scope: String { sinceProcessStart ? (earlierReset ? "last_reset" : "process") : "generation" }

        /// How `peak` was measured, for records: "VmHWM" or "phys_footprint samples" / "VmRSS samples".
        public var method: String {
            if (kernelReset || sinceProcessStart) && MemoryFootprint.kernelPeak() != nil { return "VmHWM" }
            #if canImport(Darwin)
            return "phys_footprint samples"
            #else
            return "VmRSS samples"
            #endif
        }
    }
}
