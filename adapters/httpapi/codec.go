package httpapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"github.com/go-json-experiment/json/jsontext"
	"io"
	"reflect"
	"strconv"
	"strings"
	"sync"

	"github.com/oapi-codegen/runtime"

	"github.com/sluice-dev/sluice/domain"
)

// The generated strict handlers decode bodies through runtime's JSON codec. encoding/json's defaults do not keep
// openapi.yaml's contract: they ignore unknown members, match member names case-insensitively ("Policy" fills
// policy), let a duplicate member win silently, and rewrite invalid UTF-8 to U+FFFD (so two different keys would
// share one bucket). This codec refuses all four, each as a validation problem naming the field, and reports
// every such field of a body at once. The codec is process-wide by design of the runtime package; this package
// is the only HTTP surface of the program, so it sets it once here.
func init() { runtime.SetJSONCodec(strictCodec{}) }

type strictCodec struct{}

func (strictCodec) Marshal(v any) ([]byte, error) { return json.Marshal(v) }

func (strictCodec) Unmarshal(data []byte, v any) error { return decodeStrict(data, v) }

func (strictCodec) MarshalWrite(w io.Writer, v any) error { return json.NewEncoder(w).Encode(v) }

// bodyBufs holds request-body buffers between requests.
var bodyBufs = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// UnmarshalRead is readJSONBody: the generated handlers reach it through the runtime's JSONUnmarshalRead.
func (strictCodec) UnmarshalRead(r io.Reader, v any) error { return readJSONBody(r, v) }

// readJSONBody reads r (a body already bounded by MaxBytesReader) to its end into a pooled buffer and decodes it
// with decodeStrict: decoding straight from a reader made the decoder's buffer grow twice per request. Like the runtime's
// JSONUnmarshalRead (which the generated handlers call, and which calls UnmarshalRead above), it returns r's own
// error when reading fails, and io.EOF, without decoding, when r holds nothing or only JSON white space.
func readJSONBody(r io.Reader, v any) error {
	if r == nil {
		return io.EOF
	}
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
	if len(bytes.TrimLeft(buf.Bytes(), " \t\r\n")) == 0 {
		return io.EOF
	}
	return decodeStrict(buf.Bytes(), v)
}

// decodeStrict decodes exactly one JSON value from data into v (a pointer to a generated request type) in one
// streaming pass of jsontext's reader, whose defaults check the syntax and refuse invalid UTF-8 (also as a lone
// surrogate escape) and duplicate member names anywhere. The walk follows v's type: member names match the json
// tags exactly, and every member that is unknown or of the wrong type is reported, not only the first. A
// syntactic error stops the walk and is reported alone. Strings are copied out of data, so the caller may reuse
// it.
func decodeStrict(data []byte, v any) error {
	d := decoders.Get().(*pooledDecoder)
	defer decoders.Put(d)
	d.r.Reset(data)
	d.dec.Reset(&d.r)
	ve := &domain.ValidationError{}
	if err := decodeValue(&d.dec, reflect.ValueOf(v).Elem(), "", ve); err != nil {
		return syntaxError(err)
	}
	if _, err := d.dec.ReadToken(); !errors.Is(err, io.EOF) {
		if err == nil {
			return errors.New("data after the JSON value")
		}
		return syntaxError(err)
	}
	return ve.Err()
}

// pooledDecoder is a jsontext reader over a byte slice, kept between requests: a fresh one costs several
// allocations per body.
type pooledDecoder struct {
	r   bytes.Reader
	dec jsontext.Decoder
}

var decoders = sync.Pool{New: func() any { return new(pooledDecoder) }}

// syntaxError turns jsontext's refusal into a validation problem naming the field when the bytes are well-formed
// JSON but break a rule of the contract (a duplicate name, invalid UTF-8), and a malformed-body error otherwise.
func syntaxError(err error) error {
	var se *jsontext.SyntacticError
	if !errors.As(err, &se) {
		return err
	}
	field := fieldOfPointer(se.JSONPointer)
	switch {
	case errors.Is(se.Err, jsontext.ErrDuplicateName):
		return domain.Invalid(field, "appears more than once in the object; send each field once")
	case strings.Contains(se.Err.Error(), "invalid UTF-8"), strings.Contains(se.Err.Error(), "surrogate"):
		// jsontext's UTF-8 errors are not exported as sentinels; their texts are stable ("invalid UTF-8",
		// "invalid surrogate pair").
		if field == "" {
			field = "body"
		}
		return domain.Invalid(field, "must be valid UTF-8 (a member name or string holds invalid bytes or a lone surrogate escape)")
	}
	return &malformedError{msg: err.Error()}
}

// fieldOfPointer writes a JSON pointer the way FieldError names fields: /checks/2/cost → checks[2].cost. A
// numeric token is an array index: the request types have no member named by digits.
func fieldOfPointer(p jsontext.Pointer) string {
	var b strings.Builder
	for tok := range p.Tokens() {
		if _, err := strconv.Atoi(tok); err == nil {
			b.WriteString("[" + tok + "]")
			continue
		}
		if b.Len() > 0 {
			b.WriteByte('.')
		}
		b.WriteString(tok)
	}
	return b.String()
}

