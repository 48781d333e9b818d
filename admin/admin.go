// Package admin serves the bridge's admin endpoints: Prometheus /metrics, /healthz, /readyz, an opt-in /debug/pprof/, and a status page for humans at /.
package admin

import (
	"bytes"
	"cmp"
	_ "embed"
	"encoding/json"
	"fmt"
	"html/template"
	"io"
	"net/http"
	"net/http/pprof"
	"slices"
	"strconv"
	"time"

	"github.com/gqlbridge/gqlbridge/bridge"
	"github.com/gqlbridge/gqlbridge/session"
)

// Options configure Handler. Every field is optional.
type Options struct {
	Metrics  http.Handler           // promhttp handler; nil = no /metrics
	Ready    func() bool            // /readyz: 200 "ok" when true, 503 "draining" otherwise; nil = always ready
	Snapshot func() bridge.Snapshot // the status page's data; nil = an empty snapshot
	Pprof    bool                   // mount net/http/pprof under /debug/pprof/
	Version  string
	Started  time.Time // process start, for the uptime; zero = unknown
}

// Handler returns the admin HTTP handler:
//
//	/              status page (HTML, refreshes every 5 s)
//	/status.json   the bridge.Snapshot as JSON
//	/healthz       200 "ok" while the process serves HTTP
//	/readyz        200 "ok" or 503 "draining", per Options.Ready
//	/metrics       Options.Metrics, when set
//	/debug/pprof/  net/http/pprof, when Options.Pprof
//
// Only GET and HEAD are allowed; other methods get 405.
func Handler(o Options) http.Handler {
	h := &handler{o: o, now: time.Now}
	mux := http.NewServeMux()
	mux.HandleFunc("/{$}", h.status)
	mux.HandleFunc("/status.json", h.statusJSON)
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { plain(w, http.StatusOK, "ok") })
	mux.HandleFunc("/readyz", h.readyz)
	if o.Metrics != nil {
		mux.Handle("/metrics", o.Metrics)
	}
	if o.Pprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index) // also serves the named profiles: heap, goroutine, ...
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	return onlyGet(mux)
}

// onlyGet refuses every method but GET and HEAD with 405.
func onlyGet(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			plain(w, http.StatusMethodNotAllowed, "method not allowed")
			return
		}
		next.ServeHTTP(w, r)
	})
}

func plain(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	io.WriteString(w, msg+"\n")
}

type handler struct {
	o   Options
	now func() time.Time
}

func (h *handler) snapshot() bridge.Snapshot {
	if h.o.Snapshot == nil {
		return bridge.Snapshot{}
	}
	return h.o.Snapshot()
}

func (h *handler) readyz(w http.ResponseWriter, _ *http.Request) {
	if h.o.Ready != nil && !h.o.Ready() {
		plain(w, http.StatusServiceUnavailable, "draining")
		return
	}
	plain(w, http.StatusOK, "ok")
}

