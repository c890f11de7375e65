// mobilediff-engine: the iOS engine's command line (the contract both app engines implement; see
// notes/apps_contract.md and ../../README.md). Wrapped by ios_demo/scripts/engine.sh, which runs it inside the
// Linux toolchain's chroot.
//
//   generate --bundle B --backend onnx|coreml|executorch --prompt P --seed S [--steps N] [--guidance G] [--sampler NAME]
//            [--threads T] [--warmup N (untimed runs first, default 1)] [--repeats N (timed runs; the median is
//            reported, default 1)] [--onnx-format auto|ort|onnx (ONNX Runtime: auto runs a component's .ort file
//            where the bundle lists one, else its .onnx)] [--low-memory (each model loaded when its turn comes and
//            unloaded after its part, ONNX Runtime without its arena: the same image, a lower peak; every run loads
//            the models again)] [--init-image IMG.png (image-to-image from this 8-bit PNG at the bundle's size) [--mask
//            MASK.png (inpainting: grayscale, >= 128 repainted)] [--strength S (in (0, 1]; default 0.75 for
//            image-to-image, 1 for inpainting)]] [--lora NAME[:SCALE] (repeatable: switch on the bundle's run-time
//            adapter NAME at SCALE, default 1; several mix in the order given)] --out IMG.png --json RESULT.json
//   RESULT.json's mode is txt2img, img2img or inpaint, strength null for txt2img; adapters [[name, scale], ...].
//   A bundle whose denoiser is an inpainting UNet (image.denoiser "inpainting") runs only with --init-image and
//   --mask: text-to-image and image-to-image on it are refused in one line.
//   RESULT.json's peak_memory_bytes is VmHWM since the process started (peak_memory_scope "process" on Linux):
//   the engine, every load and every run; load_ms: the load before the runs, or (--low-memory) the loads inside the
//   reported run.
//   check-goldens --bundle B --goldens DIR --backend onnx [--model NAME] --json ROWS.json
//
// Errors follow the Python CLI's convention: bad input (a bad bundle, option or prompt, a path that cannot be
// written) prints exactly one line `error: ...` on stderr and exits 2; a runtime that fails while running a graph
// prints one line and exits 1, as does a failed check row.
import Foundation
import MobileDiffKit

struct UsageError: Error, CustomStringConvertible {
    var description: String
}

let usage = """
    usage: mobilediff-engine generate --bundle B --backend onnx|coreml|executorch --prompt P --seed S [--steps N] [--guidance G]
                                      [--sampler NAME] [--threads T] [--warmup N] [--repeats N]
                                      [--onnx-format auto|ort|onnx] [--low-memory]
                                      [--init-image IMG.png [--mask MASK.png] [--strength S]] [--lora NAME[:SCALE]]...
                                      --out IMG.png --json RESULT.json
           mobilediff-engine check-goldens --bundle B --goldens DIR --backend onnx [--model NAME] --json ROWS.json
    """

/// The options of a command: every value given for each name, in order.
struct Options {
    var values: [String: [String]] = [:]

    /// The value of `--name` (the last one where it is given twice), or nil.
    subscript(_ name: String) -> String? { values[name]?.last }

    /// Every value of a repeatable `--name`, in the order given.
    func all(_ name: String) -> [String] { values[name] ?? [] }
}

/// `--name value` pairs, each name one of `allowed`, and `--name` switches, each one of `switches` (their value in
/// the result is "1").
func parseOptions(_ arguments: ArraySlice<String>, allowed: Set<String>, switches: Set<String> = []) throws -> Options {
    var options = Options()
    var rest = arguments
    while let flag = rest.popFirst() {
        let name = String(flag.dropFirst(2))
        guard flag.hasPrefix("--"), allowed.contains(name) || switches.contains(name) else {
            throw UsageError(description: "unknown option \(flag) (allowed: \(allowed.union(switches).sorted().map { "--" + $0 }.joined(separator: " ")))")
        }
        if switches.contains(name) {
            options.values[name, default: []].append("1")
            continue
        }
        guard let value = rest.popFirst() else { throw UsageError(description: "\(flag) needs a value") }
        options.values[name, default: []].append(value)
    }
    return options
}

func required(_ options: Options, _ name: String) throws -> String {
    guard let value = options[name] else { throw UsageError(description: "missing --\(name)") }
    return value
}

