import Foundation
@testable import MobileDiffKit

/// A complete bundle small enough to write in a test, so that the engine's checks run without the fixtures: three
/// ONNX graphs of a few hundred bytes written here (`ONNXWriter`), the repository's CLIP tokenizer files, one `ddim:1`
/// table, geometry 4 x 4 with a (1, 3, 4, 4) latent and an 8-token text. The graphs:
///
///     text_encoder  input_ids (batch, 8) int32 -> last_hidden_state (batch, 8, 1) float32, zeros
///     unet          sample (batch, 3, 4, 4), timestep (batch), encoder_hidden_states (batch, 8, 1) -> out_sample = sample * unetScale
///     vae_decoder   latent_sample (batch, 3, 4, 4) -> sample = latent_sample * decoderScale
///
/// so the image is `unetScale * decoderScale * noise` (clamped). `edit` changes the manifest after every sha256 is
/// recorded in it. The Kotlin engine's tests write the same bundle (android_demo/core/src/test/.../TinyBundle.kt).
///
/// `masked`: a format-2 bundle whose text encoder and denoiser take the caption's padding mask, as a transformer
/// bundle's do (`tokenizer.kind` "clip-bpe"):
///
///     text_encoder  input_ids (batch, 8) int32, attention_mask (batch, 8) int32 -> last_hidden_state = attention_mask (batch, 8, 1) float32
///     unet          sample, timestep, encoder_hidden_states, encoder_attention_mask (batch, 8) float32
///                   -> out_sample = sample * unetScale + maskWeight * Σ encoder_attention_mask (over the 8 tokens, per row)
///
/// so each denoiser row's output moves by `maskWeight` times the ones of the mask fed to that row.
enum TinyBundle {
    static let maxLength = 8
    static let maskWeight: Float = 0.05

