package watchdog

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

// faultFS fails one kind of operation of a memDisk.
type faultFS struct {
	d    *memDisk
	fail string // "open", "read", "write", "shortwrite", "lostwrite", "sync"
}

var errInjected = errors.New("injected I/O error")

func (f *faultFS) Open(path string, writable bool) (File, error) {
	if f.fail == "open" && writable {
		return nil, fmt.Errorf("open: %w", errInjected)
	}
	h, err := f.d.Open(path, writable)
	if err != nil {
		return nil, err
	}
	return &faultFile{h, f.fail}, nil
}

type faultFile struct {
	File
	fail string
}

func (f *faultFile) ReadAt(p []byte, off int64) (int, error) {
	if f.fail == "read" {
		return 0, errInjected
	}
	return f.File.ReadAt(p, off)
}

func (f *faultFile) WriteAt(p []byte, off int64) (int, error) {
	if f.fail == "write" {
		return 0, errInjected
	}
	if f.fail == "lostwrite" {
		// Storage that acknowledges a write it never made (a worn or
		// read-only device): only the read-back can tell.
		return len(p), nil
	}
	if f.fail == "shortwrite" {
		n := len(p) / 2
		m, _ := f.File.WriteAt(p[:n], off)
		return m, nil
	}
	return f.File.WriteAt(p, off)
}

func (f *faultFile) Sync() error {
	if f.fail == "sync" {
		return errInjected
	}
	return f.File.Sync()
}

// TestEnvIOErrors: every I/O failure of a Save is returned (never a silent
// success), and the environment afterwards is still the old or the new one
// and takes the next Save.
func TestEnvIOErrors(t *testing.T) {
	for _, kind := range powercutKinds() {
		for _, fail := range []string{"open", "read", "write", "shortwrite", "lostwrite", "sync"} {
			t.Run(kind.name+"/"+fail, func(t *testing.T) {
				disk := newMemDisk(kind.files())
				old := Vars{"BOOT_ORDER": "A B", "x": strings.Repeat("o", 300)}
				if err := kind.env(disk).Save(old); err != nil {
					t.Fatal(err)
				}
				nv := Vars{"BOOT_ORDER": "B A", "x": strings.Repeat("n", 300)}
				err := kind.env(&faultFS{disk, fail}).Save(nv)
				if err == nil {
					t.Fatalf("Save with a failing %s succeeded", fail)
				}
				switch fail {
				case "shortwrite":
				case "lostwrite":
					if !errors.Is(err, ErrVerify) {
						t.Fatalf("a write the storage dropped: %v, want ErrVerify", err)
					}
				default:
					if !errors.Is(err, errInjected) {
						t.Fatalf("error does not wrap the I/O error: %v", err)
					}
				}
				v, err := kind.env(disk).Load()
				if o := classify(v, err, old, nv); o == gotOther || (o == gotBadCRC && !kind.allowBadCRC) {
					t.Fatalf("after a failed %s: %v %v", fail, v, err)
				}
				if err := kind.env(disk).Save(nv); err != nil {
					t.Fatalf("Save after the fault cleared: %v", err)
				}
				if v, err := kind.env(disk).Load(); err != nil || !v.Equal(nv) {
					t.Fatalf("Load after recovery: %v %v", v, err)
				}
			})
		}
	}
}