func number<T: LosslessStringConvertible>(_ options: Options, _ name: String, as: T.Type) throws -> T? {
    guard let text = options[name] else { return nil }
    guard let value = T(text) else { throw UsageError(description: "--\(name) must be a number, got \(text)") }
    return value
}

func makeBackend(_ name: String, threads: Int, onnxFormat: String) throws -> any InferenceBackend {
    let formats: [String]
    switch onnxFormat {
    case "auto": formats = ["ort", "onnx"]
    case "ort", "onnx": formats = [onnxFormat]
    default: throw UsageError(description: "--onnx-format must be auto, ort or onnx, got \(onnxFormat)")
    }
    switch name {
    case "onnx":
        #if canImport(COnnxRuntime)
        return try ONNXRuntimeBackend(intraOpThreads: threads, formats: formats)
        #else
        throw MobileDiffError.backendUnavailable("this build has no ONNX Runtime (COnnxRuntime module)")
        #endif
    case "coreml":
        #if canImport(CoreML)
        return CoreMLBackend()
        #else
        throw MobileDiffError.backendUnavailable("Core ML runs on Apple platforms only")
        #endif
    case "executorch":
        // iOS builds hold ExecutorchLib.xcframework, Linux builds the executorch wheel's host runtime where it was laid
        // out; elsewhere this is `backendUnavailable`
        return try BackendKind.executorch.makeBackend()
    default:
        throw UsageError(description: "unknown backend \(name) (onnx, coreml, executorch)")
    }
}

/// JSON text for plain values; non-finite numbers are written as Python's json module writes them
/// (Infinity, -Infinity, NaN), so `json.load` reads a perfect match back as inf.
func json(_ value: Any, indent: String = "") -> String {
    let inner = indent + "  "
    switch value {
    case let dictionary as [String: Any]:
        if dictionary.isEmpty { return "{}" }
        let items = dictionary.keys.sorted().map { "\(inner)\(json($0)): \(json(dictionary[$0]!, indent: inner))" }
        return "{\n" + items.joined(separator: ",\n") + "\n\(indent)}"
    case let array as [Any]:
        if array.isEmpty { return "[]" }
        return "[\n" + array.map { inner + json($0, indent: inner) }.joined(separator: ",\n") + "\n\(indent)]"
    case let string as String:
        var out = "\""
        for scalar in string.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\t": out += "\\t"
            case "\r": out += "\\r"
            default:
                if scalar.value < 0x20 { out += String(format: "\\u%04x", scalar.value) } else { out.unicodeScalars.append(scalar) }
            }
        }
        return out + "\""
    case let flag as Bool:
        return flag ? "true" : "false"
    case let integer as Int:
        return String(integer)
    case let integer as UInt64:
        return String(integer)
    case let real as Double:
        if real.isNaN { return "NaN" }
        if real.isInfinite { return real > 0 ? "Infinity" : "-Infinity" }
        return "\(real)"
    case is NSNull:
        return "null"
    default:
        return json("\(value)")
    }
}

func write(_ value: Any, to path: String) throws {
    try (json(value) + "\n").write(toFile: path, atomically: true, encoding: .utf8)
}

