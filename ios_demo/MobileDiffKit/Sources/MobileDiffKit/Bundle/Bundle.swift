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

    /// The file `backend` runs for `component`: the precision is `precision`, else that of the component's first
    /// file for the backend's own `target` (else of its first file for any of the backend's targets); of the files
    /// in that precision, the one whose target comes first in `backend.fileTargets`. For ONNX Runtime this picks a
    /// component's `ort` file (ONNX Runtime's mobile format, written beside each `.onnx`) when the bundle has one,
    /// else its `onnx` file.
    public func file(component name: String, for backend: any InferenceBackend,
                     precision: String? = nil) throws -> BundleManifest.ComponentFile {
        let component = try manifest.component(name)
        let runnable = component.files.filter { backend.fileTargets.contains($0.target) }
        let chosenPrecision = precision
            ?? component.files.first(where: { $0.target == backend.target })?.precision
            ?? runnable.first?.precision
        for target in backend.fileTargets {
            if let entry = runnable.first(where: { $0.target == target && $0.precision == chosenPrecision }) { return entry }
        }
        // a backend limited to one format names that one ("no ort file"), else its own target ("no onnx file")
        let wanted = backend.fileTargets.count == 1 ? backend.fileTargets[0] : backend.target
        throw MobileDiffError.componentUnavailable(component: name, target: wanted,
                                                   available: component.files.map { "\($0.target)/\($0.precision)" })
    }

    /// Whether `backend` finds a file for every component a pipeline opens (in `precision`, if given).
    public func runs(on backend: any InferenceBackend, precision: String? = nil) -> Bool {
        manifest.pipelineComponents.allSatisfy { (try? file(component: $0, for: backend, precision: precision)) != nil }
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
