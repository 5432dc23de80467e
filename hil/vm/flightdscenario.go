package vm

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/bootorbit/bootorbit/hil/link"
	"github.com/bootorbit/bootorbit/protocol"
	"github.com/bootorbit/bootorbit/protocol/dict"
	"github.com/bootorbit/bootorbit/protocol/update"
	"github.com/bootorbit/bootorbit/watchdog"
)

// RunFlightdUpdate is the nominal update with flightd in the guest, on
// the real U-Boot: the factory image (version 1) good in slot A, the
// ground on the host sends version 2 (a plan and a delta bundle against
// the slot A flightd booted) across the emulated link spec (seeded);
// flightd installs it into raw slot B, the ground activates B and
// reboots the vehicle by command, U-Boot boots B on trial, flightd's
// health check passes and it marks B good, which the ground sees in
// housekeeping. The board is then powered off and the environment read
// with fw_printenv: BOOT_ORDER "B A", both counters full, no trial.
func (fb *FlightdBoard) RunFlightdUpdate(ctx context.Context, spec link.Spec, seed uint64) (*ABReport, error) {
	r := fb.report("flightd-update")
	r.Board += ", virtio-net (QEMU user network, UDP forward) behind hil/link " + spec.Name
	start := time.Now()
	defer func() { r.Time = time.Since(start) }()
	if err := fb.Factory(ctx, 1); err != nil {
		return r, err
	}
	v2, err := fb.BuildImage(ctx, 2)
	if err != nil {
		return r, err
	}
	bundle, _, err := fb.Bundle(ctx, 1, 2)
	if err != nil {
		return r, err
	}
	r.EnvBefore = fb.env(ctx, r)
	r.step("factory: slot A version 1 (raw ext4 image, %d bytes) recorded good; version 2's delta bundle %d bytes; built in %v (fw_printenv: %s)",
		slotFSSize, len(bundle), time.Since(start).Round(time.Millisecond), fmtVars(r.EnvBefore))

	return r, fb.session(ctx, spec, seed, r, "AB", envUpdated, func(g *benchGround, t0 time.Time) error {
		if err := fb.uplink(ctx, g, r, t0, v2, bundle); err != nil {
			return err
		}
		t1 := time.Now()
		if _, err := g.waitHK(ctx, dict.HKBoot, func(v dict.Values) bool {
			return v["booted_slot"] == uint64(2) && v["last_outcome"] == uint64(2) && v["trial"] == false
		}); err != nil {
			return fmt.Errorf("trial of B: %w", err)
		}
		r.step("U-Boot booted B on trial; health check passed, B marked good, seen in hk.boot %v after the reboot", time.Since(t1).Round(time.Millisecond))
		return nil
	})
}

// The environment fw_printenv must read after a session: after an
// update committed, after the factory boot, and after a rollback.
var (
	envUpdated    = map[string]string{"BOOT_ORDER": "B A", "BOOT_A_LEFT": "3", "BOOT_B_LEFT": "3", "BOOTORBIT_TRIAL": ""}
	envFactory    = map[string]string{"BOOT_ORDER": "A", "BOOT_A_LEFT": "3", "BOOT_B_LEFT": "0", "BOOTORBIT_TRIAL": ""}
	envRolledBack = envFactory
)

// uplink is the ground's update up to the reboot into the new slot:
// plan 1 taking the vehicle to im and its bundle across the link, the
// install into slot B (hk.transfer: installed), activate b with the
// default attempts, and reboot, all by command.
func (fb *FlightdBoard) uplink(ctx context.Context, g *benchGround, r *ABReport, t0 time.Time, im *FlightdImage, bundle []byte) error {
	plan, err := g.signedPlan(1, im, bundle)
	if err != nil {
		return err
	}
	if err := g.transfer(ctx, update.TargetPlan(1), plan); err != nil {
		return fmt.Errorf("plan: %w", err)
	}
	r.step("plan 1 (%d bytes) received by flightd, %v after power-on", len(plan), time.Since(t0).Round(time.Millisecond))
	t1 := time.Now()
	if err := g.transfer(ctx, update.TargetBundle(1), bundle); err != nil {
		return fmt.Errorf("bundle: %w", err)
	}
	r.step("bundle (%d bytes) received in %v", len(bundle), time.Since(t1).Round(time.Millisecond))
	t1 = time.Now()
	if _, err := g.waitHK(ctx, dict.HKTransfer, func(v dict.Values) bool { return v["plan_id"] == uint64(1) && v["state"] == uint64(5) }); err != nil {
		return fmt.Errorf("install: %w", err)
	}
	r.step("flightd installed version %d into slot B in %v", im.Version, time.Since(t1).Round(time.Millisecond))
	v, err := g.command(ctx, "activate", dict.Values{"slot": "b", "attempts": uint64(watchdog.DefaultAttempts)})
	if err != nil {
		return err
	}
	if v.Stage != protocol.StageCompleted {
		return fmt.Errorf("activate: %v %s", v.Stage, dict.EnumReason.NameOf(uint64(v.Code)))
	}
	if _, err := g.command(ctx, "reboot", nil); err != nil {
		return err
	}
	r.step("activated B (%d attempts) and rebooted by command", watchdog.DefaultAttempts)
	return nil
}

