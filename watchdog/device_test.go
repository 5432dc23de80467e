package watchdog

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestBootStatusCause(t *testing.T) {
	for st, want := range map[BootStatus]ResetCause{
		0: CausePowerOn, WDIOFCardReset: CauseWatchdog, WDIOFCardReset | WDIOFOverheat: CauseWatchdog,
		WDIOFPowerUnder: CausePower, WDIOFOverheat: CauseOverheat, WDIOFKeepalive: CausePowerOn,
	} {
		if got := st.Cause(); got != want {
			t.Errorf("%#x: %s, want %s", uint32(st), got, want)
		}
	}
}

func TestRecordReset(t *testing.T) {
	dir := t.TempDir()
	if r, err := ReadResetRecord(dir); err != nil || r.Count != 0 {
		t.Fatalf("no record yet: %+v %v", r, err)
	}
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	if _, err := RecordReset(dir, WDIOFCardReset, "B", now); err != nil {
		t.Fatal(err)
	}
	r, err := RecordReset(dir, 0, "A", now.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	got, err := ReadResetRecord(dir)
	if err != nil || got != r || got.Count != 2 || got.WatchdogResets != 1 || got.Cause != CausePowerOn || got.Slot != "A" {
		t.Fatalf("record %+v %v", got, err)
	}
	// No temporary files left behind.
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		t.Fatalf("dir holds %d entries", len(ents))
	}
	// A corrupt record is an error to read, and restarts the counts.
	os.WriteFile(filepath.Join(dir, ResetRecordFile), []byte("{garbage"), 0o644)
	if _, err := ReadResetRecord(dir); err == nil {
		t.Fatal("corrupt record read without error")
	}
	if r, err := RecordReset(dir, WDIOFCardReset, "A", now); err != nil || r.Count != 1 || r.WatchdogResets != 1 {
		t.Fatalf("record over a corrupt one: %+v %v", r, err)
	}
}

// A flightd restarted within one boot must not count that boot, or its
// watchdog reset, again: GETBOOTSTATUS still says CARDRESET.
func TestRecordBootResetOncePerBoot(t *testing.T) {
	dir := t.TempDir()
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	first, err := RecordBootReset(dir, "boot-1", WDIOFCardReset, "A", now)
	if err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadFile(filepath.Join(dir, ResetRecordFile))
	again, err := RecordBootReset(dir, "boot-1", WDIOFCardReset, "A", now.Add(time.Minute))
	if err != nil || again != first || again.Count != 1 || again.WatchdogResets != 1 {
		t.Fatalf("restart within the boot: %+v %v, want %+v", again, err, first)
	}
	if after, _ := os.ReadFile(filepath.Join(dir, ResetRecordFile)); string(after) != string(before) {
		t.Fatal("a restart within the boot rewrote the record")
	}
	next, err := RecordBootReset(dir, "boot-2", 0, "A", now.Add(time.Hour))
	if err != nil || next.Count != 2 || next.WatchdogResets != 1 || next.Cause != CausePowerOn || next.BootID != "boot-2" {
		t.Fatalf("next boot: %+v %v", next, err)
	}
	if _, err := os.Stat(bootIDFile); err == nil {
		if id, err := KernelBootID(); err != nil || len(id) != 36 {
			t.Fatalf("KernelBootID = %q, %v", id, err)
		}
	}
}

// TestReadBootID: a boot id file (a bench board's) is read as the
// kernel's is; an empty or oversized file is refused.
func TestReadBootID(t *testing.T) {
	dir := t.TempDir()
	write := func(name, s string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	if id, err := ReadBootID(write("ok", "0f4c3b1e-5a6d-4e7f-8a9b-0c1d2e3f4a5b\n")); err != nil || id != "0f4c3b1e-5a6d-4e7f-8a9b-0c1d2e3f4a5b" {
		t.Fatalf("ReadBootID = %q, %v", id, err)
	}
	for _, bad := range []string{"", "\n", strings.Repeat("x", 100)} {
		if id, err := ReadBootID(write("bad", bad)); err == nil {
			t.Errorf("%q read as %q", bad, id)
		}
	}
	if _, err := ReadBootID(filepath.Join(dir, "missing")); err == nil {
		t.Error("a missing file read")
	}
}

// TestLinuxDevice runs against a real watchdog only when one is named in
// BOOTORBIT_TEST_WATCHDOG (the HIL bench, or QEMU's i6300esb): opening it
// arms it, and this test leaves it armed, so the board resets after the
// timeout unless something else pets it.
func TestLinuxDevice(t *testing.T) {
	path := os.Getenv("BOOTORBIT_TEST_WATCHDOG")
	if path == "" {
		t.Skip("set BOOTORBIT_TEST_WATCHDOG=/dev/watchdogN on a board that may reset")
	}
	d, err := OpenDevice(path)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	t.Logf("info %+v", d.Info())
	got, err := d.SetTimeout(60 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("timeout set %v", got)
	if err := d.Keepalive(); err != nil {
		t.Fatal(err)
	}
	st, err := d.BootStatus()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("bootstatus %#x cause %s", uint32(st), st.Cause())
}
