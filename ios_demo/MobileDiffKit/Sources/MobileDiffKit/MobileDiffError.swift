import Foundation

/// Every failure MobileDiffKit reports: one case per kind of problem, each with what was found and what was
/// expected, so an app can show one clear line and a test can match the case.
public enum MobileDiffError: Error, Equatable, Sendable {
    /// The bundle folder does not exist or holds no manifest.json.
    case bundleNotFound(path: String)
    /// manifest.json could not be read as a mobilediff bundle manifest.
    case invalidManifest(path: String, reason: String)
    /// The manifest's format_version is newer than this engine reads (fields are only added, but a new major
    /// version may change meaning): update the app.
    case unsupportedManifestVersion(found: Int, supported: Int)
    /// A file the manifest lists is absent.
    case fileMissing(path: String)
    /// A file's bytes do not hash to the sha256 the manifest records (modified, truncated or corrupt).
    case checksumMismatch(path: String, expected: String, actual: String)
    /// The bundle lacks a component, or a file of that component for the backend's target.
    case componentUnavailable(component: String, target: String, available: [String])
    /// No sampler table for this sampler and step count.
    case samplerUnavailable(sampler: String, steps: Int, available: [String])
    /// An argument outside what the bundle or engine allows.
    case invalidArgument(String)
    /// An init image or mask that image-to-image or inpainting cannot take (missing, not a PNG this engine reads,
    /// transparent, of another size, a mask in colour or marking nothing): the message names it and what it must be.
    case invalidImage(String)
    /// The tokenizer files are missing or malformed.
    case tokenizer(String)
    /// A tensor's shape or element count is not what a component declares.
    case shapeMismatch(name: String, expected: [Int], actual: [Int])
    /// A component file's own inputs or outputs disagree with its component's manifest entry (checked when it is
    /// loaded, before the first call): `reason` names the component and the first difference.
    case graphMismatch(path: String, component: String, reason: String)
    /// The runtime cannot open a component file (not a graph it reads, or a corrupt one whose sha256 was updated).
    case graphUnreadable(path: String, backend: String, message: String)
    /// A NaN or infinity at run time: `path` is the graph whose output held it, or the manifest whose numbers took
    /// the engine's own arithmetic out of float32's range. No image is made of it.
    case nonFinite(path: String, reason: String)
    /// The backend cannot run here (e.g. Core ML on Linux).
    case backendUnavailable(String)
    /// The runtime (ONNX Runtime, Core ML) reported an error.
    case runtime(backend: String, message: String)
    /// Golden vectors or their tensors file could not be read.
    case goldens(String)
    /// A run-time adapter file (`adapters/<name>.safetensors`, the manifest's `adapters` record) that is not what the
    /// record says: not safetensors, a tensor that is not float32, offsets outside its data, a tensor no slot holds,
    /// a shape that does not fit its layer. Checked after its sha256.
    case invalidAdapter(path: String, reason: String)
    /// A mix of run-time adapters the bundle cannot take (`Pipeline.setAdapters`): an adapter it does not hold, a
    /// bundle without adapters, a non-finite scale, a name given twice, more rank than the slots hold.
    case invalidAdapterMix(String)
    /// The caller cancelled a generation (`Pipeline.generate`'s `isCancelled`); no image was made.
    case cancelled
}

extension MobileDiffError: CustomStringConvertible, LocalizedError {
    public var description: String {
        switch self {
        case .bundleNotFound(let path):
            return "bundle not found: \(path) (a bundle folder holds manifest.json)"
        case .invalidManifest(let path, let reason):
            return "\(path) is not a valid mobilediff bundle manifest: \(reason)"
        case .unsupportedManifestVersion(let found, let supported):
            return "the bundle's manifest has format version \(found); this engine reads versions 1...\(supported) (update the app)"
        case .fileMissing(let path):
            return "bundle file missing: \(path)"
        case .checksumMismatch(let path, let expected, let actual):
            return "bundle file \(path) does not match its sha256 in the manifest (expected \(expected), got \(actual))"
        case .componentUnavailable(let component, let target, let available):
            return "bundle has no \(target) file for \(component) (it has: \(available.isEmpty ? "none" : available.joined(separator: ", ")))"
        case .samplerUnavailable(let sampler, let steps, let available):
            return "bundle has no \(sampler) table for \(steps) steps (it has: \(available.joined(separator: ", ")))"
        case .invalidArgument(let message):
            return message
        case .invalidImage(let message):
            return message
        case .tokenizer(let message):
            return "tokenizer: \(message)"
        case .shapeMismatch(let name, let expected, let actual):
            return "\(name): expected shape \(expected), got \(actual)"
        case .graphMismatch(let path, _, let reason):
            return "\(path): \(reason)"
        case .graphUnreadable(let path, let backend, let message):
            return "\(path): \(backend) cannot load it (\(message))"
        case .nonFinite(let path, let reason):
            return "\(path): \(reason)"
        case .backendUnavailable(let message):
            return message
        case .runtime(let backend, let message):
            return "\(backend): \(message)"
        case .goldens(let message):
            return "goldens: \(message)"
        case .invalidAdapter(let path, let reason):
            return "bundle adapter \(path): \(reason)"
        case .invalidAdapterMix(let message):
            return message
        case .cancelled:
            return "generation cancelled"
        }
    }

    public var errorDescription: String? { description }
}
