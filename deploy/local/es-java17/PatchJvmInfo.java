/*
 * PatchJvmInfo - makes Elasticsearch 1.5.2 (the test bed's search server) start on Java 17.
 *
 * Why: the static initialiser of org.elasticsearch.monitor.jvm.JvmInfo calls
 * java.lang.management.RuntimeMXBean.getBootClassPath(). Java 9 removed the boot class path,
 * and that method now throws UnsupportedOperationException, so the class fails to initialise
 * and Elasticsearch dies at start-up. The value is only reported in node info; nothing
 * depends on it.
 *
 * What: this program reads JvmInfo.class out of the Elasticsearch jar and rewrites that one
 * call site, INVOKEINTERFACE RuntimeMXBean.getBootClassPath()Ljava/lang/String;, into
 *     POP        (drop the RuntimeMXBean receiver)
 *     LDC ""     (push an empty string in place of the result)
 * so the operand stack has the same shape before and after, and no frame or max-stack value
 * changes. Everything else in the class is copied as is. The rewritten class is written into
 * a patch directory that deploy/local/install-deps.sh creates and test/tools/testbed.sh
 * puts AHEAD of the original jar on the class path; the jar itself is never modified.
 *
 * It uses the ASM 4.1 jar that ships in Elasticsearch's own lib/ (ASM 4.1 reads class files
 * up to Java 7, which is what Elasticsearch 1.5.2 was compiled for). It fails, rather than
 * writing anything, unless it finds exactly one call site to rewrite.
 *
 * Usage: java -cp <dir of this class>:<lib/asm-4.1.jar> PatchJvmInfo <elasticsearch jar> <patch dir>
 */

import java.io.ByteArrayOutputStream;
import java.io.File;
import java.io.FileOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.util.zip.ZipEntry;
import java.util.zip.ZipFile;

import org.objectweb.asm.ClassReader;
import org.objectweb.asm.ClassVisitor;
import org.objectweb.asm.ClassWriter;
import org.objectweb.asm.MethodVisitor;
import org.objectweb.asm.Opcodes;

public final class PatchJvmInfo {
    static final String CLASS_ENTRY = "org/elasticsearch/monitor/jvm/JvmInfo.class";
    static final String TARGET_OWNER = "java/lang/management/RuntimeMXBean";
    static final String TARGET_NAME = "getBootClassPath";
    static final String TARGET_DESC = "()Ljava/lang/String;";

    /* How many call sites were rewritten; must be exactly one. */
    private static int rewritten = 0;

    /* Rewrites the call in every method it passes through (in practice only <clinit>). */
    static final class CallSiteRewriter extends MethodVisitor {
        CallSiteRewriter(MethodVisitor next) {
            super(Opcodes.ASM4, next);
        }

        @Override
        public void visitMethodInsn(int opcode, String owner, String name, String desc) {
            if (opcode == Opcodes.INVOKEINTERFACE && TARGET_OWNER.equals(owner)
                    && TARGET_NAME.equals(name) && TARGET_DESC.equals(desc)) {
                super.visitInsn(Opcodes.POP);
                super.visitLdcInsn("");
                rewritten++;
                return;
            }
            super.visitMethodInsn(opcode, owner, name, desc);
        }
    }

    static final class ClassRewriter extends ClassVisitor {
        ClassRewriter(ClassVisitor next) {
            super(Opcodes.ASM4, next);
        }

        @Override
        public MethodVisitor visitMethod(int access, String name, String desc, String signature,
                                         String[] exceptions) {
            MethodVisitor mv = super.visitMethod(access, name, desc, signature, exceptions);
            return mv == null ? null : new CallSiteRewriter(mv);
        }
    }

    static byte[] readEntry(File jar, String entryName) throws IOException {
        try (ZipFile zip = new ZipFile(jar)) {
            ZipEntry entry = zip.getEntry(entryName);
            if (entry == null) {
                throw new IOException(entryName + " not found in " + jar);
            }
            try (InputStream in = zip.getInputStream(entry)) {
                ByteArrayOutputStream out = new ByteArrayOutputStream();
                byte[] buffer = new byte[8192];
                int n;
                while ((n = in.read(buffer)) > 0) {
                    out.write(buffer, 0, n);
                }
                return out.toByteArray();
            }
        }
    }

    /* Writes to a temporary file next to the target, then renames, so a half-written class
     * is never left on the class path. */
    static void writeAtomically(File target, byte[] bytes) throws IOException {
        File parent = target.getParentFile();
        if (!parent.isDirectory() && !parent.mkdirs()) {
            throw new IOException("cannot create directory " + parent);
        }
        File temporary = new File(parent, target.getName() + ".tmp");
        try (OutputStream out = new FileOutputStream(temporary)) {
            out.write(bytes);
        }
        if (!temporary.renameTo(target)) {
            throw new IOException("cannot rename " + temporary + " to " + target);
        }
    }

    public static void main(String[] args) throws IOException {
        if (args.length != 2) {
            System.err.println("usage: PatchJvmInfo <elasticsearch jar> <patch dir>");
            System.exit(2);
        }
        File jar = new File(args[0]);
        File output = new File(args[1], CLASS_ENTRY);

        ClassReader reader = new ClassReader(readEntry(jar, CLASS_ENTRY));
        /* Passing the reader lets ASM copy the constant pool and untouched methods verbatim;
         * no frames need recomputing because control flow and stack shape are unchanged. */
        ClassWriter writer = new ClassWriter(reader, 0);
        reader.accept(new ClassRewriter(writer), 0);

        if (rewritten != 1) {
            System.err.println("PatchJvmInfo: expected exactly 1 call to " + TARGET_OWNER + "."
                               + TARGET_NAME + " in " + CLASS_ENTRY + ", found " + rewritten
                               + "; is this Elasticsearch 1.5.2?");
            System.exit(1);
        }
        writeAtomically(output, writer.toByteArray());
        System.out.println("PatchJvmInfo: rewrote " + rewritten + " call site, wrote " + output);
    }
}
