package httpapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"sync"

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
	return decodeStrict(bytes.NewReader(data), v)
}

func (strictCodec) MarshalWrite(w io.Writer, v any) error { return json.NewEncoder(w).Encode(v) }

// bodyBufs holds request-body buffers between requests.
var bodyBufs = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// UnmarshalRead reads the whole body (already bounded by MaxBytesReader) into a pooled buffer before decoding.
// Decoding straight from the generated code's reader (a one-byte peek joined to the rest) made the decoder's
// buffer grow twice per request, about 2 kB; now it reads the body in one go into one 512-byte buffer.
func (strictCodec) UnmarshalRead(r io.Reader, v any) error {
	buf := bodyBufs.Get().(*bytes.Buffer)
	buf.Reset()
	defer func() {
		if buf.Cap() <= 64<<10 {
			bodyBufs.Put(buf)
		}
	}()
	if _, err := buf.ReadFrom(r); err != nil {
		return err
	}
	return decodeStrict(bytes.NewReader(buf.Bytes()), v)
}

// decodeStrict decodes exactly one JSON value from r, rejecting unknown members and trailing data. Strings are
// copied out of r's bytes, so the caller may reuse them.
func decodeStrict(r io.Reader, v any) error {
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
