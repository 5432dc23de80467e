package flightd

import (
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/bootorbit/bootorbit/watchdog"
)

// BootConfig is the boot section of the configuration: where the
// bootloader environment lives, how many boot attempts an armed slot gets,
// and the hardware watchdog. An empty section is valid and means boot
// control is not configured (the `flightd boot` commands then take the
// environment from flags).
//
// Exactly one environment may be named:
//
//	"uboot_env": [{"path": "/dev/mmcblk0", "offset": 4063232, "size": 131072},
//	              {"path": "/dev/mmcblk0", "offset": 4194304, "size": 131072}]
//	"fw_env_config": "/etc/fw_env.config"
//	"grubenv": "/boot/grub/grubenv"
type BootConfig struct {
	// UBootEnv is one U-Boot environment copy, or two redundant ones, like
	// the lines of fw_env.config. Offsets and sizes are in bytes.
	UBootEnv []watchdog.UBootLocation `json:"uboot_env,omitempty"`
	// FWEnvConfig names an fw_env.config file to take the U-Boot copies
	// from, so flightd and fw_printenv share one description. It is read
	// when the environment is opened, not when the config is validated.
	FWEnvConfig string `json:"fw_env_config,omitempty"`
	// UBootLockFile is flocked around every U-Boot environment access;
	// set it to libubootenv's /var/lock/fw_printenv.lock so that flightd and
	// fw_setenv never interleave. Empty means no lock.
	UBootLockFile string `json:"uboot_lock_file,omitempty"`
	// GRUBEnv is the GRUB environment block file.
	GRUBEnv string `json:"grubenv,omitempty"`
	// GRUBEnvSize is the block size; 0 means 1024 as grub-editenv makes it.
	GRUBEnvSize int `json:"grubenv_size,omitempty"`
	// Attempts is N, the boot attempts of an armed slot, 1..9; 0 means 3.
	// It must match bootorbit_attempts in the boot script.
	Attempts int `json:"attempts,omitempty"`
	// Watchdog is the hardware watchdog device, e.g. /dev/watchdog0; empty
	// means none (bench use only: a flight configuration names one).
	Watchdog string `json:"watchdog,omitempty"`
	// WatchdogTimeoutS is the timeout flightd sets, in seconds; 0 means 60.
	WatchdogTimeoutS int `json:"watchdog_timeout_s,omitempty"`
	// RecordDir holds the reset-cause record (last-reset.json); empty means
	// slots.state_dir.
	RecordDir string `json:"record_dir,omitempty"`
	// BootIDFile is the file this boot's id is read from, which tells a
	// new boot from flightd restarted within one; empty means the
	// kernel's /proc/sys/kernel/random/boot_id. A bench board that models
	// boots without booting a kernel (hil's virtual board) writes a fresh
	// id there at each boot.
	BootIDFile string `json:"boot_id_file,omitempty"`
	// Reboot is the reboot action, an argv run when flightd reboots the
	// board (activation, rollback, the reboot command); empty means
	// ["/bin/systemctl", "reboot"].
	Reboot []string `json:"reboot,omitempty"`
}

// Defaults of the boot section.
const (
	DefaultWatchdogTimeoutS = 60
	MaxWatchdogTimeoutS     = 3600
)

