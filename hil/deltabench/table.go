package deltabench

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
)

// MB formats n bytes in megabytes (10^6), as the sizes in the issue are.
func MB(n int64) string {
	if n < 1e6 {
		return fmt.Sprintf("%.1f kB", float64(n)/1e3)
	}
	return fmt.Sprintf("%.2f MB", float64(n)/1e6)
}

// MiB formats n bytes in mebibytes, for memory.
func MiB(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }

func secs(d time.Duration) string { return fmt.Sprintf("%.2f s", d.Seconds()) }

// Best returns the index of the smallest row among the reference delta tools
// that ran and round-tripped (not "full", not ours), or -1.
func (r *Result) Best() int {
	best := -1
	for i, row := range r.Rows {
		if i == r.OursRow || row.Name == "full" || row.Skipped != "" || row.Err != nil || !row.RoundTrip {
			continue
		}
		if best < 0 || row.Size < r.Rows[best].Size {
			best = i
		}
	}
	return best
}

// WriteTable prints the rows side by side, then how ours compares.
func (r *Result) WriteTable(w io.Writer) {
	fmt.Fprintf(w, "pair %s -> %s\n", r.From, r.To)
	fmt.Fprintf(w, "target layers %d, changed %d (%s uncompressed); old reference: all old layers, %s\n\n",
		r.Layers, len(r.Changed), MB(r.NewBytes), MB(r.OldBytes))
	fmt.Fprintln(w, "every tool reads the uncompressed layer tars, ours the same images with uncompressed layers;")
	fmt.Fprintln(w, "times are wall clock (compute CPU = user+sys of all threads); RSS is each child's peak (floor: the ~6 MiB shim)")
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 2, 8, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "tool\tsize\t% of new\tcompute\tcompute CPU\tcompute RSS\tapply\tapply RSS\tround trip\t")
	for _, row := range r.Rows {
		switch {
		case row.Skipped != "":
			fmt.Fprintf(tw, "%s\t%s\t\t\t\t\t\t\t\t\n", row.Label, row.Skipped)
			continue
		case row.Err != nil:
			msg := row.Err.Error()
			if len(msg) > 200 {
				msg = msg[:200] + "..."
			}
			fmt.Fprintf(tw, "%s\tfailed: %s\t\t\t\t\t\t\t\t\n", row.Label, strings.ReplaceAll(msg, "\t", " "))
			continue
		}
		rt := "ok"
		if !row.RoundTrip {
			rt = "MISMATCH"
		}
		pct := 0.0
		if r.NewBytes > 0 {
			pct = 100 * float64(row.Size) / float64(r.NewBytes)
		}
		fmt.Fprintf(tw, "%s\t%s\t%.2f%%\t%s\t%s\t%s\t%s\t%s\t%s\t\n", row.Label, MB(row.Size), pct,
			secs(row.Compute), secs(row.ComputeCPU), MiB(row.ComputeRSS), secs(row.Apply), MiB(row.ApplyRSS), rt)
	}
	tw.Flush()
	if r.OursRow < 0 {
		fmt.Fprintln(w, "\nours: not measured")
		return
	}
	ours := r.Rows[r.OursRow]
	if ours.Err != nil || !ours.RoundTrip {
		fmt.Fprintln(w, "\nours: FAILED")
		return
	}
	if b := r.Best(); b >= 0 {
		best := r.Rows[b]
		fmt.Fprintf(w, "\nours / best tool (%s): size %.3f (%s vs %s)\n", best.Label,
			float64(ours.Size)/float64(best.Size), MB(ours.Size), MB(best.Size))
	}
	for _, row := range r.Rows {
		if row.Name == "zstd19" && row.Skipped == "" && row.Err == nil {
			fmt.Fprintf(w, "ours / zstd -19 --patch-from compute time: %.2f (%s vs %s)\n",
				ours.Compute.Seconds()/row.Compute.Seconds(), secs(ours.Compute), secs(row.Compute))
		}
	}
	fmt.Fprintf(w, "ours apply peak RSS: %s (target <= 64 MiB)\n", MiB(ours.ApplyRSS))
}