// decodeValue reads the next value of dec into rv, adding one error per bad field to ve. It returns only the
// reader's (syntactic) errors; a value of the wrong type is skipped after its error is recorded.
func decodeValue(dec *jsontext.Decoder, rv reflect.Value, path string, ve *domain.ValidationError) error {
	kind := dec.PeekKind()
	if kind == 0 {
		_, err := dec.ReadToken()
		return err
	}
	wrong := func(want string) error {
		ve.Add(orBody(path), "must be "+want+", got "+jsonKind(kind))
		return dec.SkipValue()
	}
	switch rv.Kind() {
	case reflect.Pointer:
		if kind == 'n' {
			_, err := dec.ReadToken() // absent and null are the same for optional fields
			return err
		}
		elem := reflect.New(rv.Type().Elem())
		if err := decodeValue(dec, elem.Elem(), path, ve); err != nil {
			return err
		}
		rv.Set(elem)
		return nil
	case reflect.Struct:
		if kind != '{' {
			return wrong("an object")
		}
		fields := structFields(rv.Type())
		if _, err := dec.ReadToken(); err != nil {
			return err
		}
		for dec.PeekKind() != '}' {
			tok, err := dec.ReadToken()
			if err != nil {
				return err
			}
			name := tok.String()
			i, ok := fields[name]
			if !ok {
				ve.Add(join(path, name), "unknown field: the body accepts only the fields in openapi.yaml, spelt exactly (names are case-sensitive)")
				if err := dec.SkipValue(); err != nil {
					return err
				}
				continue
			}
			if err := decodeValue(dec, rv.Field(i), join(path, name), ve); err != nil {
				return err
			}
		}
		_, err := dec.ReadToken()
		return err
	case reflect.Slice:
		if kind != '[' {
			return wrong("an array")
		}
		if _, err := dec.ReadToken(); err != nil {
			return err
		}
		out := reflect.MakeSlice(rv.Type(), 0, 4)
		for i := 0; dec.PeekKind() != ']'; i++ {
			item := reflect.New(rv.Type().Elem()).Elem()
			if err := decodeValue(dec, item, path+"["+strconv.Itoa(i)+"]", ve); err != nil {
				return err
			}
			out = reflect.Append(out, item)
		}
		rv.Set(out)
		_, err := dec.ReadToken()
		return err
	case reflect.String:
		if kind != '"' {
			return wrong("a string")
		}
		tok, err := dec.ReadToken()
		if err != nil {
			return err
		}
		rv.SetString(tok.String())
		return nil
	case reflect.Bool:
		if kind != 't' && kind != 'f' {
			return wrong("a boolean")
		}
		tok, err := dec.ReadToken()
		if err != nil {
			return err
		}
		rv.SetBool(tok.Bool())
		return nil
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		if kind != '0' {
			return wrong("an integer")
		}
		raw, err := dec.ReadValue()
		if err != nil {
			return err
		}
		n, perr := strconv.ParseInt(string(raw), 10, 64)
		if perr != nil || rv.OverflowInt(n) {
			ve.Add(orBody(path), "must be an integer (no fraction or exponent, at most 19 digits), got "+string(raw))
			return nil
		}
		rv.SetInt(n)
		return nil
	}
	// No request type has other kinds today; decode them as encoding/json would.
	raw, err := dec.ReadValue()
	if err != nil {
		return err
	}
	if err := json.Unmarshal(raw, rv.Addr().Interface()); err != nil {
		ve.Add(orBody(path), "has the wrong type")
	}
	return nil
}

func join(path, name string) string {
	if path == "" {
		return name
	}
	return path + "." + name
}

func orBody(path string) string {
	if path == "" {
		return "body"
	}
	return path
}

// structFields maps the exact json names of t's fields to their indexes.
func structFields(t reflect.Type) map[string]int {
	if m, ok := fieldCache.Load(t); ok {
		return m.(map[string]int)
	}
	m := make(map[string]int, t.NumField())
	for i := range t.NumField() {
		name, _, _ := strings.Cut(t.Field(i).Tag.Get("json"), ",")
		if name != "" && name != "-" {
			m[name] = i
		}
	}
	fieldCache.Store(t, m)
	return m
}

var fieldCache sync.Map // reflect.Type → map[string]int

// jsonKind names a JSON value's kind for messages.
func jsonKind(k jsontext.Kind) string {
	switch k {
	case '{':
		return "an object"
	case '[':
		return "an array"
	case '"':
		return "a string"
	case '0':
		return "a number"
	case 't', 'f':
		return "a boolean"
	case 'n':
		return "null"
	}
	return "an invalid value"
}

type malformedError struct{ msg string }

func (e *malformedError) Error() string        { return "malformed JSON body: " + e.msg }
func (e *malformedError) Is(target error) bool { return target == errMalformed }
