package com.mobilediff.tools;

import java.io.IOException;
import java.io.InputStream;
import java.net.URL;
import java.net.URLClassLoader;
import java.nio.file.Path;
import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.Deque;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.TreeSet;
import java.util.zip.ZipEntry;
import java.util.zip.ZipFile;

import org.objectweb.asm.ClassReader;
import org.objectweb.asm.Handle;
import org.objectweb.asm.Opcodes;
import org.objectweb.asm.Type;
import org.objectweb.asm.tree.AbstractInsnNode;
import org.objectweb.asm.tree.ClassNode;
import org.objectweb.asm.tree.FieldInsnNode;
import org.objectweb.asm.tree.FieldNode;
import org.objectweb.asm.tree.InvokeDynamicInsnNode;
import org.objectweb.asm.tree.LdcInsnNode;
import org.objectweb.asm.tree.MethodInsnNode;
import org.objectweb.asm.tree.MethodNode;
import org.objectweb.asm.tree.TypeInsnNode;
import org.objectweb.asm.tree.analysis.Analyzer;
import org.objectweb.asm.tree.analysis.AnalyzerException;
import org.objectweb.asm.tree.analysis.BasicValue;
import org.objectweb.asm.tree.analysis.SimpleVerifier;

/** Static facts about a jar: its native methods, which of them code can reach, and what it needs from a platform. */
final class Inspect {
    private Inspect() {
    }

    // --- native methods and their JNI names ------------------------------------------------------------------------

    /** One line per native method of the classes under [prefix]: class, method, descriptor, short and long JNI name. */
    static List<String> natives(Path jar, String prefix) throws IOException {
        List<String> out = new ArrayList<>();
        for (ClassNode c : Jars.read(jar).classes.values()) {
            if (!c.name.startsWith(prefix)) continue;
            for (MethodNode m : c.methods) {
                if ((m.access & Opcodes.ACC_NATIVE) != 0) out.add(nativeLine(c.name, m.name, m.desc));
            }
        }
        out.sort(null);
        return out;
    }

    static String nativeLine(String owner, String name, String desc) {
        String shortName = "Java_" + mangle(owner) + "_" + mangle(name);
        String args = desc.substring(1, desc.indexOf(')'));
        return owner + " " + name + " " + desc + " " + shortName + " " + shortName + "__" + mangle(args);
    }

    /** The JNI specification's escaping of a class, method or argument-descriptor string. */
    static String mangle(String s) {
        StringBuilder b = new StringBuilder();
        for (char ch : s.toCharArray()) {
            if (ch == '/') b.append('_');
            else if (ch == '_') b.append("_1");
            else if (ch == ';') b.append("_2");
            else if (ch == '[') b.append("_3");
            else if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9')) b.append(ch);
            else b.append(String.format("_0%04x", (int) ch));
        }
        return b.toString();
    }

    // --- reachability ------------------------------------------------------------------------------------------------

    /**
     * The native methods of [lib]'s classes under [prefix] that code can reach, starting from every method of
     * [roots] (the engine) and from the methods the JNI library calls back: [jniStrings] holds the strings of the
     * JNI library (`strings` of the .so), and a method of a class named there whose name and descriptor are both
     * there counts as called from native code (ONNX Runtime's JNI code constructs tensors, infos and exceptions).
     * Calls are followed by class hierarchy analysis: a virtual call reaches every override in [lib]; a call of a
     * method declared outside [lib] (a JDK interface such as AutoCloseable.close) reaches every [lib] instance method
     * of that name and descriptor. Class initialisers run when a class is instantiated or its statics are used.
     * Over-approximate by design: a native it lists may be unreachable, never the other way round (short of
     * reflection, which ONNX Runtime's Java API does not use on these paths).
     */
    static List<String> reach(Path roots, Path lib, String prefix, Set<String> jniStrings) throws IOException {
        Map<String, ClassNode> rootClasses = Jars.read(roots).classes;
        Map<String, ClassNode> libClasses = new HashMap<>();
        for (ClassNode c : Jars.read(lib).classes.values()) {
            if (c.name.startsWith(prefix)) libClasses.put(c.name, c);
        }
        Reach r = new Reach(libClasses);
        for (ClassNode c : rootClasses.values()) {
            for (MethodNode m : c.methods) r.scan(m);
        }
        for (ClassNode c : libClasses.values()) {
            if (!jniStrings.contains(c.name)) continue;
            for (MethodNode m : c.methods) {
                if (jniStrings.contains(m.name) && jniStrings.contains(m.desc)) r.add(c, m);
            }
        }
        r.run();
        List<String> out = new ArrayList<>();
        for (String key : new TreeSet<>(r.reached)) {
            String[] p = key.split(" ");
            MethodNode m = r.method(p[0], p[1], p[2]);
            if ((m.access & Opcodes.ACC_NATIVE) != 0) out.add(nativeLine(p[0], p[1], p[2]));
        }
        System.err.println("[reach] " + r.reached.size() + " methods of " + prefix + " reachable, " + out.size() + " of them native");
        return out;
    }

