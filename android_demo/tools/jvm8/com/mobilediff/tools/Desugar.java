package com.mobilediff.tools;

import java.io.IOException;
import java.lang.reflect.Method;
import java.lang.reflect.Modifier;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.HashSet;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.ListIterator;
import java.util.Map;
import java.util.Set;
import java.util.TreeMap;
import java.util.TreeSet;

import org.objectweb.asm.Handle;
import org.objectweb.asm.Opcodes;
import org.objectweb.asm.Type;
import org.objectweb.asm.tree.AbstractInsnNode;
import org.objectweb.asm.tree.ClassNode;
import org.objectweb.asm.tree.FieldInsnNode;
import org.objectweb.asm.tree.FieldNode;
import org.objectweb.asm.tree.InsnList;
import org.objectweb.asm.tree.InsnNode;
import org.objectweb.asm.tree.InvokeDynamicInsnNode;
import org.objectweb.asm.tree.MethodInsnNode;
import org.objectweb.asm.tree.MethodNode;
import org.objectweb.asm.tree.TypeInsnNode;
import org.objectweb.asm.tree.VarInsnNode;

/**
 * Rewrites a jar of Java 9-17 class files into Java 8 class files (version 52) that Android's dx dexes and ART runs,
 * for libraries that use no Java 9+ API (checked separately by {@code Inspect api}).
 *
 * <p>What changes, and why it keeps the behaviour:
 * <ul>
 *   <li><b>Nestmates</b> (Java 11, JEP 181): classes of one nest read each other's private members directly, which a
 *     Java 8 VM refuses. Every private member that another class reaches (by a field or method instruction, or a
 *     method handle) becomes package-private: nestmates always share a package. A call of such a method by
 *     {@code invokespecial} becomes {@code invokevirtual} (or {@code invokeinterface}), since ART runs
 *     {@code invoke-direct} on private methods only. Widening can change dispatch only if the method now overrides,
 *     or is overridden by, another non-private method of the same name and descriptor: that is refused.
 *     {@code NestHost}/{@code NestMembers} and {@code PermittedSubclasses} are dropped. A call of a method that
 *     stays private by {@code invokevirtual}/{@code invokeinterface} (Java 11+ javac calls every private method so)
 *     becomes {@code invokespecial}, as Java 8 compiled it: ART refuses {@code invoke-virtual} of a private method.</li>
 *   <li><b>Lambdas</b>: an {@code invokedynamic} of {@code LambdaMetafactory.metafactory} becomes a call of a
 *     static factory on a generated class {@code Host$$Lambda$N} that implements the functional interface, keeps
 *     the captured values in fields and calls the implementation method, adapting arguments and result exactly as
 *     the metafactory does (casts, boxing, unboxing, primitive widening).</li>
 *   <li><b>String concatenation</b> (Java 9, {@code StringConcatFactory.makeConcatWithConstants}): each call site
 *     becomes a call of a generated static method of its class that appends the recipe's literals, constants and
 *     arguments to a {@code StringBuilder}, as javac 8 compiled {@code +}. Any other {@code invokedynamic}
 *     ({@code altMetafactory}, records' {@code ObjectMethods}) is refused.</li>
 * </ul>
 * Frames stay valid: each replacement has the same stack effect as what it replaces, and generated methods have
 * no branches. The output jar is reproducible (sorted entries, fixed times).
 */
final class Desugar {
    private static final String LMF = "java/lang/invoke/LambdaMetafactory";
    private static final String SCF = "java/lang/invoke/StringConcatFactory";

    private final Map<String, ClassNode> classes;
    private final Map<String, ClassNode> generated = new TreeMap<>();
    /** "owner.name.desc" of private members that another class reaches. */
    private final Set<String> widen = new HashSet<>();
    private final List<String> log = new ArrayList<>();

    private Desugar(Map<String, ClassNode> classes) {
        this.classes = classes;
    }

