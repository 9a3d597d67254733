// Calling algomesh from Go (docs/clients.md): algomesh.v1.Mesh/Call on `algomesh up`'s public
// port, and one Registry RPC (ListAlgorithms), with grpc-go and the generated stubs committed
// in runners/go/gen (module algomesh.dev, pulled in by a replace in go.mod). Errors are
// decoded from grpc-status-details-bin with grpc's status package and googleapis' errdetails.
//
//	algomesh-client [--address HOST:PORT] [--key API_KEY] [--timeout SECONDS] call TARGET INPUT_JSON
//	algomesh-client [--address HOST:PORT] [--key API_KEY] list
//
// --address defaults to $ALGOMESH_ADDRESS, then localhost:7700; --key to $ALGOMESH_API_KEY.
package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"sort"
	"strings"
	"time"

	v1 "algomesh.dev/gen/algomesh/v1"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// A status without an ErrorInfo (the transport failed, nothing of algomesh answered) maps by
// its code, as the Python SDK does (docs/contract.md, "Errors").
var fallback = map[codes.Code]string{
	codes.DeadlineExceeded:  "DEADLINE_EXCEEDED",
	codes.Unavailable:       "MESH_UNAVAILABLE",
	codes.ResourceExhausted: "PAYLOAD_TOO_LARGE",
	codes.Unauthenticated:   "UNAUTHENTICATED",
	codes.PermissionDenied:  "PERMISSION_DENIED",
	codes.NotFound:          "ALGORITHM_NOT_FOUND",
	codes.InvalidArgument:   "INVALID_INPUT",
}

func usage(message string) {
	if message != "" {
		fmt.Fprintln(os.Stderr, "algomesh-client:", message)
	}
	fmt.Fprintln(os.Stderr, "usage: algomesh-client [--address HOST:PORT] [--key API_KEY] [--timeout SECONDS] call TARGET INPUT_JSON")
	fmt.Fprintln(os.Stderr, "       algomesh-client [--address HOST:PORT] [--key API_KEY] list")
	os.Exit(2)
}

func main() {
	address := flag.String("address", envOr("ALGOMESH_ADDRESS", "localhost:7700"), "the mesh's public address")
	key := flag.String("key", os.Getenv("ALGOMESH_API_KEY"), "API key")
	timeout := flag.Float64("timeout", 300, "seconds to wait for the answer")
	flag.Usage = func() { usage("") }
	flag.Parse()
	args := flag.Args()
	if *timeout <= 0 {
		usage("--timeout must be a positive number of seconds")
	}

	// As the Python SDK: the transport's ceiling; the mesh's payload limit (10 MiB by default) is policy.
	conn, err := grpc.NewClient(*address, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64<<20), grpc.MaxCallSendMsgSize(64<<20)))
	if err != nil {
		usage(fmt.Sprintf("bad address %q: %v", *address, err))
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(*timeout*float64(time.Second)))
	defer cancel()
	if *key != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Simple "+*key)
	}

	switch {
	case len(args) == 3 && args[0] == "call":
		os.Exit(call(ctx, v1.NewMeshClient(conn), args[1], args[2]))
	case len(args) == 1 && args[0] == "list":
		os.Exit(list(ctx, v1.NewRegistryClient(conn)))
	case len(args) == 0:
		usage("no command")
	default:
		usage("bad arguments for " + args[0])
	}
}

func call(ctx context.Context, mesh v1.MeshClient, target, input string) int {
	if !json.Valid([]byte(input)) {
		usage(`INPUT_JSON is not JSON; a text input is a JSON string, e.g. '"hello"'`)
	}
	ctx = metadata.AppendToOutgoingContext(ctx, "algomesh-target", target)
	var trailer metadata.MD
	res, err := mesh.Call(ctx, &v1.CallRequest{
		Input: &v1.Payload{ContentType: v1.ContentType_CONTENT_TYPE_JSON, Data: []byte(input)},
	}, grpc.Trailer(&trailer))
	if err != nil {
		return printError(err)
	}
	printPayload(res.GetOutput())
	fmt.Printf("algorithm: %s %s\n", first(trailer, "algomesh-algorithm"), first(trailer, "algomesh-version"))
	fmt.Printf("trace-id: %s\n", first(trailer, "algomesh-trace-id"))
	return 0
}

