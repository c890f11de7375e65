import Foundation

/// One JSON value of a manifest, as the document holds it. NaN and ±Infinity are `number`s, so that the check on
/// their field can name it. Numbers with an integral value are `integer`s: `JSONDecoder` does not tell `4` from
/// `4.0`, so `4.0` reads as an integer here where Python's reader and the Kotlin engine refuse it.
enum ManifestValue: Decodable, Sendable {
    case null
    case bool(Bool)
    case integer(Int)
    case number(Double)
    case string(String)
    case array([ManifestValue])
    case object([String: ManifestValue])

    init(from decoder: any Decoder) throws {
        let c = try decoder.singleValueContainer()
        if c.decodeNil() {
            self = .null
        } else if let value = try? c.decode(Bool.self) {
            self = .bool(value)
        } else if let value = try? c.decode(Int.self) {
            self = .integer(value)
        } else if let value = try? c.decode(Double.self) {
            self = .number(value)
        } else if let value = try? c.decode(String.self) {
            self = .string(value)
        } else if let value = try? c.decode([ManifestValue].self) {
            self = .array(value)
        } else {
            self = .object(try c.decode([String: ManifestValue].self))
        }
    }

    /// The value as an error message shows it: strings quoted, containers by kind, numbers as JSON writes them.
    var described: String {
        switch self {
        case .null: return "null"
        case .bool(let value): return "\(value)"
        case .integer(let value): return "\(value)"
        case .number(let value):
            if value.isNaN { return "NaN" }
            if value.isInfinite { return value < 0 ? "-Infinity" : "Infinity" }
            return "\(value)"
        case .string(let value): return value.debugDescription
        case .array: return "a list"
        case .object: return "an object"
        }
    }

    /// Parses a manifest document. It is read as JSON5, a superset of JSON, for one reason: the NaN and Infinity
    /// literals that Python's json module writes (and reads) then reach the finiteness check of the field holding
    /// them, which names it, instead of failing the whole document as invalid JSON.
    static func parse(_ data: Data, file: String) throws -> ManifestObject {
        let decoder = JSONDecoder()
        decoder.allowsJSON5 = true
        let value: ManifestValue
        do {
            value = try decoder.decode(ManifestValue.self, from: data)
        } catch let DecodingError.dataCorrupted(context) {
            let detail = (context.underlyingError.map { "\($0)" } ?? context.debugDescription)
                .split(whereSeparator: \.isNewline).joined(separator: " ")
            throw MobileDiffError.invalidManifest(path: file, reason: "not valid JSON (\(detail))")
        } catch {
            throw MobileDiffError.invalidManifest(path: file, reason: "not valid JSON (\(error))")
        }
        guard case .object(let fields) = value else {
            throw MobileDiffError.invalidManifest(path: file, reason: "not a JSON object (found \(value.described))")
        }
        return ManifestObject(fields: fields, path: "", file: file)
    }
}

/// One object of a manifest with strictly typed, path-aware access to its fields: a value is taken only as the type
/// the format states, and every failure is one `invalidManifest` naming the field as the manifest spells it
/// (`geometry.latent_height`, `samplers[0].init_noise_sigma`). Fields it is not asked for are ignored.
struct ManifestObject {
    let fields: [String: ManifestValue]
    /// Where this object is in the manifest ("" for the document itself).
    let path: String
    /// The manifest file, for errors.
    let file: String

    /// The manifest's name for `key` of this object.
    func field(_ key: String) -> String { path.isEmpty ? key : "\(path).\(key)" }

    func error(_ field: String, _ problem: String) -> MobileDiffError {
        .invalidManifest(path: file, reason: "field '\(field)': \(problem)")
    }

    /// True when `key` holds a value other than null.
    func has(_ key: String) -> Bool {
        if let value = fields[key], case .null = value { return false }
        return fields[key] != nil
    }

    func value(_ key: String) throws -> ManifestValue {
        guard let value = fields[key] else { throw error(field(key), "missing") }
        if case .null = value { throw error(field(key), "is null") }
        return value
    }

