package vm

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/bootorbit/bootorbit/hil/link"
	"github.com/bootorbit/bootorbit/internal/testrand"
)

func TestMachineArgsUDPForward(t *testing.T) {
	a := strings.Join(Machine{QEMU: "q", Kernel: "k", Initrd: "i", UDPForwards: []UDPForward{{Host: 40001, Guest: 7400}}}.Args(), " ")
	for _, want := range []string{"-netdev user,id=net0,hostfwd=udp:127.0.0.1:40001-10.0.2.15:7400", "-device virtio-net-device,netdev=net0"} {
		if !strings.Contains(a, want) {
			t.Errorf("args %q lack %q", a, want)
		}
	}
	if a := strings.Join(Machine{QEMU: "q", Kernel: "k", Initrd: "i"}.Args(), " "); strings.Contains(a, "-netdev") {
		t.Errorf("args %q: a network without forwards", a)
	}
}

// Datagrams from a ground socket on the host cross hil/link's emulator
// (leo-fast, always up), QEMU's UDP forward and the guest's virtio-net to
// a socket in the guest, and back: the path of flightd's uplink on the
// board.
func TestGuestUDPEchoOverEmulatedLink(t *testing.T) {
	t.Parallel()
	b := needBoard(t)
	rng := testrand.New(t)
	spec, err := link.Profile("leo-fast")
	if err != nil {
		t.Fatal(err)
	}
	spec.Schedule = link.Spec{}.Schedule // always up
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	r, err := b.RunUDPEcho(ctx, spec, rng.Uint64(), 20)
	if r != nil {
		t.Cleanup(func() {
			if t.Failed() {
				var c strings.Builder
				for _, l := range r.Console {
					c.WriteString(l.Text + "\n")
				}
				t.Logf("console:\n%s", c.String())
			}
		})
	}
	if err != nil {
		t.Fatalf("%v (sent %d, echoed %d; link %+v)", err, r.Sent, r.Echoed, r.Stats)
	}
	if r.Echoed != 21 {
		t.Fatalf("%d echoes, want 21", r.Echoed)
	}
	t.Logf("first echo %v after power-on; %d datagrams sent; round trips %v; link forward %+v return %+v",
		r.FirstEcho.Round(time.Millisecond), r.Sent, r.RTTs, r.Stats.Dir(link.Forward), r.Stats.Dir(link.Return))
	if f := r.Stats.Dir(link.Forward); f.Delivered == 0 {
		t.Errorf("nothing crossed the emulator forward: %+v", f)
	}
}