    private static final class Reach {
        final Map<String, ClassNode> lib;
        final Set<String> reached = new HashSet<>();
        final Set<String> initialised = new HashSet<>();
        final Deque<MethodNode> work = new ArrayDeque<>();
        final Map<MethodNode, ClassNode> ownerOf = new HashMap<>();

        Reach(Map<String, ClassNode> lib) {
            this.lib = lib;
            for (ClassNode c : lib.values()) for (MethodNode m : c.methods) ownerOf.put(m, c);
        }

        MethodNode method(String owner, String name, String desc) {
            ClassNode c = lib.get(owner);
            if (c == null) return null;
            for (MethodNode m : c.methods) if (m.name.equals(name) && m.desc.equals(desc)) return m;
            return null;
        }

        void add(ClassNode c, MethodNode m) {
            if (reached.add(c.name + " " + m.name + " " + m.desc)) work.add(m);
        }

        void run() {
            while (!work.isEmpty()) scan(work.poll());
        }

        void initialise(String owner) {
            for (String s = owner; s != null && lib.containsKey(s); s = lib.get(s).superName) {
                if (!initialised.add(s)) return;
                MethodNode clinit = method(s, "<clinit>", "()V");
                if (clinit != null) add(lib.get(s), clinit);
            }
        }

        void scan(MethodNode m) {
            for (AbstractInsnNode insn : m.instructions) {
                if (insn instanceof MethodInsnNode) {
                    MethodInsnNode mi = (MethodInsnNode) insn;
                    call(mi.owner, mi.name, mi.desc, insn.getOpcode() == Opcodes.INVOKESTATIC || mi.name.equals("<init>")
                            || insn.getOpcode() == Opcodes.INVOKESPECIAL);
                } else if (insn instanceof FieldInsnNode) {
                    int op = insn.getOpcode();
                    if (op == Opcodes.GETSTATIC || op == Opcodes.PUTSTATIC) initialise(((FieldInsnNode) insn).owner);
                } else if (insn instanceof TypeInsnNode && insn.getOpcode() == Opcodes.NEW) {
                    initialise(((TypeInsnNode) insn).desc);
                } else if (insn instanceof LdcInsnNode && ((LdcInsnNode) insn).cst instanceof Handle) {
                    Handle h = (Handle) ((LdcInsnNode) insn).cst;
                    call(h.getOwner(), h.getName(), h.getDesc(), h.getTag() == Opcodes.H_INVOKESTATIC);
                } else if (insn instanceof InvokeDynamicInsnNode) {
                    for (Object a : ((InvokeDynamicInsnNode) insn).bsmArgs) {
                        if (a instanceof Handle) {
                            Handle h = (Handle) a;
                            call(h.getOwner(), h.getName(), h.getDesc(), h.getTag() == Opcodes.H_INVOKESTATIC);
                        }
                    }
                }
            }
        }

        void call(String owner, String name, String desc, boolean direct) {
            if (lib.containsKey(owner)) {
                if (direct) initialise(owner);
                // the declaration: the owner or its nearest superclass in the library that declares it
                boolean found = false;
                for (String s = owner; s != null && lib.containsKey(s); s = lib.get(s).superName) {
                    MethodNode m = method(s, name, desc);
                    if (m != null) {
                        add(lib.get(s), m);
                        found = true;
                        break;
                    }
                }
                if (direct && found) return;
                if (!found) {
                    // declared by an interface of the library, or by a class outside it: every library override
                    overridesOf(null, name, desc);
                    return;
                }
                overridesOf(owner, name, desc);
            } else if (!direct && !name.equals("<init>")) {
                overridesOf(null, name, desc);
            }
        }

        /** Reach the instance methods name+desc of the library's subtypes of [owner] (every class when null). */
        void overridesOf(String owner, String name, String desc) {
            for (ClassNode c : lib.values()) {
                if (owner != null && !isSubtype(c, owner)) continue;
                MethodNode m = method(c.name, name, desc);
                if (m != null && (m.access & Opcodes.ACC_STATIC) == 0) add(c, m);
            }
        }

        boolean isSubtype(ClassNode c, String ancestor) {
            if (c.name.equals(ancestor)) return true;
            if (c.superName != null && lib.containsKey(c.superName) && isSubtype(lib.get(c.superName), ancestor)) return true;
            for (String i : c.interfaces) if (lib.containsKey(i) && isSubtype(lib.get(i), ancestor)) return true;
            return false;
        }
    }

    // --- bytecode verification -----------------------------------------------------------------------------------------