    func object(_ key: String) throws -> ManifestObject { try asObject(value(key), field(key)) }
    func string(_ key: String) throws -> String { try asString(value(key), field(key)) }
    func int(_ key: String) throws -> Int { try asInt(value(key), field(key)) }
    /// A finite number.
    func double(_ key: String) throws -> Double { try asFinite(value(key), field(key)) }
    func objects(_ key: String) throws -> [ManifestObject] { try list(key, asObject) }
    func strings(_ key: String) throws -> [String] { try list(key, asString) }
    func ints(_ key: String) throws -> [Int] { try list(key, asInt) }
    /// A list of finite numbers.
    func doubles(_ key: String) throws -> [Double] { try list(key, asFinite) }
    /// A list of lists of finite numbers (`latent_coef[i][k]`).
    func rows(_ key: String) throws -> [[Double]] { try list(key, asFinites) }

    func int32(_ key: String) throws -> Int32 {
        let value = try int(key)
        guard let narrow = Int32(exactly: value) else { throw error(field(key), "\(value) is out of range") }
        return narrow
    }

    /// `key` as `read` takes it, or nil when it is absent or null.
    func optional<T>(_ key: String, _ read: (String) throws -> T) throws -> T? { has(key) ? try read(key) : nil }
    func optionalObject(_ key: String) throws -> ManifestObject? { try optional(key, object) }
    func optionalString(_ key: String) throws -> String? { try optional(key, string) }
    func optionalInt(_ key: String) throws -> Int? { try optional(key, int) }
    func optionalDouble(_ key: String) throws -> Double? { try optional(key, double) }
    func optionalDoubles(_ key: String) throws -> [Double]? { try optional(key, doubles) }

    /// `key` as `read` takes it, refused naming the field when `problem` finds one in it (a message, else nil).
    func checked<T>(_ key: String, _ read: (String) throws -> T, _ problem: (T) -> String?) throws -> T {
        let value = try read(key)
        if let problem = problem(value) { throw error(field(key), problem) }
        return value
    }

    /// `key` as `read` takes it, a number of at least `minimum`.
    func atLeast<T: Comparable & Numeric>(_ minimum: Int, _ key: String, _ read: (String) throws -> T) throws -> T {
        try checked(key, read) { $0 >= T(exactly: minimum)! ? nil : "must be >= \(minimum), got \($0)" }
    }

    /// The string at `key`, one of `known`; `what` names such a value in the error.
    func oneOf(_ known: [String], _ key: String, _ what: String) throws -> String {
        try checked(key, string) {
            known.contains($0) ? nil : "unknown \(what) \($0.debugDescription) (known: \(known.joined(separator: ", ")))"
        }
    }

    /// The list at `key`, each item taken by `take` at its own path (`key[i]`).
    private func list<T>(_ key: String, _ take: (ManifestValue, String) throws -> T) throws -> [T] {
        try asList(value(key), field(key), take)
    }

    private func asObject(_ value: ManifestValue, _ at: String) throws -> ManifestObject {
        guard case .object(let fields) = value else { throw error(at, "expected an object, got \(value.described)") }
        return ManifestObject(fields: fields, path: at, file: file)
    }

    private func asString(_ value: ManifestValue, _ at: String) throws -> String {
        guard case .string(let string) = value else { throw error(at, "expected a string, got \(value.described)") }
        return string
    }

    private func asInt(_ value: ManifestValue, _ at: String) throws -> Int {
        guard case .integer(let int) = value else { throw error(at, "expected an integer, got \(value.described)") }
        return int
    }

    private func asFinite(_ value: ManifestValue, _ at: String) throws -> Double {
        let number: Double
        switch value {
        case .integer(let int): number = Double(int)
        case .number(let double): number = double
        default: throw error(at, "expected a number, got \(value.described)")
        }
        guard number.isFinite else { throw error(at, "expected a finite number, got \(value.described)") }
        return number
    }

    private func asFinites(_ value: ManifestValue, _ at: String) throws -> [Double] { try asList(value, at, asFinite) }

    private func asList<T>(_ value: ManifestValue, _ at: String, _ take: (ManifestValue, String) throws -> T) throws -> [T] {
        guard case .array(let items) = value else { throw error(at, "expected a list, got \(value.described)") }
        return try items.enumerated().map { try take($1, "\(at)[\($0)]") }
    }
}
