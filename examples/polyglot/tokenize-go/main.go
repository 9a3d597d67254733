// poly/tokenize-go, stage 2 of examples/polyglot (Go): the record from poly/clean-node
// in; its cleaned text split into tokens (words, emoticons, runs of ! and ?), piped on to
// poly/normalize-rust. Answers with what the rest of the pipeline answers.
package main

import (
	"fmt"
	"os"
	"regexp"
	"runtime"

	"algomesh.dev/runner"
)

const next = "poly/normalize-rust"

// Emoticons first, then words (letters and digits, with inner apostrophes: don't, o'clock),
// then runs of ! and ? (they carry emphasis). Everything else separates tokens.
var token = regexp.MustCompile(`[:;=][-']?[()\[\]DPp]|[\p{L}\p{N}]+(?:['’][\p{L}\p{N}]+)*|[!?]+`)

func apply(call *runner.Call, in runner.Value) (runner.Value, error) {
	var record map[string]any
	if err := in.Decode(&record); err != nil || record == nil {
		return runner.Value{}, runner.Errorf("poly/tokenize-go takes the record of poly/clean-node (JSON with \"clean\"): %v", err)
	}
	clean, ok := record["clean"].(string)
	if !ok {
		return runner.Value{}, runner.Errorf("poly/tokenize-go: the record has no \"clean\" text")
	}
	tokens := token.FindAllString(clean, -1)
	if tokens == nil {
		tokens = []string{}
	}
	record["tokens"] = tokens
	record["stages"] = append(stages(record), fmt.Sprintf("%s@%s (%s)", os.Getenv("ALGOMESH_ALGORITHM"), os.Getenv("ALGOMESH_VERSION"), runtime.Version()))
	out, err := call.Pipe(next, runner.JSON(record))
	if err != nil {
		return runner.Value{}, err // the error of a later stage, answered as it came
	}
	return out, nil
}

func stages(record map[string]any) []any {
	s, _ := record["stages"].([]any)
	return s
}

func main() {
	runner.Serve(runner.Algorithm{Apply: apply})
}
