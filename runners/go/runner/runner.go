// Package runner runs an algorithm written in Go on algomesh: the algorithm's main hands
// its load and apply functions to Serve, which serves algomesh.v1.Runner on the Unix
// socket its sidecar names (docs/runners.md).
//
//	func main() {
//		runner.Serve(runner.Algorithm{
//			Load:  func() error { ...; return nil },
//			Apply: func(call *runner.Call, in runner.Value) (runner.Value, error) {
//				return runner.Text("hello " + in.Text()), nil
//			},
//		})
//	}
package runner

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net"
	"os"
	"os/signal"
	"reflect"
	rt "runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	pb "algomesh.dev/gen/algomesh/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// Algorithm is what an algorithm's main hands to Serve.
type Algorithm struct {
	// Load runs once per process, before any Apply (optional). An error or a panic is
	// ALGORITHM_LOAD_FAILED.
	Load func() error
	// Apply runs once per call, up to $ALGOMESH_CONCURRENCY at once. A returned error or
	// a panic is ALGORITHM_ERROR with the error's message and a stack trace; a
	// *PipeError is answered as the status it carries.
	Apply func(call *Call, input Value) (Value, error)
}

// Serve serves the algorithm on $ALGOMESH_RUNNER_SOCKET until SIGTERM or until the
// sidecar ($ALGOMESH_PARENT_PID) dies, then exits the process.
func Serve(alg Algorithm) {
	if alg.Apply == nil {
		log.Fatal("algomesh: runner.Serve needs an Algorithm with Apply")
	}
	socket := os.Getenv("ALGOMESH_RUNNER_SOCKET")
	if socket == "" {
		log.Fatal("algomesh: ALGOMESH_RUNNER_SOCKET is not set; the algorithm's sidecar starts this program (docs/runners.md)")
	}
	concurrency := 1
	if n, err := strconv.Atoi(os.Getenv("ALGOMESH_CONCURRENCY")); err == nil && n > 0 {
		concurrency = n
	}
	dieWithParent()

	_ = os.Remove(socket) // a stale socket from an earlier process
	lis, err := net.Listen("unix", socket)
	if err != nil {
		log.Fatalf("algomesh: cannot serve on %s: %v", socket, err)
	}
	srv := grpc.NewServer(
		grpc.ForceServerCodec(codec{}),
		grpc.MaxRecvMsgSize(maxMessageBytes),
		grpc.MaxSendMsgSize(maxMessageBytes),
	)
	s := &server{alg: alg, slots: make(chan struct{}, concurrency)}
	srv.RegisterService(&runnerDesc, s)
	hs := health.NewServer()
	hs.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	hs.SetServingStatus("algomesh.v1.Runner", healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(srv, hs)
	reflection.Register(srv)

	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-stop
		hs.Shutdown()
		done := make(chan struct{})
		go func() { srv.GracefulStop(); close(done) }()
		select { // an apply still running (a call past its deadline) must not hold the process
		case <-done:
		case <-time.After(time.Second):
		}
		os.Exit(0)
	}()
	if err := srv.Serve(lis); err != nil {
		log.Fatalf("algomesh: %v", err)
	}
	select {} // stopped by the signal handler, which exits
}

type server struct {
	alg   Algorithm
	slots chan struct{}

	loadMu   sync.Mutex
	loaded   bool
	loadTook float64
}

func (s *server) load(ctx context.Context, _ *pb.LoadRequest) (*pb.LoadResponse, error) {
	s.loadMu.Lock()
	defer s.loadMu.Unlock()
	if !s.loaded {
		t0 := time.Now()
		if s.alg.Load != nil {
			if err := runLoad(s.alg.Load); err != nil {
				return nil, err
			}
		}
		s.loadTook = time.Since(t0).Seconds()
		s.loaded = true
	}
	return &pb.LoadResponse{Duration: s.loadTook, Runtime: "go " + strings.TrimPrefix(rt.Version(), "go")}, nil
}

func runLoad(load func() error) (answer error) {
	defer func() {
		if r := recover(); r != nil {
			msg, typ := panicText(r)
			answer = newStatus("ALGORITHM_LOAD_FAILED", msg, panicStack(r), map[string]string{"error_type": typ}).Err()
		}
	}()
	if err := load(); err != nil {
		stack := errorStack(err, func() string {
			return "returned by " + funcLocation(load) +
				"\n(a plain error records no stack; runner.Errorf records the stack where it is made)\n"
		})
		return newStatus("ALGORITHM_LOAD_FAILED", errorMessage(err), stack,
			map[string]string{"error_type": errorType(err)}).Err()
	}
	return nil
}

