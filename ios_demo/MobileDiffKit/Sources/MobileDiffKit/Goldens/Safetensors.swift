import Foundation

/// Reads a safetensors file: an 8-byte little-endian header length, a JSON header
/// `{name: {dtype, shape, data_offsets: [begin, end]}}` (offsets relative to the end of the header), then the
/// raw little-endian data. Supports the dtypes the goldens use: F32, I32, U8 (and I64, read as Int32 values).
public struct SafetensorsFile: Sendable {
    public struct Entry: Sendable {
        public var dtype: String
        public var shape: [Int]
        public var range: Range<Int>
    }

    public let entries: [String: Entry]
    private let data: Data
    private let dataStart: Int

    public init(url: URL) throws {
        guard let data = try? Data(contentsOf: url) else { throw MobileDiffError.fileMissing(path: url.path) }
        guard data.count >= 8 else { throw MobileDiffError.goldens("\(url.path) is too short for safetensors") }
        let length = data.prefix(8).enumerated().reduce(0) { $0 | (Int($1.element) << (8 * $1.offset)) }
        guard 8 + length <= data.count,
              let header = try? JSONSerialization.jsonObject(with: data.subdata(in: 8..<(8 + length))) as? [String: Any] else {
            throw MobileDiffError.goldens("\(url.path) has no valid safetensors header")
        }
        var entries: [String: Entry] = [:]
        for (name, value) in header where name != "__metadata__" {
            guard let info = value as? [String: Any], let dtype = info["dtype"] as? String,
                  let shape = info["shape"] as? [Int], let offsets = info["data_offsets"] as? [Int], offsets.count == 2 else {
                throw MobileDiffError.goldens("\(url.path): malformed entry \(name)")
            }
            entries[name] = Entry(dtype: dtype, shape: shape, range: offsets[0]..<offsets[1])
        }
        self.entries = entries
        self.data = data
        self.dataStart = 8 + length
    }

    private func entry(_ name: String) throws -> Entry {
        guard let entry = entries[name] else { throw MobileDiffError.goldens("no tensor named \(name)") }
        return entry
    }

    private func bytes(_ entry: Entry) -> Data {
        data.subdata(in: (dataStart + entry.range.lowerBound)..<(dataStart + entry.range.upperBound))
    }

    /// A tensor as Float values (F32 as is; I32, I64 and U8 converted) with its shape.
    public func tensor(_ name: String) throws -> Tensor {
        let entry = try entry(name)
        let raw = bytes(entry)
        switch entry.dtype {
        case "F32":
            return Tensor(shape: entry.shape, floats: SafetensorsFile.words(raw, UInt32.self).map { Float(bitPattern: UInt32(littleEndian: $0)) })
        case "I32":
            return Tensor(shape: entry.shape, ints: SafetensorsFile.words(raw, UInt32.self).map { Int32(bitPattern: UInt32(littleEndian: $0)) })
        case "I64":
            return Tensor(shape: entry.shape, ints: SafetensorsFile.words(raw, UInt64.self).map { Int32(truncatingIfNeeded: Int64(bitPattern: UInt64(littleEndian: $0))) })
        case "U8":
            return Tensor(shape: entry.shape, floats: [UInt8](raw).map(Float.init))
        default:
            throw MobileDiffError.goldens("tensor \(name) has dtype \(entry.dtype); the engine reads F32, I32, I64, U8")
        }
    }

    /// The bytes reinterpreted as fixed-width words (copied, so the source's alignment does not matter).
    private static func words<T: FixedWidthInteger>(_ raw: Data, _ type: T.Type) -> [T] {
        var out = [T](repeating: 0, count: raw.count / MemoryLayout<T>.size)
        _ = out.withUnsafeMutableBytes { raw.copyBytes(to: $0) }
        return out
    }

    /// A U8 tensor's bytes.
    public func bytes(_ name: String) throws -> [UInt8] {
        let entry = try entry(name)
        guard entry.dtype == "U8" else { throw MobileDiffError.goldens("tensor \(name) is \(entry.dtype), not U8") }
        return [UInt8](bytes(entry))
    }
}
