import CoreML
import Foundation
import MobileDiffKit
import SwiftUI

/// The app's state: one pipeline over the bundle shipped in the app, the user's settings (defaulted from the
/// manifest's plan), the last image and its per-component timings. Generation runs off the main actor.
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

    var prompt = "a red circle at the top left on a blue background"
    var seed = 0
    var steps = 4
    var guidance = 1.0
    var sampler = "ddim"
    var computeUnits = ComputeChoice.neuralEngine
    /// Unload every model after use (lower peak memory, slower repeats), as apple's `reduceMemory`.
    var reduceMemory = false

    var image: CGImage?
    var timings: [(String, Double)] = []
    var status = "Loading bundle…"
    var isBusy = false
    var modelsLoaded = false
    var availableSteps: [Int] = []

    private var pipeline: Pipeline? { engine?.pipeline }
    private var engine: Engine?
    private let bundleURL = Bundle.main.url(forResource: "Bundle", withExtension: nil)

    func open() {
        guard let bundleURL else {
            status = "No bundle in the app: export one to ios_demo/App/Resources/Bundle (see README)"
            return
        }
        do {
            let pipeline = try Pipeline(bundle: bundleURL, backend: CoreMLBackend(computeUnits: computeUnits.units),
                                        reduceMemory: reduceMemory)
            let plan = Pipeline.Configuration.defaults(for: pipeline.manifest)
            sampler = plan.sampler
            steps = plan.steps
            guidance = plan.guidanceScale
            availableSteps = pipeline.manifest.samplers.filter { $0.name == plan.sampler }.map(\.steps).sorted()
            engine = Engine(pipeline: pipeline)
            status = "Ready: \(plan.sampler), \(plan.steps) steps, guidance \(plan.guidanceScale)"
        } catch {
            status = "\(error)"
        }
    }

    /// Re-opens the pipeline with other compute units (Core ML models are bound to them at load).
    func changeComputeUnits() {
        pipeline?.unloadResources()
        modelsLoaded = false
        open()
    }

    func load() {
        guard let engine else { return }
        run("Loading models…") {
            try engine.pipeline.loadResources()
            return nil
        }
    }

    func unload() {
        pipeline?.unloadResources()
        modelsLoaded = false
        status = "Models unloaded"
    }

    func generate() {
        guard let engine else { return }
        engine.pipeline.reduceMemory = reduceMemory
        let configuration = Pipeline.Configuration(prompt: prompt, seed: UInt64(seed), sampler: sampler, steps: steps,
                                                   guidanceScale: guidance)
        run("Generating…") { try engine.pipeline.generate(configuration) }
    }

    private func run(_ message: String, _ work: @escaping @Sendable () throws -> Pipeline.Result?) {
        isBusy = true
        status = message
        Task.detached(priority: .userInitiated) {
            let outcome = Result { try work() }
            await MainActor.run {
                self.isBusy = false
                switch outcome {
                case .success(let result?):
                    self.image = result.image.cgImage
                    self.timings = result.timer.milliseconds.sorted { $0.key < $1.key }.map { ($0.key, $0.value) }
                    self.status = String(format: "%.0f ms", result.timer.totalMilliseconds)
                    self.modelsLoaded = !self.reduceMemory
                case .success(nil):
                    self.modelsLoaded = true
                    self.status = "Models loaded"
                case .failure(let error):
                    self.status = "\(error)"
                }
            }
        }
    }
}

/// Hands the pipeline to the background task. @unchecked: the UI runs one task at a time (every button is
/// disabled while `isBusy`), so the pipeline is never used from two threads at once.
private final class Engine: @unchecked Sendable {
    let pipeline: Pipeline
    init(pipeline: Pipeline) { self.pipeline = pipeline }
}