    static func write(unetScale: Float = 0.5, decoderScale: Float = 1, masked: Bool = false,
                      edit: (inout [String: Any], URL) throws -> Void = { _, _ in }) throws -> URL {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("tiny-bundle-\(UUID().uuidString)")
        let fm = FileManager.default
        try fm.createDirectory(at: dir.appendingPathComponent("tokenizer"), withIntermediateDirectories: true)
        let tokenizer = try ContractTests.repository().appendingPathComponent("mobilediff/assets/default_model/tokenizer")
        var tokenizerFiles: [String] = []
        var tokenizerSums: [String: Any] = [:]
        for name in ["vocab.json", "merges.txt"] {
            try fm.copyItem(at: tokenizer.appendingPathComponent(name), to: dir.appendingPathComponent("tokenizer/\(name)"))
            tokenizerFiles.append("tokenizer/\(name)")
            tokenizerSums["tokenizer/\(name)"] = try FileChecks.sha256(of: dir.appendingPathComponent("tokenizer/\(name)"))
        }
        let L = maxLength
        var graphs: [(String, Data)] = [
            ("text_encoder", ONNXWriter.model(
                inputs: [.init("input_ids", ONNXWriter.int32, ["batch", L])],
                outputs: [.init("last_hidden_state", ONNXWriter.float, ["batch", L, 1])],
                nodes: [.init("Cast", ["input_ids"], ["ids"], ints: ["to": Int64(ONNXWriter.float)]),
                        .init("Mul", ["ids", "zero"], ["zeros"]),
                        .init("Unsqueeze", ["zeros", "axes"], ["last_hidden_state"])],
                floats: ["zero": 0], int64Vectors: ["axes": [2]])),
            ("unet", ONNXWriter.model(
                inputs: [.init("sample", ONNXWriter.float, ["batch", 3, 4, 4]), .init("timestep", ONNXWriter.float, ["batch"]),
                         .init("encoder_hidden_states", ONNXWriter.float, ["batch", L, 1])],
                outputs: [.init("out_sample", ONNXWriter.float, ["batch", 3, 4, 4])],
                nodes: [.init("Mul", ["sample", "scale"], ["out_sample"])],
                floats: ["scale": unetScale])),
            ("vae_decoder", ONNXWriter.model(
                inputs: [.init("latent_sample", ONNXWriter.float, ["batch", 3, 4, 4])],
                outputs: [.init("sample", ONNXWriter.float, ["batch", 3, 4, 4])],
                nodes: [.init("Mul", ["latent_sample", "scale"], ["sample"])],
                floats: ["scale": decoderScale])),
        ]
        func io(_ name: String, _ dtype: String, _ dims: [Int]) -> [String: Any] {
            ["name": name, "dtype": dtype, "shape": (["batch"] as [Any]) + dims.dropFirst().map { $0 as Any }, "static_shape": dims]
        }
        var ios: [String: ([[String: Any]], [[String: Any]])] = [
            "text_encoder": ([io("input_ids", "int32", [1, L])], [io("last_hidden_state", "float32", [1, L, 1])]),
            "unet": ([io("sample", "float32", [1, 3, 4, 4]), io("timestep", "float32", [1]), io("encoder_hidden_states", "float32", [1, L, 1])],
                     [io("out_sample", "float32", [1, 3, 4, 4])]),
            "vae_decoder": ([io("latent_sample", "float32", [1, 3, 4, 4])], [io("sample", "float32", [1, 3, 4, 4])]),
        ]
        if masked {
            graphs[0].1 = ONNXWriter.model(
                inputs: [.init("input_ids", ONNXWriter.int32, ["batch", L]), .init("attention_mask", ONNXWriter.int32, ["batch", L])],
                outputs: [.init("last_hidden_state", ONNXWriter.float, ["batch", L, 1])],
                nodes: [.init("Cast", ["input_ids"], ["ids"], ints: ["to": Int64(ONNXWriter.float)]),
                        .init("Mul", ["ids", "zero"], ["zeros"]),
                        .init("Cast", ["attention_mask"], ["mask"], ints: ["to": Int64(ONNXWriter.float)]),
                        .init("Add", ["zeros", "mask"], ["features"]),
                        .init("Unsqueeze", ["features", "axes"], ["last_hidden_state"])],
                floats: ["zero": 0], int64Vectors: ["axes": [2]])
            graphs[1].1 = ONNXWriter.model(
                inputs: [.init("sample", ONNXWriter.float, ["batch", 3, 4, 4]), .init("timestep", ONNXWriter.float, ["batch"]),
                         .init("encoder_hidden_states", ONNXWriter.float, ["batch", L, 1]),
                         .init("encoder_attention_mask", ONNXWriter.float, ["batch", L])],
                outputs: [.init("out_sample", ONNXWriter.float, ["batch", 3, 4, 4])],
                nodes: [.init("Mul", ["sample", "scale"], ["scaled"]),
                        .init("ReduceSum", ["encoder_attention_mask", "token_axis"], ["ones"], ints: ["keepdims": 1]),
                        .init("Unsqueeze", ["ones", "image_axes"], ["ones_4d"]),
                        .init("Mul", ["ones_4d", "weight"], ["shift"]),
                        .init("Add", ["scaled", "shift"], ["out_sample"])],
                floats: ["scale": unetScale, "weight": maskWeight], int64Vectors: ["token_axis": [1], "image_axes": [2, 3]])
            ios["text_encoder"]!.0.append(io("attention_mask", "int32", [1, L]))
            ios["unet"]!.0.append(io("encoder_attention_mask", "float32", [1, L]))
        }
        var components: [String: Any] = [:]
        for (name, graph) in graphs {
            let path = "\(name)/model.onnx"
            try fm.createDirectory(at: dir.appendingPathComponent(name), withIntermediateDirectories: true)
            try graph.write(to: dir.appendingPathComponent(path))
            let file: [String: Any] = ["target": "onnx", "precision": "fp32", "path": path,
                                       "sha256": try FileChecks.sha256(of: dir.appendingPathComponent(path)),
                                       "size_bytes": graph.count, "external_data": [Any](), "export": ["dynamic_dims": ["batch"]]]
            let (inputs, outputs) = ios[name]!
            components[name] = ["inputs": inputs, "outputs": outputs, "dims": ["batch": 1], "files": [file]]
        }
        var manifest: [String: Any] = [
            "format": "mobilediff.bundle", "format_version": 1,
            "geometry": ["height": 4, "width": 4, "latent_channels": 3, "latent_height": 4, "latent_width": 4,
                         "scaling_factor": 1.0, "shift_factor": 0.0],
            "tokenizer": ["files": tokenizerFiles, "max_length": L, "bos_id": 49406, "eos_id": 49407, "pad_id": 49407,
                          "file_sha256": tokenizerSums],
            "components": components,
            "samplers": [["name": "ddim", "steps": 1, "init_noise_sigma": 1.0, "timesteps": [999.0], "input_scale": [1.0],
                          "latent_coef": [[0.0]], "output_coef": [[1.0]], "noise_coef": [0.0]]],
            "guidance": ["type": "classifier_free", "default_scale": 1.0],
            "model": ["role": "teacher"],
            "default_sampling": ["sampler": "ddim", "steps": 1, "guidance": 1.0],
        ]
        if masked {
            manifest["format_version"] = 2
            var tokenizer = manifest["tokenizer"] as! [String: Any]
            tokenizer["kind"] = "clip-bpe"
            manifest["tokenizer"] = tokenizer
        }
        try edit(&manifest, dir)
        try JSONSerialization.data(withJSONObject: manifest, options: [.prettyPrinted, .sortedKeys])
            .write(to: dir.appendingPathComponent("manifest.json"))
        return dir
    }

