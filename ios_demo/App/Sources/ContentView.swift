import MobileDiffKit
import PhotosUI
import SwiftUI
import UIKit
import UniformTypeIdentifiers

struct ContentView: View {
    @State private var model = GeneratorModel()
    @State private var pickedPhoto: PhotosPickerItem?

    var body: some View {
        NavigationStack {
            Form {
                bundleSection
                promptSection
                if !model.imageModes.isEmpty { imageSection }
                if !model.adapters.isEmpty { adapterSection }
                runtimeSection
                generateSection
                if let image = model.image { resultSection(image) }
            }
            .navigationTitle("MobileDiff")
            .task { model.start() }
            .fileImporter(isPresented: $model.isImporting, allowedContentTypes: [.folder], allowsMultipleSelection: false) {
                model.importPicked($0)
            }
            .onReceive(NotificationCenter.default.publisher(for: UIApplication.didReceiveMemoryWarningNotification)) { _ in
                model.memoryWarning()
            }
        }
    }

    private var bundleSection: some View {
        Section("Bundle") {
            if !model.bundles.isEmpty {
                Picker("Bundle", selection: Binding(get: { model.selectedBundle }, set: { url in if let url { model.open(url) } })) {
                    ForEach(model.bundles) { Text($0.title).tag(Optional($0.url)) }
                }
            }
            Button("Import a bundle from Files…") { model.isImporting = true }
                .disabled(model.isBusy)
        }
    }

    private var promptSection: some View {
        Section("Prompt") {
            TextField("Prompt", text: $model.prompt, axis: .vertical)
            HStack {
                Stepper("Seed: \(model.seed)", value: $model.seed, in: 0...Int(Int32.max))
                Button { model.seed = Int.random(in: 0...Int(Int32.max)) } label: { Image(systemName: "dice") }
                    .buttonStyle(.borderless)
            }
            if model.samplers.count > 1 {
                Picker("Sampler", selection: $model.sampler) {
                    ForEach(model.samplers, id: \.self) { Text($0).tag($0) }
                }
                .onChange(of: model.sampler) { model.samplerChanged() }
            }
            Picker("Steps", selection: $model.steps) {
                ForEach(model.availableSteps, id: \.self) { Text("\($0)").tag($0) }
            }
            HStack {
                Text("Guidance")
                Slider(value: $model.guidance, in: 0...max(10, model.guidance), step: 0.5)
                Text(String(format: "%.1f", model.guidance)).monospacedDigit()
            }
        }
    }

    private var runtimeSection: some View {
        Section {
            Picker("Runtime", selection: $model.backend) {
                ForEach(model.backends) { Text($0.displayName).tag($0) }
            }
            .onChange(of: model.backend) { model.runtimeChanged() }
            if model.backend == .coreml {
                Picker("Compute units", selection: $model.computeUnits) {
                    ForEach(GeneratorModel.ComputeChoice.allCases) { Text($0.rawValue).tag($0) }
                }
                .onChange(of: model.computeUnits) { model.runtimeChanged() }
            }
            Toggle("Unload models after use", isOn: $model.reduceMemory)
            HStack {
                Button("Load models") { model.load() }.disabled(model.isBusy || model.modelsLoaded)
                Spacer()
                Button("Unload") { model.unload() }.disabled(model.isBusy || !model.modelsLoaded)
            }
            .buttonStyle(.borderless)
        } header: {
            Text("Runtime")
        } footer: {
            Text(model.memoryText)
        }
    }

    private var generateSection: some View {
        Section {
            if model.isBusy, let progress = model.progress {
                ProgressView(value: progress.fraction) {
                    Text(progressText(progress))
                }
                Button("Cancel", role: .cancel) { model.cancel() }
            } else {
                Button(action: model.generate) {
                    Label("Generate", systemImage: "wand.and.stars").frame(maxWidth: .infinity)
                }
                .disabled(model.isBusy || model.selectedBundle == nil || !model.canGenerate)
            }
            Text(model.status).font(.footnote).foregroundStyle(.secondary)
        }
    }

