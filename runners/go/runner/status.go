package runner

import (
	"errors"
	"fmt"
	"runtime/debug"
	"strings"
	"unicode/utf8"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	spb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/anypb"
)

const domain = "algomesh"

// A status travels in trailing metadata, which gRPC caps at 8 KiB: the message twice
// (grpc-message, percent-encoded; and inside the details, base64) and the stack trace
// once. These are the Python runner's cuts, in UTF-8 bytes (sdk/_errors.py).
const (
	messageBytes = 512
	stackBytes   = 2560
	metaBytes    = 160
	cutMark      = "…(cut)"
)

// cutHead keeps the first limit bytes of s (on a rune boundary).
func cutHead(s string, limit int) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	if len(s) <= limit {
		return s
	}
	b := s[:limit]
	for len(b) > 0 {
		if r, size := utf8.DecodeLastRuneInString(b); r != utf8.RuneError || size > 1 {
			break
		}
		b = b[:len(b)-1]
	}
	return b + cutMark
}

// reasonCodes: the gRPC code of each reason this runner answers with itself
// (the table is sdk/_errors.py REASONS).
var reasonCodes = map[string]codes.Code{
	"ALGORITHM_ERROR":       codes.Unknown,
	"ALGORITHM_LOAD_FAILED": codes.FailedPrecondition,
	"INVALID_INPUT":         codes.InvalidArgument,
	"DEADLINE_EXCEEDED":     codes.DeadlineExceeded,
	"MESH_UNAVAILABLE":      codes.Unavailable,
	"PAYLOAD_TOO_LARGE":     codes.ResourceExhausted,
	"UNAUTHENTICATED":       codes.Unauthenticated,
	"PERMISSION_DENIED":     codes.PermissionDenied,
	"ALGORITHM_NOT_FOUND":   codes.NotFound,
	"INTERNAL":              codes.Internal,
}

// codeFallback names the reason of a status that came without an ErrorInfo (a transport
// failure), as the Python SDK does.
var codeFallback = map[codes.Code]string{
	codes.DeadlineExceeded:  "DEADLINE_EXCEEDED",
	codes.Unavailable:       "MESH_UNAVAILABLE",
	codes.ResourceExhausted: "PAYLOAD_TOO_LARGE",
	codes.Unauthenticated:   "UNAUTHENTICATED",
	codes.PermissionDenied:  "PERMISSION_DENIED",
	codes.NotFound:          "ALGORITHM_NOT_FOUND",
	codes.InvalidArgument:   "INVALID_INPUT",
}

// newStatus builds the algomesh error status: google.rpc.Status{code, message,
// details: [ErrorInfo{reason, domain, metadata}, DebugInfo{stack}]}.
func newStatus(reason, message, stack string, meta map[string]string) *status.Status {
	code, ok := reasonCodes[reason]
	if !ok {
		code = codes.Unknown
	}
	md := make(map[string]string, len(meta))
	for k, v := range meta {
		md[cutHead(k, 64)] = cutHead(v, metaBytes)
	}
	p := &spb.Status{Code: int32(code), Message: cutHead(message, messageBytes)}
	info, _ := anypb.New(&errdetails.ErrorInfo{Reason: reason, Domain: domain, Metadata: md})
	p.Details = append(p.Details, info)
	if stack != "" {
		dbg, _ := anypb.New(&errdetails.DebugInfo{Detail: cutHead(stack, stackBytes)})
		p.Details = append(p.Details, dbg)
	}
	return status.FromProto(p)
}

// trimStack cuts a goroutine stack (debug.Stack, innermost frame first) to the
// algorithm's frames: none above them (capturing the stack, panicking, the runner's
// helpers) and none below the runner's call into the algorithm (the runner, grpc-go).
func trimStack(stack string) string {
	lines := strings.Split(strings.TrimRight(stack, "\n"), "\n")
	if len(lines) < 3 || !strings.HasPrefix(lines[0], "goroutine ") {
		return stack
	}
	type frame struct{ fn, at string }
	var frames []frame
	for i := 1; i+1 < len(lines); i += 2 {
		frames = append(frames, frame{lines[i], lines[i+1]})
	}
	end := len(frames)
	for i, f := range frames {
		if strings.HasPrefix(f.fn, "algomesh.dev/runner.(*server).runApply(") || strings.HasPrefix(f.fn, "algomesh.dev/runner.runLoad(") {
			end = i
			break
		}
	}
	start := 0
	for i := 0; i < end; i++ {
		fn := frames[i].fn
		if strings.HasPrefix(fn, "algomesh.dev/runner.") || strings.HasPrefix(fn, "runtime/debug.") ||
			strings.HasPrefix(fn, "panic(") || strings.HasPrefix(fn, "runtime.gopanic") {
			start = i + 1
		}
	}
	if start >= end {
		start = 0
	}
	out := []string{lines[0]}
	for _, f := range frames[start:end] {
		out = append(out, f.fn, f.at)
	}
	return strings.Join(out, "\n") + "\n"
}