    /**
     * Type-check every method of [jar]'s classes by data-flow analysis (ASM's SimpleVerifier: stack and locals at
     * every instruction, assignability of every value to where it is used), resolving types in [jar], then [platform]
     * (an android.jar), then the JDK. One line per failing method; empty when all verify.
     */
    static List<String> verify(Path jar, Path platform) throws IOException {
        List<String> out = new ArrayList<>();
        try (URLClassLoader loader = new URLClassLoader(new URL[] {jar.toUri().toURL(), platform.toUri().toURL()},
                ClassLoader.getPlatformClassLoader())) {
            for (ClassNode c : Jars.read(jar).classes.values()) {
                List<Type> interfaces = new ArrayList<>();
                for (String i : c.interfaces) interfaces.add(Type.getObjectType(i));
                for (MethodNode m : c.methods) {
                    if (m.instructions.size() == 0) continue;
                    SimpleVerifier verifier = new SimpleVerifier(Type.getObjectType(c.name),
                            c.superName == null ? null : Type.getObjectType(c.superName), interfaces,
                            (c.access & Opcodes.ACC_INTERFACE) != 0);
                    verifier.setClassLoader(loader);
                    try {
                        new Analyzer<BasicValue>(verifier).analyze(c.name, m);
                    } catch (AnalyzerException | RuntimeException e) {
                        out.add(c.name + "." + m.name + m.desc + ": " + e.getMessage());
                    }
                }
            }
        }
        return out;
    }

    // --- platform API ------------------------------------------------------------------------------------------------

    /**
     * The references of [jar]'s classes to classes outside it that [platform] (an android.jar) lacks: a missing class
     * as "class", a missing member as "class.name desc". Members resolve through superclasses and interfaces.
     */
    static List<String> missingApi(Path jar, Path platform) throws IOException {
        Map<String, ClassNode> own = Jars.read(jar).classes;
        Set<String> missing = new TreeSet<>();
        try (ZipFile android = new ZipFile(platform.toFile())) {
            Platform p = new Platform(android);
            for (ClassNode c : own.values()) {
                List<String> supers = new ArrayList<>(c.interfaces);
                if (c.superName != null) supers.add(c.superName);
                for (String s : supers) if (!own.containsKey(s) && p.get(s) == null) missing.add(s);
                for (MethodNode m : c.methods) {
                    for (AbstractInsnNode insn : m.instructions) {
                        String owner = null;
                        String name = null;
                        String desc = null;
                        boolean method = false;
                        if (insn instanceof MethodInsnNode) {
                            MethodInsnNode mi = (MethodInsnNode) insn;
                            owner = mi.owner;
                            name = mi.name;
                            desc = mi.desc;
                            method = true;
                        } else if (insn instanceof FieldInsnNode) {
                            FieldInsnNode fi = (FieldInsnNode) insn;
                            owner = fi.owner;
                            name = fi.name;
                            desc = fi.desc;
                        } else if (insn instanceof TypeInsnNode) {
                            owner = elementClass(((TypeInsnNode) insn).desc);
                        } else if (insn instanceof LdcInsnNode && ((LdcInsnNode) insn).cst instanceof Type) {
                            Type t = (Type) ((LdcInsnNode) insn).cst;
                            if (t.getSort() == Type.OBJECT || t.getSort() == Type.ARRAY) owner = elementClass(t.getInternalName());
                        }
                        if (owner != null && owner.startsWith("[")) owner = elementClass(owner);
                        if (owner == null || own.containsKey(owner)) continue;
                        if (p.get(owner) == null) {
                            missing.add(owner);
                        } else if (name != null && !p.has(owner, name, desc, method)) {
                            missing.add(owner + "." + name + " " + desc);
                        }
                    }
                }
            }
        }
        return new ArrayList<>(missing);
    }

    /** The class an internal name or array descriptor names, or null for an array of primitives. */
    private static String elementClass(String internalName) {
        if (!internalName.startsWith("[")) return internalName;
        Type element = Type.getType(internalName).getElementType();
        return element.getSort() == Type.OBJECT ? element.getInternalName() : null;
    }

    private static final class Platform {
        final ZipFile jar;
        final Map<String, ClassNode> cache = new HashMap<>();

        Platform(ZipFile jar) {
            this.jar = jar;
        }

        ClassNode get(String name) {
            if (cache.containsKey(name)) return cache.get(name);
            ClassNode c = null;
            ZipEntry e = jar.getEntry(name + ".class");
            if (e != null) {
                try (InputStream in = jar.getInputStream(e)) {
                    c = new ClassNode();
                    new ClassReader(in.readAllBytes()).accept(c, ClassReader.SKIP_CODE);
                } catch (IOException ex) {
                    throw new IllegalStateException("cannot read " + name + " from the platform jar", ex);
                }
            }
            cache.put(name, c);
            return c;
        }

        boolean has(String owner, String name, String desc, boolean method) {
            ClassNode c = get(owner);
            if (c == null) return false;
            if (method) {
                for (MethodNode m : c.methods) if (m.name.equals(name) && m.desc.equals(desc)) return true;
                // a signature-polymorphic method (MethodHandle.invoke...) has any descriptor
                if (owner.equals("java/lang/invoke/MethodHandle")) return true;
            } else {
                for (FieldNode f : c.fields) if (f.name.equals(name) && f.desc.equals(desc)) return true;
            }
            if (c.superName != null && has(c.superName, name, desc, method)) return true;
            for (String i : c.interfaces) if (has(i, name, desc, method)) return true;
            // an interface's methods include java.lang.Object's
            return method && (c.access & Opcodes.ACC_INTERFACE) != 0 && has("java/lang/Object", name, desc, true);
        }
    }
}
