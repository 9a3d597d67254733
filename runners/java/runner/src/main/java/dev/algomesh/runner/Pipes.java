package dev.algomesh.runner;

import dev.algomesh.v1.CallRequest;
import dev.algomesh.v1.CallResponse;
import io.grpc.CallOptions;
import io.grpc.Channel;
import io.grpc.ClientInterceptors;
import io.grpc.Deadline;
import io.grpc.ManagedChannel;
import io.grpc.Metadata;
import io.grpc.MethodDescriptor;
import io.grpc.Status;
import io.grpc.StatusRuntimeException;
import io.grpc.netty.NettyChannelBuilder;
import io.grpc.protobuf.ProtoUtils;
import io.grpc.stub.ClientCalls;
import io.grpc.stub.MetadataUtils;
import io.netty.channel.epoll.EpollDomainSocketChannel;
import io.netty.channel.epoll.EpollEventLoopGroup;
import io.netty.channel.unix.DomainSocketAddress;
import java.util.Map;
import java.util.concurrent.Executors;
import java.util.concurrent.TimeUnit;

/** Mesh.Call on the sidecar's outbound socket ($ALGOMESH_ADDRESS). */
final class Pipes {
    static final MethodDescriptor<CallRequest, CallResponse> MESH_CALL =
            MethodDescriptor.<CallRequest, CallResponse>newBuilder()
                    .setType(MethodDescriptor.MethodType.UNARY)
                    .setFullMethodName("algomesh.v1.Mesh/Call")
                    .setRequestMarshaller(ProtoUtils.marshaller(CallRequest.getDefaultInstance()))
                    .setResponseMarshaller(ProtoUtils.marshaller(CallResponse.getDefaultInstance()))
                    .build();
    static final Metadata.Key<String> TARGET = Metadata.Key.of("algomesh-target", Metadata.ASCII_STRING_MARSHALLER);
    static final long DEFAULT_TIMEOUT_SECONDS = 300;

    private static ManagedChannel channel;

    private Pipes() {}

    private static synchronized ManagedChannel channel() {
        if (channel == null) {
            String address = System.getenv("ALGOMESH_ADDRESS");
            if (address == null || address.isEmpty()) {
                throw AlgomeshException.of(Status.Code.UNAVAILABLE, "MESH_UNAVAILABLE",
                        "ALGOMESH_ADDRESS is not set: pipes work inside the mesh only", "", Map.of());
            }
            String path = address.startsWith("unix://") ? address.substring("unix://".length())
                    : address.startsWith("unix:") ? address.substring("unix:".length()) : address;
            channel = open(path);
        }
        return channel;
    }

    /** A channel to a Unix socket (the sidecar's outbound one; the runner's own when it trains). */
    static ManagedChannel open(String path) {
        return NettyChannelBuilder.forAddress(new DomainSocketAddress(path))
                .channelType(EpollDomainSocketChannel.class)
                .eventLoopGroup(new EpollEventLoopGroup(1, Runner.threads("algomesh-pipe-io", true)))
                .executor(Executors.newCachedThreadPool(Runner.threads("algomesh-pipe", true)))
                .usePlaintext()
                .maxInboundMessageSize(Runner.MAX_MESSAGE_BYTES)
                .disableRetry()
                .build();
    }

    static Object call(String target, Object input, Map<String, String> forwarded, Deadline deadline) {
        CallRequest request = CallRequest.newBuilder().setInput(Payloads.encode(input)).build();
        Metadata headers = new Metadata();
        headers.put(TARGET, target);
        forwarded.forEach((k, v) -> headers.put(Metadata.Key.of(k, Metadata.ASCII_STRING_MARSHALLER), v));
        Channel ch = ClientInterceptors.intercept(channel(), MetadataUtils.newAttachHeadersInterceptor(headers));
        CallOptions options = CallOptions.DEFAULT.withDeadline(
                deadline != null ? deadline : Deadline.after(DEFAULT_TIMEOUT_SECONDS, TimeUnit.SECONDS));
        CallResponse response;
        try {
            response = ClientCalls.blockingUnaryCall(ch, MESH_CALL, options, request);
        } catch (StatusRuntimeException e) {
            throw AlgomeshException.fromStatus(e);
        }
        try {
            return Payloads.decode(response.getOutput());
        } catch (Payloads.InvalidPayload e) {
            throw AlgomeshException.of(Status.Code.INVALID_ARGUMENT, "INVALID_INPUT",
                    target + " answered a payload that cannot be read: " + e.getMessage(), "", Map.of());
        }
    }
}
