package vm

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/bootorbit/bootorbit/watchdog"
)

// ABReport is the outcome of an A/B scenario on the board: what ran
// (architecture, machine, firmware, kernel), what U-Boot booted at each
// power-on, the boot variables before and after as fw_printenv reads
// them, and every way the outcome differs from the expected one.
type ABReport struct {
	Scenario string `json:"scenario"`
	Arch     string `json:"arch"`
	Board    string `json:"board"`
	UBoot    string `json:"uboot"`
	Kernel   string `json:"kernel"`
	// Booted is U-Boot's decision at each boot, per power-on ("BBBA":
	// three tries of B, then A).
	Booted []string `json:"booted"`
	// ResetCauses is the reset cause at each boot, in boot order, where
	// the scenario reads it (the flightd scenarios: the watchdog core's
	// bootstatus as the guest init saw it before starting flightd).
	ResetCauses []string          `json:"reset_causes,omitempty"`
	EnvBefore   map[string]string `json:"env_before"`
	EnvAfter    map[string]string `json:"env_after"`
	Steps       []string          `json:"steps"`
	Time        time.Duration     `json:"time_ns"`
	Problems    []string          `json:"problems,omitempty"`
	// Console is every console line of every power-on.
	Console []Line `json:"-"`
}

// OK says the outcome was the expected one.
func (r *ABReport) OK() bool { return len(r.Problems) == 0 }

func (r *ABReport) step(format string, a ...any) {
	r.Steps = append(r.Steps, fmt.Sprintf(format, a...))
}

func (r *ABReport) problem(format string, a ...any) {
	r.Problems = append(r.Problems, fmt.Sprintf(format, a...))
}

// bootVars are the variables the reports show.
var bootVars = []string{watchdog.VarBootOrder, watchdog.LeftVar("A"), watchdog.LeftVar("B"), watchdog.VarTrial}

func (ab *ABBoard) report(scenario string) *ABReport {
	return &ABReport{
		Scenario: scenario, Arch: "arm64",
		Board:  "qemu-system-aarch64 -M virt, cortex-a57 (TCG), i6300esb watchdog=reset, virtio disk (boot, rootfs A, rootfs B, env)",
		Kernel: ab.Kernel.Version,
	}
}

// env reads the boot variables with fw_printenv.
func (ab *ABBoard) env(ctx context.Context, r *ABReport) map[string]string {
	v, err := ab.FWPrintenv(ctx)
	if err != nil {
		r.problem("fw_printenv: %v", err)
		return nil
	}
	out := map[string]string{}
	for _, k := range bootVars {
		out[k] = v[k]
	}
	return out
}

func (r *ABReport) wantEnv(got map[string]string, want map[string]string, when string) {
	for _, k := range bootVars {
		if w, ok := want[k]; ok && got[k] != w {
			r.problem("%s: %s=%q, want %q", when, k, got[k], w)
		}
	}
}

// powerOn runs one power-on: until the guest powers off, reports an
// error or the kernel panics, or cut says to cut the power at a line.
func (ab *ABBoard) powerOn(ctx context.Context, r *ABReport, cut func(Line) bool) ([]Line, error) {
	m := ab.Machine()
	m.CutOnStop = cut != nil
	lines, err := m.Run(ctx, func(l Line) bool {
		if strings.Contains(l.Text, "Kernel panic") || l.Event != nil && l.Event.Ev == "error" {
			return true
		}
		return cut != nil && cut(l)
	})
	r.Console = append(r.Console, lines...)
	var booted strings.Builder
	for _, l := range lines {
		if r.UBoot == "" && strings.HasPrefix(l.Text, "U-Boot ") {
			r.UBoot = strings.TrimSpace(strings.TrimPrefix(l.Text, "U-Boot "))
		}
		if _, rest, ok := strings.Cut(l.Text, "bootorbit: booting slot "); ok && rest != "" {
			booted.WriteString(rest[:1])
		}
		if l.Event != nil && l.Event.Ev == "error" {
			r.problem("guest error: %s", l.Event.Err)
		}
		if strings.Contains(l.Text, "Kernel panic") {
			r.problem("kernel panic: %s", l.Text)
		}
	}
	r.Booted = append(r.Booted, booted.String())
	return lines, err
}

