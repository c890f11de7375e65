import Foundation

/// A bundle folder on disk: its manifest and verified access to its files.
public struct MobileDiffBundle: Sendable {
    public let url: URL
    public let manifest: BundleManifest

    /// Reads and checks the manifest (see `BundleManifest.load`); files are checked when they are opened.
    public init(url: URL) throws {
        self.url = url
        self.manifest = try BundleManifest.load(bundle: url)
    }

    /// The file entry of `component` for `target` (e.g. "onnx", "coreml"), preferring `precision` if given.
    public func file(component name: String, target: String, precision: String? = nil) throws -> BundleManifest.ComponentFile {
        let component = try manifest.component(name)
        let candidates = component.files.filter { $0.target == target && (precision == nil || $0.precision == precision) }
        guard let entry = candidates.first else {
            throw MobileDiffError.componentUnavailable(component: name, target: target,
                                                       available: component.files.map { "\($0.target)/\($0.precision)" })
        }
        return entry
    }

    /// The URL of a component file after checking that it and its external data files exist and match their
    /// sha256 (`fileMissing`, `checksumMismatch`).
    public func verifiedURL(of entry: BundleManifest.ComponentFile) throws -> URL {
        let parts = [(entry.path, entry.sha256)] + (entry.externalData ?? []).map { ($0.path, $0.sha256) }
        for (path, sha) in parts {
            try FileChecks.verify(url.appendingPathComponent(path), sha256: sha)
        }
        return url.appendingPathComponent(entry.path)
    }

    /// The tokenizer folder after checking that every tokenizer file the manifest lists exists.
    public func tokenizerURL() throws -> URL {
        for file in manifest.tokenizer.files where !FileManager.default.fileExists(atPath: url.appendingPathComponent(file).path) {
            throw MobileDiffError.fileMissing(path: url.appendingPathComponent(file).path)
        }
        return url.appendingPathComponent("tokenizer")
    }
}
