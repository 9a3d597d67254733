package dev.algomesh.runner;

import com.google.protobuf.ByteString;
import dev.algomesh.v1.CallRequest;
import dev.algomesh.v1.ContentType;
import dev.algomesh.v1.CallResponse;
import dev.algomesh.v1.LoadRequest;
import dev.algomesh.v1.LoadResponse;
import dev.algomesh.v1.Payload;
import com.google.protobuf.InvalidProtocolBufferException;
import io.grpc.CallOptions;
import io.grpc.Context;
import io.grpc.Contexts;
import io.grpc.Deadline;
import io.grpc.ManagedChannel;
import io.grpc.Metadata;
import io.grpc.MethodDescriptor;
import io.grpc.Server;
import io.grpc.ServerCall;
import io.grpc.ServerCallHandler;
import io.grpc.ServerInterceptor;
import io.grpc.ServerInterceptors;
import io.grpc.ServerServiceDefinition;
import io.grpc.Status;
import io.grpc.StatusRuntimeException;
import io.grpc.netty.NettyServerBuilder;
import io.grpc.protobuf.ProtoUtils;
import io.grpc.stub.ClientCalls;
import io.grpc.stub.ServerCalls;
import io.grpc.stub.StreamObserver;
import io.netty.channel.epoll.Epoll;
import io.netty.channel.epoll.EpollEventLoopGroup;
import io.netty.channel.epoll.EpollServerDomainSocketChannel;
import io.netty.channel.unix.DomainSocketAddress;
import java.io.ByteArrayInputStream;
import java.io.IOException;
import java.io.InputStream;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.concurrent.Executors;
import java.util.concurrent.Semaphore;
import java.util.concurrent.ThreadFactory;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.logging.Level;
import java.util.logging.Logger;

/**
 * The Java runner: {@code public static void main(String[] a) { Runner.serve(new MyAlgorithm()); }}.
 *
 * <p>Serves {@code algomesh.v1.Runner} on {@code $ALGOMESH_RUNNER_SOCKET} (docs/runners.md) until
 * SIGTERM or until its parent, the sidecar, dies.
 */
public final class Runner {
    static final int MAX_MESSAGE_BYTES = 64 * 1024 * 1024;
    static final String[] FORWARDED = {"algomesh-call", "traceparent", "tracestate"};

    private Runner() {}