func events(lines []Line, ev string) []*Event {
	var out []*Event
	for _, l := range lines {
		if l.Event != nil && l.Event.Ev == ev {
			out = append(out, l.Event)
		}
	}
	return out
}

// arm leaves the environment as flightd does after installing into slot
// from the running slot: running marked good, slot armed (BootControl.Arm).
func (ab *ABBoard) arm(running, slot string) error {
	env, err := ab.Env()
	if err != nil {
		return err
	}
	if err := env.Save(watchdog.Vars{watchdog.VarBootOrder: running + " " + slot, watchdog.LeftVar("A"): "3", watchdog.LeftVar("B"): "3"}); err != nil {
		return err
	}
	return (&watchdog.BootControl{Env: env, Attempts: watchdog.DefaultAttempts}).Arm(slot)
}

// RunABUpdate is the A/B switch to a good image on the real U-Boot, with
// a power cut: slot A holds version 1, slot B version 2, armed from A.
// The first power-on is cut at B's first report (before its health
// check): U-Boot must have counted the attempt in the environment
// partition. The second boots B again, which passes and commits:
// BOOT_ORDER "B A", both counters back to N, no trial.
func (ab *ABBoard) RunABUpdate(ctx context.Context) (*ABReport, error) {
	r := ab.report("update")
	start := time.Now()
	defer func() { r.Time = time.Since(start) }()
	if err := ab.WriteSlot(ctx, "A", SlotImage{Version: "1", Behaviour: "good"}); err != nil {
		return r, err
	}
	if err := ab.WriteSlot(ctx, "B", SlotImage{Version: "2", Behaviour: "good"}); err != nil {
		return r, err
	}
	if err := ab.arm("A", "B"); err != nil {
		return r, err
	}
	r.EnvBefore = ab.env(ctx, r)
	r.wantEnv(r.EnvBefore, map[string]string{"BOOT_ORDER": "B A", "BOOT_B_LEFT": "3", "BOOTORBIT_TRIAL": "B"}, "armed")
	r.step("slot A: version 1, slot B: version 2 armed (fw_printenv: %s)", fmtVars(r.EnvBefore))

	t0 := time.Now()
	lines, err := ab.powerOn(ctx, r, func(l Line) bool { return l.Event != nil && l.Event.Ev == "ab-boot" })
	if err != nil {
		return r, err
	}
	if b := events(lines, "ab-boot"); len(b) != 1 || b[0].Slot != "B" || b[0].Version != "2" {
		r.problem("first power-on: booted %v, want slot B version 2", b)
	}
	cut := ab.env(ctx, r)
	r.wantEnv(cut, map[string]string{"BOOT_ORDER": "B A", "BOOT_B_LEFT": "2", "BOOTORBIT_TRIAL": "B"}, "after the power cut")
	r.step("power-on 1: U-Boot booted %s; power cut at its first report, %v after power-on (fw_printenv: %s)", r.Booted[0], time.Since(t0).Round(time.Millisecond), fmtVars(cut))

	t0 = time.Now()
	lines, err = ab.powerOn(ctx, r, nil)
	if err != nil {
		return r, err
	}
	if r.Booted[1] != "B" {
		r.problem("second power-on: U-Boot booted %q, want B", r.Booted[1])
	}
	if g := events(lines, "ab-marked-good"); len(g) != 1 || g[0].Slot != "B" || g[0].Version != "2" {
		r.problem("second power-on: marked good %v, want slot B version 2", g)
	}
	r.EnvAfter = ab.env(ctx, r)
	r.wantEnv(r.EnvAfter, map[string]string{"BOOT_ORDER": "B A", "BOOT_A_LEFT": "3", "BOOT_B_LEFT": "3", "BOOTORBIT_TRIAL": ""}, "committed")
	r.step("power-on 2: U-Boot booted %s; version 2 passed its health check and committed, powered off after %v (fw_printenv: %s)", r.Booted[1], time.Since(t0).Round(time.Millisecond), fmtVars(r.EnvAfter))
	// Ours and libubootenv's reading agree.
	if env, err := ab.Env(); err == nil {
		if v, err := env.Load(); err != nil {
			r.problem("watchdog.UBootEnv: %v", err)
		} else if fw, err := ab.FWPrintenv(ctx); err == nil && !v.Equal(fw) {
			r.problem("watchdog.UBootEnv read %v, fw_printenv %v", v, fw)
		}
	}
	return r, nil
}