func list(ctx context.Context, registry v1.RegistryClient) int {
	res, err := registry.ListAlgorithms(ctx, &v1.ListAlgorithmsRequest{})
	if err != nil {
		return printError(err)
	}
	for _, a := range res.GetAlgorithms() {
		fmt.Printf("%s  %s  %s\n", a.GetName(), a.GetLatestVersion(), a.GetDescription())
	}
	return 0
}

func printPayload(p *v1.Payload) {
	switch p.GetContentType() {
	case v1.ContentType_CONTENT_TYPE_JSON:
		var out bytes.Buffer
		if err := json.Compact(&out, p.GetData()); err != nil {
			out.Reset()
			out.Write(p.GetData())
		}
		fmt.Printf("result (json): %s\n", out.String())
	case v1.ContentType_CONTENT_TYPE_TEXT:
		fmt.Printf("result (text): %s\n", p.GetData())
	default:
		fmt.Printf("result (binary, %d bytes): %s\n", len(p.GetData()), base64.StdEncoding.EncodeToString(p.GetData()))
	}
}

// printError prints the typed error carried in grpc-status-details-bin (status.FromError
// decodes that trailer into a google.rpc.Status) and returns the exit code.
func printError(err error) int {
	st, _ := status.FromError(err)
	reason, meta, stack := "", map[string]string{}, ""
	for _, detail := range st.Details() {
		switch d := detail.(type) {
		case *errdetails.ErrorInfo:
			if d.GetDomain() == "algomesh" {
				reason, meta = d.GetReason(), d.GetMetadata()
			}
		case *errdetails.DebugInfo:
			stack = d.GetDetail()
		}
	}
	if reason == "" {
		if reason = fallback[st.Code()]; reason == "" {
			reason = "INTERNAL"
		}
	}
	fmt.Fprintf(os.Stderr, "error: %s (gRPC %s): %s\n", reason, codeName(st.Code()), st.Message())
	keys := make([]string, 0, len(meta))
	for k := range meta {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(os.Stderr, "  %s: %s\n", k, meta[k])
	}
	if stack != "" {
		fmt.Fprintf(os.Stderr, "stack trace:\n  %s\n", strings.ReplaceAll(strings.TrimRight(stack, " \n"), "\n", "\n  "))
	}
	if id := meta["trace_id"]; id != "" {
		fmt.Printf("trace-id: %s\n", id)
	}
	return 1
}

// codeName spells a code as the proto does (NOT_FOUND, not NotFound).
func codeName(c codes.Code) string {
	names := map[codes.Code]string{
		codes.OK: "OK", codes.Canceled: "CANCELLED", codes.Unknown: "UNKNOWN", codes.InvalidArgument: "INVALID_ARGUMENT",
		codes.DeadlineExceeded: "DEADLINE_EXCEEDED", codes.NotFound: "NOT_FOUND", codes.AlreadyExists: "ALREADY_EXISTS",
		codes.PermissionDenied: "PERMISSION_DENIED", codes.ResourceExhausted: "RESOURCE_EXHAUSTED",
		codes.FailedPrecondition: "FAILED_PRECONDITION", codes.Aborted: "ABORTED", codes.OutOfRange: "OUT_OF_RANGE",
		codes.Unimplemented: "UNIMPLEMENTED", codes.Internal: "INTERNAL", codes.Unavailable: "UNAVAILABLE",
		codes.DataLoss: "DATA_LOSS", codes.Unauthenticated: "UNAUTHENTICATED",
	}
	if n, ok := names[c]; ok {
		return n
	}
	return c.String()
}

func first(md metadata.MD, key string) string {
	if v := md.Get(key); len(v) > 0 {
		return v[0]
	}
	return ""
}

func envOr(name, fallback string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return fallback
}