    /** Rewrite {@code in} to {@code out}; returns a summary line per kind of change. */
    static List<String> run(Path in, Path out) throws IOException {
        Jars.Contents jar = Jars.read(in);
        Desugar d = new Desugar(jar.classes);
        for (ClassNode c : jar.classes.values()) {
            if (c.version > Opcodes.V17 && (c.version & 0xFFFF) != 0) {
                throw new DesugarException(c.name + ": class file version " + c.version + " is newer than Java 17");
            }
            if ("java/lang/Record".equals(c.superName)) {
                throw new DesugarException(c.name + ": records are not supported");
            }
        }
        d.concatenations();
        d.lambdas();
        d.findNestAccess();
        d.checkOverrides();
        d.applyWidening();
        Map<String, byte[]> classBytes = new TreeMap<>();
        for (ClassNode c : jar.classes.values()) {
            c.version = Opcodes.V1_8;
            c.nestHostClass = null;
            c.nestMembers = null;
            c.permittedSubclasses = null;
            classBytes.put(c.name, Jars.write(c));
        }
        for (ClassNode c : d.generated.values()) {
            classBytes.put(c.name, Jars.write(c));
        }
        Jars.writeJar(out, classBytes, jar.resources);
        List<String> summary = new ArrayList<>();
        summary.add(jar.classes.size() + " classes rewritten to version 52, " + d.generated.size() + " lambda classes generated, "
                + d.widen.size() + " private members widened to package-private");
        summary.addAll(d.log);
        if (!d.widen.isEmpty()) summary.add("widened: " + String.join(", ", new TreeSet<>(d.widen)));
        return summary;
    }

    // --- nestmate access ---------------------------------------------------------------------------------------

    private void findNestAccess() {
        for (ClassNode c : allClasses()) {
            for (MethodNode m : c.methods) {
                for (AbstractInsnNode insn : m.instructions) {
                    if (insn instanceof MethodInsnNode) {
                        MethodInsnNode mi = (MethodInsnNode) insn;
                        reach(c.name, mi.owner, mi.name, mi.desc, true);
                    } else if (insn instanceof FieldInsnNode) {
                        FieldInsnNode fi = (FieldInsnNode) insn;
                        reach(c.name, fi.owner, fi.name, fi.desc, false);
                    } else if (insn instanceof InvokeDynamicInsnNode) {
                        for (Object arg : ((InvokeDynamicInsnNode) insn).bsmArgs) {
                            if (arg instanceof Handle) {
                                Handle h = (Handle) arg;
                                boolean method = h.getTag() >= Opcodes.H_INVOKEVIRTUAL;
                                reach("", h.getOwner(), h.getName(), h.getDesc(), method);
                            }
                        }
                    }
                }
            }
        }
    }

    /** [from] uses owner.name.desc: note it if it is private and [from] is another class. */
    private void reach(String from, String owner, String name, String desc, boolean method) {
        if (from.equals(owner)) return;
        ClassNode o = classes.get(owner);
        if (o == null) return;
        if (method) {
            MethodNode m = findMethod(o, name, desc);
            if (m != null && (m.access & Opcodes.ACC_PRIVATE) != 0) widen.add(owner + "." + name + desc);
        } else {
            for (FieldNode f : o.fields) {
                if (f.name.equals(name) && f.desc.equals(desc) && (f.access & Opcodes.ACC_PRIVATE) != 0) {
                    widen.add(owner + "." + name + ":" + desc);
                }
            }
        }
    }

