package dev.algomesh.runner;

import com.google.protobuf.Any;
import com.google.protobuf.InvalidProtocolBufferException;
import com.google.rpc.DebugInfo;
import com.google.rpc.ErrorInfo;
import io.grpc.Metadata;
import io.grpc.Status;
import io.grpc.StatusRuntimeException;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.Map;

/**
 * An algomesh error status: what a pipe throws when the algorithm it calls fails or the mesh
 * refuses the call. It keeps the gRPC code, the message and the {@code grpc-status-details-bin}
 * it came with: an {@code apply} that lets it escape answers with that exact status, so its
 * reason ({@code ALGORITHM_NOT_FOUND}, {@code CALL_CYCLE}, the failing stage's
 * {@code ALGORITHM_ERROR}...) reaches the caller.
 */
public class AlgomeshException extends RuntimeException {
    private static final long serialVersionUID = 1L;

    private final Status.Code code;
    private final String reason;
    private final Map<String, String> metadata;
    private final String stacktrace;
    private final byte[] details; // a serialized google.rpc.Status

    AlgomeshException(Status.Code code, String reason, String message, Map<String, String> metadata,
                      String stacktrace, byte[] details) {
        super(message);
        this.code = code;
        this.reason = reason;
        this.metadata = Collections.unmodifiableMap(new LinkedHashMap<>(metadata));
        this.stacktrace = stacktrace;
        this.details = details;
    }

    /** A typed error made here (the details are built from the reason). */
    static AlgomeshException of(Status.Code code, String reason, String message, String stacktrace,
                                Map<String, String> metadata) {
        return new AlgomeshException(code, reason, message, metadata, stacktrace,
                Errors.details(code, reason, message, stacktrace, metadata));
    }

    /** The typed error carried by a status from the mesh (a pipe's answer). */
    static AlgomeshException fromStatus(StatusRuntimeException exc) {
        Status status = exc.getStatus();
        Metadata trailers = exc.getTrailers();
        byte[] raw = trailers == null ? null : trailers.get(Errors.DETAILS_KEY);
        if (raw != null) {
            try {
                com.google.rpc.Status rpc = com.google.rpc.Status.parseFrom(raw);
                String reason = null;
                Map<String, String> meta = Map.of();
                String stack = "";
                for (Any any : rpc.getDetailsList()) {
                    if (any.is(ErrorInfo.class)) {
                        ErrorInfo info = any.unpack(ErrorInfo.class);
                        if (Errors.DOMAIN.equals(info.getDomain())) {
                            reason = info.getReason();
                            meta = info.getMetadataMap();
                        }
                    } else if (any.is(DebugInfo.class)) {
                        stack = any.unpack(DebugInfo.class).getDetail();
                    }
                }
                if (reason != null) {
                    String message = !rpc.getMessage().isEmpty() ? rpc.getMessage()
                            : status.getDescription() != null ? status.getDescription() : "";
                    return new AlgomeshException(status.getCode(), reason, message, meta, stack, raw);
                }
            } catch (InvalidProtocolBufferException ignored) {
                // a foreign server's garbage: fall through to the code
            }
        }
        // A status without an algomesh ErrorInfo (a transport failure): typed by its code.
        String reason = switch (status.getCode()) {
            case DEADLINE_EXCEEDED -> "DEADLINE_EXCEEDED";
            case UNAVAILABLE -> "MESH_UNAVAILABLE";
            case RESOURCE_EXHAUSTED -> "PAYLOAD_TOO_LARGE";
            case UNAUTHENTICATED -> "UNAUTHENTICATED";
            case PERMISSION_DENIED -> "PERMISSION_DENIED";
            case NOT_FOUND -> "ALGORITHM_NOT_FOUND";
            case INVALID_ARGUMENT -> "INVALID_INPUT";
            default -> "INTERNAL";
        };
        String text = status.getDescription() != null ? status.getDescription() : status.getCode().name();
        if (status.getCode() == Status.Code.UNAVAILABLE) {
            text = "cannot reach the mesh: " + text;
        } else if (status.getCode() == Status.Code.DEADLINE_EXCEEDED) {
            text = "no answer within the call's timeout (" + text + ")";
        }
        return of(status.getCode(), reason, text, "", Map.of("grpc_code", status.getCode().name()));
    }

    /** The gRPC code, e.g. NOT_FOUND. */
    public Status.Code code() {
        return code;
    }

    /** The stable reason, e.g. ALGORITHM_NOT_FOUND, CALL_CYCLE, ALGORITHM_ERROR. */
    public String reason() {
        return reason;
    }

    /** The ErrorInfo's metadata (algorithm, version, error_type...). */
    public Map<String, String> metadata() {
        return metadata;
    }

    /** The failing algorithm's stack trace, when there is one (else empty). */
    public String stacktrace() {
        return stacktrace;
    }

    /** The status as it came, for answering with it unchanged. */
    StatusRuntimeException toStatusException() {
        Metadata trailers = new Metadata();
        trailers.put(Errors.DETAILS_KEY, details);
        return Status.fromCode(code).withDescription(Errors.cut(getMessage(), Errors.MESSAGE_BYTES, false))
                .asRuntimeException(trailers);
    }

    @Override
    public String toString() {
        return "AlgomeshException(" + reason + "): " + getMessage();
    }
}