    /// `manifest["components"][component][key]` replaced by `value` (for `write`'s edit).
    static func set(_ manifest: inout [String: Any], _ component: String, _ key: String, _ value: Any) {
        var components = manifest["components"] as! [String: Any]
        var entry = components[component] as! [String: Any]
        entry[key] = value
        components[component] = entry
        manifest["components"] = components
    }

    /// `manifest["components"][component][key]`.
    static func get(_ manifest: [String: Any], _ component: String, _ key: String) -> Any {
        ((manifest["components"] as! [String: Any])[component] as! [String: Any])[key]!
    }
}

/// ONNX models written as protobuf by hand, enough for the tests' graphs: typed inputs and outputs (a dimension is a
/// size or a named dynamic dimension), nodes with integer attributes, float scalar and int64 vector initializers.
/// Field numbers are onnx.proto's.
enum ONNXWriter {
    static let float = 1
    static let int32 = 6
    static let int64 = 7

    /// A graph input or output: each dimension an Int (fixed) or a String (named, dynamic).
    struct IO {
        var name: String
        var elemType: Int
        var dims: [Any]
        init(_ name: String, _ elemType: Int, _ dims: [Any]) {
            self.name = name
            self.elemType = elemType
            self.dims = dims
        }
    }

    struct Node {
        var op: String
        var inputs: [String]
        var outputs: [String]
        var ints: [String: Int64]
        init(_ op: String, _ inputs: [String], _ outputs: [String], ints: [String: Int64] = [:]) {
            self.op = op
            self.inputs = inputs
            self.outputs = outputs
            self.ints = ints
        }
    }

    static func model(inputs: [IO], outputs: [IO], nodes: [Node], floats: [String: Float] = [:],
                      int64Vectors: [String: [Int64]] = [:], opset: Int64 = 13) -> Data {
        var m = Proto()
        m.int(1, 8)  // ir_version
        m.string(2, "mobilediff-tests")  // producer_name
        m.message(7) { g in  // graph
            for (i, n) in nodes.enumerated() {
                g.message(1) { p in
                    n.inputs.forEach { p.string(1, $0) }
                    n.outputs.forEach { p.string(2, $0) }
                    p.string(3, "\(n.op)_\(i)")
                    p.string(4, n.op)
                    for (name, value) in n.ints.sorted(by: { $0.key < $1.key }) {
                        p.message(5) { a in a.string(1, name); a.int(3, value); a.int(20, 2) }  // type INT
                    }
                }
            }
            g.string(2, "tiny")
            for (name, value) in floats.sorted(by: { $0.key < $1.key }) {
                g.message(5) { t in
                    t.int(2, Int64(float))
                    t.string(8, name)
                    t.bytes(9, withUnsafeBytes(of: value.bitPattern.littleEndian) { Data($0) })
                }
            }
            for (name, values) in int64Vectors.sorted(by: { $0.key < $1.key }) {
                g.message(5) { t in
                    t.int(1, Int64(values.count))
                    t.int(2, Int64(int64))
                    t.string(8, name)
                    t.bytes(9, values.reduce(into: Data()) { data, v in withUnsafeBytes(of: v.littleEndian) { data.append(contentsOf: $0) } })
                }
            }
            inputs.forEach { valueInfo(&g, 11, $0) }
            outputs.forEach { valueInfo(&g, 12, $0) }
        }
        m.message(8) { $0.int(2, opset) }  // opset_import (default domain)
        return m.data
    }

    private static func valueInfo(_ p: inout Proto, _ field: Int, _ io: IO) {
        p.message(field) { v in
            v.string(1, io.name)
            v.message(2) { type in  // TypeProto
                type.message(1) { tensor in  // tensor_type
                    tensor.int(1, Int64(io.elemType))
                    tensor.message(2) { shape in
                        for d in io.dims {
                            shape.message(1) { dim in
                                if let size = d as? Int { dim.int(1, Int64(size)) } else { dim.string(2, "\(d)") }
                            }
                        }
                    }
                }
            }
        }
    }

    /// Protobuf's wire format: varints and length-delimited fields.
    struct Proto {
        var data = Data()

        private mutating func varint(_ value: UInt64) {
            var v = value
            while v >= 0x80 {
                data.append(UInt8(v & 0x7f) | 0x80)
                v >>= 7
            }
            data.append(UInt8(v))
        }

        mutating func int(_ field: Int, _ value: Int64) {
            varint(UInt64(field << 3))
            varint(UInt64(bitPattern: value))
        }

        mutating func bytes(_ field: Int, _ value: Data) {
            varint(UInt64(field << 3 | 2))
            varint(UInt64(value.count))
            data.append(value)
        }

        mutating func string(_ field: Int, _ value: String) { bytes(field, Data(value.utf8)) }

        mutating func message(_ field: Int, _ body: (inout Proto) -> Void) {
            var inner = Proto()
            body(&inner)
            bytes(field, inner.data)
        }
    }
}
