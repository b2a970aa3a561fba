package httpapi

import (
	"bytes"
	"encoding/json"
	"encoding/json/jsontext"
	"errors"
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

// UnmarshalRead reads the whole body (already bounded by MaxBytesReader) into a pooled buffer before decoding.
// Decoding straight from the generated code's reader (a one-byte peek joined to the rest) made the decoder's
// buffer grow twice per request; now it reads the body in one go into one pooled buffer.
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
	return decodeStrict(buf.Bytes(), v)
}

// decodeStrict decodes exactly one JSON value from data into v (a pointer to a generated request type) in two
// passes. The first, jsontext's reader with its defaults, checks the syntax, refuses invalid UTF-8 (also as a
// lone surrogate escape) and duplicate member names anywhere, and trailing data. The second walks v's type:
// member names match the json tags exactly, and every member that is unknown or of the wrong type is reported,
// not only the first. Strings are copied out of data, so the caller may reuse it.
func decodeStrict(data []byte, v any) error {
	dec := jsontext.NewDecoder(bytes.NewReader(data))
	val, err := dec.ReadValue()
	if err != nil {
		return syntaxError(err)
	}
	val = val.Clone() // the decoder reuses its buffer on the next read
	if _, err := dec.ReadToken(); !errors.Is(err, io.EOF) {
		if err == nil {
			return errors.New("data after the JSON value")
		}
		return syntaxError(err)
	}
	ve := &domain.ValidationError{}
	decodeValue(val, reflect.ValueOf(v).Elem(), "", ve)
	return ve.Err()
}

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

// decodeValue stores raw (already checked by jsontext) into rv, adding one error per bad field to ve.
func decodeValue(raw jsontext.Value, rv reflect.Value, path string, ve *domain.ValidationError) {
	kind := raw.Kind()
	switch rv.Kind() {
	case reflect.Pointer:
		if kind == 'n' {
			return // absent and null are the same for optional fields
		}
		elem := reflect.New(rv.Type().Elem())
		decodeValue(raw, elem.Elem(), path, ve)
		rv.Set(elem)
		return
	case reflect.Struct:
		if kind != '{' {
			ve.Add(orBody(path), "must be an object, got "+jsonKind(kind))
			return
		}
		fields := structFields(rv.Type())
		dec := jsontext.NewDecoder(bytes.NewReader(raw))
		_, _ = dec.ReadToken() // '{'
		for dec.PeekKind() != '}' {
			tok, err := dec.ReadToken()
			if err != nil {
				return // unreachable: raw was validated
			}
			name := tok.String()
			member, err := dec.ReadValue()
			if err != nil {
				return
			}
			i, ok := fields[name]
			if !ok {
				ve.Add(join(path, name), "unknown field: the body accepts only the fields in openapi.yaml, spelt exactly (names are case-sensitive)")
				continue
			}
			decodeValue(member, rv.Field(i), join(path, name), ve)
		}
		return
	case reflect.Slice:
		if kind != '[' {
			ve.Add(orBody(path), "must be an array, got "+jsonKind(kind))
			return
		}
		dec := jsontext.NewDecoder(bytes.NewReader(raw))
		_, _ = dec.ReadToken() // '['
		out := reflect.MakeSlice(rv.Type(), 0, 4)
		for i := 0; dec.PeekKind() != ']'; i++ {
			elem, err := dec.ReadValue()
			if err != nil {
				return
			}
			item := reflect.New(rv.Type().Elem()).Elem()
			decodeValue(elem, item, path+"["+strconv.Itoa(i)+"]", ve)
			out = reflect.Append(out, item)
		}
		rv.Set(out)
		return
	}
	want := jsonTypeOf(rv.Kind())
	if k := kind; k == 'n' || jsonKindOfType(want) != foldBool(k) {
		ve.Add(orBody(path), "must be "+want+", got "+jsonKind(kind))
		return
	}
	if err := json.Unmarshal(raw, rv.Addr().Interface()); err != nil {
		if want == "an integer" {
			ve.Add(orBody(path), "must be an integer (no fraction or exponent, at most 19 digits), got "+string(raw))
			return
		}
		ve.Add(orBody(path), "must be "+want)
	}
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

func jsonTypeOf(k reflect.Kind) string {
	switch k {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "an integer"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.Bool:
		return "a boolean"
	case reflect.String:
		return "a string"
	}
	return "a " + k.String()
}

func jsonKindOfType(want string) jsontext.Kind {
	switch want {
	case "an integer", "a number":
		return '0'
	case "a boolean":
		return 't' // false is folded into 't' by the caller
	case "a string":
		return '"'
	}
	return 0
}

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

// foldBool maps false's kind onto true's, so one comparison covers both booleans.
func foldBool(k jsontext.Kind) jsontext.Kind {
	if k == 'f' {
		return 't'
	}
	return k
}