    /// Image-to-image and inpainting (bundles exported with --image-modes): a photo from the library, the strength,
    /// and for inpainting a mask drawn over the photo with the brush.
    private var imageSection: some View {
        Section {
            PhotosPicker(model.initImage == nil ? "Start from a photo…" : "Another photo…", selection: $pickedPhoto, matching: .images)
                .onChange(of: pickedPhoto) { model.pickImage(pickedPhoto) }
                .disabled(model.isBusy)
            if let image = model.initImage {
                MaskCanvas(image: image, strokes: $model.maskStrokes, radius: model.brushRadius,
                           drawing: model.imageModes.contains("inpaint") && !model.isBusy)
                HStack {
                    Text("Strength")
                    Slider(value: $model.strength, in: 0.05...1, step: 0.05)
                    Text(String(format: "%.2f", model.strength)).monospacedDigit()
                }
                if model.imageModes.contains("inpaint") {
                    HStack {
                        Text("Brush")
                        Slider(value: $model.brushRadius, in: 0.01...0.25)
                        Button("Clear mask") { model.clearMask() }.disabled(model.maskStrokes.isEmpty)
                    }
                    .buttonStyle(.borderless)
                }
                Button("Remove the photo", role: .destructive) {
                    model.clearImage()
                    pickedPhoto = nil
                }
                .buttonStyle(.borderless)
            }
        } header: {
            Text(model.inpaintingOnly ? "Inpaint a photo" : "Start from an image")
        } footer: {
            Text(model.inpaintingOnly && model.maskStrokes.isEmpty
                 ? "This bundle's denoiser is an inpainting model: it repaints what you draw over a photo (no text-to-image, no image-to-image)."
                 : model.initImage == nil
                 ? "Generate from a photo (scaled and cropped to the bundle's size)."
                 : model.maskStrokes.isEmpty
                 ? "Image-to-image: \(Int((model.strength * Double(model.steps)).rounded(.down))) of \(model.steps) steps over the photo.\(model.imageModes.contains("inpaint") ? " Draw over the photo to repaint only there." : "")"
                 : "Inpainting: only the painted region is repainted.")
        }
    }

    /// Run-time LoRA adapters (bundles exported with --runtime-lora): each on or off with its scale, applied to the
    /// next generation without reloading the model; those on mix in the bundle's order.
    private var adapterSection: some View {
        Section {
            ForEach($model.adapters) { $adapter in
                VStack(alignment: .leading) {
                    Toggle(isOn: $adapter.enabled) {
                        VStack(alignment: .leading) {
                            Text(adapter.name)
                            Text("rank \(adapter.rank) · \(adapter.components.joined(separator: ", "))")
                                .font(.caption).foregroundStyle(.secondary)
                        }
                    }
                    HStack {
                        Text("Scale")
                        Slider(value: $adapter.scale, in: adapter.range, step: 0.05)
                        Text(String(format: "%.2f", adapter.scale)).monospacedDigit()
                    }
                    .disabled(!adapter.enabled)
                }
            }
            .disabled(model.isBusy)
        } header: {
            Text("Adapters (LoRA)")
        } footer: {
            Text("Applied to the next image without reloading the model. Adapters on together mix in this order, as far as the bundle's rank slots go.")
        }
    }

    private func resultSection(_ image: CGImage) -> some View {
        Section("Image") {
            Image(decorative: image, scale: 1)
                .interpolation(.none)
                .resizable()
                .aspectRatio(contentMode: .fit)
            HStack {
                if let file = model.imageFile {
                    ShareLink(item: file, preview: SharePreview("MobileDiff image", image: Image(decorative: image, scale: 1)))
                }
                Spacer()
                Button("Save to Photos", systemImage: "square.and.arrow.down") { model.saveToPhotos() }
            }
            .buttonStyle(.borderless)
            ForEach(model.timings, id: \.0) { name, ms in
                LabeledContent(name, value: String(format: "%.1f ms", ms))
            }
        }
    }

    private func progressText(_ progress: Pipeline.Progress) -> String {
        switch progress.stage {
        case .textEncoded: return "Prompt encoded"
        case .denoised: return "Step \(progress.step) of \(progress.steps)"
        case .decoded: return "Decoded"
        }
    }
}