func generate(_ options: Options) throws {
    let bundle = URL(fileURLWithPath: try required(options, "bundle"))
    let out = try required(options, "out")
    let resultPath = try required(options, "json")
    let prompt = try required(options, "prompt")
    try Prompts.check(prompt, label: "--prompt")
    let backend = try makeBackend(try required(options, "backend"), threads: try number(options, "threads", as: Int.self) ?? 0,
                                  onnxFormat: options["onnx-format"] ?? "auto")
    let lowMemory = options["low-memory"] != nil
    let pipeline = try Pipeline(bundle: bundle, backend: backend, lowMemory: lowMemory)
    // the peak since the process started, as the Android engine reports it: the loads and every run included
    pipeline.peakPerGeneration = false
    var configuration = Pipeline.Configuration.defaults(for: pipeline.manifest, prompt: prompt,
                                                        seed: try number(options, "seed", as: UInt64.self) ?? 0)
    if let sampler = options["sampler"] { configuration.sampler = sampler }
    if let steps = try number(options, "steps", as: Int.self) { configuration.steps = steps }
    if let guidance = try number(options, "guidance", as: Double.self) { configuration.guidanceScale = guidance }
    configuration.image = try imageCondition(options, manifest: pipeline.manifest)
    // refused before any model loads: a mode the bundle does not run (an inpainting UNet's: inpainting only), a
    // strength that leaves no step
    try configuration.validate(against: pipeline.manifest)
    // the run-time adapters: switched on before any model loads (files checked, vectors packed)
    let mix = try options.all("lora").map(AdapterChoice.parse)
    try pipeline.setAdapters(mix)

    // resident: every model loaded before the runs; low-memory: each generation loads what it needs when it needs it
    let loadStart = Date()
    if !lowMemory { try pipeline.loadResources() }
    let residentLoadMs = Date().timeIntervalSince(loadStart) * 1000
    // untimed warm-up runs: a session's first calls include one-off allocations (ONNX Runtime's arenas)
    let warmups = try number(options, "warmup", as: Int.self) ?? 1
    for _ in 0..<max(warmups, 0) { _ = try pipeline.generate(configuration) }
    // timed runs: the median one is reported (every run gives the same image)
    let repeats = max(try number(options, "repeats", as: Int.self) ?? 1, 1)
    let runs = try (0..<repeats).map { _ in try pipeline.generate(configuration) }
    let result = runs.sorted { $0.timer.totalMilliseconds < $1.timer.totalMilliseconds }[repeats / 2]
    let loadMs = lowMemory ? result.loadMilliseconds.values.reduce(0, +) : residentLoadMs

    try PNGWriter.write(result.image, to: URL(fileURLWithPath: out))
    let rawPath = (out as NSString).deletingPathExtension + "_raw.f32"
    var raw = result.rawImage.map { $0.bitPattern.littleEndian }
    try Data(bytes: &raw, count: raw.count * 4).write(to: URL(fileURLWithPath: rawPath), options: .atomic)
    let record: [String: Any] = [
        "ms_total": result.timer.totalMilliseconds,
        "ms": result.timer.milliseconds.mapValues { $0 as Any },
        "calls": result.timer.calls.mapValues { $0 as Any },
        "load_ms": loadMs,
        "warmup_runs": max(warmups, 0),
        "repeats": repeats,
        "ms_total_runs": runs.map { $0.timer.totalMilliseconds },
        "steps": configuration.steps,
        "sampler": configuration.sampler,
        "mode": configuration.mode,
        "strength": configuration.image.map { $0.strength as Any } ?? NSNull(),
        "init_image": options["init-image"] ?? NSNull(),
        "mask": options["mask"] ?? NSNull(),
        "guidance": configuration.guidanceScale,
        "adapters": mix.map { [$0.name, $0.scale] as [Any] },
        "seed": configuration.seed,
        "prompt": configuration.prompt,
        "backend": backend.target,
        "runtime": backend.runtimeDescription,
        // the file each component ran from (ONNX Runtime: model.ort where the bundle lists one)
        "files": Dictionary(uniqueKeysWithValues: (pipeline.models + (configuration.image == nil ? [] : [pipeline.imageEncoder?.model].compactMap { $0 }))
            .map { ($0.component, ["target": $0.file.target, "path": $0.file.path, "precision": $0.file.precision] as [String: Any]) }),
        "low_memory": lowMemory,
        "peak_memory_bytes": Int(runs.map(\.peakMemoryBytes).max() ?? 0),
        "peak_memory_method": result.peakMemoryMethod,
        "peak_memory_scope": result.peakMemoryScope,
        "image": out,
        "image_raw": rawPath,
        "image_raw_shape": [result.image.height, result.image.width, 3],
    ]
    try write(record, to: resultPath)
    let from = (configuration.image.map { String(format: " %@ strength %g", $0.mode, $0.strength) } ?? "")
        + (mix.isEmpty ? "" : " adapters " + mix.map(\.description).joined(separator: " + "))
    print(String(format: "%@: %@-%d guidance %g seed %llu%@ in %.0f ms (load %.0f ms)", out, configuration.sampler,
                 configuration.steps, configuration.guidanceScale, configuration.seed, from, result.timer.totalMilliseconds, loadMs))
}

