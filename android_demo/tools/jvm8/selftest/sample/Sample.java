package sample;

import java.util.ArrayList;
import java.util.List;
import java.util.function.BiFunction;
import java.util.function.Function;
import java.util.function.IntSupplier;
import java.util.function.Supplier;
import java.util.function.ToLongFunction;

/**
 * What Java 11-17 compilers emit that Java 8 class files cannot hold, each printing a line: nestmates reaching
 * private members (fields, methods, constructors, an invokespecial of a private method), lambdas with and without
 * captured values, method references of each kind, boxing and unboxing at the functional interface, and string
 * concatenation of every kind of value. setup-toolchain.sh runs it compiled for Java 17 and rewritten by
 * `Main desugar`, and requires the same output (and that dx and `Main verify` take the rewritten classes).
 */
public final class Sample {
    private int count = 3;
    private final List<String> log = new ArrayList<>();

    private Sample() {
    }

    private String secret(int k) {
        return "secret" + k;
    }

    private static long twice(long v) {
        return 2 * v;
    }

    private void note(String s) {
        log.add(s);
    }

    /** A nestmate: reads and calls the host's private members directly (no access methods since Java 11). */
    static final class Inner {
        private final Sample host;

        private Inner(Sample host) {
            this.host = host;
        }

        String peek() {
            host.count++;
            host.note("peeked");
            return host.secret(host.count) + "/" + twice(host.count);
        }
    }

    private String lambdas(int base, long big, String word) {
        Supplier<String> noCapture = () -> "constant";
        IntSupplier capturesInt = () -> base * 2;
        Function<Integer, Long> boxes = i -> big + i;            // unbox the argument, box the result
        BiFunction<String, Integer, String> captures = (s, i) -> word + s + i + count;
        ToLongFunction<Long> unboxes = Sample::twice;            // static method reference, unboxing
        Function<Integer, String> bound = this::secret;          // bound instance method reference
        Function<String, Integer> unbound = String::length;      // unbound instance method reference
        Supplier<StringBuilder> ctor = StringBuilder::new;       // constructor reference
        Runnable privateInstance = () -> note("ran");            // implementation: a private instance method
        privateInstance.run();
        return noCapture.get() + " " + capturesInt.getAsInt() + " " + boxes.apply(5) + " " + captures.apply("-", 7)
            + " " + unboxes.applyAsLong(21L) + " " + bound.apply(9) + " " + unbound.apply("four") + " "
            + ctor.get().append("built") + " " + log;
    }

    public static void main(String[] args) {
        Sample s = new Sample();
        Inner inner = new Inner(s);
        System.out.println("nest: " + inner.peek() + " count=" + s.count);
        System.out.println("lambdas: " + s.lambdas(4, 10_000_000_000L, "w"));
        char c = 'x';
        byte b = -3;
        short sh = 300;
        float f = 1.5f;
        double d = -2.25;
        boolean z = true;
        Object nothing = null;
        int[] array = {1};
        System.out.println("concat: " + c + b + sh + f + d + z + nothing + (array.length) + "\u0001" + s.count + 'q');
    }
}