    /** Refuse a widened instance method that would override, or be overridden by, a non-private method. */
    private void checkOverrides() {
        for (String key : widen) {
            if (key.contains(":")) continue; // a field: fields do not override
            int dot = key.indexOf('.');
            int paren = key.indexOf('(');
            String owner = key.substring(0, dot);
            String name = key.substring(dot + 1, paren);
            String desc = key.substring(paren);
            ClassNode o = classes.get(owner);
            MethodNode m = findMethod(o, name, desc);
            if ((m.access & Opcodes.ACC_STATIC) != 0 || name.equals("<init>")) continue;
            // subclasses in the jar that declare the same method non-private (or widened)
            for (ClassNode c : classes.values()) {
                if (c == o || !isSubclass(c, owner)) continue;
                MethodNode other = findMethod(c, name, desc);
                if (other != null && (other.access & Opcodes.ACC_STATIC) == 0
                        && ((other.access & Opcodes.ACC_PRIVATE) == 0 || widen.contains(c.name + "." + name + desc))) {
                    throw new DesugarException("widening " + owner + "." + name + desc + " would let " + c.name
                            + "'s method of the same signature override it");
                }
            }
            // superclasses: in the jar, else the JDK's (loaded by this tool's VM)
            for (String s = o.superName; s != null; ) {
                ClassNode sc = classes.get(s);
                if (sc != null) {
                    MethodNode sm = findMethod(sc, name, desc);
                    if (sm != null && (sm.access & (Opcodes.ACC_PRIVATE | Opcodes.ACC_STATIC)) == 0) {
                        throw new DesugarException("widening " + owner + "." + name + desc + " would override " + s + "." + name);
                    }
                    s = sc.superName;
                } else {
                    if (jdkDeclaresInstanceMethod(s, name, desc)) {
                        throw new DesugarException("widening " + owner + "." + name + desc + " would override " + s + "." + name);
                    }
                    s = null;
                }
            }
        }
    }

    private boolean isSubclass(ClassNode c, String ancestor) {
        for (String s = c.superName; s != null; ) {
            if (s.equals(ancestor)) return true;
            ClassNode sc = classes.get(s);
            s = sc == null ? null : sc.superName;
        }
        return false;
    }

    private static boolean jdkDeclaresInstanceMethod(String className, String name, String desc) {
        try {
            for (Class<?> k = Class.forName(className.replace('/', '.'), false, ClassLoader.getPlatformClassLoader()); k != null; k = k.getSuperclass()) {
                for (Method jm : k.getDeclaredMethods()) {
                    if (jm.getName().equals(name) && Type.getMethodDescriptor(jm).equals(desc)
                            && !Modifier.isPrivate(jm.getModifiers()) && !Modifier.isStatic(jm.getModifiers())) {
                        return true;
                    }
                }
            }
            return false;
        } catch (ClassNotFoundException e) {
            throw new DesugarException("cannot check overrides: superclass " + className + " is neither in the jar nor in the JDK");
        }
    }

    private void applyWidening() {
        for (ClassNode c : classes.values()) {
            for (MethodNode m : c.methods) {
                if (widen.contains(c.name + "." + m.name + m.desc)) m.access &= ~Opcodes.ACC_PRIVATE;
            }
            for (FieldNode f : c.fields) {
                if (widen.contains(c.name + "." + f.name + ":" + f.desc)) f.access &= ~Opcodes.ACC_PRIVATE;
            }
        }
        int rewritten = 0;
        for (ClassNode c : allClasses()) {
            for (MethodNode m : c.methods) {
                for (AbstractInsnNode insn : m.instructions) {
                    if (insn.getOpcode() != Opcodes.INVOKESPECIAL) continue;
                    MethodInsnNode mi = (MethodInsnNode) insn;
                    if (mi.name.equals("<init>") || !widen.contains(mi.owner + "." + mi.name + mi.desc)) continue;
                    ClassNode owner = classes.get(mi.owner);
                    boolean itf = (owner.access & Opcodes.ACC_INTERFACE) != 0;
                    mi.setOpcode(itf ? Opcodes.INVOKEINTERFACE : Opcodes.INVOKEVIRTUAL);
                    mi.itf = itf;
                    rewritten++;
                }
            }
        }
        if (rewritten > 0) log.add(rewritten + " invokespecial calls of widened methods now invokevirtual/invokeinterface");
        int direct = 0;
        for (ClassNode c : allClasses()) {
            for (MethodNode m : c.methods) {
                for (AbstractInsnNode insn : m.instructions) {
                    int op = insn.getOpcode();
                    if (op != Opcodes.INVOKEVIRTUAL && op != Opcodes.INVOKEINTERFACE) continue;
                    MethodInsnNode mi = (MethodInsnNode) insn;
                    MethodNode target = findMethod(classes.get(mi.owner), mi.name, mi.desc);
                    if (target == null || (target.access & Opcodes.ACC_PRIVATE) == 0) continue;
                    if (!mi.owner.equals(c.name)) {
                        throw new DesugarException(c.name + "." + m.name + " calls " + mi.owner + "." + mi.name
                                + ", private to another class, and it was not widened");
                    }
                    mi.setOpcode(Opcodes.INVOKESPECIAL);
                    direct++;
                }
            }
        }
        if (direct > 0) log.add(direct + " invokevirtual/invokeinterface calls of private methods now invokespecial");
    }

