package watchdog

import (
	"errors"
	"strings"
	"testing"
)

func TestBootControlOperations(t *testing.T) {
	env := &MemEnv{Vars: Vars{"bootcmd": "run x"}}
	bc := &BootControl{Env: env, Attempts: 3}

	st, err := bc.Status("A")
	if err != nil {
		t.Fatal(err)
	}
	// Unset variables read as the scripts' defaults.
	if strings.Join(st.Order, " ") != "A B" || st.Left["A"] != 3 || st.Left["B"] != 3 || st.Trial || st.Next != "A" {
		t.Fatalf("defaults: %+v", st)
	}

	if err := bc.Arm("B"); err != nil {
		t.Fatal(err)
	}
	if env.Writes != 1 {
		t.Fatalf("Arm took %d writes, want 1", env.Writes)
	}
	want := Vars{"bootcmd": "run x", "BOOT_ORDER": "B A", "BOOT_A_LEFT": "3", "BOOT_B_LEFT": "3", "BOOTORBIT_TRIAL": "B"}
	if !env.Vars.Equal(want) {
		t.Fatalf("after Arm: %s", diffVars(env.Vars, want))
	}
	st, _ = bc.Status("A")
	if st.Trial || st.TrialSlot != "B" || st.FailedTrial != "" || st.Primary != "B" {
		t.Fatalf("armed, still on A: %+v", st)
	}
	// The bootloader boots B once: a trial boot.
	env.Vars["BOOT_B_LEFT"] = "2"
	st, _ = bc.Status("B")
	if !st.Trial || st.Left["B"] != 2 {
		t.Fatalf("trial boot: %+v", st)
	}
	if err := bc.MarkGood("B"); err != nil {
		t.Fatal(err)
	}
	st, _ = bc.Status("B")
	if st.Trial || st.TrialSlot != "" || st.Left["B"] != 3 {
		t.Fatalf("after MarkGood: %+v", st)
	}
	// Marking good again changes nothing and writes nothing.
	w := env.Writes
	if err := bc.MarkGood("B"); err != nil || env.Writes != w {
		t.Fatalf("idempotent MarkGood wrote (%d -> %d): %v", w, env.Writes, err)
	}

	if err := bc.MarkBad("A"); err != nil {
		t.Fatal(err)
	}
	if env.Vars["BOOT_ORDER"] != "B" || env.Vars["BOOT_A_LEFT"] != "0" {
		t.Fatalf("after MarkBad A: %v", env.Vars)
	}
	if err := bc.MarkBad("B"); !errors.Is(err, ErrLastSlot) {
		t.Fatalf("MarkBad of the last slot: %v", err)
	}
	// MarkGood puts a dropped slot back at the end of the order.
	if err := bc.MarkGood("A"); err != nil || env.Vars["BOOT_ORDER"] != "B A" {
		t.Fatalf("MarkGood A: %v %v", env.Vars, err)
	}
}

// Arm runs on the healthy slot, whose own counter the bootloader has been
// decrementing: it must refresh that fallback to N in the same write, or a
// hanging trial would send the board into the counter-reset loop that
// retries the trial slot first, forever.
func TestBootControlArmRefreshesFallback(t *testing.T) {
	env := &MemEnv{Vars: Vars{"BOOT_ORDER": "A", "BOOT_A_LEFT": "0", "BOOT_B_LEFT": "0"}}
	bc := &BootControl{Env: env, Attempts: 3}
	if err := bc.Arm("B"); err != nil {
		t.Fatal(err)
	}
	want := Vars{"BOOT_ORDER": "B A", "BOOT_A_LEFT": "3", "BOOT_B_LEFT": "3", "BOOTORBIT_TRIAL": "B"}
	if !env.Vars.Equal(want) || env.Writes != 1 {
		t.Fatalf("after Arm (%d writes): %s", env.Writes, diffVars(env.Vars, want))
	}
	// B hangs N times; the bootloader then falls back to A.
	m := BootloaderModel{Attempts: 3}
	for i := 0; i < 3; i++ {
		if d, err := m.Boot(env); err != nil || d.Slot != "B" {
			t.Fatalf("trial boot %d: %+v %v", i+1, d, err)
		}
	}
	if d, err := m.Boot(env); err != nil || d.Slot != "A" || d.Reset {
		t.Fatalf("after the trial: %+v %v, want a boot of A", d, err)
	}
}