// RunABRollback is the watchdog rollback on the real U-Boot: slot B
// holds an image that hangs after taking the watchdog, armed from A. The
// i6300esb resets the board at each hang, U-Boot counts each attempt and
// after N tries boots A, which finds the failed trial, marks B bad and
// commits: BOOT_ORDER "A", BOOT_B_LEFT 0, no trial.
func (ab *ABBoard) RunABRollback(ctx context.Context) (*ABReport, error) {
	r := ab.report("rollback")
	start := time.Now()
	defer func() { r.Time = time.Since(start) }()
	if err := ab.WriteSlot(ctx, "A", SlotImage{Version: "1", Behaviour: "good"}); err != nil {
		return r, err
	}
	if err := ab.WriteSlot(ctx, "B", SlotImage{Version: "2", Behaviour: "hang"}); err != nil {
		return r, err
	}
	if err := ab.arm("A", "B"); err != nil {
		return r, err
	}
	r.EnvBefore = ab.env(ctx, r)
	r.step("slot A: version 1, slot B: version 2 that hangs, armed (fw_printenv: %s)", fmtVars(r.EnvBefore))
	lines, err := ab.powerOn(ctx, r, nil)
	if err != nil {
		return r, err
	}
	n := watchdog.DefaultAttempts
	if want := strings.Repeat("B", n) + "A"; r.Booted[0] != want {
		r.problem("U-Boot booted %q, want %q", r.Booted[0], want)
	}
	if h := events(lines, "ab-hang"); len(h) != n {
		r.problem("%d hangs, want %d", len(h), n)
	}
	wd := events(lines, "ab-watchdog")
	for i, e := range wd {
		if i > 0 && e.Cause != string(watchdog.CauseWatchdog) {
			r.problem("boot %d: reset cause %q, want watchdog", i+1, e.Cause)
		}
	}
	if b := events(lines, "ab-marked-bad"); len(b) != 1 || b[0].Slot != "B" {
		r.problem("marked bad: %v, want slot B", b)
	}
	r.EnvAfter = ab.env(ctx, r)
	r.wantEnv(r.EnvAfter, map[string]string{"BOOT_ORDER": "A", "BOOT_A_LEFT": "3", "BOOT_B_LEFT": "0", "BOOTORBIT_TRIAL": ""}, "rolled back")
	r.step("power-on: U-Boot booted %s (each B ended by the i6300esb), A marked B bad and committed; %d boots in %v (fw_printenv: %s)",
		r.Booted[0], len(wd), time.Since(start).Round(time.Millisecond), fmtVars(r.EnvAfter))
	return r, nil
}

func fmtVars(v map[string]string) string {
	var parts []string
	for _, k := range bootVars {
		parts = append(parts, fmt.Sprintf("%s=%q", k, v[k]))
	}
	return strings.Join(parts, " ")
}

// WriteText prints the report for a person.
func (r *ABReport) WriteText(w io.Writer) error {
	verdict := "PASS"
	if !r.OK() {
		verdict = "FAIL"
	}
	fmt.Fprintf(w, "%s  %s on %s\n", verdict, r.Scenario, r.Arch)
	fmt.Fprintf(w, "  board:  %s\n  U-Boot: %s\n  kernel: %s\n", r.Board, r.UBoot, r.Kernel)
	for _, s := range r.Steps {
		fmt.Fprintf(w, "  - %s\n", s)
	}
	for _, p := range r.Problems {
		fmt.Fprintf(w, "  ! %s\n", p)
	}
	_, err := fmt.Fprintf(w, "  time: %v\n", r.Time.Round(time.Millisecond))
	return err
}