func (s *server) apply(ctx context.Context, in *applyIn) (*pb.CallResponse, error) {
	s.loadMu.Lock()
	loaded := s.loaded
	s.loadMu.Unlock()
	if !loaded {
		return nil, newStatus("INTERNAL", "Apply before Load", "", nil).Err()
	}
	if in.err != nil {
		return nil, newStatus("INVALID_INPUT", "the request body is not an algomesh.v1.CallRequest", "", nil).Err()
	}
	input, err := decodePayload(in.req.GetInput())
	if err != nil {
		return nil, newStatus("INVALID_INPUT", err.Error(), "", nil).Err()
	}
	select {
	case s.slots <- struct{}{}:
		defer func() { <-s.slots }()
	case <-ctx.Done():
		return nil, status.FromContextError(ctx.Err()).Err()
	}

	call := &Call{Context: ctx, Stdout: os.Stdout, headers: metadata.MD{}}
	if md, ok := metadata.FromIncomingContext(ctx); ok {
		for _, k := range forwarded {
			if v := md.Get(k); len(v) > 0 {
				call.headers.Set(k, v...)
			}
		}
	}
	if in.req.GetCaptureStdout() {
		call.buf = &syncBuffer{}
		call.Stdout = call.buf
	}
	t0 := time.Now()
	out, err := s.runApply(call, input)
	took := time.Since(t0).Seconds()
	printed := ""
	if call.buf != nil {
		printed = strings.ToValidUTF8(call.buf.String(), "\uFFFD")
	}
	if err != nil {
		return nil, s.applyError(err, printed)
	}
	payload, err := encodePayload(out)
	if err != nil {
		return nil, newStatus("ALGORITHM_ERROR", "apply() returned a value that cannot be sent: "+err.Error(), "",
			map[string]string{"error_type": errorType(err)}).Err()
	}
	return &pb.CallResponse{Output: payload, Stdout: printed, Duration: took}, nil
}

// appliedPanic: a panic in apply, with the stack where it happened.
type appliedPanic struct {
	value any
	stack string
}

func (p *appliedPanic) Error() string { msg, _ := panicText(p.value); return msg }

func (s *server) runApply(call *Call, input Value) (out Value, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = &appliedPanic{value: r, stack: panicStack(r)}
		}
	}()
	return s.alg.Apply(call, input)
}

func (s *server) applyError(err error, printed string) error {
	var pipe *PipeError
	if errors.As(err, &pipe) && pipe.Reason() != "INTERNAL" {
		// A typed error from one of its own pipes that the algorithm let through: it keeps
		// its status (CALL_CYCLE, ALGORITHM_NOT_FOUND, the failing stage's error...).
		return pipe.answer().Err()
	}
	meta := map[string]string{}
	if printed != "" {
		meta["stdout"] = printed
	}
	var p *appliedPanic
	if errors.As(err, &p) {
		msg, typ := panicText(p.value)
		meta["error_type"] = typ
		return newStatus("ALGORITHM_ERROR", msg, p.stack, meta).Err()
	}
	meta["error_type"] = errorType(err)
	stack := errorStack(err, func() string {
		return "returned by " + funcLocation(s.alg.Apply) +
			"\n(a plain error records no stack; runner.Errorf records the stack where it is made)\n"
	})
	return newStatus("ALGORITHM_ERROR", errorMessage(err), stack, meta).Err()
}

func errorMessage(err error) string {
	if msg := err.Error(); msg != "" {
		return msg
	}
	return errorType(err)
}

func panicText(r any) (msg, typ string) {
	switch v := r.(type) {
	case error:
		return v.Error(), "panic: " + errorType(v)
	case string:
		return v, "panic"
	}
	return fmt.Sprint(r), fmt.Sprintf("panic: %T", r)
}

// panicStack, called in the deferred recover: the goroutine's stack still holds the
// frames that panicked.
func panicStack(r any) string {
	msg, _ := panicText(r)
	return fmt.Sprintf("panic: %s\n\n%s", msg, trimStack(string(debug.Stack())))
}

func funcLocation(f any) string {
	fn := rt.FuncForPC(reflect.ValueOf(f).Pointer())
	if fn == nil {
		return "?"
	}
	file, line := fn.FileLine(fn.Entry())
	return fmt.Sprintf("%s at %s:%d", fn.Name(), file, line)
}

// The service by hand: Apply takes the raw body so that a body that is not a
// CallRequest is INVALID_INPUT (gRPC's own decoding could only say INTERNAL).

type applyIn struct {
	req *pb.CallRequest
	err error
}

var runnerDesc = grpc.ServiceDesc{
	ServiceName: "algomesh.v1.Runner",
	HandlerType: (*any)(nil),
	Methods: []grpc.MethodDesc{
		{MethodName: "Load", Handler: func(srv any, ctx context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
			in := new(pb.LoadRequest)
			if err := dec(in); err != nil {
				return nil, err
			}
			return srv.(*server).load(ctx, in)
		}},
		{MethodName: "Apply", Handler: func(srv any, ctx context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
			in := new(applyIn)
			if err := dec(in); err != nil {
				return nil, err
			}
			return srv.(*server).apply(ctx, in)
		}},
	},
	Metadata: "algomesh/v1/runner.proto",
}

// codec is gRPC's proto codec, plus applyIn: the Apply body decoded here, its error kept.
type codec struct{}

func (codec) Name() string { return "proto" }

func (codec) Marshal(v any) ([]byte, error) {
	m, ok := v.(proto.Message)
	if !ok {
		return nil, fmt.Errorf("algomesh: cannot marshal %T", v)
	}
	return proto.Marshal(m)
}

func (codec) Unmarshal(data []byte, v any) error {
	if in, ok := v.(*applyIn); ok {
		in.req = new(pb.CallRequest)
		in.err = proto.Unmarshal(data, in.req)
		return nil
	}
	m, ok := v.(proto.Message)
	if !ok {
		return fmt.Errorf("algomesh: cannot unmarshal into %T", v)
	}
	return proto.Unmarshal(data, m)
}

var _ encoding.Codec = codec{}
