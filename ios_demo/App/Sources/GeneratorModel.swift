import CoreML
import Foundation
import MobileDiffKit
import PhotosUI
import SwiftUI
import UIKit

/// The app's state. The logic lives in MobileDiffKit, where the Linux tests reach it: the bundle library
/// (`BundleLibrary`: imports from the document picker), the runtime choice (`BackendKind`: what the bundle has files
/// for and this build holds), the plan (`Pipeline.Configuration.defaults`: the manifest's `default_sampling`), progress
/// and cancellation (`Pipeline.generate`), lazy loading and release under memory pressure (`ManagedModel`) and the
/// peak memory (`MemoryFootprint`), the init image and mask of image-to-image and inpainting (`ImageInput`,
/// `MaskBrush`), the run-time adapters (`Pipeline.setAdapters`: the mix switched before each generation, no model
/// reloaded). Generation runs off the main actor; every published change happens on it.
@MainActor
@Observable
final class GeneratorModel {
    enum ComputeChoice: String, CaseIterable, Identifiable {
        case neuralEngine = "CPU + Neural Engine", gpu = "CPU + GPU", cpu = "CPU only", all = "All"
        var id: String { rawValue }
        var units: MLComputeUnits {
            switch self {
            case .neuralEngine: return .cpuAndNeuralEngine
            case .gpu: return .cpuAndGPU
            case .cpu: return .cpuOnly
            case .all: return .all
            }
        }
    }

    /// One run-time LoRA adapter of the bundle (the manifest's `adapters.files`): on or off, and its scale.
    struct AdapterSetting: Identifiable, Hashable {
        let name: String
        /// The components it adapts ("text_encoder", "unet").
        let components: [String]
        let rank: Int
        /// The manifest's `default_scale`: where the slider starts.
        let defaultScale: Double
        var enabled = false
        var scale: Double
        var id: String { name }

        /// The slider's range: 0 to 1.5, widened to the default scale where that is larger.
        var range: ClosedRange<Double> { 0...max(1.5, defaultScale) }
    }

    /// A bundle the app can open: the one packaged in the app or one imported into its library.
    struct BundleEntry: Identifiable, Hashable {
        let url: URL
        let title: String
        let packaged: Bool
        var id: URL { url }
    }

    // the bundle and the runtime
    var bundles: [BundleEntry] = []
    var selectedBundle: URL?
    var backends: [BackendKind] = []
    var backend: BackendKind = .coreml
    var computeUnits = ComputeChoice.neuralEngine
    /// Unload every model after its part of a generation (lower peak memory, slower repeats); switched on by a
    /// memory warning.
    var reduceMemory = false
    var isImporting = false

    // the plan, prefilled from the manifest's default_sampling
    var prompt = "a red circle at the top left on a blue background"
    var seed = 0
    var samplers: [String] = []
    var sampler = "ddim"
    var availableSteps: [Int] = []
    var steps = 4
    var guidance = 1.0

    // image-to-image and inpainting, for bundles exported with --image-modes
    /// The bundle's image modes ("img2img", "inpaint"); empty: text-to-image only.
    var imageModes: [String] = []
    /// The bundle's denoiser is an inpainting UNet (`image.denoiser` "inpainting"): it runs inpainting alone, so the
    /// text-to-image and image-to-image paths are off (Generate needs a photo and a mask).
    var inpaintingOnly = false
    /// The picked photo, scaled and centre-cropped to the bundle's size (the engine never resizes), and its pixels.
    var initImage: CGImage?
    private var initRGB: [UInt8]?
    /// How much of the sampling runs over the image, in (0, 1].
    var strength = Pipeline.ImageCondition.defaultStrength(inpainting: false)
    /// The mask drawn over the image (repaint under the brush); none: image-to-image.
    var maskStrokes: [MaskStroke] = []
    /// The brush's radius, as a fraction of the image's width.
    var brushRadius = 0.06

    // run-time LoRA adapters (bundles exported with --runtime-lora): applied to the next generation
    var adapters: [AdapterSetting] = []

    // a generation and its outcome
    var status = "Choose a bundle"
    var isBusy = false
    var progress: Pipeline.Progress?
    var image: CGImage?
    /// The last image as a PNG file in the app's temporary folder (what ShareLink shares).
    var imageFile: URL?
    var timings: [(String, Double)] = []
    var peakMemory: UInt64?
    var memoryNow: UInt64?
    var memoryWarnings = 0
    var modelsLoaded = false

