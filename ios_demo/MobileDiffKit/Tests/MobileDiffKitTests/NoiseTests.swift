import XCTest
@testable import MobileDiffKit

/// torch.randn with torch.Generator().manual_seed(seed): the goldens' latent noise, and hard-coded values from
/// torch 2.13 for the paths the goldens do not reach (fewer than 16 elements, non-multiples of 16, a second
/// draw from the same generator). Regenerate with
/// `python -c "import torch; g = torch.Generator().manual_seed(0); print(torch.randn(7, generator=g).tolist())"`.
final class NoiseTests: XCTestCase {
    func testLatentNoiseEqualsGoldens() throws {
        var checked = 0
        for name in try Fixtures.names() where try Fixtures.hasGoldens(name) {
            for test in try Fixtures.goldens(name).document.noise {
                let reference = try Fixtures.goldens(name).tensors.tensor(test.tensor).floats
                var random = TorchRandomSource(seed: test.seed)
                let noise = random.normalArray(count: test.shape.reduce(1, *))
                XCTAssertLessThanOrEqual(Compare.maxAbsError(noise, reference), GoldenChecks.noiseTolerance, "\(name) seed \(test.seed)")
                checked += 1
            }
        }
        XCTAssertGreaterThan(checked, 0)
    }

    /// Fewer than 16 elements: torch's double-precision Box-Muller, bit for bit, with the cached second value
    /// carried across draws (5 then 3 elements continue the 7-element sequence).
    func testScalarPathExact() {
        let expected: [Float] = [1.5409960746765137, -0.293428897857666, -2.1787893772125244, 0.5684312582015991,
                                 -1.0845223665237427, -1.3985954523086548, 0.40334683656692505]
        var random = TorchRandomSource(seed: 0)
        XCTAssertEqual(random.normalArray(count: 7), expected)
        var split = TorchRandomSource(seed: 0)
        XCTAssertEqual(split.normalArray(count: 5), Array(expected.prefix(5)))
        XCTAssertEqual(split.normalArray(count: 3), Array(expected.suffix(2)) + [0.8380263447761536])
    }

    /// 20 elements: one vectorised block of 16, then the last 16 recomputed from fresh uniforms.
    func testVectorisedPathWithTail() {
        let expected: [Float] = [-1.5255959033966064, -0.7502318024635315, -0.6539809107780457, -1.6094847917556763,
                                 0.8656923770904541, 0.2444038987159729, -0.6629113554954529, 0.8073082566261292,
                                 0.43914157152175903, 1.1712007522583008, 1.7674273252487183, -0.09536188095808029,
                                 0.0611552819609642, -0.6177444458007812, -0.7980698347091675, -0.13162320852279663,
                                 -0.7984398007392883, 0.33573052287101746, 0.2753335237503052, 1.7163026332855225]
        var random = TorchRandomSource(seed: 1)
        XCTAssertLessThanOrEqual(Compare.maxAbsError(random.normalArray(count: 20), expected), 1e-6)
    }

    /// A second latent-sized draw from the same generator (LCM's fresh noise) continues the stream.
    func testSecondDrawContinuesTheStream() {
        var random = TorchRandomSource(seed: 42)
        _ = random.normalArray(count: 1024)
        let second = random.normalArray(count: 1024)
        let head: [Float] = [-1.2247875928878784, 0.962885856628418, -1.5785412788391113, 0.6715953946113586]
        let tail: [Float] = [-0.8276495337486267, -0.3524166941642761]
        XCTAssertLessThanOrEqual(Compare.maxAbsError(Array(second.prefix(4)) + Array(second.suffix(2)), head + tail), 1e-6)
    }
}