// session powers the board on behind the emulated link spec, runs the
// ground's part (t0 is the power-on), powers the board off, and checks
// what U-Boot booted (wantBooted: "AB" after an update, "A" for the
// factory boot, "ABBBA" for a rollback) and the environment fw_printenv
// reads then (wantEnv).
func (fb *FlightdBoard) session(ctx context.Context, spec link.Spec, seed uint64, r *ABReport, wantBooted string, wantEnv map[string]string, ground func(*benchGround, time.Time) error) error {
	gl, err := NewGuestLink(spec, seed, FlightdPort)
	if err != nil {
		return err
	}
	lctx, stopLink := context.WithCancel(ctx)
	linkDone := make(chan error, 1)
	go func() { linkDone <- gl.Emulator.Run(lctx) }()
	defer func() { stopLink(); <-linkDone }()
	g, err := newBenchGround(net.UDPAddrFromAddrPort(gl.Emulator.AddrA()), fb.Keys, spec.Forward.Rate)
	if err != nil {
		return err
	}
	defer g.close()

	// Power on: one QEMU run for the whole scenario (flightd's reboot
	// resets the machine and U-Boot runs again); the ground ends it.
	qctx, powerOff := context.WithCancel(ctx)
	defer powerOff()
	var (
		mu    sync.Mutex
		lines []Line
	)
	qDone := make(chan error, 1)
	m := fb.machine(gl.Forward)
	go func() {
		l, err := m.Run(qctx, func(l Line) bool {
			return strings.Contains(l.Text, "Kernel panic") || l.Event != nil && l.Event.Ev == "error"
		})
		mu.Lock()
		lines = l
		mu.Unlock()
		qDone <- err
	}()
	t0 := time.Now()
	gerr := ground(g, t0)
	powerOff()
	qerr := <-qDone
	mu.Lock()
	r.Console = lines
	mu.Unlock()
	var booted strings.Builder
	for _, l := range r.Console {
		if r.UBoot == "" && strings.HasPrefix(l.Text, "U-Boot ") {
			r.UBoot = strings.TrimSpace(strings.TrimPrefix(l.Text, "U-Boot "))
		}
		if _, rest, ok := strings.Cut(l.Text, "bootorbit: booting slot "); ok && rest != "" {
			booted.WriteString(rest[:1])
		}
		if l.Event != nil && l.Event.Ev == "fd-start" {
			c := l.Event.Cause
			if c == "" {
				c = "unknown (" + l.Event.Err + ")"
			}
			r.ResetCauses = append(r.ResetCauses, c)
		}
		if l.Event != nil && l.Event.Ev == "error" {
			r.problem("guest error: %s", l.Event.Err)
		}
		if strings.Contains(l.Text, "Kernel panic") {
			r.problem("kernel panic: %s", l.Text)
		}
	}
	r.Booted = append(r.Booted, booted.String())
	if gerr != nil {
		r.problem("ground: %v", gerr)
	}
	if qerr != nil && !errors.Is(qerr, context.Canceled) {
		r.problem("qemu: %v", qerr)
	}
	if r.Booted[0] != wantBooted {
		r.problem("U-Boot booted %q, want %q", r.Booted[0], wantBooted)
	}
	r.EnvAfter = fb.env(ctx, r)
	r.wantEnv(r.EnvAfter, wantEnv, "after power-off")
	r.step("powered off: U-Boot booted %s (fw_printenv: %s); link forward %d frames (%d delivered), return %d (%d delivered)", r.Booted[0], fmtVars(r.EnvAfter),
		gl.Emulator.Stats().Dir(link.Forward).Frames, gl.Emulator.Stats().Dir(link.Forward).Delivered,
		gl.Emulator.Stats().Dir(link.Return).Frames, gl.Emulator.Stats().Dir(link.Return).Delivered)
	return nil
}

// RunFlightdBoot is the short form of RunFlightdUpdate: the factory
// state (version 1 good in slot A) booted by the real U-Boot, flightd
// (arm64) running in the guest with the watchdog and the environment,
// and the ground on the host reading its housekeeping across the
// emulated link with signed commands: booted slot A, no trial, slot A
// good. It shows everything the update needs but the bundle's transfer
// and the second boot.
func (fb *FlightdBoard) RunFlightdBoot(ctx context.Context, spec link.Spec, seed uint64) (*ABReport, error) {
	r := fb.report("flightd-boot")
	r.Board += ", virtio-net (QEMU user network, UDP forward) behind hil/link " + spec.Name
	start := time.Now()
	defer func() { r.Time = time.Since(start) }()
	if err := fb.Factory(ctx, 1); err != nil {
		return r, err
	}
	r.EnvBefore = fb.env(ctx, r)
	r.step("factory: slot A version 1 recorded good (fw_printenv: %s)", fmtVars(r.EnvBefore))
	return r, fb.session(ctx, spec, seed, r, "A", envFactory, func(g *benchGround, t0 time.Time) error {
		if _, err := g.waitHK(ctx, dict.HKBoot, func(v dict.Values) bool {
			return v["booted_slot"] == uint64(1) && v["trial"] == false
		}); err != nil {
			return err
		}
		r.step("hk.boot: flightd booted slot A, no trial, %v after power-on", time.Since(t0).Round(time.Millisecond))
		if _, err := g.waitHK(ctx, dict.HKSlots, func(v dict.Values) bool { return v["slot_a_state"] == uint64(4) }); err != nil {
			return err
		}
		r.step("hk.slots: slot A good")
		return nil
	})
}
