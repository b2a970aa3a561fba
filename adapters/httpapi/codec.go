package httpapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"strings"

	"github.com/oapi-codegen/runtime"
)

// The generated strict handlers decode bodies through runtime's JSON codec, and encoding/json's default ignores
// unknown members. sluice's contract (additionalProperties: false) rejects them, so a typo such as "cots" is a
// 400 naming the field instead of a silent cost of 1. The codec is process-wide by design of the runtime
// package; this package is the only HTTP surface of the program, so it sets it once here.
func init() { runtime.SetJSONCodec(strictCodec{}) }

type strictCodec struct{}

func (strictCodec) Marshal(v any) ([]byte, error) { return json.Marshal(v) }

func (strictCodec) Unmarshal(data []byte, v any) error {
	return strictCodec{}.UnmarshalRead(bytes.NewReader(data), v)
}

func (strictCodec) MarshalWrite(w io.Writer, v any) error { return json.NewEncoder(w).Encode(v) }

func (strictCodec) UnmarshalRead(r io.Reader, v any) error {
	dec := json.NewDecoder(r)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		if name, ok := strings.CutPrefix(err.Error(), "json: unknown field "); ok {
			return &unknownFieldError{field: strings.Trim(name, `"`)}
		}
		return err
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		if err == nil {
			return errors.New("data after the JSON value")
		}
		return err
	}
	return nil
}

type unknownFieldError struct{ field string }

func (e *unknownFieldError) Error() string { return "unknown field " + e.field }
