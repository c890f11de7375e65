package com.mobilediff.engine

import com.mobilediff.verify.Comparison
import com.mobilediff.verify.Goldens
import org.junit.Assert.assertArrayEquals
import org.junit.Assert.assertEquals
import org.junit.Assert.assertTrue
import org.junit.Test

class TorchRandomTest {
    @Test
    fun mt19937MatchesTheStandardsCheckValue() {
        // C++ [rand.predef]: the 10000th output of a default-constructed mt19937 (seed 5489) is 4123659995
        val g = TorchGenerator(5489)
        repeat(9999) { g.nextUInt32() }
        assertEquals(4123659995L, g.nextUInt32())
    }

    @Test
    fun smallTensorsTakeTorchsScalarPath() {
        // torch.randn(5, generator=torch.Generator().manual_seed(s)).tolist() (torch 2.13, CPU)
        val seed0 = floatArrayOf(1.5409960746765137f, -0.293428897857666f, -2.1787893772125244f, 0.5684312582015991f, -1.0845223665237427f)
        val seed7 = floatArrayOf(-0.1467950940132141f, 0.7861412763595581f, 0.9468216300010681f, -1.1143440008163452f, 1.6907901763916016f)
        assertArrayEquals(seed0, TorchGenerator(0).normal(intArrayOf(5)), 1e-7f)
        assertArrayEquals(seed7, TorchGenerator(7).normal(intArrayOf(5)), 1e-7f)
    }

    @Test
    fun scalarPathCarriesTheCachedNormalAcrossCalls() {
        // g = manual_seed(3); torch.randn(3, generator=g); torch.randn(2, generator=g)
        val g = TorchGenerator(3)
        assertArrayEquals(floatArrayOf(0.8032760620117188f, 0.17483338713645935f, 0.08897809684276581f), g.normal(intArrayOf(3)), 1e-7f)
        assertArrayEquals(floatArrayOf(-0.6137180328369141f, 0.04618244990706444f), g.normal(intArrayOf(2)), 1e-7f)
    }

    @Test
    fun vectorPathHandlesATailThatIsNotAMultipleOf16() {
        // torch.randn(20, generator=torch.Generator().manual_seed(1)).tolist()
        val expected = floatArrayOf(-1.5255959033966064f, -0.7502318024635315f, -0.6539809107780457f, -1.6094847917556763f,
            0.8656923770904541f, 0.2444038987159729f, -0.6629113554954529f, 0.8073082566261292f, 0.43914157152175903f,
            1.1712007522583008f, 1.7674273252487183f, -0.09536188095808029f, 0.0611552819609642f, -0.6177444458007812f,
            -0.7980698347091675f, -0.13162320852279663f, -0.7984398007392883f, 0.33573052287101746f, 0.2753335237503052f,
            1.7163026332855225f)
        assertArrayEquals(expected, TorchGenerator(1).normal(intArrayOf(20)), 1e-6f)
    }

    @Test
    fun latentNoiseMatchesTorchForEveryGoldenSeed() {
        Fixtures.require()
        for (model in Fixtures.withGoldens) {
            val goldens = Goldens.load(Fixtures.goldens(model))
            assertTrue("$model: goldens hold ${goldens.noise.size} noise seeds, need >= 3", goldens.noise.map { it.seed }.toSet().size >= 3)
            for (case in goldens.noise) {
                val c = Comparison.of(TorchGenerator(case.seed).normal(case.shape), goldens.tensors.floats(case.tensor))
                assertTrue("$model seed ${case.seed}: max abs ${c.maxAbsError}", c.maxAbsError <= 1e-6)
            }
        }
    }
}
