package main

import (
	"context"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"time"

	"github.com/gqlbridge/gqlbridge/bench/upstream"
	bridgev1 "github.com/gqlbridge/gqlbridge/gen/graphqlbridge/v1"
)

// profileThroughput profiles the bridge b (started with server.pprof) while
// the bridged consumer of scenario 1 reads v over and over: a CPU and an
// allocation profile of the bridge process alone, with their top lists.
func profileThroughput(ctx context.Context, o *options, b *bridgeProc, client bridgev1.SubscriptionServiceClient, v upstream.Vars, maxBatch uint32, name string, r *report) error {
	const seconds = 10
	var wg sync.WaitGroup
	errs := make(chan error, 2)
	wg.Go(func() {
		errs <- saveProfile(ctx, b, o.profile, fmt.Sprintf("profile?seconds=%d", seconds), "cpu-"+name, "")
	})
	time.Sleep(100 * time.Millisecond)
	deadline := time.Now().Add(seconds * time.Second)
	var total int64
	var busy time.Duration
	for time.Now().Before(deadline) {
		res, err := bridgedConsume(ctx, client, v, maxBatch, nil)
		if err != nil {
			return err
		}
		total += res.count
		busy += res.dur
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			return err
		}
	}
	if err := saveProfile(ctx, b, o.profile, "allocs", "allocs-"+name, "alloc_space"); err != nil {
		return err
	}
	log.Printf("  profiled %d results at %.0f/s (max_batch %d)", total, float64(total)/busy.Seconds(), maxBatch)
	r.Details["profile "+name] = map[string]any{"dir": o.profile, "results": total, "rate": float64(total) / busy.Seconds()}
	return nil
}

// saveProfile fetches one profile from the admin server of b (started with
// server.pprof) into dir as NAME.prof and writes its top list beside it as
// NAME-top.txt; index picks the sample type ("" for the default).
func saveProfile(ctx context.Context, b *bridgeProc, dir, kind, name, index string) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+b.adminAddr+"/debug/pprof/"+kind, nil) // kind may carry ?seconds=N
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("pprof %s: %s (is server.pprof on?)", kind, resp.Status)
	}
	file := filepath.Join(dir, name+".prof")
	f, err := os.Create(file)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	f.Close()
	args := []string{"tool", "pprof", "-top", "-nodecount=40"}
	if index != "" {
		args = append(args, "-sample_index="+index)
	}
	out, err := exec.CommandContext(ctx, "go", append(args, b.bin, file)...).Output()
	if err != nil {
		return fmt.Errorf("go tool pprof %s: %w", file, err)
	}
	fmt.Printf("\n== %s\n%s", name, out)
	return os.WriteFile(filepath.Join(dir, name+"-top.txt"), out, 0o644)
}
