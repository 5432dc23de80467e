package vm

import (
	"fmt"
	"strings"
)

// The board's U-Boot environment lives in a raw partition of the virtio
// disk, in the format flightd writes through watchdog.UBootEnv (one copy:
// CRC-32 LE, then "name=value\0" entries; fw_env.config "DEV 0x0
// 0x40000"). Debian's U-Boot for QEMU keeps its own environment in the
// virt machine's second flash bank, and saveenv there fails (QEMU's flash
// emulation rejects U-Boot's buffered write), so the board's boot script
// reads and writes the partition itself with `virtio read` / `env import
// -c` and `env export -c` / `virtio write`.
const (
	// EnvSize is the environment's size: U-Boot's CONFIG_ENV_SIZE for
	// qemu_arm64, and the size fw_env.config gives.
	EnvSize = 0x40000
	// EnvPart is the partition number of the environment on the board's
	// disk (virtio 0:4, /dev/vda4 in the guest).
	EnvPart = 4
	// envAddr is where the script reads and exports the environment:
	// above the kernel (kernel_addr_r 0x40400000) and the initramfs
	// (ramdisk_addr_r 0x44000000, up to 64 MiB), far below U-Boot's
	// relocated self at the top of the 512 MiB of RAM.
	envAddr = 0x4c000000
)

// boardPreamble runs before the shipped script: it finds the environment
// partition, imports it (a bad CRC or a blank partition leaves U-Boot's
// default environment, as a failed env load does on any board), and sets
// the board's load commands when the environment lacks them (a board's
// default environment would carry them). The partition's start and size
// go through an environment variable (part start writes one) into hush
// locals, which env export does not save.
var boardPreamble = fmt.Sprintf(`# Board variant of the shipped script for hil/vm's QEMU arm64 board: the
# environment lives in raw partition virtio 0:%[1]d (saveenv to QEMU's
# flash fails); every saveenv of the shipped script below became an
# "env export -c" and a "virtio write" of that partition.
bootorbit_env_addr=%#[2]x
bootorbit_env_size=%#[3]x
bootorbit_env_blocks=%#[4]x
virtio scan
part start virtio 0 %[1]d bootorbit_tmp
bootorbit_env_start=${bootorbit_tmp}
setenv bootorbit_tmp
if virtio read ${bootorbit_env_addr} ${bootorbit_env_start} ${bootorbit_env_blocks} && env import -c ${bootorbit_env_addr} ${bootorbit_env_size}; then
	echo "bootorbit: environment imported from virtio 0:%[1]d"
else
	echo "bootorbit: no valid environment on virtio 0:%[1]d; using the default"
fi
test -n "${bootorbit_load_A}" || setenv bootorbit_load_A 'load virtio 0:1 ${kernel_addr_r} Image && load virtio 0:2 ${ramdisk_addr_r} initrd && booti ${kernel_addr_r} ${ramdisk_addr_r}:${filesize} ${fdt_addr}'
test -n "${bootorbit_load_B}" || setenv bootorbit_load_B 'load virtio 0:1 ${kernel_addr_r} Image && load virtio 0:3 ${ramdisk_addr_r} initrd && booti ${kernel_addr_r} ${ramdisk_addr_r}:${filesize} ${fdt_addr}'
test -n "${bootorbit_root_A}" || setenv bootorbit_root_A /dev/vda2
test -n "${bootorbit_root_B}" || setenv bootorbit_root_B /dev/vda3
test -n "${bootorbit_args}" || setenv bootorbit_args "console=ttyAMA0 earlycon=pl011,0x9000000 panic=0 bootorbit.scenario=abboard bootorbit.env=/dev/vda%[1]d"
# --- the shipped script follows ---
`, EnvPart, envAddr, EnvSize, EnvSize/512)

// boardSaveenv replaces saveenv.
const boardSaveenv = "env export -c -s ${bootorbit_env_size} ${bootorbit_env_addr} && virtio write ${bootorbit_env_addr} ${bootorbit_env_start} ${bootorbit_env_blocks}"

// BoardScript adapts the shipped U-Boot script (watchdog/bootscripts'
// boot.cmd) to this board: the preamble above, then the shipped script
// with every saveenv command (outside comments) replaced by an export of
// the environment into its partition. The boot-count logic is the
// shipped one, unchanged. It fails if the script has no saveenv left to
// replace (the shipped script changed shape).
func BoardScript(shipped string) (string, error) {
	lines := strings.Split(shipped, "\n")
	n := 0
	for i, l := range lines {
		code, comment, _ := strings.Cut(l, "#")
		if !strings.Contains(code, "saveenv") {
			continue
		}
		code = strings.ReplaceAll(code, "saveenv", boardSaveenv)
		n++
		if comment != "" {
			code += "#" + comment
		}
		lines[i] = code
	}
	if n == 0 {
		return "", fmt.Errorf("%w: boot script: no saveenv to replace", ErrBoard)
	}
	return boardPreamble + strings.Join(lines, "\n"), nil
}
