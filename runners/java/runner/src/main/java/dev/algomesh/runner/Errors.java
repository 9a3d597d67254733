package dev.algomesh.runner;

import com.google.protobuf.Any;
import com.google.rpc.DebugInfo;
import com.google.rpc.ErrorInfo;
import io.grpc.Metadata;
import io.grpc.Status;
import io.grpc.StatusRuntimeException;
import java.io.PrintWriter;
import java.io.StringWriter;
import java.nio.ByteBuffer;
import java.nio.charset.CharacterCodingException;
import java.nio.charset.CodingErrorAction;
import java.nio.charset.StandardCharsets;
import java.util.LinkedHashMap;
import java.util.Map;

/** Statuses as every algomesh process writes them (docs/contract.md, "Errors"). */
final class Errors {
    static final String DOMAIN = "algomesh";
    static final Metadata.Key<byte[]> DETAILS_KEY =
            Metadata.Key.of("grpc-status-details-bin", Metadata.BINARY_BYTE_MARSHALLER);
    // gRPC caps trailing metadata at 8 KiB: the message travels twice, the stack trace once.
    static final int MESSAGE_BYTES = 512;
    static final int STACK_BYTES = 2560;
    static final int META_BYTES = 160;

    private Errors() {}

    static byte[] details(Status.Code code, String reason, String message, String stacktrace,
                          Map<String, String> metadata) {
        ErrorInfo.Builder info = ErrorInfo.newBuilder().setReason(reason).setDomain(DOMAIN);
        for (Map.Entry<String, String> e : metadata.entrySet()) {
            info.putMetadata(cut(e.getKey(), 64, false), cut(String.valueOf(e.getValue()), META_BYTES, false));
        }
        com.google.rpc.Status.Builder status = com.google.rpc.Status.newBuilder()
                .setCode(code.value())
                .setMessage(cut(message, MESSAGE_BYTES, false))
                .addDetails(Any.pack(info.build()));
        if (stacktrace != null && !stacktrace.isEmpty()) {
            status.addDetails(Any.pack(DebugInfo.newBuilder().setDetail(cut(stacktrace, STACK_BYTES, true)).build()));
        }
        return status.build().toByteArray();
    }

    static StatusRuntimeException status(Status.Code code, String reason, String message) {
        return status(code, reason, message, "", Map.of());
    }

    static StatusRuntimeException status(Status.Code code, String reason, String message, String stacktrace,
                                         Map<String, String> metadata) {
        return AlgomeshException.of(code, reason, message, stacktrace, metadata).toStatusException();
    }

    static StatusRuntimeException invalidInput(String message) {
        return status(Status.Code.INVALID_ARGUMENT, "INVALID_INPUT", message);
    }

    /** An exception from the algorithm's code as ALGORITHM_ERROR / ALGORITHM_LOAD_FAILED. */
    static StatusRuntimeException algorithmError(Throwable t, boolean inLoad, String stdout) {
        String type = typeName(t);
        String message = t.getMessage() != null && !t.getMessage().isEmpty() ? t.getMessage() : type;
        Map<String, String> meta = new LinkedHashMap<>();
        meta.put("error_type", type);
        if (stdout != null && !stdout.isEmpty()) {
            meta.put("stdout", stdout);
        }
        String trace = userTrace(t, inLoad ? "invokeLoad" : "invokeApply");
        if (inLoad) {
            return status(Status.Code.FAILED_PRECONDITION, "ALGORITHM_LOAD_FAILED", type + ": " + message, trace, meta);
        }
        return status(Status.Code.UNKNOWN, "ALGORITHM_ERROR", message, trace, meta);
    }

    static String typeName(Throwable t) {
        String simple = t.getClass().getSimpleName();
        return simple.isEmpty() ? t.getClass().getName() : simple;
    }

    /** The stack trace without the runner's frames (and gRPC's) below the algorithm's. */
    static String userTrace(Throwable t, String runnerMethod) {
        StringWriter sw = new StringWriter();
        t.printStackTrace(new PrintWriter(sw));
        String marker = "\tat " + Runner.Service.class.getName() + "." + runnerMethod + "(";
        StringBuilder out = new StringBuilder();
        boolean dropping = false;
        for (String line : sw.toString().split("\n", -1)) {
            if (line.startsWith(marker)) {
                dropping = true;
            } else if (dropping && !line.startsWith("\tat ")) {
                dropping = false;
            }
            if (!dropping) {
                out.append(line).append('\n');
            }
        }
        return out.toString().stripTrailing() + "\n";
    }

    /** At most {@code limit} UTF-8 bytes of {@code text}: its head, or its tail (a stack trace's end). */
    static String cut(String text, int limit, boolean tail) {
        if (text == null) {
            return "";
        }
        byte[] raw = text.getBytes(StandardCharsets.UTF_8);
        if (raw.length <= limit) {
            return text;
        }
        if (tail) {
            return "…(cut)\n" + decodeIgnoring(raw, raw.length - limit, limit);
        }
        return decodeIgnoring(raw, 0, limit) + "…(cut)";
    }

    private static String decodeIgnoring(byte[] raw, int off, int len) {
        try {
            return StandardCharsets.UTF_8.newDecoder()
                    .onMalformedInput(CodingErrorAction.IGNORE)
                    .onUnmappableCharacter(CodingErrorAction.IGNORE)
                    .decode(ByteBuffer.wrap(raw, off, len)).toString();
        } catch (CharacterCodingException e) {
            throw new IllegalStateException(e); // IGNORE never throws
        }
    }
}
