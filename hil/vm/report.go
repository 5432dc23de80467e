package vm

import (
	"fmt"
	"io"
	"time"
)

// ESBFiresAfter is how long after a keepalive QEMU's i6300esb resets the
// board, for a timeout the Linux driver set. The driver loads N<<9 into
// each of the device's two stages; QEMU (7.2) counts a stage as N<<9<<15
// ticks of 33 MHz, so N seconds last N * 2^25/33e6 = 1.0168 N seconds.
func ESBFiresAfter(timeout time.Duration) time.Duration {
	return time.Duration(float64(timeout) * (1 << 25) / 33e6)
}

// WriteWatchdogFigures prints what the keepalive and expire runs measured:
// boot time to /init, the timeout set and read back, keepalives on the
// guest's clock, the time from the last keepalive to the reset, and what
// the boot after the reset found.
func WriteWatchdogFigures(w io.Writer, keep, exp *Run) error {
	ms := func(d time.Duration) string { return d.Round(time.Millisecond).String() }
	if keep != nil && len(keep.Boots) > 0 {
		b := keep.Boots[0]
		fmt.Fprintf(w, "keepalive run (%d boot(s), %s host):\n", len(keep.Boots), ms(keep.Total))
		fmt.Fprintf(w, "  boot to /init           %s guest uptime, %s host from qemu start (kernel banner at %s)\n", ms(b.InitUp), ms(b.InitHost), ms(b.Banner))
		fmt.Fprintf(w, "  GETSUPPORT              identity %q, options %#x, firmware %d\n", b.Info.Identity, b.Info.Options, b.Info.Firmware)
		fmt.Fprintf(w, "  SETTIMEOUT              asked %s, read back %s\n", b.Asked, b.Applied)
		fmt.Fprintf(w, "  keepalives              %d over %s guest, longest gap %s (timeout %s)\n", b.Keepalives, ms(b.LastPet-b.FirstPet), ms(b.MaxGap), b.Applied)
		fmt.Fprintf(w, "  GETBOOTSTATUS           %#x on power-on (cause %s), record %s #%d\n", uint32(b.BootStatus), b.BootStatus.Cause(), b.Record.Cause, b.Record.Count)
		fmt.Fprintf(w, "  second opener           %s\n", orNone(b.Busy, "let in"))
		fmt.Fprintf(w, "  restart half way        closed without 'V' and reopened %v, timeout kept: sysfs %v\n", b.Reopened, lastSysfs(b)["timeout"])
		fmt.Fprintf(w, "  reset while petted      %v\n", len(keep.Boots) > 1)
	}
	if exp != nil && len(exp.Boots) > 0 {
		first := exp.Boots[0]
		fmt.Fprintf(w, "expire run (%d boot(s), %s host):\n", len(exp.Boots), ms(exp.Total))
		fmt.Fprintf(w, "  SETTIMEOUT              asked %s, read back %s; %d keepalives, then Close without magic 'V'\n", first.Asked, first.Applied, first.Keepalives)
		if len(exp.Boots) < 2 {
			fmt.Fprintf(w, "  reset                   none seen\n")
			return nil
		}
		second := exp.Boots[1]
		fmt.Fprintf(w, "  last keepalive to reset %s guest (last sign of life), %s host (last keepalive line to next kernel banner); QEMU's i6300esb fires after %s\n",
			ms(first.LastAlive-first.LastPet), ms(second.Banner-first.LastPetHost), ms(ESBFiresAfter(first.Applied)))
		fmt.Fprintf(w, "  after the reset         boot #%d, GETBOOTSTATUS %#x (cause %s), record cause %s, %d boots, %d watchdog resets; ext4 journal replayed %v\n",
			second.N, uint32(second.BootStatus), second.BootStatus.Cause(), second.Record.Cause, second.Record.Count, second.Record.WatchdogResets, second.FSRecovered)
		fmt.Fprintf(w, "  watchdog reset recognised %v\n", second.BootStatus.WatchdogReset() && second.Record.WatchdogResets > 0)
	}
	return nil
}

func orNone(s, none string) string {
	if s == "" {
		return none
	}
	return s
}

func lastSysfs(b *Boot) map[string]string {
	if len(b.Sysfs) == 0 {
		return nil
	}
	return b.Sysfs[len(b.Sysfs)-1]
}
