import Foundation

/// The bundles an app keeps in its own container: copies of bundle folders the user picked (the document picker
/// hands out security-scoped URLs that stop working after the session), one folder each under `root`.
///
/// An import reads the source's manifest and checks its tokenizer files before anything is copied (a folder that is
/// not a bundle is refused with the engine's error), copies the folder into a temporary sibling of its destination
/// and renames it into place, so the library never holds half a bundle. Component files are checked against their
/// sha256 when they are first loaded (`ManagedModel`), not here: hashing gigabytes at import would block the app.
public struct BundleLibrary: Sendable {
    public let root: URL

    public init(root: URL) {
        self.root = root
    }

    /// The library in the app's Application Support folder ("Bundles").
    public static func applicationSupport() throws -> BundleLibrary {
        let support = try FileManager.default.url(for: .applicationSupportDirectory, in: .userDomainMask,
                                                  appropriateFor: nil, create: true)
        return BundleLibrary(root: support.appendingPathComponent("Bundles", isDirectory: true))
    }

    /// The imported bundles (folders holding manifest.json), sorted by name.
    public func bundles() -> [URL] {
        let fm = FileManager.default
        guard let names = try? fm.contentsOfDirectory(atPath: root.path) else { return [] }
        return names.sorted()
            .filter { !$0.hasPrefix(".") }
            .map { root.appendingPathComponent($0, isDirectory: true) }
            .filter { fm.fileExists(atPath: $0.appendingPathComponent("manifest.json").path) }
    }

    /// Copies the bundle folder at `source` into the library as `name` (default: the folder's own name), replacing
    /// an earlier import of that name, and returns the copy's URL.
    /// - Parameter securityScoped: `source` came from the document picker: access is requested for the copy.
    /// - Throws: the engine's error for a folder that is not a readable bundle (`bundleNotFound`,
    ///   `invalidManifest`, ...; tokenizer files `fileMissing` / `checksumMismatch`); `invalidArgument` for a name
    ///   that is not a plain folder name; the file system's errors.
    @discardableResult
    public func importBundle(from source: URL, name: String? = nil, securityScoped: Bool = false) throws -> URL {
        #if canImport(Darwin)
        let accessing = securityScoped && source.startAccessingSecurityScopedResource()
        defer { if accessing { source.stopAccessingSecurityScopedResource() } }
        #endif
        let bundle = try MobileDiffBundle(url: source)
        _ = try bundle.tokenizerURL()
        let folder = name ?? source.standardizedFileURL.lastPathComponent
        guard !folder.isEmpty, folder != ".", folder != "..", !folder.hasPrefix("."), !folder.contains("/") else {
            throw MobileDiffError.invalidArgument("cannot import a bundle as '\(folder)': a library name is a plain folder name")
        }
        let fm = FileManager.default
        try fm.createDirectory(at: root, withIntermediateDirectories: true)
        let destination = root.appendingPathComponent(folder, isDirectory: true)
        let staging = root.appendingPathComponent(".importing-\(UUID().uuidString)", isDirectory: true)
        do {
            try fm.copyItem(at: source, to: staging)
            // the copy must read as the source did (a folder whose manifest vanished mid-copy is refused here)
            _ = try MobileDiffBundle(url: staging)
            if fm.fileExists(atPath: destination.path) {
                let old = root.appendingPathComponent(".replaced-\(UUID().uuidString)", isDirectory: true)
                try fm.moveItem(at: destination, to: old)
                try fm.moveItem(at: staging, to: destination)
                try? fm.removeItem(at: old)
            } else {
                try fm.moveItem(at: staging, to: destination)
            }
        } catch {
            try? fm.removeItem(at: staging)
            throw error
        }
        return destination
    }

    /// Deletes an imported bundle.
    public func remove(_ bundle: URL) throws {
        guard bundle.deletingLastPathComponent().standardizedFileURL.path == root.standardizedFileURL.path else {
            throw MobileDiffError.invalidArgument("\(bundle.path) is not in the bundle library \(root.path)")
        }
        try FileManager.default.removeItem(at: bundle)
    }
}