    /** Serve {@code algorithm} until the process is told to stop; never returns normally. */
    public static void serve(Algorithm algorithm) {
        String socket = System.getenv("ALGOMESH_RUNNER_SOCKET");
        if (socket == null || socket.isEmpty()) {
            System.err.println("algomesh: ALGOMESH_RUNNER_SOCKET is not set; the mesh's sidecar starts this program");
            System.exit(2);
        }
        int concurrency = 1;
        try {
            concurrency = Math.max(1, Integer.parseInt(System.getenv().getOrDefault("ALGOMESH_CONCURRENCY", "1")));
        } catch (NumberFormatException ignored) {
            // keep 1
        }
        boolean training = "1".equals(System.getenv("ALGOMESH_CDS_TRAINING"));
        if (!training) {
            watchParent();
        }
        Thread warming = warmUp();
        CapturedStdout.install();
        NETTY_BOOTSTRAP_LOG.setLevel(Level.SEVERE); // "Unknown channel option 'SO_KEEPALIVE'" on Unix sockets
        Epoll.ensureAvailability();
        try {
            Files.deleteIfExists(Path.of(socket)); // a stale socket from a previous process
            Server server = NettyServerBuilder.forAddress(new DomainSocketAddress(socket))
                    .channelType(EpollServerDomainSocketChannel.class)
                    .bossEventLoopGroup(new EpollEventLoopGroup(1, threads("algomesh-accept", true)))
                    .workerEventLoopGroup(new EpollEventLoopGroup(1, threads("algomesh-io", true)))
                    .executor(Executors.newCachedThreadPool(threads("algomesh-apply", true)))
                    .maxInboundMessageSize(MAX_MESSAGE_BYTES)
                    .addService(ServerInterceptors.intercept(new Service(algorithm, concurrency).definition(),
                            new HeadersInterceptor()))
                    .build()
                    .start();
            if (training) {
                train(socket, warming);
                server.shutdownNow();
                System.exit(0); // writes the class-data archive (-XX:ArchiveClassesAtExit)
            }
            Runtime.getRuntime().addShutdownHook(new Thread(() -> {
                server.shutdownNow();
                try {
                    Files.deleteIfExists(Path.of(socket));
                } catch (IOException ignored) {
                    // nothing to do while exiting
                }
            }, "algomesh-shutdown"));
            server.awaitTermination();
        } catch (IOException e) {
            System.err.println("algomesh: cannot serve on " + socket + ": " + e);
            System.exit(1);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
        System.exit(0);
    }

    private static final Logger NETTY_BOOTSTRAP_LOG = Logger.getLogger("io.netty.bootstrap");

    /**
     * Load the classes of the first call (JSON, messages, statuses) on another core while the
     * server starts: instances start on demand, and the first call waits for all of it.
     */
    private static Thread warmUp() {
        Thread warming = threads("algomesh-warmup", true).newThread(() -> {
            try {
                Object value = Payloads.decode(Payload.newBuilder().setContentType(ContentType.CONTENT_TYPE_JSON)
                        .setData(ByteString.copyFromUtf8("{\"a\":[1,2.5,\"x\",true,null,{}]}")).build());
                byte[] body = CallRequest.newBuilder().setInput(Payloads.encode(value)).build().toByteArray();
                CallResponse.newBuilder().setOutput(CallRequest.parseFrom(body).getInput()).setStdout("")
                        .build().toByteArray();
                Payloads.encode(Map.of("k", java.util.List.of(1, "v")));
                Errors.details(Status.Code.UNKNOWN, "ALGORITHM_ERROR", "warm-up", "", Map.of());
            } catch (Exception | LinkageError ignored) {
                // only a head start: the first call loads whatever this did not
            }
        });
        warming.start();
        return warming;
    }

    /**
     * The build's training run (runners/java/build.sh, ALGOMESH_CDS_TRAINING=1): the JVM records
     * the classes a start and a first call load into a class-data archive next to the jar, which
     * the sidecar passes to java (-XX:SharedArchiveFile) so an instance serves 2-3x sooner. It
     * calls this server and the pipe client's code, never the algorithm's load() or apply().
     */
    private static void train(String socket, Thread warming) throws InterruptedException {
        ManagedChannel channel = Pipes.open(socket);
        try {
            byte[] body = CallRequest.newBuilder().setInput(Payloads.encode(Map.of("warm", 1))).build().toByteArray();
            try {
                ClientCalls.blockingUnaryCall(channel, Service.APPLY, CallOptions.DEFAULT.withDeadlineAfter(30,
                        TimeUnit.SECONDS), body); // Apply before Load: an INTERNAL status, by design
            } catch (StatusRuntimeException e) {
                AlgomeshException.fromStatus(e).toStatusException();
            }
            try {
                ClientCalls.blockingUnaryCall(channel, Pipes.MESH_CALL, CallOptions.DEFAULT.withDeadlineAfter(30,
                        TimeUnit.SECONDS), CallRequest.parseFrom(body)); // not served here: UNIMPLEMENTED
            } catch (StatusRuntimeException e) {
                AlgomeshException.fromStatus(e);
            }
        } catch (InvalidProtocolBufferException e) {
            throw new IllegalStateException(e);
        } finally {
            channel.shutdownNow();
            channel.awaitTermination(5, TimeUnit.SECONDS);
        }
        warming.join();
    }

    /** Exit when the sidecar that started this process is gone (polled: Java has no prctl). */
    private static void watchParent() {
        String expected = System.getenv("ALGOMESH_PARENT_PID");
        if (expected == null || expected.isEmpty()) {
            return;
        }
        long pid;
        try {
            pid = Long.parseLong(expected.trim());
        } catch (NumberFormatException e) {
            return;
        }
        Thread watcher = threads("algomesh-parent", true).newThread(() -> {
            while (true) {
                long parent = ProcessHandle.current().parent().map(ProcessHandle::pid).orElse(-1L);
                if (parent != pid) {
                    System.err.println("algomesh: parent process is gone; exiting");
                    Runtime.getRuntime().halt(0);
                }
                try {
                    Thread.sleep(250);
                } catch (InterruptedException e) {
                    return;
                }
            }
        });
        watcher.start();
    }

    /**
     * Threads that do not inherit the thread that creates them: a thread started lazily during
     * a captured call must not capture into that call's buffer.
     */
    static ThreadFactory threads(String prefix, boolean daemon) {
        AtomicInteger n = new AtomicInteger();
        return r -> {
            Thread t = new Thread(null, r, prefix + "-" + n.incrementAndGet(), 0, false);
            t.setDaemon(daemon);
            return t;
        };
    }

    private static final Context.Key<Metadata> HEADERS = Context.key("algomesh-headers");

    /** Keeps each call's request headers in its gRPC Context (for the headers pipes forward). */
    private static final class HeadersInterceptor implements ServerInterceptor {
        @Override
        public <Q, R> ServerCall.Listener<Q> interceptCall(ServerCall<Q, R> call, Metadata headers,
                                                          ServerCallHandler<Q, R> next) {
            return Contexts.interceptCall(Context.current().withValue(HEADERS, headers), call, headers, next);
        }
    }

    /** Raw bytes in and out (Apply): a body that is not a CallRequest is INVALID_INPUT, not INTERNAL. */
    private static final MethodDescriptor.Marshaller<byte[]> BYTES = new MethodDescriptor.Marshaller<>() {
        @Override
        public InputStream stream(byte[] value) {
            return new ByteArrayInputStream(value);
        }

        @Override
        public byte[] parse(InputStream stream) {
            try {
                return stream.readAllBytes();
            } catch (IOException e) {
                throw Status.INTERNAL.withDescription("cannot read the request: " + e).withCause(e).asRuntimeException();
            }
        }
    };

    /** algomesh.v1.Runner. */
    static final class Service {
        static final MethodDescriptor<LoadRequest, LoadResponse> LOAD =
                MethodDescriptor.<LoadRequest, LoadResponse>newBuilder()
                        .setType(MethodDescriptor.MethodType.UNARY)
                        .setFullMethodName("algomesh.v1.Runner/Load")
                        .setRequestMarshaller(ProtoUtils.marshaller(LoadRequest.getDefaultInstance()))
                        .setResponseMarshaller(ProtoUtils.marshaller(LoadResponse.getDefaultInstance()))
                        .build();
        static final MethodDescriptor<byte[], byte[]> APPLY = MethodDescriptor.<byte[], byte[]>newBuilder()
                .setType(MethodDescriptor.MethodType.UNARY)
                .setFullMethodName("algomesh.v1.Runner/Apply")
                .setRequestMarshaller(BYTES)
                .setResponseMarshaller(BYTES)
                .build();

        private final Algorithm algorithm;
        private final Semaphore slots;
        private volatile boolean loaded;
        private double loadSeconds;

        Service(Algorithm algorithm, int concurrency) {
            this.algorithm = algorithm;
            this.slots = new Semaphore(concurrency, true);
        }

        ServerServiceDefinition definition() {
            return ServerServiceDefinition.builder("algomesh.v1.Runner")
                    .addMethod(LOAD, ServerCalls.asyncUnaryCall(this::load))
                    .addMethod(APPLY, ServerCalls.asyncUnaryCall(this::apply))
                    .build();
        }

        private void load(LoadRequest request, StreamObserver<LoadResponse> response) {
            try {
                double seconds = loadOnce();
                response.onNext(LoadResponse.newBuilder().setDuration(seconds)
                        .setRuntime("java " + System.getProperty("java.version")).build());
                response.onCompleted();
            } catch (StatusRuntimeException e) {
                response.onError(e);
            }
        }

        private synchronized double loadOnce() {
            if (!loaded) {
                long t0 = System.nanoTime();
                try {
                    invokeLoad();
                } catch (Throwable t) {
                    throw Errors.algorithmError(t, true, null);
                }
                loadSeconds = (System.nanoTime() - t0) / 1e9;
                loaded = true;
            }
            return loadSeconds;
        }

        private void invokeLoad() throws Exception {
            algorithm.load();
        }

        private void apply(byte[] body, StreamObserver<byte[]> response) {
            byte[] out;
            try {
                out = applyBytes(body);
            } catch (StatusRuntimeException e) {
                response.onError(e);
                return;
            }
            response.onNext(out);
            response.onCompleted();
        }

        private byte[] applyBytes(byte[] body) {
            if (!loaded) {
                throw Errors.status(Status.Code.INTERNAL, "INTERNAL", "Apply before Load");
            }
            CallRequest request;
            try {
                request = CallRequest.parseFrom(body);
            } catch (InvalidProtocolBufferException e) {
                throw Errors.invalidInput("the request body is not an algomesh.v1.CallRequest");
            }
            Object input;
            try {
                input = Payloads.decode(request.getInput());
            } catch (Payloads.InvalidPayload e) {
                throw Errors.invalidInput(e.getMessage());
            }
            Metadata headers = HEADERS.get();
            Map<String, String> forwarded = new LinkedHashMap<>();
            for (String key : FORWARDED) {
                String value = headers == null ? null : headers.get(Metadata.Key.of(key, Metadata.ASCII_STRING_MARSHALLER));
                if (value != null) {
                    forwarded.put(key, value);
                }
            }
            Deadline deadline = Context.current().getDeadline();

            try {
                slots.acquire();
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                throw Status.CANCELLED.withDescription("interrupted").asRuntimeException();
            }
            CapturedStdout stdout = CapturedStdout.INSTANCE;
            CapturedStdout.Buffer buffer = request.getCaptureStdout() ? new CapturedStdout.Buffer() : null;
            CapturedStdout.Buffer previous = stdout.route(buffer);
            PrintStream out = buffer != null ? new PrintStream(buffer, true, StandardCharsets.UTF_8) : System.out;
            Call call = new Call(forwarded, deadline, out);
            Object result;
            String printed;
            long t0 = System.nanoTime();
            double seconds;
            try {
                try {
                    result = invokeApply(call, input);
                } catch (Throwable t) {
                    AlgomeshException typed = piped(t);
                    if (typed != null && !"INTERNAL".equals(typed.reason())) {
                        // A typed error from one of its pipes that the algorithm let through: as it came.
                        throw typed.toStatusException();
                    }
                    throw Errors.algorithmError(t, false, printedSoFar(out, buffer));
                } finally {
                    seconds = (System.nanoTime() - t0) / 1e9;
                }
                out.flush();
                printed = buffer != null ? buffer.close(true) : "";
            } finally {
                if (buffer != null) {
                    buffer.close(false);
                }
                stdout.route(previous);
                slots.release();
            }
            Payload payload;
            try {
                payload = Payloads.encode(result);
            } catch (IllegalArgumentException e) {
                throw Errors.status(Status.Code.UNKNOWN, "ALGORITHM_ERROR",
                        "apply() returned a value that cannot be sent: " + e.getMessage(), "",
                        Map.of("error_type", "IllegalArgumentException"));
            }
            return CallResponse.newBuilder().setOutput(payload).setStdout(printed).setDuration(seconds).build()
                    .toByteArray();
        }

        /** A pipe's error, as thrown or in the wrappers of futures and reflection (a pipe made on a pool). */
        private static AlgomeshException piped(Throwable t) {
            for (int depth = 0; t != null && depth < 8; depth++, t = t.getCause()) {
                if (t instanceof AlgomeshException e) {
                    return e;
                }
                if (!(t instanceof java.util.concurrent.CompletionException
                        || t instanceof java.util.concurrent.ExecutionException
                        || t instanceof java.lang.reflect.UndeclaredThrowableException
                        || t instanceof java.lang.reflect.InvocationTargetException)) {
                    return null;
                }
            }
            return null;
        }

        private static String printedSoFar(PrintStream out, CapturedStdout.Buffer buffer) {
            if (buffer == null) {
                return null;
            }
            out.flush();
            return buffer.close(true);
        }

        private Object invokeApply(Call call, Object input) throws Exception {
            return algorithm.apply(call, input);
        }
    }
}
