package runner

import (
	"bytes"
	"encoding/json"
	"fmt"
	"unicode/utf8"

	pb "algomesh.dev/gen/algomesh/v1"
)

// Kind is what a Value holds: one of the mesh's three payload types.
type Kind int

const (
	KindJSON   Kind = iota + 1 // a JSON value (CONTENT_TYPE_JSON)
	KindText                   // a UTF-8 string (CONTENT_TYPE_TEXT)
	KindBinary                 // bytes (CONTENT_TYPE_BINARY)
)

func (k Kind) String() string {
	switch k {
	case KindJSON:
		return "json"
	case KindText:
		return "text"
	case KindBinary:
		return "binary"
	}
	return "unspecified"
}

// Value is an algorithm's input or output: JSON, text or bytes. Make one with JSON, Text
// or Binary. The zero Value is JSON null.
type Value struct {
	kind    Kind
	data    []byte // text, binary, or encoded JSON (nil for a JSON value not yet encoded)
	decoded any    // the JSON value (json.Number for numbers)
}

// JSON is a JSON value: anything encoding/json can marshal (maps, slices, structs,
// numbers, strings, bools, nil, json.RawMessage). It is encoded when the value is sent.
func JSON(v any) Value { return Value{kind: KindJSON, decoded: v} }

// Text is a string sent as CONTENT_TYPE_TEXT.
func Text(s string) Value { return Value{kind: KindText, data: []byte(s)} }

// Binary is bytes sent as CONTENT_TYPE_BINARY.
func Binary(b []byte) Value { return Value{kind: KindBinary, data: b} }

// Kind says which of the three types the value is.
func (v Value) Kind() Kind {
	if v.kind == 0 {
		return KindJSON
	}
	return v.kind
}

func (v Value) IsJSON() bool   { return v.Kind() == KindJSON }
func (v Value) IsText() bool   { return v.kind == KindText }
func (v Value) IsBinary() bool { return v.kind == KindBinary }

// Text is the string of a text value ("" for other kinds).
func (v Value) Text() string {
	if v.kind != KindText {
		return ""
	}
	return string(v.data)
}

// Bytes is the content of a binary value, the UTF-8 of a text value, or the encoded
// JSON of a JSON value.
func (v Value) Bytes() []byte {
	if v.Kind() == KindJSON && v.data == nil {
		b, err := encodeJSON(v.decoded)
		if err != nil {
			return nil
		}
		return b
	}
	return v.data
}

// JSON is the decoded JSON value: map[string]any, []any, string, json.Number, bool or
// nil (nil for text and binary values too).
func (v Value) JSON() any {
	if v.Kind() != KindJSON {
		return nil
	}
	return v.decoded
}

// Decode unmarshals a JSON value into dst (a pointer), like json.Unmarshal.
func (v Value) Decode(dst any) error {
	if v.Kind() != KindJSON {
		return fmt.Errorf("algomesh: Decode of a %s value; only JSON values decode", v.Kind())
	}
	data := v.data
	if data == nil {
		var err error
		if data, err = encodeJSON(v.decoded); err != nil {
			return err
		}
	}
	return json.Unmarshal(data, dst)
}

// Interface is the value as plain Go: string for text, []byte for binary, the decoded
// JSON for JSON.
func (v Value) Interface() any {
	switch v.kind {
	case KindText:
		return string(v.data)
	case KindBinary:
		return v.data
	}
	return v.decoded
}

func (v Value) String() string {
	switch v.kind {
	case KindText:
		return v.Text()
	case KindBinary:
		return fmt.Sprintf("<%d bytes>", len(v.data))
	}
	return string(v.Bytes())
}

// ValueOf makes a Value of x the way the Python client does: a Value as it is, string
// as text, []byte as binary, anything else as JSON.
func ValueOf(x any) Value {
	switch t := x.(type) {
	case Value:
		return t
	case string:
		return Text(t)
	case []byte:
		return Binary(t)
	}
	return JSON(x)
}

func encodeJSON(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

// decodePayload: malformed JSON or non-UTF-8 text is an *invalidInput.
func decodePayload(p *pb.Payload) (Value, error) {
	data := p.GetData()
	switch p.GetContentType() {
	case pb.ContentType_CONTENT_TYPE_BINARY:
		return Value{kind: KindBinary, data: data}, nil
	case pb.ContentType_CONTENT_TYPE_TEXT:
		if !utf8.Valid(data) {
			return Value{}, &invalidInput{"text payload is not UTF-8"}
		}
		return Value{kind: KindText, data: data}, nil
	case pb.ContentType_CONTENT_TYPE_JSON:
		if !utf8.Valid(data) {
			return Value{}, &invalidInput{"json payload is not UTF-8"}
		}
		if !json.Valid(data) {
			var probe any
			msg := "invalid JSON"
			if err := json.Unmarshal(data, &probe); err != nil {
				msg = err.Error()
			}
			return Value{}, &invalidInput{"payload declared JSON is not valid JSON: " + msg}
		}
		dec := json.NewDecoder(bytes.NewReader(data))
		dec.UseNumber()
		var out any
		if err := dec.Decode(&out); err != nil {
			return Value{}, &invalidInput{"payload declared JSON is not valid JSON: " + err.Error()}
		}
		return Value{kind: KindJSON, data: data, decoded: out}, nil
	}
	return Value{}, &invalidInput{fmt.Sprintf("unsupported content type %d", p.GetContentType())}
}

func encodePayload(v Value) (*pb.Payload, error) {
	switch v.Kind() {
	case KindText:
		return &pb.Payload{ContentType: pb.ContentType_CONTENT_TYPE_TEXT, Data: v.data}, nil
	case KindBinary:
		return &pb.Payload{ContentType: pb.ContentType_CONTENT_TYPE_BINARY, Data: v.data}, nil
	}
	data := v.data
	if data == nil {
		var err error
		if data, err = encodeJSON(v.decoded); err != nil {
			return nil, err
		}
	}
	return &pb.Payload{ContentType: pb.ContentType_CONTENT_TYPE_JSON, Data: data}, nil
}

type invalidInput struct{ msg string }

func (e *invalidInput) Error() string { return e.msg }
