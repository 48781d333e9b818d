package config

import (
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/gqlbridge/gqlbridge/session"
)

// TestExamplesParse keeps every shipped example valid. Each ${VAR} the file
// uses is supplied with a dummy value.
func TestExamplesParse(t *testing.T) {
	t.Parallel()
	files, err := filepath.Glob("../examples/*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatal("no examples/*.yaml found")
	}
	for _, file := range files {
		t.Run(filepath.Base(file), func(t *testing.T) {
			t.Parallel()
			b, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			vars := map[string]string{}
			for _, m := range envRef.FindAllSubmatch(b, -1) {
				vars[string(m[1])] = "example-" + strings.ToLower(string(m[1]))
			}
			cfg, err := Parse(b, func(k string) (string, bool) { v, ok := vars[k]; return v, ok })
			if err != nil {
				t.Fatalf("%s: %v", file, err)
			}
			// The binary refuses {{token}} without a token source
			// (wiring/upstreams.go); the examples must not teach that.
			for name, u := range cfg.Upstreams {
				uses := false
				for _, v := range u.Headers {
					uses = uses || strings.Contains(v, "{{token}}")
				}
				if p := fmt.Sprint(u.ConnectionParams); strings.Contains(p, "{{token}}") {
					uses = true
				}
				if uses && u.Token == nil {
					t.Errorf("upstream %s uses {{token}} but has no token source", name)
				}
			}
		})
	}
}

// keyPaths lists every key of the file as a dotted path, intermediate
// mappings included; the keys of user-named maps (upstreams, callers) are
// written <name>.
func keyPaths(t reflect.Type, prefix string, out map[string]bool) {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	for f := range t.Fields() {
		tag, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if !f.IsExported() || tag == "" || tag == "-" {
			continue
		}
		path := tag
		if prefix != "" {
			path = prefix + "." + tag
		}
		out[path] = true
		ft := f.Type
		for ft.Kind() == reflect.Pointer {
			ft = ft.Elem()
		}
		switch {
		case ft.Kind() == reflect.Struct:
			keyPaths(ft, path, out)
		case ft.Kind() == reflect.Map && structElem(ft.Elem()):
			out[path+".<name>"] = true
			keyPaths(ft.Elem(), path+".<name>", out)
		}
	}
}

func structElem(t reflect.Type) bool {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	return t.Kind() == reflect.Struct
}

// docKey is the first cell of a reference-table row that names a key.
var docKey = regexp.MustCompile("(?m)^\\| `((?:server|upstreams)[^`]*)`")

// TestDocsListEveryKey keeps docs/config.md and the structs in step: every
// key the structs accept has a row in a reference table, and every row
// names a key the structs accept.
func TestDocsListEveryKey(t *testing.T) {
	t.Parallel()
	b, err := os.ReadFile("../docs/config.md")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{}
	keyPaths(reflect.TypeFor[Config](), "", want)
	documented := map[string]bool{}
	for _, m := range docKey.FindAllStringSubmatch(string(b), -1) {
		documented[m[1]] = true
	}
	for _, k := range slices.Sorted(maps.Keys(want)) {
		if !documented[k] {
			t.Errorf("docs/config.md has no table row for `%s`", k)
		}
	}
	for _, k := range slices.Sorted(maps.Keys(documented)) {
		if !want[k] {
			t.Errorf("docs/config.md documents `%s`, which config.Config does not accept", k)
		}
	}
	// Belt and braces: every tag name appears somewhere in the text.
	for k := range want {
		leaf := k[strings.LastIndex(k, ".")+1:]
		if !strings.Contains(string(b), leaf) {
			t.Errorf("docs/config.md never mentions %q", leaf)
		}
	}
}

// classRow is a row of the default close-code table: | `class` | `code`, ... |.
var classRow = regexp.MustCompile("(?m)^\\| `(transient|auth|misconfiguration|bridge_fault)` \\| ((?:`\\d{4}`(?:, )?)+) \\|$")

// TestDocsCloseCodeTable checks the default close-code table of
// docs/config.md against session.DefaultClass, so it stays an exact copy.
func TestDocsCloseCodeTable(t *testing.T) {
	t.Parallel()
	b, err := os.ReadFile("../docs/config.md")
	if err != nil {
		t.Fatal(err)
	}
	// A code the table names has the same class before and after the ack;
	// the others are auth before it and transient after.
	want := map[string][]int{}
	for code := 1000; code <= 4999; code++ {
		before, after := session.DefaultClass(code, true), session.DefaultClass(code, false)
		if before == after {
			want[before.String()] = append(want[before.String()], code)
		}
	}
	rows := classRow.FindAllStringSubmatch(string(b), -1)
	if len(rows) != 4 {
		t.Fatalf("docs/config.md: found %d rows of the default close-code table, want 4 (one per class)", len(rows))
	}
	codeRe := regexp.MustCompile("`(\\d{4})`")
	for _, r := range rows {
		var got []int
		for _, m := range codeRe.FindAllStringSubmatch(r[2], -1) {
			var c int
			fmt.Sscan(m[1], &c)
			got = append(got, c)
		}
		slices.Sort(got)
		if !slices.Equal(got, want[r[1]]) {
			t.Errorf("docs/config.md: class %s lists %v; session.DefaultClass gives %v", r[1], got, want[r[1]])
		}
	}
	if session.DefaultClass(1000, true) != session.ClassAuth || session.DefaultClass(1000, false) != session.ClassTransient {
		t.Errorf("session.DefaultClass changed for unnamed codes; update docs/config.md")
	}
}