func (h *handler) statusJSON(w http.ResponseWriter, _ *http.Request) {
	b, err := json.MarshalIndent(h.snapshot(), "", "  ")
	if err != nil {
		plain(w, http.StatusInternalServerError, "encoding the snapshot: "+err.Error())
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Write(append(b, '\n'))
}

//go:embed status.html
var statusHTML string

var statusTmpl = template.Must(template.New("status").Funcs(template.FuncMap{
	"stateClass": stateClass,
	"kindClass":  kindClass,
	"codeName":   codeName,
	"orDash":     orDash,
}).Parse(statusHTML))

// The status page renders these views of the snapshot.
type (
	pageView struct {
		Version     string
		Now         string
		Started     string
		Uptime      string
		Draining    bool
		Metrics     bool
		Upstreams   []upstreamView
		Connections int
		Subscribers int
		Operations  int
	}
	upstreamView struct {
		bridge.UpstreamSnapshot
		Ready       int
		Connections []connView
		Events      []eventView // newest first
	}
	connView struct {
		bridge.ConnSnapshot
		SinceAgo string
		SinceAt  string
	}
	eventView struct {
		bridge.ConnEvent
		At  string
		Ago string
	}
)

func (h *handler) status(w http.ResponseWriter, _ *http.Request) {
	snap := h.snapshot()
	now := h.now()
	v := pageView{Version: h.o.Version, Now: now.UTC().Format(time.DateTime + " MST"), Draining: snap.Draining, Metrics: h.o.Metrics != nil}
	if v.Version == "" {
		v.Version = "unknown"
	}
	if !h.o.Started.IsZero() {
		v.Started = h.o.Started.UTC().Format(time.DateTime + " MST")
		v.Uptime = duration(now.Sub(h.o.Started))
	}
	for _, u := range snap.Upstreams {
		uv := upstreamView{UpstreamSnapshot: u}
		for _, c := range u.Connections {
			if c.State == session.StateReady {
				uv.Ready++
			}
			uv.Connections = append(uv.Connections, connView{ConnSnapshot: c, SinceAgo: ago(now, c.Since), SinceAt: stamp(c.Since)})
		}
		// Ready connections first, then connecting, backoff, closed; oldest
		// first within a state, so rows do not shuffle between refreshes.
		slices.SortStableFunc(uv.Connections, func(a, b connView) int {
			if c := cmp.Compare(stateRank(a.State), stateRank(b.State)); c != 0 {
				return c
			}
			return a.Since.Compare(b.Since)
		})
		for _, e := range slices.Backward(u.Events) {
			uv.Events = append(uv.Events, eventView{ConnEvent: e, At: stamp(e.At), Ago: ago(now, e.At)})
		}
		v.Connections += len(u.Connections)
		v.Subscribers += u.Subscriptions
		v.Operations += u.Operations
		v.Upstreams = append(v.Upstreams, uv)
	}
	var buf bytes.Buffer
	if err := statusTmpl.Execute(&buf, v); err != nil {
		plain(w, http.StatusInternalServerError, "rendering the status page: "+err.Error())
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	// The page has no script and no external asset.
	w.Header().Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'")
	w.Write(buf.Bytes())
}

func stateRank(state session.State) int {
	switch state {
	case session.StateReady:
		return 0
	case session.StateConnecting:
		return 1
	case session.StateBackoff:
		return 2
	case session.StateClosed:
		return 3
	}
	return 4
}

func stateClass(state session.State) string {
	switch state {
	case session.StateReady:
		return "ok"
	case session.StateConnecting, session.StateBackoff:
		return "warn"
	case session.StateClosed:
		return "bad"
	}
	return "muted"
}

func kindClass(kind bridge.ConnEventKind) string {
	switch kind {
	case bridge.EventRotated:
		return "ok"
	case bridge.EventReconnect:
		return "warn"
	case bridge.EventRefresh:
		return "info"
	case bridge.EventFailed:
		return "bad"
	}
	return "muted"
}

// codeName is the name of a close code in the outcome table
// (session/closecodes.go), "" for one it does not name.
func codeName(code int) string { return session.CloseCode(code).Name() }

func orDash(n int) string {
	if n == 0 {
		return "—"
	}
	return strconv.Itoa(n)
}

func stamp(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format("2006-01-02 15:04:05.000 MST")
}

func ago(now, t time.Time) string {
	if t.IsZero() {
		return "—"
	}
	d := now.Sub(t)
	if d < time.Second {
		return "just now"
	}
	return duration(d) + " ago"
}

// duration is d rounded for people: 42s, 3m 07s, 5h 02m, 2d 04h.
func duration(d time.Duration) string {
	if d < 0 {
		d = 0
	}
	s := int64(d / time.Second)
	switch {
	case s < 60:
		return fmt.Sprintf("%ds", s)
	case s < 3600:
		return fmt.Sprintf("%dm %02ds", s/60, s%60)
	case s < 86400:
		return fmt.Sprintf("%dh %02dm", s/3600, s%3600/60)
	}
	return fmt.Sprintf("%dd %02dh", s/86400, s%86400/3600)
}
