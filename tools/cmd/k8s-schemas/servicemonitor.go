package main

import (
	"encoding/json"
	"reflect"
	"strings"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// writeServiceMonitor writes monitoring.coreos.com/v1 ServiceMonitor, derived from the prometheus-operator Go
// types by reflection: field names and nesting are exact (so strict mode catches misspelt fields); value
// constraints that live only in kubebuilder comments (enums, patterns, minimums) are not checked.
func writeServiceMonitor(outDir string, strict bool) (int, error) {
	r := &reflector{strict: strict, defs: map[string]any{}}
	top := r.structSchema(reflect.TypeOf(monitoringv1.ServiceMonitor{}))
	top["$schema"] = "http://json-schema.org/draft-07/schema#"
	top["definitions"] = r.defs
	top["required"] = []string{"spec"}
	return 1, writeSchema(outDir, gvk{Group: "monitoring.coreos.com", Version: "v1", Kind: "ServiceMonitor"}, top)
}

type reflector struct {
	strict bool
	defs   map[string]any
}

var (
	marshaler   = reflect.TypeOf((*json.Marshaler)(nil)).Elem()
	stringOrNum = map[string]any{"oneOf": []any{map[string]any{"type": "string"}, map[string]any{"type": "number"}}}
	intOrString = map[string]any{"oneOf": []any{map[string]any{"type": "string"}, map[string]any{"type": "integer"}}}
	special     = map[reflect.Type]any{
		reflect.TypeOf(metav1.Time{}):        map[string]any{"type": "string"},
		reflect.TypeOf(metav1.MicroTime{}):   map[string]any{"type": "string"},
		reflect.TypeOf(metav1.Duration{}):    map[string]any{"type": "string"},
		reflect.TypeOf(resource.Quantity{}):  stringOrNum,
		reflect.TypeOf(intstr.IntOrString{}): intOrString,
	}
)

func (r *reflector) schemaOf(t reflect.Type) any {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if s, ok := special[t]; ok {
		return s
	}
	switch t.Kind() {
	case reflect.String:
		return map[string]any{"type": "string"}
	case reflect.Bool:
		return map[string]any{"type": "boolean"}
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return map[string]any{"type": "integer"}
	case reflect.Float32, reflect.Float64:
		return map[string]any{"type": "number"}
	case reflect.Slice, reflect.Array:
		if t.Elem().Kind() == reflect.Uint8 {
			return map[string]any{"type": "string"}
		}
		return map[string]any{"type": "array", "items": r.schemaOf(t.Elem())}
	case reflect.Map:
		return map[string]any{"type": "object", "additionalProperties": r.schemaOf(t.Elem())}
	case reflect.Interface:
		return map[string]any{}
	case reflect.Struct:
		if t.Implements(marshaler) || reflect.PointerTo(t).Implements(marshaler) {
			return map[string]any{} // custom JSON form we don't know: accept anything
		}
		name := strings.ReplaceAll(t.PkgPath()+"."+t.Name(), "/", ".")
		ref := map[string]any{"$ref": "#/definitions/" + name}
		if t.Name() == "" {
			return r.structSchema(t)
		}
		if _, seen := r.defs[name]; !seen {
			r.defs[name] = nil // placeholder for recursive types
			r.defs[name] = r.structSchema(t)
		}
		return ref
	default:
		return map[string]any{}
	}
}

func (r *reflector) structSchema(t reflect.Type) map[string]any {
	props := map[string]any{}
	r.addFields(t, props)
	s := map[string]any{"type": "object", "properties": props}
	if r.strict {
		s["additionalProperties"] = false
	}
	return s
}

func (r *reflector) addFields(t reflect.Type, props map[string]any) {
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		tag := f.Tag.Get("json")
		if tag == "-" || (!f.IsExported() && !f.Anonymous) {
			continue
		}
		name, opts, _ := strings.Cut(tag, ",")
		ft := f.Type
		for ft.Kind() == reflect.Pointer {
			ft = ft.Elem()
		}
		if name == "" && (f.Anonymous || strings.Contains(opts, "inline")) && ft.Kind() == reflect.Struct {
			r.addFields(ft, props) // embedded: its fields are the parent's
			continue
		}
		if name == "" {
			name = f.Name
		}
		props[name] = r.schemaOf(f.Type)
	}
}
