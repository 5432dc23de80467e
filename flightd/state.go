package flightd

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/bootorbit/bootorbit/internal/vfs"
	"github.com/bootorbit/bootorbit/protocol"
)

// StateFile is the daemon's own durable state in slots.state_dir: the
// return-link epoch, the command replay windows, the counters of
// hk.counters, the last error and the last boot outcome. It is small and
// written rarely (at start, for each accepted command, at each
// housekeeping round), always by an atomic replace: write a temporary
// file, fsync, rename, fsync the directory.
const StateFile = "flightd-state.json"

// maxStateFile bounds the state file read back.
const maxStateFile = 64 << 10

// DaemonState is the content of StateFile.
type DaemonState struct {
	// Epoch is the return-link epoch of the last start: every start
	// bumps it and syncs it before the first frame is sent, so that
	// (epoch, counter) never repeats across restarts.
	Epoch uint32 `json:"epoch"`
	// Windows are the command replay windows by ground key id
	// (protocol.ReplayWindow's MarshalBinary).
	Windows map[uint32][]byte `json:"cmd_windows,omitempty"`
	// Counters are hk.counters' values since the last reset_counters.
	Counters Counters `json:"counters"`
	// LastError is hk.error.
	LastError ErrorRecord `json:"last_error"`
	// Outcome is how the last trial boot ended (dict EnumBootOutcome).
	Outcome string `json:"last_outcome,omitempty"`
	// TrialFrom is the slot a pending trial boot came from, so that a
	// fallback to it is reported as a rollback.
	TrialFrom string `json:"trial_from,omitempty"`
	// FactoryReset is set by the factory_reset command: local state is
	// discarded at the next install (slots.Manager.FactoryReset).
	FactoryReset bool `json:"factory_reset,omitempty"`
	// Rebooting is set just before flightd runs the reboot action, so
	// that the next start can tell its own reboot from a power cut.
	Rebooting bool `json:"rebooting,omitempty"`
	// RebootAtMs is the reboot an activate command scheduled (not_before,
	// ms since the Unix epoch; 0: none), kept across a restart of
	// flightd within the same boot.
	RebootAtMs int64 `json:"reboot_at_ms,omitempty"`
	// RebootCause is the dict EnumRebootCause label of that reboot.
	RebootCause string `json:"reboot_cause,omitempty"`
	// Finals are the last final verification reports (completed, failed,
	// rejected) of authenticated commands not yet repeated, oldest first,
	// at most MaxRepeatedFinals: each is sent once more when the ground
	// is next heard after a gap (docs/flightd.md), across a reboot too.
	Finals []FinalReport `json:"finals,omitempty"`
}

// FinalReport is a final verification report kept to be repeated.
type FinalReport struct {
	// Key is the ground key the command was signed with (its sequence
	// numbers are that key's): a copy of the command is answered with
	// this report.
	Key    uint32         `json:"key,omitempty"`
	Seq    uint64         `json:"seq"`
	Opcode uint16         `json:"opcode"`
	Stage  protocol.Stage `json:"stage"`
	Code   protocol.Code  `json:"code,omitempty"`
}

// Counters are the daemon's counters (hk.counters).
type Counters struct {
	FramesIn      uint64 `json:"frames_in"`
	FramesOut     uint64 `json:"frames_out"`
	FramesDropped uint64 `json:"frames_dropped"`
	CmdsAccepted  uint64 `json:"cmds_accepted"`
	CmdsRejected  uint64 `json:"cmds_rejected"`
	// Drops counts dropped frames and rejected commands by reason code
	// (protocol.Code: protocol's reasons and the dictionary's).
	Drops map[protocol.Code]uint64 `json:"drops,omitempty"`
}

func (c *Counters) drop(code protocol.Code) {
	if c.Drops == nil {
		c.Drops = map[protocol.Code]uint64{}
	}
	c.Drops[code]++
}

func (c *Counters) addDrops(code protocol.Code, n uint64) {
	if c.Drops == nil {
		c.Drops = map[protocol.Code]uint64{}
	}
	c.Drops[code] += n
}

// ErrorRecord is the last error the daemon reported.
type ErrorRecord struct {
	Code protocol.Code `json:"code"`
	AtMs int64         `json:"at_ms"`
	Text string        `json:"text"`
}

// ReadState reads the daemon state in dir; a missing file is the zero
// state. A corrupt file is an error: the epoch must never go back, so
// flightd does not start on a state it cannot read (docs/flightd.md says
// how to recover: set epoch above the last one the ground saw).
func ReadState(dir string) (DaemonState, error) {
	var s DaemonState
	f, err := os.Open(filepath.Join(dir, StateFile))
	if errors.Is(err, os.ErrNotExist) {
		return s, nil
	}
	if err != nil {
		return s, fmt.Errorf("flightd: state: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxStateFile+1))
	if err != nil {
		return s, fmt.Errorf("flightd: state: %w", err)
	}
	if len(b) > maxStateFile {
		return s, fmt.Errorf("flightd: state %s is larger than %d bytes", f.Name(), maxStateFile)
	}
	if err := json.Unmarshal(b, &s); err != nil {
		return s, fmt.Errorf("flightd: state %s: %w", f.Name(), err)
	}
	return s, nil
}

// WriteState replaces the daemon state in dir atomically and durably.
func WriteState(dir string, s DaemonState) error {
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return fmt.Errorf("flightd: state: %w", err)
	}
	if err := vfs.WriteFileAtomic(vfs.Default, filepath.Join(dir, StateFile), append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("flightd: state: %w", err)
	}
	return nil
}

// BumpEpoch reads the state in dir, increments its epoch, and writes it
// back durably: the return-link epoch of this start. It returns the state
// as written.
func BumpEpoch(dir string) (DaemonState, error) {
	s, err := ReadState(dir)
	if err != nil {
		return s, err
	}
	if s.Epoch == ^uint32(0) {
		return s, errors.New("flightd: state: return-link epochs exhausted; a new vehicle key (and epoch 0) is needed")
	}
	s.Epoch++
	if err := WriteState(dir, s); err != nil {
		return s, err
	}
	return s, nil
}

// mkdirSynced creates dir and its missing parents with perm and syncs the
// parent of each directory it creates: a directory entry is durable only
// once its parent is synced, and what flightd then writes into dir (the
// epoch, the reset record) is synced there but would be lost with a dir
// entry a power cut took back. An existing directory is left as it is,
// its mode included (the operator's choice); a file that is not a
// directory is an error.
func mkdirSynced(dir string, perm fs.FileMode) error {
	dir = filepath.Clean(dir)
	fi, err := os.Stat(dir)
	switch {
	case err == nil && fi.IsDir():
		return nil
	case err == nil:
		return fmt.Errorf("%s is not a directory (mode %v)", dir, fi.Mode())
	case !errors.Is(err, fs.ErrNotExist):
		return err
	}
	parent := filepath.Dir(dir)
	if parent != dir {
		if err := mkdirSynced(parent, perm); err != nil {
			return err
		}
	}
	if err := os.Mkdir(dir, perm); err != nil && !errors.Is(err, fs.ErrExist) {
		return err
	}
	return vfs.SyncDir(vfs.Default, parent)
}
