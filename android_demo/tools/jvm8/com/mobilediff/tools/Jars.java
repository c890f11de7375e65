package com.mobilediff.tools;

import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.util.Enumeration;
import java.util.Map;
import java.util.TreeMap;
import java.util.zip.ZipEntry;
import java.util.zip.ZipFile;
import java.util.zip.ZipOutputStream;

import org.objectweb.asm.ClassReader;
import org.objectweb.asm.ClassWriter;
import org.objectweb.asm.tree.ClassNode;

/** Reading class files out of jars and writing reproducible jars. */
final class Jars {
    private Jars() {
    }

    /** A jar's classes (by internal name) and its other entries (by path), without signatures or module info. */
    static final class Contents {
        final Map<String, ClassNode> classes = new TreeMap<>();
        final Map<String, byte[]> resources = new TreeMap<>();
    }

    static Contents read(Path jar) throws IOException {
        Contents out = new Contents();
        try (ZipFile zip = new ZipFile(jar.toFile())) {
            Enumeration<? extends ZipEntry> entries = zip.entries();
            while (entries.hasMoreElements()) {
                ZipEntry e = entries.nextElement();
                String name = e.getName();
                if (e.isDirectory() || name.startsWith("META-INF/versions/") || name.endsWith("module-info.class")
                        || name.matches("META-INF/[^/]+\\.(SF|RSA|DSA|EC)")) {
                    continue;
                }
                byte[] bytes;
                try (InputStream in = zip.getInputStream(e)) {
                    bytes = in.readAllBytes();
                }
                if (name.endsWith(".class")) {
                    ClassNode c = new ClassNode();
                    new ClassReader(bytes).accept(c, 0);
                    out.classes.put(c.name, c);
                } else {
                    out.resources.put(name, bytes);
                }
            }
        }
        return out;
    }

    /** The class file of [c]; maximum stack and locals are recomputed, existing frames kept. */
    static byte[] write(ClassNode c) {
        ClassWriter w = new ClassWriter(ClassWriter.COMPUTE_MAXS);
        c.accept(w);
        return w.toByteArray();
    }

    /** Write [classes] (internal name -> bytes) and [resources] to [out] atomically, sorted, with fixed times. */
    static void writeJar(Path out, Map<String, byte[]> classes, Map<String, byte[]> resources) throws IOException {
        Map<String, byte[]> all = new TreeMap<>(resources);
        for (Map.Entry<String, byte[]> e : classes.entrySet()) all.put(e.getKey() + ".class", e.getValue());
        Path tmp = out.resolveSibling(out.getFileName() + ".partial");
        ByteArrayOutputStream buffer = new ByteArrayOutputStream();
        try (ZipOutputStream zip = new ZipOutputStream(buffer)) {
            for (Map.Entry<String, byte[]> e : all.entrySet()) {
                ZipEntry z = new ZipEntry(e.getKey());
                z.setTime(315532800000L + 86400000L); // 1980-01-02: fixed, and within the zip format's range everywhere
                zip.putNextEntry(z);
                zip.write(e.getValue());
                zip.closeEntry();
            }
        }
        try (OutputStream o = Files.newOutputStream(tmp)) {
            buffer.writeTo(o);
        }
        Files.move(tmp, out, StandardCopyOption.REPLACE_EXISTING, StandardCopyOption.ATOMIC_MOVE);
    }
}