// Validate checks the boot section and names the first bad field.
func (b BootConfig) Validate() error {
	named := 0
	for _, set := range []bool{len(b.UBootEnv) > 0, b.FWEnvConfig != "", b.GRUBEnv != ""} {
		if set {
			named++
		}
	}
	if named > 1 {
		return fmt.Errorf("%w: boot: name one of uboot_env, fw_env_config and grubenv, not %d", ErrConfig, named)
	}
	if len(b.UBootEnv) > 0 {
		if _, err := watchdog.NewUBootEnv(b.UBootEnv...); err != nil {
			return fmt.Errorf("%w: boot.uboot_env: %v", ErrConfig, err)
		}
	}
	if b.UBootLockFile != "" && len(b.UBootEnv) == 0 && b.FWEnvConfig == "" {
		return fmt.Errorf("%w: boot.uboot_lock_file without a U-Boot environment", ErrConfig)
	}
	if b.GRUBEnv == "" && b.GRUBEnvSize != 0 {
		return fmt.Errorf("%w: boot.grubenv_size without boot.grubenv", ErrConfig)
	}
	if b.GRUBEnvSize != 0 && (b.GRUBEnvSize < 64 || b.GRUBEnvSize > watchdog.MaxGRUBEnvSize) {
		return fmt.Errorf("%w: boot.grubenv_size %d out of range [64, %d]", ErrConfig, b.GRUBEnvSize, watchdog.MaxGRUBEnvSize)
	}
	if b.Attempts != 0 {
		if err := watchdog.CheckAttempts(b.Attempts); err != nil {
			return fmt.Errorf("%w: boot.attempts: %v", ErrConfig, err)
		}
	}
	if b.WatchdogTimeoutS < 0 || b.WatchdogTimeoutS > MaxWatchdogTimeoutS {
		return fmt.Errorf("%w: boot.watchdog_timeout_s %d out of range [1, %d]", ErrConfig, b.WatchdogTimeoutS, MaxWatchdogTimeoutS)
	}
	if b.WatchdogTimeoutS != 0 && b.Watchdog == "" {
		return fmt.Errorf("%w: boot.watchdog_timeout_s without boot.watchdog", ErrConfig)
	}
	return nil
}

// Configured reports whether the section names an environment.
func (b BootConfig) Configured() bool {
	return len(b.UBootEnv) > 0 || b.FWEnvConfig != "" || b.GRUBEnv != ""
}

// AttemptsOrDefault is N.
func (b BootConfig) AttemptsOrDefault() int {
	if b.Attempts == 0 {
		return watchdog.DefaultAttempts
	}
	return b.Attempts
}

// OpenEnv returns the configured bootloader environment and a one-line
// description of where it lives.
func (b BootConfig) OpenEnv() (watchdog.Env, string, error) {
	if err := b.Validate(); err != nil {
		return nil, "", err
	}
	switch {
	case b.GRUBEnv != "":
		return &watchdog.GRUBEnv{Path: b.GRUBEnv, Size: b.GRUBEnvSize}, "grub " + b.GRUBEnv, nil
	case len(b.UBootEnv) > 0:
		return ubootEnv(b.UBootEnv, b.UBootLockFile)
	case b.FWEnvConfig != "":
		data, err := readFWEnvConfig(b.FWEnvConfig)
		if err != nil {
			return nil, "", fmt.Errorf("%w: boot.fw_env_config: %v", ErrConfig, err)
		}
		locs, err := watchdog.ParseFWEnvConfig(data)
		if err != nil {
			return nil, "", fmt.Errorf("%w: boot.fw_env_config %s: %v", ErrConfig, b.FWEnvConfig, err)
		}
		return ubootEnv(locs, b.UBootLockFile)
	}
	return nil, "", fmt.Errorf("%w: boot: no bootloader environment configured (uboot_env, fw_env_config or grubenv)", ErrConfig)
}

// maxFWEnvConfig bounds the fw_env.config read: two lines matter, and
// real files are a few hundred bytes of them and comments.
const maxFWEnvConfig = 64 << 10

func readFWEnvConfig(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxFWEnvConfig+1))
	if err != nil {
		return "", err
	}
	if len(data) > maxFWEnvConfig {
		return "", fmt.Errorf("%s is larger than %d bytes", path, maxFWEnvConfig)
	}
	return string(data), nil
}

func ubootEnv(locs []watchdog.UBootLocation, lock string) (watchdog.Env, string, error) {
	e, err := watchdog.NewUBootEnv(locs...)
	if err != nil {
		return nil, "", fmt.Errorf("%w: boot.uboot_env: %v", ErrConfig, err)
	}
	e.LockFile = lock
	parts := make([]string, len(locs))
	for i, l := range locs {
		parts[i] = fmt.Sprintf("%s (%#x bytes)", l, l.Size)
	}
	kind := "uboot "
	if len(locs) == 2 {
		kind = "uboot redundant "
	}
	return e, kind + strings.Join(parts, ", "), nil
}
