import SwiftUI

struct ContentView: View {
    @State private var model = GeneratorModel()

    var body: some View {
        NavigationStack {
            Form {
                Section("Prompt") {
                    TextField("Prompt", text: $model.prompt, axis: .vertical)
                    Stepper("Seed: \(model.seed)", value: $model.seed, in: 0...Int(Int32.max))
                    Picker("Steps", selection: $model.steps) {
                        ForEach(model.availableSteps, id: \.self) { Text("\($0)").tag($0) }
                    }
                    HStack {
                        Text("Guidance")
                        Slider(value: $model.guidance, in: 0...10, step: 0.5)
                        Text(String(format: "%.1f", model.guidance)).monospacedDigit()
                    }
                }
                Section("Runtime") {
                    Picker("Compute units", selection: $model.computeUnits) {
                        ForEach(GeneratorModel.ComputeChoice.allCases) { Text($0.rawValue).tag($0) }
                    }
                    .onChange(of: model.computeUnits) { model.changeComputeUnits() }
                    Toggle("Unload models after use", isOn: $model.reduceMemory)
                    HStack {
                        Button("Load models") { model.load() }.disabled(model.isBusy || model.modelsLoaded)
                        Spacer()
                        Button("Unload") { model.unload() }.disabled(model.isBusy || !model.modelsLoaded)
                    }
                }
                Section {
                    Button(action: model.generate) {
                        Label("Generate", systemImage: "wand.and.stars").frame(maxWidth: .infinity)
                    }
                    .disabled(model.isBusy)
                    Text(model.status).font(.footnote).foregroundStyle(.secondary)
                }
                if let image = model.image {
                    Section("Image") {
                        Image(decorative: image, scale: 1)
                            .interpolation(.none)
                            .resizable()
                            .aspectRatio(contentMode: .fit)
                        ForEach(model.timings, id: \.0) { name, ms in
                            LabeledContent(name, value: String(format: "%.1f ms", ms))
                        }
                    }
                }
            }
            .navigationTitle("MobileDiff")
            .task { model.open() }
        }
    }
}
