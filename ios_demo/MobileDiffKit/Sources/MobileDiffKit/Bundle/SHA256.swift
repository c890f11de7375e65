import Foundation
#if canImport(CryptoKit)
import CryptoKit
#elseif canImport(CLibCrypto)
import CLibCrypto
#endif

/// Incremental SHA-256 from the platform's cryptography library: CryptoKit on Apple platforms, the system's
/// libcrypto (OpenSSL's EVP API) elsewhere. Nothing here implements the hash itself.
struct SHA256Digest: ~Copyable {
    #if canImport(CryptoKit)
    private var hasher = CryptoKit.SHA256()
    #elseif canImport(CLibCrypto)
    private let context: OpaquePointer
    #endif

    init() {
        #if !canImport(CryptoKit) && canImport(CLibCrypto)
        context = EVP_MD_CTX_new()!
        EVP_DigestInit_ex(context, EVP_sha256(), nil)
        #endif
    }

    mutating func update(_ bytes: UnsafeRawBufferPointer) {
        guard bytes.count > 0 else { return }
        #if canImport(CryptoKit)
        hasher.update(bufferPointer: bytes)
        #elseif canImport(CLibCrypto)
        EVP_DigestUpdate(context, bytes.baseAddress, bytes.count)
        #endif
    }

    mutating func update(_ data: Data) {
        data.withUnsafeBytes { update($0) }
    }

    /// Lower-case hex digest; consumes the hasher.
    consuming func hexDigest() -> String {
        #if canImport(CryptoKit)
        return hasher.finalize().map { String(format: "%02x", $0) }.joined()
        #elseif canImport(CLibCrypto)
        var out = [UInt8](repeating: 0, count: Int(EVP_MAX_MD_SIZE))
        var length: UInt32 = 0
        EVP_DigestFinal_ex(context, &out, &length)
        return out.prefix(Int(length)).map { String(format: "%02x", $0) }.joined()
        #else
        fatalError("no SHA-256 provider on this platform")
        #endif
    }

    deinit {
        #if !canImport(CryptoKit) && canImport(CLibCrypto)
        EVP_MD_CTX_free(context)
        #endif
    }
}

/// sha256 of bundle files as the manifest defines it (mobilediff/bundle.py `sha256_path`): of a file, the
/// digest of its bytes; of a directory (an `.mlpackage`), the digest over its files sorted by relative path,
/// each contributing its relative path's UTF-8 bytes and then its bytes.
public enum FileChecks {
    public static func sha256(of url: URL) throws -> String {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: url.path, isDirectory: &isDirectory) else {
            throw MobileDiffError.fileMissing(path: url.path)
        }
        var digest = SHA256Digest()
        if isDirectory.boolValue {
            for relative in try regularFiles(under: url) {
                digest.update(Data(relative.utf8))
                try stream(url.appendingPathComponent(relative), into: &digest)
            }
        } else {
            try stream(url, into: &digest)
        }
        return digest.hexDigest()
    }

    /// Throws `fileMissing` or `checksumMismatch` unless the file (or directory) at `url` hashes to `expected`.
    public static func verify(_ url: URL, sha256 expected: String) throws {
        let actual = try sha256(of: url)
        guard actual == expected.lowercased() else {
            throw MobileDiffError.checksumMismatch(path: url.path, expected: expected, actual: actual)
        }
    }

    /// Relative paths of the regular files under `root`, in the order Python's `sorted()` gives their `Path`s:
    /// component by component, each compared by code point (= UTF-8 byte order).
    static func regularFiles(under root: URL) throws -> [String] {
        guard let enumerator = FileManager.default.enumerator(atPath: root.path) else {
            throw MobileDiffError.fileMissing(path: root.path)
        }
        var files: [String] = []
        while let relative = enumerator.nextObject() as? String {
            var isDirectory: ObjCBool = false
            if FileManager.default.fileExists(atPath: root.appendingPathComponent(relative).path, isDirectory: &isDirectory),
               !isDirectory.boolValue {
                files.append(relative)
            }
        }
        func parts(_ path: String) -> [[UInt8]] { path.split(separator: "/").map { Array($0.utf8) } }
        return files.sorted { parts($0).lexicographicallyPrecedes(parts($1)) { $0.lexicographicallyPrecedes($1) } }
    }

    private static func stream(_ url: URL, into digest: inout SHA256Digest) throws {
        guard let handle = FileHandle(forReadingAtPath: url.path) else { throw MobileDiffError.fileMissing(path: url.path) }
        defer { try? handle.close() }
        while true {
            let block = handle.readData(ofLength: 1 << 20)
            if block.isEmpty { break }
            digest.update(block)
        }
    }
}
