package com.mobilediff.tools;

import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.util.HashSet;
import java.util.List;
import java.util.Set;

/**
 * Command line of the jar tools the Android build uses (android_demo/tools/jvm8, built by setup-toolchain.sh):
 * <pre>
 *   desugar IN.jar OUT.jar                   Java 9-17 class files -> Java 8 ones dx and ART take (see {@link Desugar})
 *   natives JAR PREFIX                       native methods of the classes under PREFIX, with their JNI names
 *   reach ROOTS.jar LIB.jar PREFIX STRINGS   the natives of LIB under PREFIX that ROOTS' code can reach; STRINGS: the
 *                                            JNI library's strings, one a line (the Java methods it calls back)
 *   api JAR ANDROID.jar                      references of JAR's classes that ANDROID.jar lacks
 *   verify JAR ANDROID.jar                   type-check every method (data-flow analysis); one line per failure
 * </pre>
 * Output goes to stdout, one item a line. Bad input or a refused rewrite: one line "error: ..." and exit 2.
 */
public final class Main {
    private Main() {
    }

    public static void main(String[] args) {
        try {
            List<String> out = run(args);
            out.forEach(System.out::println);
        } catch (Desugar.DesugarException e) {
            System.err.println("error: desugar refused: " + e.getMessage());
            System.exit(2);
        } catch (Exception e) {
            System.err.println("error: " + e.getClass().getSimpleName() + ": " + e.getMessage());
            System.exit(2);
        }
    }

    private static List<String> run(String[] a) throws Exception {
        String cmd = a.length > 0 ? a[0] : "";
        switch (cmd) {
            case "desugar":
                need(a, 3, "desugar IN.jar OUT.jar");
                for (String line : Desugar.run(existing(a[1]), Paths.get(a[2]))) System.err.println("[desugar] " + line);
                return List.of();
            case "natives":
                need(a, 3, "natives JAR PREFIX");
                return Inspect.natives(existing(a[1]), a[2]);
            case "reach":
                need(a, 5, "reach ROOTS.jar LIB.jar PREFIX STRINGS");
                Set<String> strings = new HashSet<>(Files.readAllLines(existing(a[4])));
                return Inspect.reach(existing(a[1]), existing(a[2]), a[3], strings);
            case "api":
                need(a, 3, "api JAR ANDROID.jar");
                return Inspect.missingApi(existing(a[1]), existing(a[2]));
            case "verify":
                need(a, 3, "verify JAR ANDROID.jar");
                return Inspect.verify(existing(a[1]), existing(a[2]));
            default:
                throw new IllegalArgumentException("unknown command '" + cmd + "'; choose desugar, natives, reach, api or verify");
        }
    }

    private static void need(String[] a, int n, String usage) {
        if (a.length < n) throw new IllegalArgumentException("usage: " + usage);
    }

    private static Path existing(String p) {
        Path path = Paths.get(p);
        if (!Files.isRegularFile(path)) throw new IllegalArgumentException("no such file: " + p);
        return path;
    }
}