// Marking the good fallback bad while the other slot is still on trial
// would leave a slot that may hang and has nothing to fall back to.
func TestBootControlMarkBadKeepsFallbackOfTrial(t *testing.T) {
	env := &MemEnv{Vars: Vars{"BOOT_ORDER": "B A", "BOOT_A_LEFT": "3", "BOOT_B_LEFT": "2", "BOOTORBIT_TRIAL": "B"}}
	bc := &BootControl{Env: env, Attempts: 3}
	if err := bc.MarkBad("A"); !errors.Is(err, ErrLastSlot) || !strings.Contains(err.Error(), "on trial") || env.Writes != 0 {
		t.Fatalf("MarkBad of the trial's fallback: %v (writes %d)", err, env.Writes)
	}
	// Once the trial slot is marked good, the old slot may go.
	if err := bc.MarkGood("B"); err != nil {
		t.Fatal(err)
	}
	if err := bc.MarkBad("A"); err != nil || env.Vars["BOOT_ORDER"] != "B" {
		t.Fatalf("MarkBad A after B was marked good: %v %v", err, env.Vars)
	}
}

func TestBootControlFailedTrial(t *testing.T) {
	env := &MemEnv{Vars: Vars{"BOOT_ORDER": "B A", "BOOT_A_LEFT": "2", "BOOT_B_LEFT": "0", "BOOTORBIT_TRIAL": "B"}}
	bc := &BootControl{Env: env, Attempts: 3}
	st, err := bc.Status("A")
	if err != nil {
		t.Fatal(err)
	}
	if st.FailedTrial != "B" || st.Trial || st.Next != "A" || st.Primary != "B" {
		t.Fatalf("fallback: %+v", st)
	}
	if err := bc.MarkBad("B"); err != nil {
		t.Fatal(err)
	}
	st, _ = bc.Status("A")
	if st.FailedTrial != "" || st.TrialSlot != "" || strings.Join(st.Order, " ") != "A" {
		t.Fatalf("after MarkBad: %+v", st)
	}
}

func TestBootControlRefusesBadInput(t *testing.T) {
	for _, v := range []Vars{
		{"BOOT_A_LEFT": "a"}, {"BOOT_A_LEFT": "10"}, {"BOOT_B_LEFT": "-1"},
		{"BOOT_ORDER": "A C"}, {"BOOT_ORDER": "A A"}, {"BOOTORBIT_TRIAL": "X"},
		// Hand edits the bootloaders read differently from each other or
		// from a naive split: U-Boot's hush does not split on a tab or a
		// carriage return (GRUB does on a tab), and a blank order is kept
		// (not defaulted) and names no slot.
		{"BOOT_ORDER": "B\tA"}, {"BOOT_ORDER": "B\rA"}, {"BOOT_ORDER": "B A\r"}, {"BOOT_ORDER": "B\nA"}, {"BOOT_ORDER": " "},
	} {
		env := &MemEnv{Vars: v}
		bc := &BootControl{Env: env, Attempts: 3}
		if _, err := bc.Status("A"); !errors.Is(err, ErrBootVar) {
			t.Errorf("%v: Status error %v, want ErrBootVar", v, err)
		}
		if err := bc.Arm("B"); !errors.Is(err, ErrBootVar) || env.Writes != 0 {
			t.Errorf("%v: Arm error %v (writes %d)", v, err, env.Writes)
		}
	}
	bc := &BootControl{Env: &MemEnv{}, Attempts: 10}
	if err := bc.Arm("A"); !errors.Is(err, ErrAttempts) {
		t.Errorf("attempts 10: %v", err)
	}
	bc.Attempts = 3
	if err := bc.Arm("C"); !errors.Is(err, ErrBadSlot) {
		t.Errorf("slot C: %v", err)
	}
	if _, err := bc.Status("a"); !errors.Is(err, ErrBadSlot) {
		t.Errorf("booted a: %v", err)
	}
}

