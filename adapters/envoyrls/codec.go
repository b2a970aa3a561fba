package envoyrls

import (
	"fmt"
	"strings"
	"sync"
	"unicode/utf8"

	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/dynamicpb"
)

// Invalid UTF-8 in a request (issue 27). proto3 `string` fields must be UTF-8, so gRPC's codec refuses such a
// request before any handler or interceptor runs and answers INTERNAL, which Envoy's default
// (failure_mode_deny: false) turns into "allow": a header value with one invalid byte skipped its limit. HTTP
// header values are bytes (obs-text), so sluice decides such a request like any other: a descriptor value's
// invalid bytes are written as \xHH (every other byte as it is) and the result is the key. Distinct values stay
// distinct keys, except a value that literally spells "\xHH" where the other has the byte: the two then share a
// count (they limit each other more, never less). Authentication runs as for every call.

// rlsCodec is the server's gRPC codec: protobuf, except that a RateLimitRequest with invalid UTF-8 in a string
// field is read with its strings as bytes (escapeBytes) instead of refused.
type rlsCodec struct{}

func (rlsCodec) Name() string { return "proto" }

func (rlsCodec) Marshal(v any) ([]byte, error) {
	m, ok := v.(proto.Message)
	if !ok {
		return nil, fmt.Errorf("envoyrls codec: cannot marshal %T", v)
	}
	return proto.Marshal(m)
}

func (rlsCodec) Unmarshal(data []byte, v any) error {
	m, ok := v.(proto.Message)
	if !ok {
		return fmt.Errorf("envoyrls codec: cannot unmarshal into %T", v)
	}
	err := proto.Unmarshal(data, m)
	if err == nil || !strings.Contains(err.Error(), "invalid UTF-8") {
		return err
	}
	if _, isRequest := m.(*rlsv3.RateLimitRequest); !isRequest {
		return err
	}
	return unmarshalLenient(data, m)
}

var (
	lenientOnce sync.Once
	lenientDesc protoreflect.MessageDescriptor // RateLimitRequest with every string field declared bytes
	lenientErr  error
)

// unmarshalLenient reads data as m's type with its string fields declared bytes (same wire format, no UTF-8
// rule), then copies it into m, escaping invalid UTF-8.
func unmarshalLenient(data []byte, m proto.Message) error {
	lenientOnce.Do(func() { lenientDesc, lenientErr = bytesTwin(m.ProtoReflect().Descriptor()) })
	if lenientErr != nil {
		return lenientErr
	}
	dyn := dynamicpb.NewMessage(lenientDesc)
	if err := proto.Unmarshal(data, dyn); err != nil {
		return err
	}
	proto.Reset(m)
	copyEscaped(m.ProtoReflect(), dyn)
	return nil
}

// bytesTwin builds, from the files md and its imports are declared in, a copy of md whose string fields
// (recursively) are bytes fields.
func bytesTwin(md protoreflect.MessageDescriptor) (protoreflect.MessageDescriptor, error) {
	seen := map[string]bool{}
	var fds []*descriptorpb.FileDescriptorProto
	var add func(fd protoreflect.FileDescriptor)
	add = func(fd protoreflect.FileDescriptor) {
		if seen[fd.Path()] {
			return
		}
		seen[fd.Path()] = true
		imports := fd.Imports()
		for i := 0; i < imports.Len(); i++ {
			add(imports.Get(i).FileDescriptor)
		}
		fp := protodesc.ToFileDescriptorProto(fd)
		for _, msg := range fp.MessageType {
			toBytes(msg)
		}
		fds = append(fds, fp)
	}
	add(md.ParentFile())
	files, err := protodesc.NewFiles(&descriptorpb.FileDescriptorSet{File: fds})
	if err != nil {
		return nil, fmt.Errorf("envoyrls codec: %w", err)
	}
	d, err := files.FindDescriptorByName(md.FullName())
	if err != nil {
		return nil, fmt.Errorf("envoyrls codec: %w", err)
	}
	return d.(protoreflect.MessageDescriptor), nil
}

func toBytes(msg *descriptorpb.DescriptorProto) {
	if msg.GetOptions().GetMapEntry() {
		return // a map's key must stay a string (RateLimitRequest holds no map; its imports' messages do)
	}
	for _, f := range msg.Field {
		if f.GetType() == descriptorpb.FieldDescriptorProto_TYPE_STRING {
			f.Type = descriptorpb.FieldDescriptorProto_TYPE_BYTES.Enum()
			f.DefaultValue = nil
		}
	}
	for _, nested := range msg.NestedType {
		toBytes(nested)
	}
}

// copyEscaped copies src (the bytes twin) into dst field by field (same numbers), bytes into strings escaped.
func copyEscaped(dst protoreflect.Message, src protoreflect.Message) {
	fields := dst.Descriptor().Fields()
	src.Range(func(sfd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		dfd := fields.ByNumber(sfd.Number())
		if dfd == nil {
			return true
		}
		switch {
		case dfd.IsList():
			sl, dl := v.List(), dst.Mutable(dfd).List()
			for i := 0; i < sl.Len(); i++ {
				dl.Append(convert(dl.NewElement, dfd, sl.Get(i)))
			}
		case dfd.IsMap():
			// No map fields in RateLimitRequest; none is copied.
		default:
			dst.Set(dfd, convert(func() protoreflect.Value { return dst.NewField(dfd) }, dfd, v))
		}
		return true
	})
}

func convert(newElem func() protoreflect.Value, dfd protoreflect.FieldDescriptor, v protoreflect.Value) protoreflect.Value {
	switch dfd.Kind() {
	case protoreflect.MessageKind, protoreflect.GroupKind:
		e := newElem()
		copyEscaped(e.Message(), v.Message())
		return e
	case protoreflect.StringKind:
		return protoreflect.ValueOfString(escapeBytes(v.Bytes()))
	default: // scalars, enums and bytes read the same in the twin
		return v
	}
}

// escapeBytes is b as a string with each byte that is not part of valid UTF-8 written as \xHH.
func escapeBytes(b []byte) string {
	if utf8.Valid(b) {
		return string(b)
	}
	var sb strings.Builder
	for len(b) > 0 {
		r, n := utf8.DecodeRune(b)
		if r == utf8.RuneError && n <= 1 {
			fmt.Fprintf(&sb, `\x%02X`, b[0])
			b = b[1:]
			continue
		}
		sb.Write(b[:n])
		b = b[n:]
	}
	return sb.String()
}
