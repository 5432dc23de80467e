package groundd_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/bootorbit/bootorbit/groundd"
	"github.com/bootorbit/bootorbit/internal/testrand"
)

// BenchmarkPollIdle measures a Poll with nothing to send, with n ended
// uplinks in the queue: the cost of reading the queue at every step.
func BenchmarkPollIdle(b *testing.B) {
	for _, n := range []int{0, 100, 1000} {
		b.Run(fmt.Sprintf("ended=%d", n), func(b *testing.B) {
			w := newWorld(b, testrand.New(b), 0, nil)
			ctx := context.Background()
			d := w.open()
			defer d.Close()
			for range n {
				u, err := d.QueueAdd(ctx, groundd.UplinkRequest{Vehicle: vehicleID, Image: w.v2.Ref.String()})
				if err != nil {
					b.Fatal(err)
				}
				if _, err := d.QueueCancel(ctx, u.ID); err != nil {
					b.Fatal(err)
				}
			}
			now := t0.Add(time.Hour) // between passes
			b.ResetTimer()
			for range b.N {
				if _, _, err := d.Poll(ctx, vehicleID, now, nil); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