    private Iterable<ClassNode> allClasses() {
        List<ClassNode> all = new ArrayList<>(classes.values());
        all.addAll(generated.values());
        return all;
    }

    private static MethodNode findMethod(ClassNode c, String name, String desc) {
        if (c == null) return null;
        for (MethodNode m : c.methods) {
            if (m.name.equals(name) && m.desc.equals(desc)) return m;
        }
        return null;
    }

    // --- string concatenation ------------------------------------------------------------------------------------

    private void concatenations() {
        int sites = 0;
        for (ClassNode host : classes.values()) {
            List<MethodNode> helpers = new ArrayList<>();
            for (MethodNode m : host.methods) {
                for (ListIterator<AbstractInsnNode> it = m.instructions.iterator(); it.hasNext(); ) {
                    AbstractInsnNode insn = it.next();
                    if (!(insn instanceof InvokeDynamicInsnNode)) continue;
                    InvokeDynamicInsnNode indy = (InvokeDynamicInsnNode) insn;
                    if (!indy.bsm.getOwner().equals(SCF)) continue;
                    String where = host.name + "." + m.name + m.desc;
                    if (!indy.bsm.getName().equals("makeConcatWithConstants")) {
                        throw new DesugarException(where + ": unsupported string concatenation (" + indy.bsm.getName() + ")");
                    }
                    MethodNode helper = concatHelper("concat$" + helpers.size(), indy, where);
                    while (findMethod(host, helper.name, helper.desc) != null) helper.name += "_";
                    helpers.add(helper);
                    boolean itf = (host.access & Opcodes.ACC_INTERFACE) != 0;
                    it.set(new MethodInsnNode(Opcodes.INVOKESTATIC, host.name, helper.name, helper.desc, itf));
                    sites++;
                }
            }
            host.methods.addAll(helpers);
        }
        if (sites > 0) log.add(sites + " string concatenation call sites replaced by StringBuilder helpers");
    }

    /** A static method taking the call site's arguments that builds the string its recipe describes. */
    private static MethodNode concatHelper(String name, InvokeDynamicInsnNode indy, String where) {
        String recipe = (String) indy.bsmArgs[0];
        Type[] args = Type.getArgumentTypes(indy.desc);
        MethodNode h = new MethodNode(Opcodes.ACC_STATIC | Opcodes.ACC_SYNTHETIC, name, indy.desc, null, null);
        InsnList code = h.instructions;
        code.add(new TypeInsnNode(Opcodes.NEW, "java/lang/StringBuilder"));
        code.add(new InsnNode(Opcodes.DUP));
        code.add(new MethodInsnNode(Opcodes.INVOKESPECIAL, "java/lang/StringBuilder", "<init>", "()V", false));
        int arg = 0;
        int slot = 0;
        int constant = 1;
        StringBuilder literal = new StringBuilder();
        for (int i = 0; i <= recipe.length(); i++) {
            char ch = i < recipe.length() ? recipe.charAt(i) : '\u0001';
            if (ch != '\u0001' && ch != '\u0002') {
                literal.append(ch);
                continue;
            }
            if (literal.length() > 0) {
                code.add(new org.objectweb.asm.tree.LdcInsnNode(literal.toString()));
                code.add(append("Ljava/lang/String;"));
                literal.setLength(0);
            }
            if (i == recipe.length()) break;
            if (ch == '\u0002') {
                Object c = indy.bsmArgs[constant++];
                if (!(c instanceof String)) throw new DesugarException(where + ": unsupported concatenation constant " + c);
                code.add(new org.objectweb.asm.tree.LdcInsnNode(c));
                code.add(append("Ljava/lang/String;"));
            } else {
                Type t = args[arg++];
                code.add(new VarInsnNode(t.getOpcode(Opcodes.ILOAD), slot));
                slot += t.getSize();
                String d = t.getDescriptor();
                if (d.equals("B") || d.equals("S")) d = "I";
                else if (t.getSort() == Type.ARRAY || (t.getSort() == Type.OBJECT && !d.equals("Ljava/lang/String;"))) d = "Ljava/lang/Object;";
                code.add(append(d));
            }
        }
        code.add(new MethodInsnNode(Opcodes.INVOKEVIRTUAL, "java/lang/StringBuilder", "toString", "()Ljava/lang/String;", false));
        code.add(new InsnNode(Opcodes.ARETURN));
        return h;
    }