    private var engine: Engine?
    private var cancelFlag = CancelFlag()
    private let library = try? BundleLibrary.applicationSupport()
    /// A bundle exported into App/Resources/Bundle before the build (see ../README.md), shipped inside the app.
    private let packagedBundle = Bundle.main.url(forResource: "Bundle", withExtension: nil)

    var manifest: BundleManifest? { engine?.pipeline.manifest }

    // MARK: bundles

    func start() {
        refreshBundles()
        if selectedBundle == nil, let first = bundles.first { open(first.url) }
        if bundles.isEmpty { status = "No bundle yet: import one (a folder made by `mobilediff export`)" }
        memoryNow = MemoryFootprint.current()
    }

    func refreshBundles() {
        var entries: [BundleEntry] = []
        if let packagedBundle, FileManager.default.fileExists(atPath: packagedBundle.appendingPathComponent("manifest.json").path) {
            entries.append(BundleEntry(url: packagedBundle, title: "In the app", packaged: true))
        }
        for url in library?.bundles() ?? [] {
            entries.append(BundleEntry(url: url, title: url.lastPathComponent, packaged: false))
        }
        bundles = entries
    }

    /// The document picker's answer: the picked folder is copied into the app's library (off the main actor: a
    /// bundle can be gigabytes), then opened.
    func importPicked(_ picked: Result<[URL], Error>) {
        switch picked {
        case .failure(let error):
            status = "\(error.localizedDescription)"
        case .success(let urls):
            guard let source = urls.first, let library else { return }
            isBusy = true
            status = "Importing \(source.lastPathComponent)…"
            Task.detached(priority: .userInitiated) {
                let outcome = Result { try library.importBundle(from: source, securityScoped: true) }
                await MainActor.run {
                    self.isBusy = false
                    switch outcome {
                    case .success(let url):
                        self.refreshBundles()
                        self.open(url)
                    case .failure(let error):
                        self.status = "Not imported: \(error.localizedDescription)"
                    }
                }
            }
        }
    }

    /// Opens a bundle: its runtimes, its plan, a pipeline whose models load when first used.
    func open(_ url: URL) {
        engine?.pipeline.unloadResources()
        engine = nil
        modelsLoaded = false
        selectedBundle = url
        do {
            let manifest = try MobileDiffBundle(url: url).manifest
            backends = BackendKind.available(for: manifest)
            guard let chosen = BackendKind.choose(for: manifest, preferred: backend) else {
                status = BackendKind.unavailableReason(for: manifest)
                return
            }
            backend = chosen
            let plan = Pipeline.Configuration.defaults(for: manifest)
            samplers = Array(Set(manifest.samplers.map(\.name))).sorted()
            imageModes = manifest.image?.modes ?? []
            inpaintingOnly = manifest.image?.inpaintingDenoiser ?? false
            strength = Pipeline.ImageCondition.defaultStrength(inpainting: inpaintingOnly)
            adapters = (manifest.adapters?.files ?? []).map {
                AdapterSetting(name: $0.name, components: $0.components, rank: $0.rank, defaultScale: $0.defaultScale,
                               scale: $0.defaultScale)
            }
            clearImage()
            sampler = plan.sampler
            steps = plan.steps
            guidance = plan.guidanceScale
            seed = 0
            updateSteps(for: manifest)
            try makePipeline(url)
            status = "Ready: \(plan.sampler), \(plan.steps) steps, guidance \(plan.guidanceScale) on \(backend.displayName)"
                + (inpaintingOnly ? "; an inpainting model: pick a photo and draw over what to repaint" : "")
        } catch {
            status = "\(error)"
        }
    }

    private func makePipeline(_ url: URL) throws {
        var options = BackendKind.Options()
        options.computeUnits = computeUnits.units
        let pipeline = try Pipeline(bundle: url, backend: try backend.makeBackend(options), reduceMemory: reduceMemory)
        engine = Engine(pipeline: pipeline)
    }

    /// A new runtime or compute units: the pipeline is made again (models are bound to them at load).
    func runtimeChanged() {
        guard let url = selectedBundle else { return }
        engine?.pipeline.unloadResources()
        modelsLoaded = false
        do {
            try makePipeline(url)
            status = "Ready on \(backend.displayName)"
        } catch {
            status = "\(error)"
        }
    }

