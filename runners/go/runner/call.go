package runner

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"sync"
	"time"

	pb "algomesh.dev/gen/algomesh/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

const (
	maxMessageBytes = 64 * 1024 * 1024
	defaultTimeout  = 300 * time.Second // as the Python client's default
)

// forwarded: the Apply request headers that the algorithm's pipes pass on, so the mesh
// knows the pipeline (algomesh-call) and the pipe joins the call's trace.
var forwarded = []string{"algomesh-call", "traceparent", "tracestate"}

// Call is the call being served. It is the Apply's context (its deadline and
// cancellation), and it has the call's output writer and pipes.
type Call struct {
	context.Context

	// Stdout is where the algorithm prints during this call: a buffer returned to the
	// caller when it asked for the output (capture_stdout), else the process's stdout
	// (the instance log). Safe for use by several goroutines.
	Stdout io.Writer

	headers metadata.MD // forwarded to pipes
	buf     *syncBuffer // non-nil when capturing
}

// Printf writes to the call's Stdout.
func (c *Call) Printf(format string, args ...any) { fmt.Fprintf(c.Stdout, format, args...) }

// Println writes to the call's Stdout.
func (c *Call) Println(args ...any) { fmt.Fprintln(c.Stdout, args...) }

// Pipe calls another algorithm ("owner/name" or "owner/name/VERSION") through this
// algorithm's sidecar and returns its output. input is a Value, or is made one by
// ValueOf (string: text, []byte: binary, anything else: JSON). The call carries this
// call's pipeline token and trace, and the time left of its deadline. An error status
// is returned as a *PipeError.
func (c *Call) Pipe(target string, input any) (Value, error) {
	return c.PipeContext(c.Context, target, input)
}

// PipeContext is Pipe with a context of the caller's (e.g. a shorter deadline); it must
// derive from the Call to keep the call's deadline.
func (c *Call) PipeContext(ctx context.Context, target string, input any) (Value, error) {
	payload, err := encodePayload(ValueOf(input))
	if err != nil {
		return Value{}, fmt.Errorf("algomesh: cannot encode the input of a pipe to %s: %w", target, err)
	}
	conn, err := meshConn()
	if err != nil {
		return Value{}, err
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, defaultTimeout)
		defer cancel()
	}
	md := c.headers.Copy()
	md.Set("algomesh-target", target)
	ctx = metadata.NewOutgoingContext(ctx, md)
	out := new(pb.CallResponse)
	if err := conn.Invoke(ctx, "/algomesh.v1.Mesh/Call", &pb.CallRequest{Input: payload}, out); err != nil {
		return Value{}, &PipeError{Target: target, st: status.Convert(err), stack: string(debug.Stack())}
	}
	v, err := decodePayload(out.GetOutput())
	if err != nil {
		return Value{}, fmt.Errorf("algomesh: the answer of %s: %w", target, err)
	}
	return v, nil
}

var (
	connOnce sync.Once
	conn     *grpc.ClientConn
	connErr  error
)

// meshConn: one channel to $ALGOMESH_ADDRESS (the sidecar's outbound socket) per process.
func meshConn() (*grpc.ClientConn, error) {
	connOnce.Do(func() {
		addr := os.Getenv("ALGOMESH_ADDRESS")
		if addr == "" {
			connErr = errors.New("algomesh: ALGOMESH_ADDRESS is not set: pipes need the sidecar's socket")
			return
		}
		conn, connErr = grpc.NewClient(addr,
			grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithDisableRetry(),
			grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxMessageBytes), grpc.MaxCallSendMsgSize(maxMessageBytes)))
	})
	return conn, connErr
}

// syncBuffer: a call's captured output, written by any of its goroutines.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