    private static MethodInsnNode append(String argDescriptor) {
        return new MethodInsnNode(Opcodes.INVOKEVIRTUAL, "java/lang/StringBuilder", "append",
                "(" + argDescriptor + ")Ljava/lang/StringBuilder;", false);
    }

    // --- lambdas -------------------------------------------------------------------------------------------------

    private void lambdas() {
        for (ClassNode host : new ArrayList<>(classes.values())) {
            int n = 0;
            for (MethodNode m : host.methods) {
                for (ListIterator<AbstractInsnNode> it = m.instructions.iterator(); it.hasNext(); ) {
                    AbstractInsnNode insn = it.next();
                    if (!(insn instanceof InvokeDynamicInsnNode)) continue;
                    InvokeDynamicInsnNode indy = (InvokeDynamicInsnNode) insn;
                    String where = host.name + "." + m.name + m.desc;
                    if (!indy.bsm.getOwner().equals(LMF) || !indy.bsm.getName().equals("metafactory")) {
                        throw new DesugarException(where + ": unsupported invokedynamic (" + indy.bsm.getOwner() + "."
                                + indy.bsm.getName() + ")");
                    }
                    String name = host.name + "$$Lambda$" + (n++);
                    while (classes.containsKey(name)) name += "_";
                    ClassNode lambda = lambdaClass(name, host, indy, where);
                    generated.put(name, lambda);
                    it.set(new MethodInsnNode(Opcodes.INVOKESTATIC, name, "create",
                            Type.getMethodDescriptor(Type.getReturnType(indy.desc), Type.getArgumentTypes(indy.desc)), false));
                }
            }
        }
        if (!generated.isEmpty()) log.add(generated.size() + " LambdaMetafactory call sites replaced by generated classes");
    }