// PipeError is an error status returned by a pipe (Call.Pipe): it keeps the status's
// code, message and details (grpc-status-details-bin). When apply returns it (wrapped
// or not), the runner answers with that same status, so the reason (ALGORITHM_NOT_FOUND,
// CALL_CYCLE, a failing stage's ALGORITHM_ERROR) reaches the caller.
type PipeError struct {
	Target string
	st     *status.Status
	stack  string // where the pipe was made (the algorithm's goroutine)
}

func (e *PipeError) Error() string {
	return fmt.Sprintf("%s: %s", e.Reason(), e.st.Message())
}

// GRPCStatus is the status as it came (status.FromError understands it).
func (e *PipeError) GRPCStatus() *status.Status { return e.st }

// Code is the status's gRPC code.
func (e *PipeError) Code() codes.Code { return e.st.Code() }

// Message is the status's message.
func (e *PipeError) Message() string { return e.st.Message() }

// Reason is the algomesh reason (ErrorInfo.reason), or the one its code stands for when
// the status carried no ErrorInfo.
func (e *PipeError) Reason() string {
	if info := e.info(); info != nil {
		return info.GetReason()
	}
	if r, ok := codeFallback[e.st.Code()]; ok {
		return r
	}
	return "INTERNAL"
}

// Metadata is the ErrorInfo's metadata (algorithm, version, error_type, ...).
func (e *PipeError) Metadata() map[string]string {
	if info := e.info(); info != nil {
		return info.GetMetadata()
	}
	return map[string]string{"grpc_code": e.st.Code().String()}
}

// StackTrace is the DebugInfo's detail: the failing algorithm's stack trace, if any.
func (e *PipeError) StackTrace() string {
	for _, d := range e.st.Details() {
		if dbg, ok := d.(*errdetails.DebugInfo); ok {
			return dbg.GetDetail()
		}
	}
	return ""
}

func (e *PipeError) info() *errdetails.ErrorInfo {
	for _, d := range e.st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok && info.GetDomain() == domain {
			return info
		}
	}
	return nil
}

// answer: the status the runner sends when apply lets this error escape.
func (e *PipeError) answer() *status.Status {
	if e.info() == nil { // a bare transport status: give it the reason its code stands for
		return newStatus(e.Reason(), e.st.Message(), trimStack(e.stack), e.Metadata())
	}
	if e.StackTrace() != "" || e.stack == "" {
		return e.st
	}
	p := e.st.Proto()
	dbg, _ := anypb.New(&errdetails.DebugInfo{Detail: cutHead(trimStack(e.stack), stackBytes)})
	p.Details = append(p.Details, dbg)
	return status.FromProto(p)
}

// stackError is an error that recorded where it was made (Errorf).
type stackError struct {
	err   error
	stack string
}

func (e *stackError) Error() string { return e.err.Error() }
func (e *stackError) Unwrap() error { return e.err }

// Errorf is fmt.Errorf that also records the stack where it is called; an apply that
// returns it reports that stack trace with its ALGORITHM_ERROR. (Any error works; a plain
// one is reported with the runner's stack where apply returned it.)
func Errorf(format string, args ...any) error {
	return &stackError{err: fmt.Errorf(format, args...), stack: string(debug.Stack())}
}

// errorType names an error's type, as Python's runner names the exception class.
func errorType(err error) string {
	for {
		if se, ok := err.(*stackError); ok {
			err = se.err
			continue
		}
		break
	}
	return strings.TrimPrefix(fmt.Sprintf("%T", err), "*")
}

// errorStack: the best stack trace an error carries.
func errorStack(err error, fallback func() string) string {
	var se *stackError
	if errors.As(err, &se) {
		return fmt.Sprintf("%s: %s\n\n%s", errorType(err), err.Error(), trimStack(se.stack))
	}
	// Errors of packages that record stacks (github.com/pkg/errors, cockroachdb/errors...)
	// print them with %+v.
	if detailed := fmt.Sprintf("%+v", err); detailed != err.Error() && strings.Contains(detailed, ".go:") {
		return detailed
	}
	return fmt.Sprintf("%s: %s\n\n%s", errorType(err), err.Error(), fallback())
}