    func samplerChanged() {
        guard let manifest else { return }
        updateSteps(for: manifest)
    }

    private func updateSteps(for manifest: BundleManifest) {
        availableSteps = manifest.samplers.filter { $0.name == sampler }.map(\.steps).sorted()
        if !availableSteps.contains(steps) { steps = availableSteps.first ?? steps }
    }

    // MARK: generation

    func load() {
        guard let engine else { return }
        isBusy = true
        status = "Loading models…"
        Task.detached(priority: .userInitiated) {
            let outcome = Result { try engine.pipeline.loadResources() }
            await MainActor.run {
                self.isBusy = false
                self.memoryNow = MemoryFootprint.current()
                switch outcome {
                case .success:
                    self.modelsLoaded = true
                    let seconds = engine.pipeline.models.map(\.lastLoadSeconds).reduce(0, +)
                    self.status = String(format: "Models loaded in %.1f s", seconds)
                case .failure(let error):
                    self.status = "\(error)"
                }
            }
        }
    }

    func unload() {
        engine?.pipeline.unloadResources()
        modelsLoaded = false
        memoryNow = MemoryFootprint.current()
        status = "Models unloaded"
    }

    /// The adapters switched on, in the bundle's order (each fills the next rank slots).
    var adapterMix: [AdapterChoice] {
        adapters.filter(\.enabled).map { AdapterChoice($0.name, scale: $0.scale) }
    }

    /// Whether Generate can run what is set: an inpainting UNet's bundle needs a photo and a drawn mask (its
    /// text-to-image and image-to-image paths are off); any other bundle runs text-to-image at least.
    var canGenerate: Bool { !inpaintingOnly || (initImage != nil && !maskStrokes.isEmpty) }

    func generate() {
        guard let engine else { return }
        guard canGenerate else {
            status = BundleManifest.inpaintingOnly
            return
        }
        engine.pipeline.reduceMemory = reduceMemory
        let mix = adapterMix
        var configuration = Pipeline.Configuration(prompt: prompt, seed: UInt64(seed), sampler: sampler, steps: steps,
                                                   guidanceScale: guidance)
        do {
            configuration.image = try imageCondition(engine.pipeline.manifest.geometry)
        } catch {
            status = "\(error)"
            return
        }
        let cancel = CancelFlag()
        cancelFlag = cancel
        isBusy = true
        progress = nil
        status = "Generating…"
        Task.detached(priority: .userInitiated) {
            let outcome = Result { () throws -> Pipeline.Result in
                // the mix for this generation: the vectors repacked (each file checked and read once), nothing reloaded
                try engine.pipeline.setAdapters(mix)
                return try engine.pipeline.generate(configuration, progress: { step in
                    Task { @MainActor in
                        self.progress = step
                        self.memoryNow = step.memoryBytes
                    }
                }, isCancelled: { cancel.isSet })
            }
            let png = try? outcome.get().image.cgImage.flatMap { UIImage(cgImage: $0).pngData() }
            await MainActor.run { self.finish(outcome, png: png) }
        }
    }

    // MARK: image-to-image and inpainting

    /// The photo picked in the library: scaled to cover the bundle's size and centre-cropped (its orientation
    /// applied), off the main actor.
    func pickImage(_ item: PhotosPickerItem?) {
        guard let item, let geometry = manifest?.geometry else { return }
        status = "Loading the photo…"
        Task {
            do {
                guard let data = try await item.loadTransferable(type: Data.self) else {
                    status = "The photo could not be read"
                    return
                }
                let fitted = try await Task.detached(priority: .userInitiated) {
                    try PickedImage.fitted(data, width: geometry.width, height: geometry.height)
                }.value
                initImage = fitted.cgImage
                initRGB = fitted.rgb
                maskStrokes = []
                status = inpaintingOnly
                    ? "Inpainting at strength \(String(format: "%.2f", strength)): draw over what to repaint"
                    : "Image-to-image at strength \(String(format: "%.2f", strength))\(imageModes.contains("inpaint") ? "; draw over what to repaint" : "")"
            } catch {
                status = "\(error)"
            }
        }
    }

