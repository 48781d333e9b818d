package main

import (
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"time"
)

// Row is one figure.
type Row struct {
	Scenario string   `json:"scenario"`
	Consumer string   `json:"consumer"`
	Figure   string   `json:"figure"`
	Value    float64  `json:"value"`
	Unit     string   `json:"unit"`
	Ratio    *float64 `json:"ratio,omitempty"` // against the scenario's reference
	RatioOf  string   `json:"ratio_of,omitempty"`
}

// Goal is a docs/design.md §13 target, reported (never asserted).
type Goal struct {
	Name     string `json:"name"`
	Target   string `json:"target"`
	Measured string `json:"measured"`
	Pass     bool   `json:"pass"`
}

type report struct {
	Machine Machine        `json:"machine"`
	Started string         `json:"started"`
	Seconds float64        `json:"seconds"`
	Args    []string       `json:"args"`
	Rows    []Row          `json:"rows"`
	Goals   []Goal         `json:"goals"`
	Details map[string]any `json:"details"`
	Errors  []string       `json:"errors,omitempty"`
	// Notes say how a scenario ran when that is not in its rows (the
	// cgroup the bridge ran in, what it logged, a fallback taken).
	Notes []string `json:"notes,omitempty"`
}

func (r *report) add(scenario, consumer, figure string, value float64, unit string) *Row {
	r.Rows = append(r.Rows, Row{Scenario: scenario, Consumer: consumer, Figure: figure, Value: value, Unit: unit})
	return &r.Rows[len(r.Rows)-1]
}

func (r *report) addRatio(scenario, consumer, figure string, value float64, unit string, ref float64, refName string) {
	row := r.add(scenario, consumer, figure, value, unit)
	if ref > 0 {
		v := value / ref
		row.Ratio, row.RatioOf = &v, refName
	}
}

func (r *report) find(scenario, consumer, figure string) (float64, bool) {
	for _, row := range r.Rows {
		if row.Scenario == scenario && row.Consumer == consumer && row.Figure == figure {
			return row.Value, true
		}
	}
	return 0, false
}

func (r *report) goal(name, target, measured string, pass bool) {
	r.Goals = append(r.Goals, Goal{Name: name, Target: target, Measured: measured, Pass: pass})
}

func (r *report) print(w io.Writer) {
	fmt.Fprintf(w, "\ngqlbridge benchmarks: %d CPUs (%s), %s, Go %s, Node %s; %.0f s\n",
		r.Machine.CPUs, r.Machine.CPUModel, r.Machine.MemTotal, strings.TrimPrefix(r.Machine.GoVersion, "go"), r.Machine.Node, r.Seconds)

	fmt.Fprintf(w, "load average at start: %s, at end: %s (other work on the machine skews every figure)\n\n", r.Machine.LoadAvgStart, r.Machine.LoadAvgEnd)
	const f = "%-14s %-28s %-30s %14s %-10s %s\n"
	fmt.Fprintf(w, f, "scenario", "consumer", "figure", "value", "unit", "ratio")
	fmt.Fprintln(w, strings.Repeat("-", 118))
	last := ""
	for _, row := range r.Rows {
		if last != "" && row.Scenario != last {
			fmt.Fprintln(w)
		}
		last = row.Scenario
		ratio := ""
		if row.Ratio != nil {
			ratio = fmt.Sprintf("%.2fx %s", *row.Ratio, row.RatioOf)
		}
		fmt.Fprintf(w, f, row.Scenario, row.Consumer, row.Figure, num(row.Value), row.Unit, ratio)
	}
	if len(r.Goals) > 0 {
		fmt.Fprintf(w, "\n%-6s %-48s %-22s %s\n", "goal", "", "target", "measured")
		fmt.Fprintln(w, strings.Repeat("-", 118))
		for _, g := range r.Goals {
			mark := "FAIL"
			if g.Pass {
				mark = "PASS"
			}
			fmt.Fprintf(w, "%-6s %-48s %-22s %s\n", mark, g.Name, g.Target, g.Measured)
		}
	}
	if len(r.Notes) > 0 {
		fmt.Fprintln(w)
	}
	for _, n := range r.Notes {
		fmt.Fprintln(w, "note:", n)
	}
	for _, e := range r.Errors {
		fmt.Fprintln(w, "error:", e)
	}
}

// num formats a figure with a precision that suits its size.
func num(v float64) string {
	a := math.Abs(v)
	switch {
	case v == math.Trunc(v) && a < 1e15:
		return groupDigits(fmt.Sprintf("%.0f", v))
	case a >= 1000:
		return groupDigits(fmt.Sprintf("%.0f", v))
	case a >= 100:
		return fmt.Sprintf("%.1f", v)
	case a >= 1:
		return fmt.Sprintf("%.2f", v)
	}
	return fmt.Sprintf("%.3f", v)
}

func groupDigits(s string) string {
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

// roundsNote is the least and the most of a[i]/b[i] over the runs both
// have: consumers run in turn, so run i of one and run i of another saw
// the machine at about the same moment, and the spread says how far a
// ratio of medians can move with the machine. Empty with fewer than two.
func roundsNote(a, b []float64) string {
	n := min(len(a), len(b))
	if n < 2 {
		return ""
	}
	lo, hi := math.Inf(1), math.Inf(-1)
	for i := range n {
		if b[i] <= 0 {
			return ""
		}
		r := a[i] / b[i]
		lo, hi = min(lo, r), max(hi, r)
	}
	return fmt.Sprintf("; run by run %.2f-%.2fx", lo, hi)
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// quantile of sorted durations, nearest rank.
func quantile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(q*float64(len(sorted)))) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

func us(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
