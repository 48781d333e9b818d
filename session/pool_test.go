package session

import (
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"
)

// TestRefusedUpgradeLeavesNoSocket: an upgrade the upstream refuses (here
// 503) must not leave its connection in an HTTP keep-alive pool: it would
// hold a socket and two goroutines until the idle timeout. The upstream
// sees the connection closed.
func TestRefusedUpgradeLeavesNoSocket(t *testing.T) {
	t.Parallel()
	var (
		mu     sync.Mutex
		states = map[net.Conn]http.ConnState{}
	)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "try later", http.StatusServiceUnavailable)
	}))
	srv.Config.ConnState = func(c net.Conn, s http.ConnState) {
		mu.Lock()
		states[c] = s
		mu.Unlock()
	}
	srv.Start()
	defer srv.Close()
	c, err := Dial(Config{URL: "ws" + srv.URL[len("http"):] + "/graphql",
		Backoff: Backoff{Initial: time.Hour, Max: time.Hour}}) // one attempt only
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(CodeNormal, nil)
	deadline := time.Now().Add(10 * time.Second)
	for {
		mu.Lock()
		n, open := len(states), 0
		for _, s := range states {
			if s != http.StateClosed && s != http.StateHijacked {
				open++
			}
		}
		mu.Unlock()
		if n > 0 && open == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d connections still open 10s after the refused upgrade", open, n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