/// `--init-image`, `--mask` and `--strength` as the pipeline takes them, read and checked before any model loads
/// (Python's `generate` rules: a mask or a strength needs an init image; the strength defaults to 0.75 for
/// image-to-image and 1 for inpainting).
func imageCondition(_ options: Options, manifest: BundleManifest) throws -> Pipeline.ImageCondition? {
    let strength = try number(options, "strength", as: Double.self)
    guard let initImage = options["init-image"] else {
        if options["mask"] != nil { throw UsageError(description: "--mask needs --init-image: a mask marks what to repaint of an image") }
        if strength != nil { throw UsageError(description: "--strength needs --init-image: the strength is how far the image is noised") }
        return nil
    }
    if let strength, !(strength > 0 && strength <= 1) {
        throw UsageError(description: "--strength must be in (0, 1], got \(String(format: "%g", strength))")
    }
    let g = manifest.geometry
    let pixels = try ImageInput.readImage(URL(fileURLWithPath: initImage), height: g.height, width: g.width)
    let mask = try options["mask"].map {
        try ImageInput.readMask(URL(fileURLWithPath: $0), height: g.height, width: g.width, factor: g.pixelsPerLatent)
    }
    return Pipeline.ImageCondition(pixels: pixels, mask: mask,
                                   strength: strength ?? Pipeline.ImageCondition.defaultStrength(inpainting: mask != nil))
}

func checkGoldens(_ options: Options) throws {
    let bundle = URL(fileURLWithPath: try required(options, "bundle"))
    let goldens = try Goldens(directory: URL(fileURLWithPath: try required(options, "goldens")))
    let backend = try required(options, "backend")
    let model = try options["model"] ?? BundleManifest.load(bundle: bundle).model?.name ?? bundle.deletingLastPathComponent().lastPathComponent
    let rows = try GoldenChecks(bundle: bundle, goldens: goldens, model: model, backend: backend).all()
    try write(rows.map { $0.dictionary }, to: try required(options, "json"))
    for row in rows {
        print("\(row.passed ? "PASS" : "FAIL") \(row.check) \(row.model) seed=\(row.seed.map(String.init) ?? "-") psnr=\(row.psnrDB) dB max_abs=\(row.maxAbsError) \(row.detail)")
    }
    if rows.contains(where: { !$0.passed }) { exit(1) }
}

/// The command line's arguments from the bytes it was given: `CommandLine.arguments` repairs invalid UTF-8 with
/// U+FFFD, which would silently turn a prompt into another prompt; the value of `--prompt` is refused instead, as
/// Python refuses it.
func rawArguments() throws -> [String] {
    var out: [String] = []
    for i in 1..<Int(CommandLine.argc) {
        guard let pointer = CommandLine.unsafeArgv[i] else { continue }
        let bytes = UnsafeRawBufferPointer(start: pointer, count: strlen(pointer))
        out.append(out.last == "--prompt" ? try Prompts.decodeUTF8(bytes, label: "--prompt") : String(decoding: bytes, as: UTF8.self))
    }
    return out
}

/// Prints `error: <message>` as one line on stderr and exits with `status` (2: bad input).
func fail(_ message: String, status: Int32) -> Never {
    let line = message.split(whereSeparator: \.isNewline).map { $0.trimmingCharacters(in: .whitespaces) }
        .filter { !$0.isEmpty }.joined(separator: " ")
    FileHandle.standardError.write(Data("error: \(line)\n".utf8))
    exit(status)
}

do {
    let arguments = try rawArguments()
    switch arguments.first {
    case "generate":
        try generate(try parseOptions(arguments.dropFirst(), allowed: ["bundle", "backend", "prompt", "seed", "steps", "guidance", "sampler", "threads", "warmup", "repeats", "onnx-format",
                                                                     "init-image", "mask", "strength", "lora", "out", "json"],
                                      switches: ["low-memory"]))
    case "check-goldens":
        try checkGoldens(try parseOptions(arguments.dropFirst(), allowed: ["bundle", "goldens", "backend", "model", "json"]))
    case "-h", "--help", "help":
        print(usage)
    case nil:
        throw UsageError(description: "a command is required: generate or check-goldens (--help for usage)")
    case let command?:
        throw UsageError(description: "unknown command '\(command)': generate or check-goldens (--help for usage)")
    }
} catch let error as UsageError {
    fail(error.description, status: 2)
} catch let error as MobileDiffError {
    // a runtime failing inside a call is not the input's fault; every other case is a bad bundle or argument
    if case .runtime = error { fail(error.description, status: 1) }
    fail(error.description, status: 2)
} catch let error as CocoaError {
    // a path the user gave: missing, unwritable, a file where a folder belongs, a full disk
    fail((error.filePath.map { "\($0): " } ?? "") + error.localizedDescription, status: 2)
} catch {
    fail("\(error)", status: 1)
}
