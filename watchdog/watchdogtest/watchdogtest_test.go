package watchdogtest_test

import (
	"testing"
	"time"

	"github.com/bootorbit/bootorbit/watchdog/watchdogtest"
)

func TestDeviceExpires(t *testing.T) {
	c := &watchdogtest.Clock{T: time.Unix(1000, 0)}
	d := watchdogtest.NewDevice(c, 10*time.Second, 0)
	got, err := d.SetTimeout(2500 * time.Millisecond)
	if err != nil || got != 3*time.Second {
		t.Fatalf("SetTimeout rounds up to whole seconds: %v %v", got, err)
	}
	c.Advance(2 * time.Second)
	if d.Expired() || d.Keepalive() != nil {
		t.Fatal("expired early")
	}
	c.Advance(2999 * time.Millisecond)
	if d.Expired() {
		t.Fatal("expired before the timeout")
	}
	d.Close() // no magic close: still armed
	if !d.Closed() {
		t.Fatal("Close not recorded")
	}
	c.Advance(time.Millisecond)
	if !d.Expired() {
		t.Fatal("closing disarmed the fake")
	}
	if err := d.Keepalive(); err == nil {
		t.Fatal("a late keepalive revived an expired watchdog")
	}
	if d.Pets() != 1 {
		t.Fatalf("pets %d", d.Pets())
	}
}
