// The runner conformance algorithm in Go (tests/conformance/README.md).
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"sync/atomic"
	"time"

	"algomesh.dev/runner"
)

var loads atomic.Int64

func load() error {
	loads.Add(1)
	return nil
}

func apply(call *runner.Call, in runner.Value) (runner.Value, error) {
	switch in.Kind() {
	case runner.KindText:
		return in, nil
	case runner.KindBinary:
		out := slices.Clone(in.Bytes())
		slices.Reverse(out)
		return runner.Binary(out), nil
	}
	m, ok := in.JSON().(map[string]any)
	if !ok {
		return in, nil
	}
	op, ok := m["op"]
	if !ok {
		return in, nil
	}
	switch op {
	case "echo":
		return runner.JSON(m["value"]), nil
	case "text":
		return runner.Text(fmt.Sprint(m["value"])), nil
	case "bytes":
		s, _ := m["value"].(string)
		return runner.Binary([]byte(s)), nil
	case "loads":
		return runner.JSON(loads.Load()), nil
	case "raise":
		msg, _ := m["message"].(string)
		return runner.Value{}, runner.Errorf("%s", msg) // an error that records its stack
	case "crash":
		os.Exit(3)
	case "print":
		call.Println(m["value"])
		return runner.JSON("printed"), nil
	case "pipe":
		target, _ := m["target"].(string)
		result, err := call.Pipe(target, runner.JSON(m["input"]))
		if err != nil {
			return runner.Value{}, err
		}
		return runner.JSON(map[string]any{"via": "go", "result": result.Interface()}), nil
	case "sleep":
		ms, _ := m["ms"].(json.Number).Float64()
		time.Sleep(time.Duration(ms * float64(time.Millisecond)))
		return runner.JSON("slept"), nil
	}
	return in, nil
}

func main() {
	runner.Serve(runner.Algorithm{Load: load, Apply: apply})
}