func TestBootControlNeverOverwritesUnreadableEnv(t *testing.T) {
	p := t.TempDir() + "/env"
	zeroFile(t, p, 0x1000, 0)
	e, _ := NewUBootEnv(UBootLocation{p, 0, 0x1000})
	bc := &BootControl{Env: e, Attempts: 3}
	if err := bc.Arm("B"); !errors.Is(err, ErrBadCRC) {
		t.Fatalf("Arm on a blank env: %v, want ErrBadCRC", err)
	}
	if _, err := e.State(); !errors.Is(err, ErrBadCRC) {
		t.Fatalf("Arm wrote into an unreadable env: %v", err)
	}
}

// When saveenv fails nothing is counted: a slot on trial is then not
// booted (it could hang uncounted forever), the other slot is; a slot not
// on trial boots as usual; a reset stays a reset.
func TestBootloaderModelSaveFails(t *testing.T) {
	m := BootloaderModel{Attempts: 3}
	for _, c := range []struct {
		in    Vars
		slot  string
		reset bool
		name  string
	}{
		{Vars{"BOOT_ORDER": "B A", "BOOT_B_LEFT": "2", "BOOTORBIT_TRIAL": "B"}, "A", false, "trial slot B: boot A"},
		{Vars{"BOOT_ORDER": "A B", "BOOT_A_LEFT": "1", "BOOTORBIT_TRIAL": "A"}, "B", false, "trial slot A: boot B"},
		{Vars{"BOOT_ORDER": "B A", "BOOT_B_LEFT": "2"}, "B", false, "no trial: boot B"},
		{Vars{"BOOT_ORDER": "B A", "BOOT_B_LEFT": "0", "BOOTORBIT_TRIAL": "B"}, "A", false, "fallback A is not the trial"},
		{Vars{"BOOT_ORDER": "A", "BOOT_A_LEFT": "0", "BOOT_B_LEFT": "0"}, "", true, "nothing left: reset"},
	} {
		env := &readOnlyEnv{MemEnv: MemEnv{Vars: c.in.Clone()}}
		d, err := m.Boot(env)
		if err != nil || d.Slot != c.slot || d.Reset != c.reset || !d.SaveFailed {
			t.Errorf("%s: %+v %v", c.name, d, err)
		}
		if !env.Vars.Equal(c.in) || env.attempted == nil {
			t.Errorf("%s: env changed to %v or no save attempted", c.name, env.Vars)
		}
	}
	// A trial slot that hangs on a board whose environment cannot be
	// written is never booted, so it cannot hang the board forever.
	env := &readOnlyEnv{MemEnv: MemEnv{Vars: Vars{"BOOT_ORDER": "B A", "BOOT_A_LEFT": "3", "BOOT_B_LEFT": "3", "BOOTORBIT_TRIAL": "B"}}}
	for i := 0; i < 10; i++ {
		if d, err := m.Boot(env); err != nil || d.Slot != "A" {
			t.Fatalf("boot %d on a read-only env: %+v %v", i, d, err)
		}
	}
}

