package watchdog

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Device is a hardware watchdog. Once opened it is armed: if Keepalive is
// not called within the timeout the board resets. Close releases the
// device without disarming it (no magic close), so a flightd that exits
// or hangs on the way to a reboot still gets the board reset.
type Device interface {
	// Keepalive pets the watchdog.
	Keepalive() error
	// SetTimeout asks for a timeout and returns the one the hardware
	// actually applied (drivers round to what they support).
	SetTimeout(d time.Duration) (time.Duration, error)
	// BootStatus says why the board last reset, as the driver knows it.
	BootStatus() (BootStatus, error)
	// Close releases the device and leaves it armed.
	Close() error
}

// Linux watchdog bootstatus / option bits (linux/watchdog.h).
const (
	WDIOFOverheat   = 0x0001
	WDIOFFanFault   = 0x0002
	WDIOFExtern1    = 0x0004
	WDIOFExtern2    = 0x0008
	WDIOFPowerUnder = 0x0010
	WDIOFCardReset  = 0x0020
	WDIOFPowerOver  = 0x0040
	WDIOFSetTimeout = 0x0080
	WDIOFMagicClose = 0x0100
	WDIOFPretimeout = 0x0200
	WDIOFAlarmOnly  = 0x0400
	WDIOFKeepalive  = 0x8000
)

// BootStatus is the WDIOC_GETBOOTSTATUS word.
type BootStatus uint32

// WatchdogReset reports whether the last reset was caused by the watchdog
// (WDIOF_CARDRESET).
func (b BootStatus) WatchdogReset() bool { return b&WDIOFCardReset != 0 }

// Cause names the reset cause for people and telemetry.
func (b BootStatus) Cause() ResetCause {
	switch {
	case b.WatchdogReset():
		return CauseWatchdog
	case b&(WDIOFPowerUnder|WDIOFPowerOver) != 0:
		return CausePower
	case b&WDIOFOverheat != 0:
		return CauseOverheat
	}
	return CausePowerOn
}

// ResetCause is why the board last came up.
type ResetCause string

// Reset causes. CausePowerOn also covers a reset the driver cannot tell
// apart (many drivers only report CARDRESET).
const (
	CauseWatchdog ResetCause = "watchdog"
	CausePower    ResetCause = "power"
	CauseOverheat ResetCause = "overheat"
	CausePowerOn  ResetCause = "power-on"
)

// Info is the WDIOC_GETSUPPORT answer.
type Info struct {
	Identity string `json:"identity"`
	Options  uint32 `json:"options"`
	Firmware uint32 `json:"firmware"`
}

// ErrWatchdog prefixes hardware watchdog errors.
var ErrWatchdog = errors.New("watchdog: device")

// ResetRecord is what RecordReset stores: the cause of the reset that
// started this boot, so that telemetry can say "the last boot ended in a
// watchdog reset" long after the fact.
type ResetRecord struct {
	Cause      ResetCause `json:"cause"`
	BootStatus uint32     `json:"bootstatus"`
	Slot       string     `json:"slot,omitempty"`
	Time       time.Time  `json:"time"`
	// Count is the number of boots recorded so far, this one included.
	Count uint64 `json:"count"`
	// WatchdogResets is how many of them were watchdog resets.
	WatchdogResets uint64 `json:"watchdog_resets"`
	// BootID is the kernel's boot id of the boot recorded (RecordBootReset),
	// so that a flightd restarted within one boot does not count it twice.
	BootID string `json:"boot_id,omitempty"`
}

// ResetRecordFile is the file name RecordReset uses in its directory.
const ResetRecordFile = "last-reset.json"

// maxRecord bounds the reset record read back.
const maxRecord = 4096

// ReadResetRecord returns the record in dir; a missing file is a zero
// record and no error.
func ReadResetRecord(dir string) (ResetRecord, error) {
	var r ResetRecord
	f, err := os.Open(filepath.Join(dir, ResetRecordFile))
	if errors.Is(err, os.ErrNotExist) {
		return r, nil
	}
	if err != nil {
		return r, fmt.Errorf("watchdog: reset record: %w", err)
	}
	defer f.Close()
	buf, err := io.ReadAll(io.LimitReader(f, maxRecord+1))
	if err != nil {
		return r, fmt.Errorf("watchdog: reset record: %w", err)
	}
	if len(buf) > maxRecord {
		return r, fmt.Errorf("watchdog: reset record %s larger than %d bytes", f.Name(), maxRecord)
	}
	if err := json.Unmarshal(buf, &r); err != nil {
		return r, fmt.Errorf("watchdog: reset record %s: %w", f.Name(), err)
	}
	return r, nil
}

// RecordReset stores the reset cause of this boot in dir, atomically:
// write a temporary file, fsync it, rename it over the record, fsync the
// directory. Every call counts a boot; flightd, which may be restarted
// within one boot, uses RecordBootReset. A corrupt previous record
// restarts the counts rather than failing.
func RecordReset(dir string, st BootStatus, slot string, now time.Time) (ResetRecord, error) {
	return RecordBootReset(dir, "", st, slot, now)
}

// RecordBootReset is RecordReset for the boot with the kernel boot id
// bootID (KernelBootID): when the record already holds that boot, it is
// returned unchanged and nothing is written, so that a flightd restarted
// within one boot (GETBOOTSTATUS still says CARDRESET) does not count the
// boot, or its watchdog reset, twice. An empty bootID always records.
func RecordBootReset(dir, bootID string, st BootStatus, slot string, now time.Time) (ResetRecord, error) {
	prev, _ := ReadResetRecord(dir)
	if bootID != "" && prev.BootID == bootID {
		return prev, nil
	}
	r := ResetRecord{
		BootID:         bootID,
		Cause:          st.Cause(),
		BootStatus:     uint32(st),
		Slot:           slot,
		Time:           now.UTC(),
		Count:          prev.Count + 1,
		WatchdogResets: prev.WatchdogResets,
	}
	if st.WatchdogReset() {
		r.WatchdogResets++
	}
	data, err := json.Marshal(r)
	if err != nil {
		return r, err
	}
	if err := writeFileAtomic(dir, ResetRecordFile, append(data, '\n')); err != nil {
		return r, fmt.Errorf("watchdog: reset record: %w", err)
	}
	return r, nil
}

// bootIDFile is where Linux publishes a random id fresh at every boot.
const bootIDFile = "/proc/sys/kernel/random/boot_id"

// KernelBootID returns this boot's id from /proc/sys/kernel/random/boot_id.
func KernelBootID() (string, error) { return ReadBootID("") }

// ReadBootID returns the boot id in file path ("" is the kernel's,
// /proc/sys/kernel/random/boot_id): a bench board that models boots
// without booting a kernel publishes a fresh id per boot in a file.
func ReadBootID(path string) (string, error) {
	if path == "" {
		path = bootIDFile
	}
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("watchdog: boot id: %w", err)
	}
	defer f.Close()
	// A UUID and a newline; anything longer is not a boot id.
	buf, err := io.ReadAll(io.LimitReader(f, 64))
	if err != nil {
		return "", fmt.Errorf("watchdog: boot id: %w", err)
	}
	id := strings.TrimSpace(string(buf))
	if id == "" || len(buf) == 64 {
		return "", fmt.Errorf("watchdog: boot id: %s holds %q, want a UUID", path, buf)
	}
	return id, nil
}

func writeFileAtomic(dir, name string, data []byte) error {
	tmp, err := os.CreateTemp(dir, "."+name+".tmp*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), filepath.Join(dir, name)); err != nil {
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
