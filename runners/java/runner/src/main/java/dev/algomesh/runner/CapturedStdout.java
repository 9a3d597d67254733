package dev.algomesh.runner;

import java.io.ByteArrayOutputStream;
import java.io.OutputStream;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;

/**
 * System.out for the runner: while a call that asked for its output runs, what its thread
 * (and threads it starts) print goes to the call's buffer; everything else goes to the real
 * stdout (the instance log).
 */
final class CapturedStdout extends OutputStream {
    /** One call's captured output; once closed, late writers fall through to the real stdout. */
    static final class Buffer extends OutputStream {
        private final ByteArrayOutputStream bytes = new ByteArrayOutputStream();
        private boolean open = true;

        synchronized boolean tryWrite(byte[] b, int off, int len) {
            if (!open) {
                return false;
            }
            bytes.write(b, off, len);
            return true;
        }

        @Override
        public void write(int b) {
            write(new byte[] {(byte) b}, 0, 1);
        }

        @Override
        public void write(byte[] b, int off, int len) {
            if (!tryWrite(b, off, len)) {
                INSTANCE.real.write(b, off, len);
            }
        }

        synchronized String close(boolean keep) {
            open = false;
            return keep ? bytes.toString(StandardCharsets.UTF_8) : "";
        }
    }

    static CapturedStdout INSTANCE;

    private final PrintStream real;
    private final InheritableThreadLocal<Buffer> current = new InheritableThreadLocal<>();

    private CapturedStdout(PrintStream real) {
        this.real = real;
    }

    static synchronized void install() {
        if (INSTANCE == null) {
            INSTANCE = new CapturedStdout(System.out);
            System.setOut(new PrintStream(INSTANCE, true, StandardCharsets.UTF_8));
        }
    }

    /** Route this thread's System.out to {@code buffer} (null: the real stdout); returns the previous one. */
    Buffer route(Buffer buffer) {
        Buffer previous = current.get();
        if (buffer == null) {
            current.remove();
        } else {
            current.set(buffer);
        }
        return previous;
    }

    @Override
    public void write(int b) {
        write(new byte[] {(byte) b}, 0, 1);
    }

    @Override
    public void write(byte[] b, int off, int len) {
        Buffer buffer = current.get();
        if (buffer == null || !buffer.tryWrite(b, off, len)) {
            real.write(b, off, len);
        }
    }

    @Override
    public void flush() {
        real.flush();
    }
}