    func clearImage() {
        initImage = nil
        initRGB = nil
        maskStrokes = []
    }

    func clearMask() { maskStrokes = [] }

    /// The picked image and drawn mask as the pipeline takes them; nil without an image.
    private func imageCondition(_ geometry: BundleManifest.Geometry) throws -> Pipeline.ImageCondition? {
        guard let initRGB else { return nil }
        let pixels = ImageInput.pixels(rgb: initRGB, height: geometry.height, width: geometry.width)
        guard !maskStrokes.isEmpty else { return Pipeline.ImageCondition(pixels: pixels, strength: strength) }
        let gray = MaskBrush.rasterize(maskStrokes, width: geometry.width, height: geometry.height)
        let mask = try ImageInput.latentMask(gray: gray, height: geometry.height, width: geometry.width,
                                             factor: geometry.pixelsPerLatent, name: "The drawn mask")
        return Pipeline.ImageCondition(pixels: pixels, mask: mask, strength: strength)
    }

    func cancel() {
        cancelFlag.set()
        status = "Cancelling…"
    }

    private func finish(_ outcome: Result<Pipeline.Result, Error>, png: Data?) {
        isBusy = false
        progress = nil
        memoryNow = MemoryFootprint.current()
        switch outcome {
        case .success(let result):
            image = result.image.cgImage
            timings = result.timer.milliseconds.sorted { $0.key < $1.key }.map { ($0.key, $0.value) }
            peakMemory = result.peakMemoryBytes
            modelsLoaded = engine?.pipeline.models.contains(where: \.isLoaded) ?? false
            let mix = engine?.pipeline.adapters.mix ?? []
            let from = (result.configuration.image.map { String(format: ", %@ at strength %.2f", $0.mode, $0.strength) } ?? "")
                + (mix.isEmpty ? "" : ", " + mix.map(\.description).joined(separator: " + "))
            status = String(format: "%.0f ms (%@-%ld, seed %ld%@)", result.timer.totalMilliseconds, sampler, steps, seed, from)
            imageFile = nil
            if let png {
                let url = FileManager.default.temporaryDirectory.appendingPathComponent("mobilediff-seed\(seed).png")
                if (try? png.write(to: url, options: .atomic)) != nil { imageFile = url }
            }
        case .failure(let error as MobileDiffError) where error == .cancelled:
            status = "Cancelled"
        case .failure(let error):
            status = "\(error)"
        }
    }

    func saveToPhotos() {
        guard let image else { return }
        UIImageWriteToSavedPhotosAlbum(UIImage(cgImage: image), nil, nil, nil)
        status = "Saved to Photos"
    }

    // MARK: memory

    /// UIApplication.didReceiveMemoryWarningNotification: every model is released (one in a call right now as soon
    /// as the call returns; the generation loads again what it still needs) and later generations unload each
    /// model after its part.
    func memoryWarning() {
        memoryWarnings += 1
        reduceMemory = true
        if let engine {
            Task.detached(priority: .userInitiated) { engine.pipeline.unloadResources() }
        }
        modelsLoaded = false
        memoryNow = MemoryFootprint.current()
        status = "Memory warning: models released; unloading after use from now on"
    }

    var memoryText: String {
        let format = { (bytes: UInt64) in ByteCountFormatter.string(fromByteCount: Int64(bytes), countStyle: .memory) }
        var parts: [String] = []
        if let memoryNow { parts.append("now \(format(memoryNow))") }
        if let peakMemory { parts.append("peak \(format(peakMemory)) in the last generation") }
        if memoryWarnings > 0 { parts.append("\(memoryWarnings) memory warning\(memoryWarnings == 1 ? "" : "s")") }
        return parts.joined(separator: " · ")
    }
}

/// Hands the pipeline to background tasks. @unchecked: the UI runs one generation or load at a time (the buttons
/// are disabled while `isBusy`); the one call that may come from elsewhere, `unloadResources`, is thread-safe.
final class Engine: @unchecked Sendable {
    let pipeline: Pipeline
    init(pipeline: Pipeline) { self.pipeline = pipeline }
}

/// Set on the main actor (Cancel), read by the generation between model calls.
final class CancelFlag: @unchecked Sendable {
    private let lock = NSLock()
    private var value = false
    var isSet: Bool { lock.withLock { value } }
    func set() { lock.withLock { value = true } }
}
