package transfer_test

import (
	"testing"
	"time"

	"github.com/bootorbit/bootorbit/protocol/linksim"
)

// BenchmarkTransfer runs a multi-megabyte transfer over each named link
// profile and reports the transfer metrics docs/transfer.md defines:
// efficiency, overhead, return-bytes and resent-journaled (means over the
// iterations; iteration i uses seed i+1, so the figures are reproducible).
// ns/op is the wall time of one simulated transfer.
//
//	go test -run '^$' -bench BenchmarkTransfer ./protocol/transfer/
func BenchmarkTransfer(b *testing.B) {
	for _, name := range linksim.ProfileNames() {
		b.Run(name, func(b *testing.B) {
			prof, err := linksim.Named(name)
			if err != nil {
				b.Fatal(err)
			}
			var eff, over, ret, resent, sim float64
			n := 0
			for i := 0; b.Loop(); i++ {
				h := newHarness(b, prof, uint64(i+1), profileSize(name))
				h.run(60 * 24 * time.Hour)
				h.check()
				m := h.metrics()
				eff += m.efficiency
				over += m.overhead
				ret += float64(m.returnBytes)
				resent += float64(m.resentJournaled)
				sim += h.sim.Elapsed().Hours()
				n++
			}
			f := float64(n)
			b.ReportMetric(eff/f, "efficiency")
			b.ReportMetric(over/f, "overhead")
			b.ReportMetric(ret/f, "return-bytes")
			b.ReportMetric(resent/f, "resent-journaled")
			b.ReportMetric(sim/f, "sim-hours")
			b.ReportMetric(float64(profileSize(name)), "payload-bytes")
		})
	}
}
