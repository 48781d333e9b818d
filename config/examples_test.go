package config

import (
	"fmt"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"google.golang.org/genproto/googleapis/rpc/code"

	"github.com/gqlbridge/gqlbridge/bridge"
	"github.com/gqlbridge/gqlbridge/internal/rpcstatus"
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
			// (cmd/bridge/wire.go); the examples must not teach that.
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

// TestDocsCloseCodeTable checks the default table of docs/config.md against
// the outcome table in session/closecodes.go, row for row: the close code or
// HTTP status, its name, its classes before and after the ack, and the gRPC
// status bridge.Status gives it once terminal. On a mismatch it prints the
// table to paste.
func TestDocsCloseCodeTable(t *testing.T) {
	t.Parallel()
	b, err := os.ReadFile("../docs/config.md")
	if err != nil {
		t.Fatal(err)
	}
	want := closeCodeTable()
	if !strings.Contains(string(b), want) {
		t.Errorf("docs/config.md does not hold the default table of session/closecodes.go; under \"#### Default table\" it should read:\n\n%s", want)
	}
}

// closeCodeTable renders session.Rules as docs/config.md shows them.
func closeCodeTable() string {
	var b strings.Builder
	b.WriteString("| close code or HTTP status | name | class | gRPC status once terminal |\n|---|---|---|---|\n")
	for _, r := range session.Rules() {
		outcome, name := "`"+strconv.Itoa(int(r.Code))+"`", r.Name
		status := r.HTTPStatus
		switch {
		case r.HTTPStatus == http.StatusInternalServerError:
			outcome = "HTTP `5xx`"
		case r.HTTPStatus != 0:
			outcome = "HTTP `" + strconv.Itoa(r.HTTPStatus) + "`"
		case r.Code == 0:
			outcome, name = r.Name, "—"
			if r.BeforeAck == session.ClassMisconfig {
				status = http.StatusBadRequest // a status no row names
			}
		}
		grpc := func(class session.Class, beforeAck bool) string {
			st := bridge.Status("u", &session.Error{Class: class, Code: r.Code, HTTPStatus: status, BeforeAck: beforeAck})
			return fmt.Sprintf("`%s` (`%s`)", code.Code(st.Code()), rpcstatus.ErrorInfo(st).GetReason())
		}
		class, terminal := "`"+r.BeforeAck.String()+"`", grpc(r.BeforeAck, true)
		if r.BeforeAck != r.AfterAck {
			class = fmt.Sprintf("`%s` before the ack, `%s` after", r.BeforeAck, r.AfterAck)
			terminal = fmt.Sprintf("%s before the ack, %s after", terminal, grpc(r.AfterAck, false))
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s |\n", outcome, name, class, terminal)
	}
	return b.String()
}
