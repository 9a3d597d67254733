package dev.algomesh.runner;

import io.grpc.Deadline;
import java.io.PrintStream;
import java.time.Duration;
import java.util.Map;
import java.util.Optional;
import java.util.concurrent.TimeUnit;

/** The call being served: pipes to other algorithms, and its output stream. */
public final class Call {
    private final Map<String, String> forwarded; // algomesh-call, traceparent, tracestate
    private final Deadline deadline;
    private final PrintStream out;

    Call(Map<String, String> forwarded, Deadline deadline, PrintStream out) {
        this.forwarded = forwarded;
        this.deadline = deadline;
        this.out = out;
    }

    /**
     * Call algorithm {@code target} ("owner/name" or "owner/name/VERSION") with {@code input}
     * (encoded as an apply's output is) through this instance's sidecar, as part of this call's
     * pipeline and trace, within what remains of its deadline. Returns the decoded output:
     * a {@code JsonNode}, a {@code String} or a {@code byte[]}.
     *
     * @throws AlgomeshException the callee's error or the mesh's refusal (let it escape to
     *     answer with it unchanged)
     */
    public Object pipe(String target, Object input) {
        return Pipes.call(target, input, forwarded, deadline);
    }

    /** What this call prints, as System.out does on the call's own thread: captured when the caller asked. */
    public PrintStream out() {
        return out;
    }

    /** The time left before the caller's deadline, if it set one. */
    public Optional<Duration> remaining() {
        return deadline == null ? Optional.empty()
                : Optional.of(Duration.ofNanos(Math.max(0, deadline.timeRemaining(TimeUnit.NANOSECONDS))));
    }
}