func TestParseCmdline(t *testing.T) {
	for in, want := range map[string]string{
		"console=ttyS0 rauc.slot=A root=/dev/x": "A",
		"rauc.slot=A quiet rauc.slot=B\n":       "B",
		"console=ttyS0":                         "",
		"":                                      "",
		"xrauc.slot=A watchdog.open_timeout=120 ": "",
	} {
		got, err := ParseCmdline(in)
		if err != nil || got != want {
			t.Errorf("ParseCmdline(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	if _, err := ParseCmdline("rauc.slot=system0"); !errors.Is(err, ErrBadSlot) {
		t.Errorf("rauc.slot=system0: %v", err)
	}
}

func TestBootloaderModelMatchesScriptRules(t *testing.T) {
	m := BootloaderModel{Attempts: 3}
	for _, c := range []struct {
		in       Vars
		slot     string
		reset    bool
		after    Vars
		scenario string
	}{
		{Vars{}, "A", false, Vars{"BOOT_ORDER": "A B", "BOOT_A_LEFT": "2", "BOOT_B_LEFT": "3"}, "blank env gets defaults"},
		{Vars{"BOOT_ORDER": "B A", "BOOT_A_LEFT": "3", "BOOT_B_LEFT": "1"}, "B", false, Vars{"BOOT_ORDER": "B A", "BOOT_A_LEFT": "3", "BOOT_B_LEFT": "0"}, "last attempt"},
		{Vars{"BOOT_ORDER": "B A", "BOOT_A_LEFT": "3", "BOOT_B_LEFT": "0"}, "A", false, Vars{"BOOT_ORDER": "B A", "BOOT_A_LEFT": "2", "BOOT_B_LEFT": "0"}, "fallback"},
		{Vars{"BOOT_ORDER": "A", "BOOT_A_LEFT": "0", "BOOT_B_LEFT": "0"}, "", true, Vars{"BOOT_ORDER": "A", "BOOT_A_LEFT": "3", "BOOT_B_LEFT": "3"}, "nothing left"},
		{Vars{"BOOT_ORDER": "C A", "BOOT_A_LEFT": "1"}, "A", false, Vars{"BOOT_ORDER": "C A", "BOOT_A_LEFT": "0", "BOOT_B_LEFT": "3"}, "unknown slot skipped"},
		{Vars{"BOOT_ORDER": "B\nA", "BOOT_B_LEFT": "1"}, "B", false, Vars{"BOOT_ORDER": "B\nA", "BOOT_A_LEFT": "3", "BOOT_B_LEFT": "0"}, "newline separates"},
		{Vars{"BOOT_ORDER": "B\tA", "BOOT_B_LEFT": "1"}, "", true, Vars{"BOOT_ORDER": "B\tA", "BOOT_A_LEFT": "3", "BOOT_B_LEFT": "3"}, "tab glues"},
		{Vars{"BOOT_ORDER": "B\rA"}, "", true, Vars{"BOOT_ORDER": "B\rA", "BOOT_A_LEFT": "3", "BOOT_B_LEFT": "3"}, "carriage return glues"},
		{Vars{"BOOT_ORDER": " "}, "", true, Vars{"BOOT_ORDER": " ", "BOOT_A_LEFT": "3", "BOOT_B_LEFT": "3"}, "blank order is kept"},
		// U-Boot quirk: test reads decimal, setexpr hex: "10" -> 0x10-1 = "f".
		{Vars{"BOOT_ORDER": "A", "BOOT_A_LEFT": "10"}, "A", false, Vars{"BOOT_ORDER": "A", "BOOT_A_LEFT": "f", "BOOT_B_LEFT": "3"}, "hex quirk"},
		{Vars{"BOOT_ORDER": "A B", "BOOT_A_LEFT": "f", "BOOT_B_LEFT": "2"}, "B", false, Vars{"BOOT_ORDER": "A B", "BOOT_A_LEFT": "f", "BOOT_B_LEFT": "1"}, "hex digit reads as 0"},
	} {
		env := &MemEnv{Vars: c.in.Clone()}
		d, err := m.Boot(env)
		if err != nil {
			t.Fatal(err)
		}
		if d.Slot != c.slot || d.Reset != c.reset || !env.Vars.Equal(c.after) || env.Writes != 1 {
			t.Errorf("%s: got %+v, env %v (writes %d); want slot %q reset %v env %v", c.scenario, d, env.Vars, env.Writes, c.slot, c.reset, c.after)
		}
	}
}
