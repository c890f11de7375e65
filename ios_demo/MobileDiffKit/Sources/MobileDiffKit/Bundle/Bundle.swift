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

    /// The tokenizer folder after checking that every tokenizer file the manifest lists exists and, where the
    /// manifest records one (`tokenizer.file_sha256`), matches its sha256 (`fileMissing`, `checksumMismatch`).
    public func tokenizerURL() throws -> URL {
        for file in manifest.tokenizer.files {
            let fileURL = url.appendingPathComponent(file)
            if let sha256 = manifest.tokenizer.fileSha256[file] {
                try FileChecks.verify(fileURL, sha256: sha256)
            } else if !FileManager.default.fileExists(atPath: fileURL.path) {
                throw MobileDiffError.fileMissing(path: fileURL.path)
            }
        }
        return url.appendingPathComponent("tokenizer")
    }
}
