package xdswire

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// decodeLike decodes m's wire form as this package does and checks that
// it agrees with go-control-plane's reading of the same bytes: every field
// this package has is present with the same value, and every field it
// decoded is one go-control-plane's JSON has, with that value.
func decodeLike(t *testing.T, m proto.Message) any {
	t.Helper()
	a, err := anypb.New(m)
	if err != nil {
		t.Fatal(err)
	}
	got, err := Decode(&Any{TypeURL: a.TypeUrl, Value: a.Value})
	if err != nil {
		t.Fatalf("Decode %s: %v", a.TypeUrl, err)
	}
	checkAgrees(t, got, m)
	return got
}

// checkAgrees compares ours (a decoded message of this package) with m.
func checkAgrees(t *testing.T, ours any, m proto.Message) {
	t.Helper()
	theirsJSON, err := protojson.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	oursJSON, err := json.Marshal(ours)
	if err != nil {
		t.Fatal(err)
	}
	var o, th any
	if err := json.Unmarshal(oursJSON, &o); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(theirsJSON, &th); err != nil {
		t.Fatal(err)
	}
	agree(t, string(m.ProtoReflect().Descriptor().Name()), reflect.TypeOf(ours), o, th)
}

var (
	anyType    = reflect.TypeOf(Any{})
	unreadType = reflect.TypeOf(Unread{})
)

func agree(t *testing.T, path string, typ reflect.Type, ours, theirs any) {
	t.Helper()
	for typ.Kind() == reflect.Pointer {
		typ = typ.Elem()
	}
	switch {
	case typ == unreadType:
		if _, ok := theirs.(map[string]any); !ok {
			t.Errorf("%s: present here, %v in go-control-plane's", path, theirs)
		}
		return
	case typ == anyType:
		o, th := ours.(map[string]any), theirs.(map[string]any)
		url, _ := th["@type"].(string)
		if o["@type"] != url {
			t.Errorf("%s: @type %v, go-control-plane's %v", path, o["@type"], url)
			return
		}
		mk, ok := decoders[url]
		if !ok {
			if len(o) != 1 {
				t.Errorf("%s: an unknown type decoded: %v", path, o)
			}
			return
		}
		delete(o, "@type")
		delete(th, "@type")
		agree(t, path+"("+shortType(url)+")", reflect.TypeOf(mk()), o, th)
		return
	}
	switch typ.Kind() {
	case reflect.Struct:
		o, ok1 := ours.(map[string]any)
		th, ok2 := theirs.(map[string]any)
		if !ok1 || !ok2 {
			t.Errorf("%s: %v here, %v in go-control-plane's", path, ours, theirs)
			return
		}
		fieldTypes := map[string]reflect.Type{}
		for i := 0; i < typ.NumField(); i++ {
			name, _, _ := strings.Cut(typ.Field(i).Tag.Get("json"), ",")
			if name != "-" && name != "" {
				fieldTypes[name] = typ.Field(i).Type
			}
		}
		for k, v := range o {
			tv, ok := th[k]
			if !ok {
				t.Errorf("%s.%s = %v here, absent in go-control-plane's", path, k, v)
				continue
			}
			agree(t, path+"."+k, fieldTypes[k], v, tv)
		}
		for k, tv := range th {
			ft, ok := fieldTypes[k]
			if _, here := o[k]; !ok || here {
				continue
			}
			// Absent here: only a zero value may be (proto JSON writes
			// set oneof members even when zero; omitempty does not).
			zero, _ := json.Marshal(reflect.Zero(ft).Interface())
			if ft.Kind() == reflect.Slice && ft.Elem().Kind() == reflect.Uint8 {
				zero = []byte(`""`) // empty bytes, set in a oneof
			}
			want, _ := json.Marshal(tv)
			if string(zero) != string(want) {
				t.Errorf("%s.%s = %s in go-control-plane's, not decoded here", path, k, want)
			}
		}
	case reflect.Slice:
		if typ.Elem().Kind() == reflect.Uint8 { // bytes: base64 in both
			if ours != theirs {
				t.Errorf("%s = %v, go-control-plane's %v", path, ours, theirs)
			}
			return
		}
		o, _ := ours.([]any)
		th, _ := theirs.([]any)
		if len(o) != len(th) {
			t.Errorf("%s: %d elements, go-control-plane's %d", path, len(o), len(th))
			return
		}
		for i := range o {
			agree(t, path+"[]", typ.Elem(), o[i], th[i])
		}
	case reflect.Map:
		o, _ := ours.(map[string]any)
		th, _ := theirs.(map[string]any)
		if len(o) != len(th) {
			t.Errorf("%s: %d entries, go-control-plane's %d", path, len(o), len(th))
		}
		for k, v := range o {
			agree(t, path+"["+k+"]", typ.Elem(), v, th[k])
		}
	default:
		if !reflect.DeepEqual(ours, theirs) {
			t.Errorf("%s = %v, go-control-plane's %v", path, ours, theirs)
		}
	}
}