    /**
     * The class the metafactory would spin for [indy]: implements the functional interface (the indy's return type),
     * captures the indy's arguments, and forwards the interface method to the implementation handle.
     */
    private ClassNode lambdaClass(String name, ClassNode host, InvokeDynamicInsnNode indy, String where) {
        Type samType = (Type) indy.bsmArgs[0];
        Handle impl = (Handle) indy.bsmArgs[1];
        Type instantiated = (Type) indy.bsmArgs[2];
        Type itf = Type.getReturnType(indy.desc);
        Type[] captured = Type.getArgumentTypes(indy.desc);

        ClassNode c = new ClassNode();
        c.version = Opcodes.V1_8;
        c.access = Opcodes.ACC_FINAL | Opcodes.ACC_SUPER | Opcodes.ACC_SYNTHETIC;
        c.name = name;
        c.superName = "java/lang/Object";
        c.interfaces.add(itf.getInternalName());
        c.sourceFile = host.sourceFile;
        for (int i = 0; i < captured.length; i++) {
            c.fields.add(new FieldNode(Opcodes.ACC_PRIVATE | Opcodes.ACC_FINAL, "f" + i, captured[i].getDescriptor(), null, null));
        }
        // constructor(captured...) and the static factory create(captured...) the call site now invokes
        MethodNode init = new MethodNode(Opcodes.ACC_PRIVATE, "<init>", Type.getMethodDescriptor(Type.VOID_TYPE, captured), null, null);
        init.instructions.add(new VarInsnNode(Opcodes.ALOAD, 0));
        init.instructions.add(new MethodInsnNode(Opcodes.INVOKESPECIAL, "java/lang/Object", "<init>", "()V", false));
        int slot = 1;
        for (int i = 0; i < captured.length; i++) {
            init.instructions.add(new VarInsnNode(Opcodes.ALOAD, 0));
            init.instructions.add(new VarInsnNode(captured[i].getOpcode(Opcodes.ILOAD), slot));
            init.instructions.add(new FieldInsnNode(Opcodes.PUTFIELD, name, "f" + i, captured[i].getDescriptor()));
            slot += captured[i].getSize();
        }
        init.instructions.add(new InsnNode(Opcodes.RETURN));
        c.methods.add(init);

        MethodNode create = new MethodNode(Opcodes.ACC_STATIC, "create", Type.getMethodDescriptor(itf, captured), null, null);
        create.instructions.add(new TypeInsnNode(Opcodes.NEW, name));
        create.instructions.add(new InsnNode(Opcodes.DUP));
        slot = 0;
        for (Type t : captured) {
            create.instructions.add(new VarInsnNode(t.getOpcode(Opcodes.ILOAD), slot));
            slot += t.getSize();
        }
        create.instructions.add(new MethodInsnNode(Opcodes.INVOKESPECIAL, name, "<init>", init.desc, false));
        create.instructions.add(new InsnNode(Opcodes.ARETURN));
        c.methods.add(create);

        // the interface method: captured values, then the interface arguments, adapted to the implementation
        MethodNode sam = new MethodNode(Opcodes.ACC_PUBLIC, indy.name, samType.getDescriptor(), null, null);
        InsnList code = sam.instructions;
        int tag = impl.getTag();
        List<Type> implParams = new ArrayList<>();
        if (tag == Opcodes.H_INVOKEVIRTUAL || tag == Opcodes.H_INVOKEINTERFACE || tag == Opcodes.H_INVOKESPECIAL) {
            implParams.add(Type.getObjectType(impl.getOwner()));
        } else if (tag != Opcodes.H_INVOKESTATIC && tag != Opcodes.H_NEWINVOKESPECIAL) {
            throw new DesugarException(where + ": unsupported lambda implementation kind " + tag);
        }
        implParams.addAll(List.of(Type.getArgumentTypes(impl.getDesc())));
        Type[] samArgs = samType.getArgumentTypes();
        Type[] instArgs = instantiated.getArgumentTypes();
        if (captured.length + samArgs.length != implParams.size()) {
            throw new DesugarException(where + ": lambda arity mismatch (" + captured.length + " captured + "
                    + samArgs.length + " arguments for " + implParams.size() + " parameters)");
        }
        if (tag == Opcodes.H_NEWINVOKESPECIAL) {
            code.add(new TypeInsnNode(Opcodes.NEW, impl.getOwner()));
            code.add(new InsnNode(Opcodes.DUP));
        }
        int p = 0;
        for (int i = 0; i < captured.length; i++, p++) {
            code.add(new VarInsnNode(Opcodes.ALOAD, 0));
            code.add(new FieldInsnNode(Opcodes.GETFIELD, name, "f" + i, captured[i].getDescriptor()));
            convert(code, captured[i], implParams.get(p), where);
        }
        slot = 1;
        for (int i = 0; i < samArgs.length; i++, p++) {
            code.add(new VarInsnNode(samArgs[i].getOpcode(Opcodes.ILOAD), slot));
            slot += samArgs[i].getSize();
            convert(code, samArgs[i], instArgs[i], where);
            convert(code, instArgs[i], implParams.get(p), where);
        }
        Type implReturn;
        switch (tag) {
            case Opcodes.H_INVOKESTATIC:
                code.add(new MethodInsnNode(Opcodes.INVOKESTATIC, impl.getOwner(), impl.getName(), impl.getDesc(), impl.isInterface()));
                implReturn = Type.getReturnType(impl.getDesc());
                break;
            case Opcodes.H_NEWINVOKESPECIAL:
                code.add(new MethodInsnNode(Opcodes.INVOKESPECIAL, impl.getOwner(), "<init>", impl.getDesc(), false));
                implReturn = Type.getObjectType(impl.getOwner());
                break;
            default: // virtual, interface, or a private instance method (widened, so called virtually)
                boolean itfCall = impl.isInterface();
                code.add(new MethodInsnNode(itfCall ? Opcodes.INVOKEINTERFACE : Opcodes.INVOKEVIRTUAL, impl.getOwner(),
                        impl.getName(), impl.getDesc(), itfCall));
                implReturn = Type.getReturnType(impl.getDesc());
        }
        Type samReturn = samType.getReturnType();
        if (samReturn.getSort() == Type.VOID) {
            if (implReturn.getSort() != Type.VOID) code.add(new InsnNode(implReturn.getSize() == 2 ? Opcodes.POP2 : Opcodes.POP));
            code.add(new InsnNode(Opcodes.RETURN));
        } else {
            convert(code, implReturn, instantiated.getReturnType(), where);
            convert(code, instantiated.getReturnType(), samReturn, where);
            code.add(new InsnNode(samReturn.getOpcode(Opcodes.IRETURN)));
        }
        c.methods.add(sam);
        return c;
    }

    private static final Map<Integer, String> BOX = new LinkedHashMap<>();
    static {
        BOX.put(Type.BOOLEAN, "java/lang/Boolean");
        BOX.put(Type.CHAR, "java/lang/Character");
        BOX.put(Type.BYTE, "java/lang/Byte");
        BOX.put(Type.SHORT, "java/lang/Short");
        BOX.put(Type.INT, "java/lang/Integer");
        BOX.put(Type.FLOAT, "java/lang/Float");
        BOX.put(Type.LONG, "java/lang/Long");
        BOX.put(Type.DOUBLE, "java/lang/Double");
    }
    private static final Map<String, Integer> WIDEN = new HashMap<>();
    static {
        WIDEN.put("IJ", Opcodes.I2L);
        WIDEN.put("IF", Opcodes.I2F);
        WIDEN.put("ID", Opcodes.I2D);
        WIDEN.put("JF", Opcodes.L2F);
        WIDEN.put("JD", Opcodes.L2D);
        WIDEN.put("FD", Opcodes.F2D);
    }

    /** Adapt the value on the stack from [from] to [to] as LambdaMetafactory's adaptations allow. */
    private static void convert(InsnList code, Type from, Type to, String where) {
        if (from.equals(to)) return;
        boolean fromRef = from.getSort() >= Type.ARRAY;
        boolean toRef = to.getSort() >= Type.ARRAY;
        if (fromRef && toRef) {
            if (!to.getDescriptor().equals("Ljava/lang/Object;")) code.add(new TypeInsnNode(Opcodes.CHECKCAST, to.getInternalName()));
        } else if (!fromRef && toRef) {
            String box = BOX.get(from.getSort());
            code.add(new MethodInsnNode(Opcodes.INVOKESTATIC, box, "valueOf", "(" + from.getDescriptor() + ")L" + box + ";", false));
            if (!to.getInternalName().equals(box) && !to.getInternalName().equals("java/lang/Object")
                    && !to.getInternalName().equals("java/lang/Number")) {
                code.add(new TypeInsnNode(Opcodes.CHECKCAST, to.getInternalName()));
            }
        } else if (fromRef) {
            String box = BOX.get(to.getSort());
            if (!from.getInternalName().equals(box)) code.add(new TypeInsnNode(Opcodes.CHECKCAST, box));
            code.add(new MethodInsnNode(Opcodes.INVOKEVIRTUAL, box, to.getClassName() + "Value", "()" + to.getDescriptor(), false));
        } else {
            Integer op = WIDEN.get(from.getDescriptor() + to.getDescriptor());
            boolean subInt = "BSC".contains(from.getDescriptor()) && to.getSort() == Type.INT;
            if (op != null) {
                code.add(new InsnNode(op));
            } else if (!subInt) {
                throw new DesugarException(where + ": cannot adapt " + from + " to " + to);
            }
        }
    }

    /** A class the tool refuses to rewrite, and why. */
    static final class DesugarException extends RuntimeException {
        DesugarException(String message) {
            super(message);
        }
    }
}
